package ratelimit

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/causewayhq/causeway/routes"
)

// TestLeaseHeldTokensNeverOverLimit: an edge holds leased tokens when its
// key goes quiet; a minute later on Redis's clock (the bucket has refilled)
// the key is drained at one instant. The upstream must not receive more
// than the burst at that instant, nor more than the limit allows in any
// window of Redis's time. A leased token may only be spent within a hold
// of its grant, in real time: that is what keeps mode lease within the
// limit in every window. The rows step the edge's own clock meanwhile (an
// NTP correction, a resumed VM), which the edge measures the hold on.
func TestLeaseHeldTokensNeverOverLimit(t *testing.T) {
	srv := testredis.Start(t)
	const rate, burst = 1000, 1000 // per 20 s: the hold is 1 s
	for i, tc := range []struct {
		name string
		// edge is how far the edge's clock moves while Redis's moves
		// a minute.
		edge time.Duration
	}{
		{"no step", time.Minute},
		{"steps forward 10 s", time.Minute + 10*time.Second},
		{"steps back 10 s", -10 * time.Second},
		// The warm-up's last request read the clock 1 ms before its
		// end: 1 µs before that reading.
		{"steps back 1 µs behind its last reading", -time.Millisecond - time.Microsecond},
		// A wall clock that stands still, or steps back by less than the
		// time since its last reading, reads like a clock with no time
		// passing: only the monotonic readings time.Now carries (and an
		// injected clock cannot fake) tell it, and grant.expired uses
		// them.
	} {
		t.Run(tc.name, func(t *testing.T) {
			edgeClk, redisClk := newClock(), newClock()
			f := testFile(t, fmt.Sprintf("redis: {url: %q, timeout: 5s, on_error: deny, key_prefix: \"step%d:\"}\n"+
				"rate_limits:\n  l: {key: \"header:X-User\", limit: %d, per: 20s, burst: %d, mode: lease}\n"+
				"routes:\n  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}\n", srv.URL(), i, rate, burst))
			s := New(context.Background(), Options{Now: edgeClk.Now, RedisNow: redisClk.Now})
			t.Cleanup(func() { s.Close() })
			if err := s.Configure(context.Background(), f); err != nil {
				t.Fatal(err)
			}
			mw, err := s.Middleware(routes.Route{Name: "r", RateLimit: []string{"l"}}, KeySources{})
			if err != nil {
				t.Fatal(err)
			}
			// The upstream's own log, on Redis's clock (real time here).
			var got []time.Time
			var received atomic.Int64
			h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				received.Add(1)
				got = append(got, redisClk.Now())
			}))
			send := func() int {
				w := &codeRecorder{header: http.Header{}}
				r, _ := http.NewRequest(http.MethodGet, "http://edge/x", nil)
				r.RemoteAddr = "192.0.2.1:1234"
				r.Header.Set("X-User", "hot")
				h.ServeHTTP(w, r)
				if w.code == 0 {
					return http.StatusOK
				}
				return w.code
			}
			// Demand builds a lease of many tokens: a request a
			// millisecond (20 at a time) makes the edge ask for what it
			// spends in half a hold (1 s), capped at half the lease burst.
			for range 20 {
				for range 20 {
					if c := send(); c != http.StatusOK {
						t.Fatalf("warm-up: %d", c)
					}
				}
				s.leases.wg.Wait()
				edgeClk.Add(time.Millisecond)
				redisClk.Add(time.Millisecond)
			}
			held := heldTokens(s)
			if lb := leaseBucket(Limit{Name: "l", Rate: rate, Per: 20 * time.Second, Burst: burst}.mustBucket(t)); held <= burst-lb.burst {
				// Fewer would not show a step's effect within the burst.
				t.Fatalf("the edge holds %d tokens; the test needs more than %d", held, burst-lb.burst)
			}
			redisClk.Add(time.Minute) // the bucket is full again
			edgeClk.Add(tc.edge)
			before := received.Load()
			for range 3 * burst {
				if c := send(); c != http.StatusOK && c != http.StatusTooManyRequests {
					t.Fatalf("drain: %d", c)
				}
			}
			s.leases.wg.Wait()
			if n := received.Load() - before; n > burst {
				t.Errorf("the upstream received %d requests at one instant; the burst is %d", n, burst)
			}
			if w := overLimit(got, rate, burst, 20*time.Second); w != "" {
				t.Errorf("over the limit: %s", w)
			}
		})
	}
}

// heldTokens is what s's leases hold right now.
func heldTokens(s *Service) int64 {
	s.leases.mu.Lock()
	defer s.leases.mu.Unlock()
	var n int64
	for _, l := range s.leases.m {
		l.mu.Lock()
		n += l.available()
		l.mu.Unlock()
	}
	return n
}

// codeRecorder keeps the status of an answer and drops its body.
type codeRecorder struct {
	header http.Header
	code   int
}

func (w *codeRecorder) Header() http.Header { return w.header }
func (w *codeRecorder) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return len(b), nil
}
func (w *codeRecorder) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
