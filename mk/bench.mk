# Edge memory with 10,000 idle keep-alive client connections, plain and TLS
# (test/idle_test.go; also part of `make test`). Without the race detector:
# the edge it measures is a plain build either way, and the client side of
# 10,000 TLS handshakes runs about 3x faster. PROFILE_DIR=DIR keeps the
# edge's heap profiles with all connections idle (DIR/http.heap.pb.gz,
# DIR/https.heap.pb.gz) for `go tool pprof`.
.PHONY: bench-memory

bench-memory:
	$(if $(PROFILE_DIR),mkdir -p $(PROFILE_DIR) &&) IDLE_PROFILE_DIR=$(PROFILE_DIR) IDLE_TLS_FULL_HANDSHAKES=1 \
	  $(GO) test -count=1 -run '^TestEdgeIdleConnectionsMemory$$' -v ./test/
