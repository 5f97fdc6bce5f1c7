# observability: the dashboard's headless-Chromium test and the promtool lint
# of /metrics (see docs/observability.md).
.PHONY: test-browser check-metrics bench-observability

# test-browser runs the headless-Chromium tests alone (the dashboard, and a
# cross-origin fetch through CORS and auth; `make test`
# runs it too; `make deps` installs chromium). It installs chromium itself
# when run without `make deps` first.
test-browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "test-browser: installing chromium with apt-get"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "test-browser: chromium missing; run as root: apt-get install -y chromium" >&2; exit 1; fi; }
	CAUSEWAY_BROWSER_TEST=1 $(GO) test -race -count=1 -run 'InChromium' -v ./gateway/

# check-metrics lints the edge's and the sidecar's /metrics with promtool
# (also part of `make test`).
check-metrics: deps
	$(GO) test -race -count=1 -run 'TestPromtoolCheckMetrics' -v ./gateway/

bench-observability:
	$(GO) test -run '^$$' -bench 'Observability' -benchmem -count=5 ./gateway/
