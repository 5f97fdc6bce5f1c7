# mesh: benchmarks of the mTLS handshake and of requests over reused mTLS
# connections (see docs/performance.md "Mesh" for the numbers and the machine).
.PHONY: bench-mesh

bench-mesh:
	$(GO) test -run '^$$' -bench . -benchmem -count=5 ./mesh/

# soak-spire: rotation under load on a real SPIRE deployment (X.509-SVID TTL
# 1 minute, CA TTL 3 minutes) for CAUSEWAY_SPIRE_SOAK_DURATION (default 4m):
# edge -> sidecar -> service and sidecar -> sidecar at 100 requests/s, across
# every workload's SVID rotations and a CA rotation; zero failed requests.
# Not part of `make test` (its short version is); docs/reliability.md has
# the result.
.PHONY: soak-spire

soak-spire:
	CAUSEWAY_SPIRE_SOAK=1 $(GO) test -count=1 -timeout 30m -run '^TestSPIRESoak$$' -v ./test/
