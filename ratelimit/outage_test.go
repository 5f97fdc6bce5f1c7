package ratelimit

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/redisclient"
	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/redis/go-redis/v9"
)

// TestRedisKilled: Redis is killed mid-test and restarted; on_error
// decides what happens meanwhile, and decisions go back to Redis when it
// returns.
func TestRedisKilled(t *testing.T) {
	tests := []struct {
		onError string
		// outage lists the status codes of requests while Redis is down.
		outage []int
	}{
		// allow: counted in memory from a fresh bucket of 3, then refused.
		{"allow", []int{200, 200, 200, 429, 429}},
		// deny: refused with 503 without counting.
		{"deny", []int{503, 503, 503, 503, 503}},
	}
	for _, tc := range tests {
		t.Run(tc.onError, func(t *testing.T) {
			srv := testredis.Start(t)
			file := testFile(t, fmt.Sprintf(`
redis: {url: %q, on_error: %s, timeout: 500ms}
rate_limits:
  l: {key: "header:X-User", limit: 3, per: 1h}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}
`, srv.URL(), tc.onError))
			clk := newClock()
			vec := NewDecisionsMetric()
			s := newService(t, clk, vec, file)
			h := handlerFor(t, s, file.Routes[0], KeySources{})
			user := map[string]string{"X-User": "ann"}
			if w := h.do(user); w.Code != 200 || w.Header().Get(HeaderRemaining) != "2" {
				t.Fatalf("before the outage: %d remaining=%s", w.Code, w.Header().Get(HeaderRemaining))
			}
			if err := s.Ready(); err != nil {
				t.Fatalf("Ready with Redis up: %v", err)
			}

			srv.Stop()
			for i, want := range tc.outage {
				w := h.do(user)
				if w.Code != want {
					t.Fatalf("outage request %d: %d, want %d", i, w.Code, want)
				}
				if want == 503 && (w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), `"status":503`)) {
					t.Fatalf("503 without Retry-After or JSON body: %v %s", w.Header(), w.Body)
				}
			}
			if got := counter(t, vec, "l", DecisionError); got != len(tc.outage) {
				t.Fatalf("error decisions %d, want %d", got, len(tc.outage))
			}
			// Only what on_error cannot absorb makes the edge unready: allow
			// keeps deciding (in memory), deny refuses everything.
			err := s.Ready()
			if tc.onError == "allow" && err != nil {
				t.Fatalf("Ready during the outage with on_error: allow: %v", err)
			}
			if tc.onError == "deny" && (err == nil || !strings.Contains(err.Error(), "redis unreachable")) {
				t.Fatalf("Ready during the outage with on_error: deny: %v", err)
			}
			if st := s.Redis(); !st.Configured || st.Reachable || st.OnError != tc.onError || st.LastError == "" {
				t.Fatalf("Redis() during the outage: %+v", st)
			}

			srv.Restart()
			// Until probeInterval has passed nobody tries Redis again.
			before := counter(t, vec, "l", DecisionError)
			h.do(user)
			if counter(t, vec, "l", DecisionError) != before+1 {
				t.Fatal("Redis was tried again before probeInterval")
			}
			if n := testredis.CommandCalls(t, srv.Addr, "evalsha"); n != 0 {
				t.Fatalf("%d EVALSHA before probeInterval", n)
			}
			// After probeInterval one request probes Redis. On a loaded machine
			// the first probe may still fail (a stale pooled connection, the
			// script loaded again): each failure waits another interval.
			var w *httptest.ResponseRecorder
			for probes := 1; ; probes++ {
				clk.Add(probeInterval)
				errs := counter(t, vec, "l", DecisionError)
				w = h.do(user)
				if counter(t, vec, "l", DecisionError) == errs {
					t.Logf("back to Redis after %d probe(s)", probes)
					break
				}
				if probes == 20 {
					t.Fatal("decisions never went back to Redis")
				}
			}
			// Redis restarted empty (no persistence): a fresh bucket of 3.
			if w.Code != 200 {
				t.Fatalf("after recovery: %d remaining=%s, want 200 counted in Redis", w.Code, w.Header().Get(HeaderRemaining))
			}
			if n := testredis.CommandCalls(t, srv.Addr, "evalsha"); n == 0 {
				t.Fatal("the decision after recovery did not go to Redis")
			}
			if err := s.Ready(); err != nil {
				t.Fatalf("Ready after recovery: %v", err)
			}
			if st := s.Redis(); !st.Reachable || st.LastError != "" {
				t.Fatalf("Redis() after recovery: %+v", st)
			}
		})
	}
}

// TestRedisFrozen: a Redis that accepts connections but never answers
// costs one time-out, then decisions skip it until the probe.
func TestRedisFrozen(t *testing.T) {
	srv := testredis.Start(t)
	file := testFile(t, fmt.Sprintf(`
redis: {url: %q, on_error: allow, timeout: 100ms}
rate_limits:
  l: {key: route, limit: 100, per: 1s}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}
`, srv.URL()))
	clk := newClock()
	vec := NewDecisionsMetric()
	s := newService(t, clk, vec, file)
	h := handlerFor(t, s, file.Routes[0], KeySources{})
	if w := h.do(nil); w.Code != 200 {
		t.Fatal(w.Code)
	}
	srv.Pause()
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	for i := 0; i < 20; i++ {
		if w := h.do(nil); w.Code != 200 {
			t.Fatalf("request %d during the stall: %d", i, w.Code)
		}
	}
	if got := counter(t, vec, "l", DecisionError); got != 20 {
		t.Fatalf("error decisions %d, want 20", got)
	}
	// on_error: allow absorbs the stall: shown, not unready.
	if st := s.Redis(); st.Reachable || st.LastError == "" {
		t.Fatalf("Redis() during the stall: %+v", st)
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready during the stall with on_error: allow: %v", err)
	}
	srv.Resume()
	resumed = true
	// Redis is not tried again before probeInterval...
	calls := testredis.CommandCalls(t, srv.Addr, "evalsha")
	h.do(nil)
	if got := testredis.CommandCalls(t, srv.Addr, "evalsha"); got != calls {
		t.Fatalf("Redis tried before probeInterval (%d -> %d EVALSHA)", calls, got)
	}
	// ...and then by one request, which finds it answering again (a loaded
	// machine may need another interval).
	for probes := 1; ; probes++ {
		clk.Add(probeInterval)
		errs := counter(t, vec, "l", DecisionError)
		h.do(nil)
		if counter(t, vec, "l", DecisionError) == errs {
			break
		}
		if probes == 20 {
			t.Fatal("decisions never went back to Redis")
		}
	}
	if got := testredis.CommandCalls(t, srv.Addr, "evalsha"); got <= calls {
		t.Fatalf("after the probe interval no decision went to Redis (%d -> %d EVALSHA)", calls, got)
	}
	if err := s.Ready(); err != nil {
		t.Fatal(err)
	}
}

// TestHotKeyFlood measures what 10,000 requests from one client far over
// its limit cost in Redis round trips: refusals are remembered locally
// until their retry time, so the flood costs about one call per allowed
// request, not one per request.
func TestHotKeyFlood(t *testing.T) {
	tests := []struct {
		desc string
		step time.Duration // clock advance per request
		// want is the exact number of EVALSHA calls.
		wantAllowed, wantCalls int
	}{
		// A frozen clock: 10 allowed, 1 refusal from Redis, 9,989 from memory.
		{"burst then flood", 0, 10, 11},
		// 1ms apart for 10s: 10 + 10s × 10/min = 11 allowed; each refusal
		// from Redis is remembered until the next allowed moment.
		{"flood over ten seconds", time.Millisecond, 11, 13},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			srv := testredis.Start(t)
			file := testFile(t, fmt.Sprintf(`
redis: {url: %q, timeout: 1s}
rate_limits:
  l: {key: client_ip, limit: 10, per: 1m}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}
`, srv.URL()))
			clk := newClock()
			s := newService(t, clk, nil, file)
			h := handlerFor(t, s, file.Routes[0], KeySources{})
			before := testredis.CommandCalls(t, srv.Addr, "evalsha")
			allowed := 0
			for i := 0; i < 10000; i++ {
				clk.Add(tc.step)
				if h.do(nil).Code == 200 {
					allowed++
				}
			}
			calls := testredis.CommandCalls(t, srv.Addr, "evalsha") - before
			t.Logf("10,000 requests from one key: %d allowed, %d Redis calls", allowed, calls)
			if allowed != tc.wantAllowed || calls != tc.wantCalls {
				t.Fatalf("allowed %d with %d Redis calls, want %d and %d", allowed, calls, tc.wantAllowed, tc.wantCalls)
			}
		})
	}
}

// TestCancelledRequestIsNotAnOutage: a client that goes away mid-decision
// must not mark Redis down.
func TestCancelledRequestIsNotAnOutage(t *testing.T) {
	srv := testredis.Start(t)
	file := testFile(t, fmt.Sprintf(`
redis: {url: %q, on_error: deny}
rate_limits:
  l: {key: route, limit: 100, per: 1s}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}
`, srv.URL()))
	s := newService(t, newClock(), nil, file)
	snap := s.cur.Load()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rl := &routeLimit{limit: LimitFromRoutes("l", file.RateLimits["l"])}
	b, _ := rl.limit.bucket()
	rl.sig = b.signature()
	if _, err := s.decide(ctx, snap, rl, "k"); err == nil {
		t.Fatal("a cancelled decision succeeded")
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("a cancelled request marked Redis down: %v", err)
	}
}

// TestBrokenBucket: a bucket key Redis refuses (another program wrote a
// string there) gets on_error for that key only; Redis stays in use for
// everybody else and stays ready.
func TestBrokenBucket(t *testing.T) {
	srv := testredis.Start(t)
	file := testFile(t, fmt.Sprintf(`
redis: {url: %q, on_error: deny}
rate_limits:
  l: {key: "header:X-User", limit: 5, per: 1m}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}
`, srv.URL()))
	vec := NewDecisionsMetric()
	s := newService(t, newClock(), vec, file)
	h := handlerFor(t, s, file.Routes[0], KeySources{})
	if _, err := srv.Do("SET", "causeway:rl:{l|mallory}:5/60000000/5", "not a hash"); err != nil {
		t.Fatal(err)
	}
	if w := h.do(map[string]string{"X-User": "mallory"}); w.Code != 503 {
		t.Fatalf("broken bucket with on_error deny: %d, want 503", w.Code)
	}
	if w := h.do(map[string]string{"X-User": "ann"}); w.Code != 200 {
		t.Fatalf("another client after a broken bucket: %d, want 200 from Redis", w.Code)
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("one broken key made Redis unready: %v", err)
	}
	if got := counter(t, vec, "l", DecisionError); got != 1 {
		t.Fatalf("error decisions %d, want 1", got)
	}
}

// TestClusterMasterKilledMidRun: one master of a real 3-master Cluster is
// killed while concurrent clients send requests, then started again. No
// request panics or gets a status its on_error does not allow, no client
// is allowed more than its limit while Redis counts, nor more than its
// limit again while on_error: allow counts in memory, and decisions go
// back to the Cluster once the master answers.
func TestClusterMasterKilledMidRun(t *testing.T) {
	if testing.Short() {
		t.Skip("forms a Redis Cluster")
	}
	const (
		limit   = 20
		users   = 12 // spread over the three masters' slots
		workers = 8
		each    = 60 // requests per worker per phase: 2× the limits in all
	)
	tests := []struct {
		onError string
		outage  map[int]bool // statuses allowed while the master is down
	}{
		{"allow", map[int]bool{200: true, 429: true}},
		{"deny", map[int]bool{200: true, 429: true, 503: true}},
	}
	for _, tc := range tests {
		t.Run(tc.onError, func(t *testing.T) {
			cl := testredis.StartCluster(t)
			file := testFile(t, fmt.Sprintf(`
redis: {addrs: [%q, %q, %q], on_error: %s, timeout: 300ms}
rate_limits:
  l: {key: "header:X-User", limit: %d, per: 1h}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}
`, cl.Addrs()[0], cl.Addrs()[1], cl.Addrs()[2], tc.onError, limit))
			clk := newClock()
			vec := NewDecisionsMetric()
			s := newService(t, clk, vec, file)
			h := handlerFor(t, s, file.Routes[0], KeySources{})
			// phase sends each worker's requests over every user of the
			// phase (users of their own, so the edge's memory of refusals
			// does not answer for Redis) and returns how many of each
			// user's were allowed, failing on a status not in ok.
			phase := func(name string, ok map[int]bool) [users]int {
				var mu sync.Mutex
				var allowed [users]int
				var wg sync.WaitGroup
				for w := range workers {
					wg.Go(func() {
						for i := range each {
							u := (w + i) % users
							code := h.do(map[string]string{"X-User": fmt.Sprintf("%s-%d", name, u)}).Code
							if !ok[code] {
								t.Errorf("%s: user %d got %d", name, u, code)
								return
							}
							if code == http.StatusOK {
								mu.Lock()
								allowed[u]++
								mu.Unlock()
							}
						}
					})
				}
				wg.Wait()
				return allowed
			}
			counted := map[int]bool{200: true, 429: true}
			before := phase("before", counted)
			if e := counter(t, vec, "l", DecisionError); e != 0 {
				t.Fatalf("%d decisions failed with every master up", e)
			}

			cl.Nodes[0].Stop()
			during := phase("down", tc.outage)
			if counter(t, vec, "l", DecisionError) == 0 {
				t.Fatal("no decision failed with a master down")
			}
			for u := range users {
				if before[u] > limit {
					t.Fatalf("user %d: %d allowed by the Cluster, limit %d", u, before[u], limit)
				}
				// deny: only the Cluster counts. allow: a key of the dead
				// master is counted in memory from a fresh bucket; one of
				// a live master stays in the Cluster unless a cluster
				// that marked the master down refuses it too
				// (docs/ratelimit.md, "Outages"): each store within the
				// limit.
				most := limit
				if tc.onError == "allow" {
					most = 2 * limit
				}
				if during[u] > most {
					t.Fatalf("user %d: %d allowed while a master was down, want at most %d", u, during[u], most)
				}
			}

			cl.Nodes[0].Restart()
			deadline := time.Now().Add(30 * time.Second)
			rounds := 0
			for {
				clk.Add(probeInterval)
				errs := counter(t, vec, "l", DecisionError)
				rounds++
				phase(fmt.Sprintf("recovering%d", rounds), tc.outage)
				if counter(t, vec, "l", DecisionError) == errs {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("decisions never went back to the Cluster")
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err := s.Ready(); err != nil {
				t.Fatalf("Ready after the master returned: %v", err)
			}
		})
	}
}

// TestClusterMasterDownScope kills one master of a real Cluster before the
// edge's first decision: users whose buckets live on the other masters keep
// their exact limits (every one of their decisions is still made by the
// Cluster), and only users on the dead master get on_error. Once the master
// is back, its users are counted in the Cluster again.
//
// The time-out is generous on purpose: a healthy master must never miss it,
// even on a machine busy with other work (a healthy master that really
// misses it is treated as down, as designed). With 300 ms, under two
// race-built test binaries, a new connection's handshake to a healthy
// master took 330 ms in one run of four. It is not longer because the dead
// master's first decisions spend all of it (go-redis dials a refused
// address five times 100 ms apart, and retries the command), and the
// outage must be over before the Cluster marks the master failed
// (cluster-node-timeout 5 s) and refuses every key: with 5 s it lasted up
// to 5.1 s.
func TestClusterMasterDownScope(t *testing.T) {
	if testing.Short() {
		t.Skip("forms a Redis Cluster")
	}
	const (
		limit   = 10
		perUser = 2 * limit
		each    = 4 // users per master
		workers = 8
	)
	tests := []struct {
		onError string
		// deadOK are the statuses users on the dead master may get;
		// deadAllowed how many of each one's requests pass.
		deadOK      map[int]bool
		deadAllowed int
	}{
		// allow: counted in this edge's memory, with the same limit.
		{"allow", map[int]bool{200: true, 429: true}, limit},
		// deny: refused, never counted.
		{"deny", map[int]bool{503: true}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.onError, func(t *testing.T) {
			cl := testredis.StartCluster(t)
			file := testFile(t, fmt.Sprintf(`
redis: {addrs: [%q, %q, %q], on_error: %s, timeout: 2s}
rate_limits:
  l: {key: "header:X-User", limit: %d, per: 1h}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}
`, cl.Addrs()[0], cl.Addrs()[1], cl.Addrs()[2], tc.onError, limit))
			clk := newClock()
			vec := NewDecisionsMetric()
			s := newService(t, clk, vec, file)
			h := handlerFor(t, s, file.Routes[0], KeySources{})
			st := s.cur.Load().store
			lim := LimitFromRoutes("l", file.RateLimits["l"])

			// Users by the master their bucket lives on, from a Cluster
			// client's slot map.
			rc, err := redisclient.New(file.Redis)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			slots := rc.(*redis.ClusterClient)
			dead := cl.Nodes[0].Addr
			// back are more users on the dead master, first seen after
			// its restart: no memory of theirs can answer for the Cluster.
			byMaster := map[string][]string{}
			var back []string
			for i := 0; len(byMaster) < 3 || minLen(byMaster) < each || len(back) < each; i++ {
				if i > 1000 {
					t.Fatalf("users by master after 1000 names: %v", byMaster)
				}
				u := fmt.Sprintf("u%d", i)
				node, err := slots.MasterForKey(context.Background(), st.limiter.Key(lim, u))
				if err != nil {
					t.Fatal(err)
				}
				switch a := node.Options().Addr; {
				case len(byMaster[a]) < each:
					byMaster[a] = append(byMaster[a], u)
				case a == dead && len(back) < each:
					back = append(back, u)
				}
			}
			if len(byMaster[dead]) != each {
				t.Fatalf("no users on %s: %v", dead, byMaster)
			}

			onDead := map[string]bool{}
			for _, u := range byMaster[dead] {
				onDead[u] = true
			}
			cl.Nodes[0].Stop()
			start := time.Now()
			var (
				mu      sync.Mutex
				allowed = map[string]int{}
				wg      sync.WaitGroup
				work    = make(chan string)
			)
			for range workers {
				wg.Go(func() {
					for u := range work {
						code := h.do(map[string]string{"X-User": u}).Code
						mu.Lock()
						if code == http.StatusOK {
							allowed[u]++
						}
						ok := map[int]bool{200: true, 429: true}
						if onDead[u] {
							ok = tc.deadOK
						}
						if !ok[code] {
							t.Errorf("user %s got %d", u, code)
						}
						mu.Unlock()
					}
				})
			}
			for range perUser {
				for _, users := range byMaster {
					for _, u := range users {
						work <- u
					}
				}
			}
			close(work)
			wg.Wait()
			for a, users := range byMaster {
				for _, u := range users {
					want := limit
					if a == dead {
						want = tc.deadAllowed
					}
					if got := allowed[u]; got != want {
						t.Errorf("user %s (master %s, dead %s): %d of %d allowed, want %d", u, a, dead, got, perUser, want)
					}
				}
			}
			t.Logf("%d requests of %d users in %s with %s down", perUser*each*len(byMaster), each*len(byMaster), time.Since(start), dead)
			if got, want := counter(t, vec, "l", DecisionError), each*perUser; got != want {
				t.Errorf("%d decisions went to on_error, want %d: those of the %d users on the dead master only", got, want, each)
			}
			if st := s.Redis(); st.Reachable || !strings.Contains(st.LastError, dead) {
				t.Errorf("status with a master down: %+v, want unreachable naming %s", st, dead)
			}

			// The master returns: after the probe interval its users are
			// decided by the Cluster again.
			cl.Nodes[0].Restart()
			deadline := time.Now().Add(30 * time.Second)
			for {
				clk.Add(probeInterval)
				errs := counter(t, vec, "l", DecisionError)
				for _, u := range back {
					h.do(map[string]string{"X-User": u})
				}
				if counter(t, vec, "l", DecisionError) == errs {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("decisions for the restarted master's users never went back to the Cluster")
				}
				time.Sleep(100 * time.Millisecond)
			}
			if st := s.Redis(); !st.Reachable {
				t.Errorf("status after the master returned: %+v", st)
			}
		})
	}
}

func minLen(m map[string][]string) int {
	n := -1
	for _, v := range m {
		if n < 0 || len(v) < n {
			n = len(v)
		}
	}
	return n
}
