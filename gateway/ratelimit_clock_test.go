package gateway

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestRateLimitEdgeClock: the edge's rate limits count on the clock the
// edge is given (EdgeOptions.Clock), as its breakers and ejections do, so a
// limit refills when that clock says so and not with the wall clock; and
// the in-memory table's size is exported.
func TestRateLimitEdgeClock(t *testing.T) {
	clk := newFakeClock()
	up := echoUpstream(t, "up")
	te := startEdge(t, fmt.Sprintf(listenHeader+`rate_limit_memory: {max_keys: 1000}
rate_limits:
  per-ip: {key: client_ip, limit: 1, per: 1h}
upstreams:
  up: {endpoints: [%q]}
routes:
  - {name: limited, match: {path_prefix: /}, rate_limit: per-ip, upstream: up}
`, hostPort(up)), withClock(clk))
	for _, step := range []struct {
		desc    string
		advance time.Duration
		status  int
	}{
		{"the burst", 0, http.StatusOK},
		{"over the limit", 0, http.StatusTooManyRequests},
		{"an hour later on the edge's clock", time.Hour, http.StatusOK},
	} {
		clk.Advance(step.advance)
		res, _ := get(t, te.url+"/x")
		if res.StatusCode != step.status {
			t.Fatalf("%s: %d, want %d", step.desc, res.StatusCode, step.status)
		}
	}
	if v, ok := sample(t, te.registry, "causeway_ratelimit_memory_keys", map[string]string{}); !ok || v != 1 {
		t.Fatalf("causeway_ratelimit_memory_keys = %v (present %v), want 1", v, ok)
	}
	for _, m := range []string{"causeway_ratelimit_memory_overflow_total", "causeway_ratelimit_memory_dropped_total"} {
		if _, ok := sample(t, te.registry, m, map[string]string{}); !ok {
			t.Errorf("%s absent", m)
		}
	}
}
