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

// TestChaosKillAndRestart: three endpoints under 20 seconds of idempotent
// load; one is killed (listener and connections closed at once, as a crash
// does) after 5s and restarted on the same address after 12s. Retries on
// connect failures and resets, outlier ejection and active health checks
// together should hide the failure from every client.
func TestChaosKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("20 seconds of load")
	}
	bs := backends(t, 3)
	te := startEdge(t, oneUpstream(addrList(bs), `    retries: {attempts: 2, on: [connect_failure, reset, "502", "503"], backoff: 5ms, max_backoff: 50ms}
    circuit_breaker: {consecutive_5xx: 3, eject_for: 1s, max_ejected_percent: 34}
    health_check: {path: /healthz, interval: 200ms, timeout: 200ms, healthy_threshold: 2, unhealthy_threshold: 2}
`))
	const (
		duration = 20 * time.Second
		killAt   = 5 * time.Second
		backAt   = 12 * time.Second
		workers  = 8
	)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	var requests, failures atomic.Int64
	var mu sync.Mutex
	failed := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
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
	start := time.Now()
	time.Sleep(killAt)
	bs[1].kill()
	killedHits := bs[1].hits.Load()
	time.Sleep(backAt - killAt)
	bs[1].restart()
	time.Sleep(duration - backAt)
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)

	var served int64
	for _, h := range hits(bs) {
		served += h
	}
	up := te.live.Load().runtime(0).upstreams["u"]
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
