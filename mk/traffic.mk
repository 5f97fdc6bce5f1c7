# traffic: balancers, health, retries, breaker, mirroring, discovery and
# protocols of the gateway's data plane (docs/traffic.md).
.PHONY: test-traffic chaos bench-traffic

# Selected by package, not by test name, so a new test is never left out:
# the upstream engine (balancers, health, retries, breaker, discovery,
# mirroring), its transports and wire parser, the routes model's traffic
# settings, and the gateway, whose traffic tests run through a real edge.
TRAFFIC_PACKAGES := ./gateway/internal/proxy/ ./gateway/internal/transport/ ./gateway/internal/h1/ ./routes/ ./gateway/

test-traffic:
	$(GO) test -race -short -count=1 $(TRAFFIC_PACKAGES)

# One of three endpoints killed and restarted under 20s of load; prints the
# request count and client-visible errors.
chaos:
	$(GO) test -race -count=1 -v -run '^TestChaosKillAndRestart$$' ./gateway/

bench-traffic:
	$(GO) test -run '^$$' -bench Proxy -benchmem -count=3 ./gateway/
