# traffic: balancers, health, retries, breaker, mirroring, discovery and
# protocols of the gateway's data plane (docs/traffic.md).
.PHONY: test-traffic chaos bench-traffic

TRAFFIC_TESTS := Traffic|Balancer|LeastRequest|RingHash|P2C|Outlier|Ejection|Health|Retry|PerTry|Classify|Backoff|Breaker|Split|Mirror|DNS|FileDiscovery|ReadEndpoints|NewUpstream|WebSocket|SSE|LargeUpload|GRPC

# Everything but the 20-second chaos run.
test-traffic:
	$(GO) test -race -short -count=1 -run '$(TRAFFIC_TESTS)' ./gateway/ ./routes/

# One of three endpoints killed and restarted under 20s of load; prints the
# request count and client-visible errors.
chaos:
	$(GO) test -race -count=1 -v -run '^TestChaosKillAndRestart$$' ./gateway/

bench-traffic:
	$(GO) test -run '^$$' -bench Proxy -benchmem -count=3 ./gateway/
