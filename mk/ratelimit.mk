# Rate limits (ratelimit/): benchmarks of a request through the handler chain
# with no limiter, the in-memory limiter and the Redis limiter (a real local
# redis-server). See docs/performance.md "Rate limits" for the numbers and the machine.
.PHONY: bench-ratelimit soak-ratelimit

bench-ratelimit: deps
	$(GO) test -run '^$$' -bench Decision -benchtime 2s -count 3 ./ratelimit/

# Leases against the exact limiter for 30 simulated seconds (the default
# test runs 6): 3 edges, 4 keys at twice their limit, skewed traffic, on a
# real redis-server and a real 3-master Cluster; prints the under-admission.
soak-ratelimit: deps
	CAUSEWAY_LEASE_SOAK=30s $(GO) test -race -count=1 -v -run '^TestLeaseNeverOverLimit$$' ./ratelimit/
