package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"

	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestChaosKillAndRestart: three endpoints under idempotent load; one is
// killed (listener and connections closed at once, as a crash does) once
// the edge holds connections to all three, and restarted on the same
// address once health checks have taken it out. Retries on connect
// failures and resets, outlier ejection and active health checks together
// should hide the failure from every client. Each phase lasts until what
// it is about has happened and phaseRequests more requests were sent, not
// a fixed time: the same transitions under load, without the seconds of
// steady state around them.
func TestChaosKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("several seconds of load")
	}
	bs := backends(t, 3)
	te := startEdge(t, oneUpstream(addrList(bs), `    retries: {attempts: 2, on: [connect_failure, reset, "502", "503"], backoff: 5ms, max_backoff: 50ms}
    circuit_breaker: {consecutive_5xx: 3, eject_for: 1s, max_ejected_percent: 34}
    health_check: {path: /healthz, interval: 200ms, timeout: 200ms, healthy_threshold: 2, unhealthy_threshold: 2}
`))
	const (
		workers = 8
		// phaseRequests is how many requests each phase sends at least
		// (about two seconds of this load on a busy 2-core machine).
		phaseRequests = 1000
		warmHits      = 100 // per endpoint before the kill: pooled connections to each
	)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	var requests, failures atomic.Int64
	var mu sync.Mutex
	failed := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stopOnce sync.Once
	stopLoad := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	defer stopLoad() // a failed wait below still stops the workers
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				requests.Add(1)
				resp, err := client.Get(te.url + "/chaos")
				what := ""
				if err != nil {
					what = err.Error()
				} else {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						what = resp.Status
					}
				}
				if what != "" {
					failures.Add(1)
					mu.Lock()
					failed[what]++
					mu.Unlock()
				}
			}
		}()
	}
	// phase waits until cond holds and phaseRequests were sent since it
	// began.
	phase := func(what string, cond func() bool) {
		t.Helper()
		from := requests.Load()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() || requests.Load()-from < phaseRequests {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30s (%d requests sent)", what, requests.Load()-from)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	up := te.live.Load().runtime(0).upstreams["u"]
	start := time.Now()
	phase("warm-up", func() bool { return min(bs[0].hits.Load(), bs[1].hits.Load(), bs[2].hits.Load()) >= warmHits })
	bs[1].kill()
	killedHits := bs[1].hits.Load()
	phase("b1 taken out", func() bool { return downOf(up, bs[1].addr) })
	bs[1].restart()
	phase("b1 back", func() bool {
		return !downOf(up, bs[1].addr) && bs[1].hits.Load()-killedHits >= warmHits
	})
	stopLoad()
	elapsed := time.Since(start)

	var served int64
	for _, h := range hits(bs) {
		served += h
	}
	t.Logf("%d requests in %s (%.0f/s); client-visible errors: %d %v", requests.Load(), elapsed.Round(time.Millisecond), float64(requests.Load())/elapsed.Seconds(), failures.Load(), failed)
	t.Logf("served by endpoint: %v (b1 had %d when killed, %d after its restart); ejections: %d; b1 failing its health check now: %v", hits(bs), killedHits, bs[1].hits.Load()-killedHits, up.Health.EjectionsTotal.Load(), downOf(up, bs[1].addr))
	if failures.Load() != 0 {
		t.Fatalf("%d client-visible errors: %v", failures.Load(), failed)
	}
	if bs[1].hits.Load() == killedHits {
		t.Fatal("the restarted endpoint got no traffic back")
	}
}

func downOf(u *proxy.Upstream, addr string) bool {
	for _, e := range u.Endpoints() {
		if e.Addr == addr {
			return e.Down.Load()
		}
	}
	return true
}
