# Rate limits (ratelimit/): benchmarks of a request through the handler chain
# with no limiter, the in-memory limiter and the Redis limiter (a real local
# redis-server). See docs/performance.md "Rate limits" for the numbers and the machine.
.PHONY: bench-ratelimit

bench-ratelimit: deps
	$(GO) test -run '^$$' -bench Decision -benchtime 2s -count 3 ./ratelimit/
