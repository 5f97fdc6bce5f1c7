package ratelimit

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/causewayhq/causeway/routes"
)

// edges are n Services (n edges) sharing one Redis and one clock, each
// with the route /x limited per X-User by limit "l".
type edges struct {
	svcs []*Service
	hs   []httpHandler
	clk  *clock
}

func newEdges(t *testing.T, n int, redisSection, mode string, rate, burst int, per time.Duration, onError string) *edges {
	t.Helper()
	e := &edges{clk: newClock()}
	f := testFile(t, fmt.Sprintf("redis: {%s, on_error: %s}\nrate_limits:\n  l: {key: \"header:X-User\", limit: %d, per: %s, burst: %d, mode: %s}\n"+
		"routes:\n  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}\n", redisSection, onError, rate, per, burst, mode))
	for range n {
		s := New(context.Background(), Options{Now: e.clk.Now, RedisNow: e.clk.Now})
		t.Cleanup(func() { s.Close() })
		if err := s.Configure(context.Background(), f); err != nil {
			t.Fatal(err)
		}
		e.svcs = append(e.svcs, s)
		e.hs = append(e.hs, handlerFor(t, s, routes.Route{Name: "r", RateLimit: []string{"l"}}, KeySources{}))
	}
	return e
}

// settle waits for every edge's background lease work, so a simulated
// step sees the renewals it started.
func (e *edges) settle() {
	for _, s := range e.svcs {
		s.leases.wg.Wait()
	}
}

// run sends, every step for dur, demand(edge, key) requests of each key
// from each edge, and returns the times of the allowed ones by key (the
// upstream's log) and the count of each status.
func (e *edges) run(t *testing.T, keys []string, dur, step time.Duration, demand func(edge, key int) float64) (map[string][]time.Time, map[int]int) {
	t.Helper()
	log := map[string][]time.Time{}
	codes := map[int]int{}
	owed := make([][]float64, len(e.hs))
	for i := range owed {
		owed[i] = make([]float64, len(keys))
	}
	for at := time.Duration(0); at < dur; at += step {
		for ei, h := range e.hs {
			for ki, k := range keys {
				owed[ei][ki] += demand(ei, ki)
				for ; owed[ei][ki] >= 1; owed[ei][ki]-- {
					code := h.do(map[string]string{"X-User": k}).Code
					codes[code]++
					if code == http.StatusOK {
						log[k] = append(log[k], e.clk.Now())
					}
				}
			}
		}
		e.settle()
		e.clk.Add(step)
	}
	return log, codes
}

// overLimit returns the first window of times (sorted) that holds more
// than burst + rate·len/per requests, or "" if none does: the GCRA bound
// every window of an exact limiter keeps.
func overLimit(times []time.Time, rate, burst int, per time.Duration) string {
	// For window [i, j]: (j-i+1)·per - rate·(t_j - t_i) ≤ burst·per, in µs.
	// With a running maximum of rate·t_i - i·per over i ≤ j this is O(n).
	p := per.Microseconds()
	best := int64(-1 << 62)
	bestI := 0
	for j, tj := range times {
		if v := int64(rate)*tj.UnixMicro() - int64(j)*p; v > best {
			best, bestI = v, j
		}
		lhs := int64(j+1)*p - int64(rate)*tj.UnixMicro() + best
		if lhs > int64(burst)*p {
			return fmt.Sprintf("%d requests in [%s, %s]", j-bestI+1, times[bestI].Format("15:04:05.000000"), tj.Format("15:04:05.000000"))
		}
	}
	return ""
}

// TestLeaseNeverOverLimit: three edges, four keys each at twice their
// limit, the traffic skewed 70/20/10 across the edges: no window of the
// allowed requests ever holds more than the limit allows, and lease admits
// nearly what an exact limiter admits for the same traffic.
func TestLeaseNeverOverLimit(t *testing.T) {
	srv := testredis.Start(t)
	for _, tc := range []struct {
		name    string
		section string
	}{
		{"single", fmt.Sprintf("url: %q", srv.URL())},
		{"cluster", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			section := tc.section
			if tc.name == "cluster" {
				if testing.Short() {
					t.Skip("forming a cluster takes seconds")
				}
				cl := testredis.StartCluster(t)
				section = fmt.Sprintf("addrs: [%q]", cl.Addrs()[0])
			}
			const rate, burst = 200, 200
			keys := []string{"alice", "bob", "carol", "dave"}
			skew := []float64{0.7, 0.2, 0.1}
			step := 10 * time.Millisecond
			// Twice the limit per key, in requests per step.
			demand := func(edge, key int) float64 { return 2 * rate * skew[edge] * step.Seconds() }
			dur := 6 * time.Second
			if v := os.Getenv("CAUSEWAY_LEASE_SOAK"); v != "" { // make soak-ratelimit
				d, err := time.ParseDuration(v)
				if err != nil {
					t.Fatal(err)
				}
				dur = d
			}
			// A generous timeout: this test is about counting, not outages,
			// and -race on a busy machine slows every round trip.
			section += ", timeout: 5s"
			lease := newEdges(t, 3, section+", key_prefix: \"lease:\"", "lease", rate, burst, time.Second, "deny")
			leaseLog, leaseCodes := lease.run(t, keys, dur, step, demand)
			exact := newEdges(t, 3, section+", key_prefix: \"exact:\"", "exact", rate, burst, time.Second, "deny")
			exactLog, _ := exact.run(t, keys, dur, step, demand)
			if leaseCodes[http.StatusServiceUnavailable] > 0 {
				for _, s := range lease.svcs {
					s.conns.Range(func(_ string, c *conn) bool {
						c.eachBreaker(func(b *breaker) {
							b.mu.Lock()
							t.Logf("redis error seen (master %q): %v", b.node, b.lastErr)
							b.mu.Unlock()
						})
						return true
					})
				}
				t.Fatalf("503s: %v", leaseCodes)
			}
			var leaseAllowed, exactAllowed int
			for _, k := range keys {
				if w := overLimit(leaseLog[k], rate, burst, time.Second); w != "" {
					t.Errorf("%s over the limit with leases: %s", k, w)
				}
				if w := overLimit(exactLog[k], rate, burst, time.Second); w != "" {
					t.Errorf("%s over the limit exactly: %s", k, w)
				}
				leaseAllowed += len(leaseLog[k])
				exactAllowed += len(exactLog[k])
			}
			under := float64(exactAllowed-leaseAllowed) / float64(exactAllowed)
			t.Logf("allowed: exact %d, lease %d; under-admission %.2f%%", exactAllowed, leaseAllowed, 100*under)
			// Measured 5.22 %: tokens a grant still holds at the end of its
			// hold are dropped, not given back (lease.expire says why).
			if under > 0.06 {
				t.Errorf("under-admission %.2f%% exceeds 6%%", 100*under)
			}
		})
	}
}

// TestLeaseQuietKey: a key at 1 request per second gets the decisions and
// the round trips of exact: a lease of one token per request.
func TestLeaseQuietKey(t *testing.T) {
	srv := testredis.Start(t)
	section := fmt.Sprintf("url: %q", srv.URL())
	quiet := func(edge, key int) float64 { return 1 } // one per step
	for _, mode := range []string{"exact", "lease"} {
		before := testredis.CommandCalls(t, srv.Addr, "evalsha")
		e := newEdges(t, 1, section+", key_prefix: \""+mode+":\"", mode, 10, 10, time.Second, "deny")
		log, codes := e.run(t, []string{"quiet"}, 30*time.Second, time.Second, quiet)
		calls := testredis.CommandCalls(t, srv.Addr, "evalsha") - before
		if len(log["quiet"]) != 30 || codes[http.StatusOK] != 30 {
			t.Fatalf("%s: %v", mode, codes)
		}
		if calls != 30 {
			t.Errorf("%s: %d Redis calls for 30 requests, want one each", mode, calls)
		}
	}
}

// TestLeaseRedisRestart: with Redis gone, the tokens an edge holds are
// spent, then on_error applies; after Redis is back the limit is counted
// there again. Nothing panics.
func TestLeaseRedisRestart(t *testing.T) {
	srv := testredis.Start(t)
	e := newEdges(t, 1, fmt.Sprintf("url: %q, timeout: 200ms", srv.URL()), "lease", 1000, 1000, time.Second, "deny")
	h := e.hs[0]
	hot := func() int { return h.do(map[string]string{"X-User": "hot"}).Code }
	// Build demand so the edge holds a lease of many tokens.
	for range 20 {
		for range 20 {
			if c := hot(); c != http.StatusOK {
				t.Fatalf("warm-up: %d", c)
			}
		}
		e.settle()
		e.clk.Add(time.Millisecond)
	}
	lk := ""
	e.svcs[0].leases.mu.Lock()
	for k := range e.svcs[0].leases.m {
		lk = k
	}
	l := e.svcs[0].leases.m[lk]
	e.svcs[0].leases.mu.Unlock()
	l.mu.Lock()
	held := l.available()
	l.mu.Unlock()
	if held < 2 {
		t.Fatalf("the edge holds %d tokens; want a lease of several", held)
	}
	srv.Stop()
	var ok, unavailable int
	for range held + 5 {
		switch c := hot(); c {
		case http.StatusOK:
			ok++
		case http.StatusServiceUnavailable:
			unavailable++
		default:
			t.Fatalf("status %d during the outage", c)
		}
	}
	if int64(ok) < held || unavailable == 0 {
		t.Fatalf("during the outage: %d allowed (held %d), %d refused as on_error: deny", ok, held, unavailable)
	}
	srv.Restart()
	// After the probe interval a request tries Redis again.
	e.clk.Add(2 * probeInterval)
	deadline := time.Now().Add(10 * time.Second)
	for hot() != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("not back after Redis returned")
		}
		e.clk.Add(2 * probeInterval)
		time.Sleep(20 * time.Millisecond)
	}
	// Counted in Redis again: the bucket key exists there.
	if v, err := srv.Do("EVAL", "return #redis.call('KEYS', ARGV[1])", "0", "causeway:rl:{l|hot}:*"); err != nil || v != "1" {
		t.Fatalf("bucket in Redis after recovery: %q %v", v, err)
	}
}

func TestLeaseBucket(t *testing.T) {
	for _, tc := range []struct {
		rate, burst int
		per         time.Duration
		hold        time.Duration
		leaseBurst  int64
	}{
		{200, 200, time.Second, 50 * time.Millisecond, 190},
		{1000, 1000, time.Minute, time.Second, 983},
		{5, 5, time.Minute, time.Second, 4},
		{1, 1, time.Second, 50 * time.Millisecond, 1},
	} {
		b, err := Limit{Name: "x", Rate: tc.rate, Per: tc.per, Burst: tc.burst}.bucket()
		if err != nil {
			t.Fatal(err)
		}
		if got := leaseHold(b); got != tc.hold.Microseconds() {
			t.Errorf("%+v: hold %dµs, want %v", tc, got, tc.hold)
		}
		if got := leaseBucket(b).burst; got != tc.leaseBurst {
			t.Errorf("%+v: lease burst %d, want %d", tc, got, tc.leaseBurst)
		}
	}
}

// TestLeaseBurstAfterIdle: the case the lease burst exists for. An idle
// key's bucket is full; a few quick requests make the edge lease tokens;
// the bucket refills while the edge holds them; a burst just before they
// expire spends both. The limit must hold in every window all the same.
func TestLeaseBurstAfterIdle(t *testing.T) {
	srv := testredis.Start(t)
	const rate, burst = 200, 200
	e := newEdges(t, 1, fmt.Sprintf("url: %q, timeout: 5s", srv.URL()), "lease", rate, burst, time.Second, "deny")
	h := e.hs[0]
	var log []time.Time
	send := func(n int) {
		for range n {
			if h.do(map[string]string{"X-User": "k"}).Code == http.StatusOK {
				log = append(log, e.clk.Now())
			}
		}
		e.settle()
	}
	for range 8 { // quick requests: the demand estimate rises, a lease follows
		send(1)
		e.clk.Add(time.Millisecond)
	}
	e.clk.Add(40 * time.Millisecond) // the bucket refills; the lease still holds
	send(3 * burst)
	if len(log) < burst*9/10 {
		t.Fatalf("allowed only %d", len(log))
	}
	if w := overLimit(log, rate, burst, time.Second); w != "" {
		t.Fatalf("over the limit: %s", w)
	}
}

// TestLeaseRedisCalls counts Redis's own calls (INFO commandstats) for
// 1,000 allowed requests of one busy key in each mode: the cost leases
// take off the hot path.
func TestLeaseRedisCalls(t *testing.T) {
	srv := testredis.Start(t)
	calls := map[string]int{}
	for _, mode := range []string{"exact", "lease"} {
		e := newEdges(t, 1, fmt.Sprintf("url: %q, timeout: 5s, key_prefix: %q", srv.URL(), mode+":"), mode, 100000, 100000, time.Second, "deny")
		before := testredis.CommandCalls(t, srv.Addr, "evalsha")
		_, codes := e.run(t, []string{"busy"}, 100*time.Millisecond, time.Millisecond, func(int, int) float64 { return 10 })
		if codes[http.StatusOK] != 1000 {
			t.Fatalf("%s: %v", mode, codes)
		}
		calls[mode] = testredis.CommandCalls(t, srv.Addr, "evalsha") - before
	}
	t.Logf("Redis calls per 1,000 allowed requests: exact %d, lease %d", calls["exact"], calls["lease"])
	if calls["exact"] != 1000 || calls["lease"]*10 > calls["exact"] {
		t.Fatalf("calls %v: want exact 1000 and lease under a tenth of it", calls)
	}
}

// TestLeaseConcurrent: many goroutines on one edge, over more keys than
// the lease table keeps (so it evicts while leases renew), with -race:
// no deadlock, and no key over its limit.
func TestLeaseConcurrent(t *testing.T) {
	srv := testredis.Start(t)
	e := newEdges(t, 1, fmt.Sprintf("url: %q, timeout: 5s", srv.URL()), "lease", 50, 50, time.Second, "deny")
	e.svcs[0].leases.max = 64
	h := e.hs[0]
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := map[string]int{}
	for g := range 8 {
		wg.Go(func() {
			for i := range 400 {
				k := fmt.Sprintf("k%d", (g*7+i)%100)
				if h.do(map[string]string{"X-User": k}).Code == http.StatusOK {
					mu.Lock()
					allowed[k]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	e.settle()
	// The clock stood still: no key may pass its burst.
	for k, n := range allowed {
		if n > 50 {
			t.Errorf("%s: %d allowed at one instant, burst 50", k, n)
		}
	}
}

// FuzzLeaseArithmetic: for any valid limit, the lease bucket keeps at
// least one token, never more than the limit's burst, and together with
// one hold's refill covers the limit's burst (which is what the
// never-over bound rests on); a lease asks for at least 1 and at most a
// share of that burst.
func FuzzLeaseArithmetic(f *testing.F) {
	f.Add(200, int64(1_000_000), 200, 3, 1000.0)
	f.Add(5, int64(60_000_000), 5, 1, 0.5)
	f.Add(1, int64(1000), 1, 50, 1e9)
	f.Fuzz(func(t *testing.T, rate int, perMicros int64, burst, edges int, demand float64) {
		l := Limit{Name: "f", Rate: rate, Per: time.Duration(perMicros) * time.Microsecond, Burst: burst}
		b, err := l.bucket()
		if err != nil || b.burst == 0 {
			return
		}
		hold := leaseHold(b)
		if hold <= 0 || hold > maxHold.Microseconds() {
			t.Fatalf("hold %dµs for per %dµs", hold, b.per)
		}
		lb := leaseBucket(b)
		refill := ceilDiv(b.rate*hold, b.per)
		if lb.burst < 1 || lb.burst > b.burst || (lb.burst > 1 && lb.burst+refill < b.burst) {
			t.Fatalf("lease burst %d for burst %d (refill in a hold %d)", lb.burst, b.burst, refill)
		}
		if lb.cap != lb.burst*lb.per || lb.rate != b.rate || lb.per != b.per {
			t.Fatalf("lease bucket %+v from %+v", lb, b)
		}
		ls := &lease{rate: demand, edges: edges}
		if math.IsNaN(demand) || demand < 0 { // never from observe
			return
		}
		n := ls.want(lb, hold)
		if n < 1 || n > max(1, lb.burst/2) {
			t.Fatalf("want %d for lease burst %d, %d edges, demand %v", n, lb.burst, edges, demand)
		}
	})
}
