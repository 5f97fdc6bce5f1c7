# mesh: benchmarks of the mTLS handshake and of requests over reused mTLS
# connections (see docs/performance.md "Mesh" for the numbers and the machine).
.PHONY: bench-mesh

bench-mesh:
	$(GO) test -run '^$$' -bench . -benchmem -count=5 ./mesh/
