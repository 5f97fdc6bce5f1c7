package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"

	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// readyz fetches the admin /readyz body.
func readyz(t *testing.T, te *testEdge) map[string]proxy.UpstreamHealth {
	t.Helper()
	resp, err := http.Get(te.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Upstreams map[string]proxy.UpstreamHealth `json:"upstreams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Upstreams
}

// healthyGauge reads causeway_upstream_endpoint_healthy for one endpoint
// from /metrics ("" when the series is absent).
func healthyGauge(t *testing.T, te *testEdge, up, ep string) string {
	t.Helper()
	resp, err := http.Get(te.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	prefix := fmt.Sprintf(`causeway_upstream_endpoint_healthy{endpoint=%q,upstream=%q} `, ep, up)
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimPrefix(line, prefix)
		}
	}
	return ""
}

func TestOutlierEjectionAndReturn(t *testing.T) {
	clock := newFakeClock()
	bs := backends(t, 3)
	te := startEdge(t, oneUpstream(addrList(bs), "    circuit_breaker: {consecutive_5xx: 2, eject_for: 10s}\n"), withClock(clock))
	bad := bs[0]
	bad.status.Store(500)

	// Round robin: b0 answers 500 twice in a row within 6 requests.
	codes := send(t, te.url+"/", 30, 1)
	if n := bad.hits.Load(); n != 2 {
		t.Fatalf("b0 got %d requests before its ejection, want 2 (%v)", n, codes)
	}
	if codes[500] != 2 || codes[200] != 28 {
		t.Fatalf("statuses %v", codes)
	}
	if g := healthyGauge(t, te, "u", bad.addr); g != "0" {
		t.Fatalf("gauge of the ejected endpoint %q", g)
	}
	if logs := te.logs.String(); !strings.Contains(logs, `"msg":"upstream endpoint ejected"`) || !strings.Contains(logs, bad.addr) {
		t.Fatalf("the edge's log does not report the ejection: %s", logs)
	}
	if h := readyz(t, te)["u"]; h.Healthy != 2 || h.Total != 3 {
		t.Fatalf("readyz %+v", h)
	}

	t.Run("stays out for eject_for", func(t *testing.T) {
		clock.Advance(9 * time.Second)
		bad.status.Store(0)
		resetHits(bs)
		send(t, te.url+"/", 30, 1)
		if n := bad.hits.Load(); n != 0 {
			t.Fatalf("ejected endpoint got %d", n)
		}
	})
	t.Run("returns after eject_for", func(t *testing.T) {
		clock.Advance(2 * time.Second)
		resetHits(bs)
		send(t, te.url+"/", 30, 1)
		if n := bad.hits.Load(); n != 10 {
			t.Fatalf("returned endpoint got %d of 30", n)
		}
		if g := healthyGauge(t, te, "u", bad.addr); g != "1" {
			t.Fatalf("gauge %q", g)
		}
	})
	t.Run("a second ejection lasts twice as long", func(t *testing.T) {
		bad.status.Store(500)
		send(t, te.url+"/", 30, 1)
		bad.status.Store(0)
		clock.Advance(11 * time.Second)
		resetHits(bs)
		send(t, te.url+"/", 30, 1)
		if n := bad.hits.Load(); n != 0 {
			t.Fatalf("endpoint back after 11s of a 20s ejection (%d hits)", n)
		}
		clock.Advance(10 * time.Second)
		send(t, te.url+"/", 30, 1)
		if n := bad.hits.Load(); n != 10 {
			t.Fatalf("endpoint not back after 21s (%d hits)", n)
		}
	})
}

// With max_ejected_percent 50, two failing endpoints of three: one is
// ejected, the other keeps its share, so a bad deploy cannot empty the
// upstream by ejection.
func TestEjectionCap(t *testing.T) {
	clock := newFakeClock()
	bs := backends(t, 3)
	te := startEdge(t, oneUpstream(addrList(bs), "    circuit_breaker: {consecutive_5xx: 1, eject_for: 1m, max_ejected_percent: 50}\n"), withClock(clock))
	bs[0].status.Store(500)
	bs[1].status.Store(500)
	send(t, te.url+"/", 60, 1)
	h := readyz(t, te)["u"]
	if h.Healthy != 2 {
		t.Fatalf("readyz %+v", h)
	}
	resetHits(bs)
	send(t, te.url+"/", 60, 1)
	got := hits(bs)
	if (got[0] == 0) == (got[1] == 0) || got[2] != 30 {
		t.Fatalf("hits %v: exactly one failing endpoint should be ejected", got)
	}
}

func TestActiveHealthCheck(t *testing.T) {
	bs := backends(t, 2)
	te := startEdge(t, oneUpstream(addrList(bs), "    health_check: {path: /healthz, interval: 200ms, timeout: 200ms, healthy_threshold: 2, unhealthy_threshold: 2}\n"))
	bs[0].status.Store(503) // /healthz answers 503 from now on
	waitFor(t, func() bool { return healthyGauge(t, te, "u", bs[0].addr) == "0" })
	h := readyz(t, te)["u"]
	if h.Healthy != 1 || h.Total != 2 {
		t.Fatalf("readyz %+v", h)
	}
	resetHits(bs)
	codes := send(t, te.url+"/", 20, 1)
	if codes[200] != 20 || bs[0].hits.Load() != 0 {
		t.Fatalf("statuses %v, failing endpoint got %d", codes, bs[0].hits.Load())
	}

	t.Run("503 when no endpoint is left", func(t *testing.T) {
		bs[1].status.Store(503)
		waitFor(t, func() bool { return healthyGauge(t, te, "u", bs[1].addr) == "0" })
		resp, body := get(t, te.url+"/")
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "no healthy upstream endpoint") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("endpoints come back", func(t *testing.T) {
		bs[0].status.Store(0)
		bs[1].status.Store(0)
		waitFor(t, func() bool {
			return healthyGauge(t, te, "u", bs[0].addr) == "1" && healthyGauge(t, te, "u", bs[1].addr) == "1"
		})
		resetHits(bs)
		codes := send(t, te.url+"/", 20, 1)
		if codes[200] != 20 || bs[0].hits.Load() != 10 {
			t.Fatalf("statuses %v, hits %v", codes, hits(bs))
		}
	})
}

// A reload keeps what is known about endpoints: an ejected one stays out
// until its ejection ends, one failing its health check stays out until it
// passes again.
func TestHealthSurvivesReload(t *testing.T) {
	reloader := func(te *testEdge, cfg func(int) string) func(int) {
		return func(n int) {
			t.Helper()
			prev := te.Active()
			writeFile(t, te.path, cfg(n))
			waitFor(t, func() bool { return te.Active() != prev })
		}
	}
	t.Run("ejected", func(t *testing.T) {
		clock := newFakeClock()
		bs := backends(t, 3)
		cfg := func(n int) string {
			return fmt.Sprintf("# version %d\n", n) + oneUpstream(addrList(bs), "    circuit_breaker: {consecutive_5xx: 1, eject_for: 1m}\n")
		}
		te := startEdge(t, cfg(0), withClock(clock))
		bs[0].status.Store(500)
		send(t, te.url+"/", 6, 1) // b0 answers 500: ejected for a minute
		bs[0].status.Store(0)
		reloader(te, cfg)(1)
		resetHits(bs)
		send(t, te.url+"/", 30, 1)
		if n := bs[0].hits.Load(); n != 0 {
			t.Fatalf("ejected endpoint got %d requests after a reload", n)
		}
		if g := healthyGauge(t, te, "u", bs[0].addr); g != "0" {
			t.Fatalf("gauge %q", g)
		}
		clock.Advance(61 * time.Second)
		send(t, te.url+"/", 30, 1)
		if n := bs[0].hits.Load(); n != 10 {
			t.Fatalf("endpoint not back after its ejection (%d)", n)
		}
	})
	t.Run("failing its health check", func(t *testing.T) {
		bs := backends(t, 3)
		// healthy_threshold 1000: once down, b1 stays down for this test.
		cfg := func(n int) string {
			return fmt.Sprintf("# version %d\n", n) + oneUpstream(addrList(bs), "    health_check: {path: /healthz, interval: 200ms, timeout: 200ms, unhealthy_threshold: 2, healthy_threshold: 1000}\n")
		}
		te := startEdge(t, cfg(0))
		bs[1].status.Store(503)
		waitFor(t, func() bool { return healthyGauge(t, te, "u", bs[1].addr) == "0" })
		bs[1].status.Store(0)
		reloader(te, cfg)(1)
		resetHits(bs)
		if codes := send(t, te.url+"/", 30, 1); codes[200] != 30 || bs[1].hits.Load() != 0 {
			t.Fatalf("statuses %v; the down endpoint got %d after a reload", codes, bs[1].hits.Load())
		}
	})
}

// A health check built in code without the loader's defaults gets them.
func TestHealthCheckDefaultsInCode(t *testing.T) {
	b := newBackend(t, "b", "127.0.0.1:0")
	deps := buildDeps{metrics: newMetrics(promRegistry())}
	u, err := newUpstream("u", routes.Upstream{Balance: "round_robin", Scheme: "http", Endpoints: []string{b.addr}, HealthCheck: &routes.HealthCheck{Path: "/healthz"}}, deps)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if eps := u.Endpoints(); len(eps) != 1 || !eps[0].Available() {
		t.Fatal("endpoint not available")
	}
}
