# Edge memory with 10,000 idle keep-alive client connections
# (test/idle_test.go; its plain and TLS HTTP/1.1 cases are also part of
# `make test`). Here every TLS connection is a full handshake with Go's
# default key exchange (IDLE_TLS_FULL_HANDSHAKES=1) and an HTTP/2 case runs
# too (IDLE_H2=1). Without the race detector: the edge it measures is a
# plain build either way, and the client side of the handshakes runs about
# 3x faster. PROFILE_DIR=DIR keeps the edge's heap profiles with all
# connections idle (DIR/<case>.heap.pb.gz) for `go tool pprof`; GOGC or
# GOMEMLIMIT in the environment reach the edge too.
.PHONY: bench-memory

bench-memory:
	$(if $(PROFILE_DIR),mkdir -p $(PROFILE_DIR) &&) IDLE_PROFILE_DIR=$(PROFILE_DIR) IDLE_TLS_FULL_HANDSHAKES=1 IDLE_H2=1 \
	  $(GO) test -count=1 -run '^TestEdgeIdleConnectionsMemory$$' -v ./test/

# CPU per request that each stage of the edge adds, the edge and the sidecar
# as processes of their own (test/cpubudget_test.go; a 1,000-request run of
# it is part of `make test`): 20,000 requests per stage, 3 interleaved
# rounds, medians. The budget (docs/performance.md "CPU budget"): the whole
# pipeline at most 3x the plain proxy's CPU per request. It also measures the
# sidecar against the plain edge under the same clients
# (test/cpuequal_test.go, measurement only).
.PHONY: bench-cpu

bench-cpu: deps
	PATH=$(CURDIR)/.tools/bin:$$PATH CAUSEWAY_CPU_BUDGET=1 $(GO) test -count=1 -run '^(TestPipelineCPUBudget|TestSidecarCPUAtEqualLoad)$$' -v ./test/
