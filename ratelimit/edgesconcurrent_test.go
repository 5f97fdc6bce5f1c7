package ratelimit

import (
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/causewayhq/causeway/routes"
)

// TestEdgesHammerOneKey: three edges sharing one Redis (a single server and
// a 3-master Cluster), 64 concurrent clients on each sending one key as
// fast as they can, the shared clock stepping by an odd 7,919 µs between
// rounds so that refills land at every point of the emission interval.
// docs/ratelimit.md promises that a client sending as fast as it is
// allowed gets exactly burst + floor(t × limit / per) requests in any time
// t: the test counts what the upstream handlers received after every round
// and requires exactly that, for each mode (exact, and lease, whose bucket
// is smaller, so at most that), with the local memory of refusals in play.
func TestEdgesHammerOneKey(t *testing.T) {
	if testing.Short() {
		t.Skip("real redis-server and Cluster")
	}
	srv := testredis.Start(t)
	cl := testredis.StartCluster(t)
	rounds, clients := 60, 64
	if os.Getenv("CAUSEWAY_SOAK") == "1" {
		rounds = 1000
	}
	const rate, burst = 30, 7 // per second: one every 33,333.3 µs
	const step = 7919 * time.Microsecond
	for _, tc := range []struct {
		name, section, mode string
	}{
		{"single/exact", fmt.Sprintf("url: %q", srv.URL()), "exact"},
		{"cluster/exact", fmt.Sprintf("addrs: [%q]", cl.Addrs()[0]), "exact"},
		{"single/lease", fmt.Sprintf("url: %q", srv.URL()), "lease"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := fmt.Sprintf("hammer-%s:", tc.mode)
			e := newEdges(t, 3, tc.section+", timeout: 5s, key_prefix: \""+prefix+"\"", tc.mode, rate, burst, time.Second, "deny")
			var received atomic.Int64
			var others sync.Map // status -> count
			hs := make([]http.Handler, len(e.svcs))
			for i, s := range e.svcs {
				mw, err := s.Middleware(routes.Route{Name: "r", RateLimit: []string{"l"}}, KeySources{})
				if err != nil {
					t.Fatal(err)
				}
				hs[i] = mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { received.Add(1) }))
			}
			start := e.clk.Now()
			for round := range rounds {
				var wg sync.WaitGroup
				for _, h := range hs {
					for range clients {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for range 2 {
								w := &codeRecorder{header: http.Header{}}
								r, _ := http.NewRequest(http.MethodGet, "http://edge/x", nil)
								r.RemoteAddr = "192.0.2.1:1234"
								r.Header.Set("X-User", "one")
								h.ServeHTTP(w, r)
								if w.code != 0 && w.code != http.StatusTooManyRequests {
									v, _ := others.LoadOrStore(w.code, new(atomic.Int64))
									v.(*atomic.Int64).Add(1)
								}
							}
						}()
					}
				}
				wg.Wait()
				e.settle()
				others.Range(func(k, v any) bool {
					t.Fatalf("round %d: %d answers with status %v", round, v.(*atomic.Int64).Load(), k)
					return false
				})
				elapsed := e.clk.Now().Sub(start).Microseconds()
				want := int64(burst) + elapsed*rate/1_000_000
				got := received.Load()
				if got > want || (tc.mode == "exact" && got != want) {
					t.Fatalf("after round %d (%d µs): the upstreams received %d requests; the limit allows exactly %d", round, elapsed, got, want)
				}
				e.clk.Add(step)
			}
			t.Logf("%d rounds of %d requests: %d reached the upstreams", rounds, 3*clients*2, received.Load())
		})
	}
}
