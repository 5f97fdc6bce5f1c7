package ratelimit

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/causewayhq/causeway/internal/testredis"
)

// TestClusterFailoverUnderLoad: the master holding some users' buckets in
// a real Redis Cluster with a replica per master fails over while every
// user sends requests: killed (SIGKILL) and its replica promoted with
// CLUSTER FAILOVER TAKEOVER, or handed over gracefully with CLUSTER
// FAILOVER. During the gap the victim's users get what on_error says;
// afterwards their buckets are counted on the new master, carrying on
// from what the replica had (the limit holds across the failover); no
// decision is sent twice (a user's refusals never outnumber what the
// limit, its allowed requests and its failed decisions account for); and
// the goroutines are those of before the fault, but for the new master's
// Batcher.
func TestClusterFailoverUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("forms a Redis Cluster with replicas")
	}
	const (
		limit = 30
		users = 12
		step  = 5 // requests per user per phase
	)
	for _, tc := range []struct {
		onError string
		kill    bool // SIGKILL the master, then TAKEOVER; else a graceful FAILOVER
		// gap are the statuses the victim's users may get until the
		// failover is seen.
		gap map[int]bool
	}{
		{"deny", true, map[int]bool{200: true, 429: true, 503: true}},
		{"allow", true, map[int]bool{200: true, 429: true}},
		{"deny", false, map[int]bool{200: true, 429: true, 503: true}},
	} {
		name := tc.onError + "/graceful"
		if tc.kill {
			name = tc.onError + "/kill"
		}
		t.Run(name, func(t *testing.T) {
			cl := testredis.StartClusterWithReplicas(t)
			// The time-out is generous so that a healthy master never
			// misses it on a busy machine (a fresh connection's handshake
			// took over 300 ms under load); a killed master refuses
			// connections at once, so the gap does not wait for it.
			addrs := `"` + strings.Join(cl.Addrs(), `", "`) + `"`
			file := testFile(t, fmt.Sprintf(`
redis: {addrs: [%s], on_error: %s, timeout: 1s}
rate_limits:
  l: {key: "header:X-User", limit: %d, per: 1h}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}
`, addrs, tc.onError, limit))
			clk := newClock()
			vec := NewDecisionsMetric()
			s := newService(t, clk, vec, file)
			h := handlerFor(t, s, file.Routes[0], KeySources{})
			st := s.cur.Load().store
			lim := LimitFromRoutes("l", file.RateLimits["l"])

			name := func(u int) string { return fmt.Sprintf("u%d", u) }
			victim := cl.Master(t, st.limiter.Key(lim, name(0)))
			replica := cl.ReplicaOf(t, victim)
			onVictim := map[int]bool{}
			for u := range users {
				if cl.Master(t, st.limiter.Key(lim, name(u))) == victim {
					onVictim[u] = true
				}
			}

			// Each user's requests are sequential (one goroutine per
			// user and phase), so at most one of a user's decisions is in
			// flight when the master dies.
			var mu sync.Mutex
			allowed, failed := make([]int, users), make([]int, users)
			phase := func(label string, ok func(u int) map[int]bool, n int) {
				var wg sync.WaitGroup
				for u := range users {
					wg.Go(func() {
						for range n {
							code := h.do(map[string]string{"X-User": name(u)}).Code
							mu.Lock()
							switch code {
							case http.StatusOK:
								allowed[u]++
							case http.StatusServiceUnavailable:
								failed[u]++
							}
							mu.Unlock()
							if !ok(u)[code] {
								t.Errorf("%s: user %d (on the victim: %v) got %d", label, u, onVictim[u], code)
								return
							}
						}
					})
				}
				wg.Wait()
			}
			counted := func(int) map[int]bool { return map[int]bool{200: true} }
			phase("before", counted, step)
			if e := counter(t, vec, "l", DecisionError); e != 0 {
				t.Fatalf("%d decisions failed before the failover", e)
			}
			// The goroutines of a service that has talked to every master.
			ignore := goleak.IgnoreCurrent()

			gapOK := func(u int) map[int]bool {
				if onVictim[u] {
					return tc.gap
				}
				return map[int]bool{200: true, 429: true}
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				phase("during", gapOK, step)
			}()
			if tc.kill {
				victim.Stop()
				if _, err := replica.Do("CLUSTER", "FAILOVER", "TAKEOVER"); err != nil {
					t.Errorf("TAKEOVER: %v", err)
				}
			} else if _, err := replica.Do("CLUSTER", "FAILOVER"); err != nil {
				t.Errorf("FAILOVER: %v", err)
			}
			<-done
			deadline := time.Now().Add(30 * time.Second) // a hang guard
			for {
				info, err := replica.Do("INFO", "replication")
				if err == nil && strings.Contains(info, "role:master") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the replica never became master: %v %q", err, info)
				}
				time.Sleep(20 * time.Millisecond)
			}

			// Until the edge's client has the new slot map, the victim's
			// users may still see on_error; then every decision is the
			// Cluster's again.
			for round := 0; ; round++ {
				clk.Add(probeInterval)
				errs := counter(t, vec, "l", DecisionError)
				phase(fmt.Sprintf("recovering%d", round), gapOK, 1)
				if counter(t, vec, "l", DecisionError) == errs {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("decisions never went back to the Cluster")
				}
				time.Sleep(50 * time.Millisecond)
			}
			if got := cl.Master(t, st.limiter.Key(lim, name(0))); got != replica {
				t.Fatalf("u0's bucket is served by %v, want the promoted replica %s", got, replica.Addr)
			}
			evalsBefore := testredis.CommandCalls(t, replica.Addr, "evalsha")

			// Every user uses up what is left of its limit: counted in
			// the Cluster, each user's allowed requests stop at the
			// limit.
			errsBefore := counter(t, vec, "l", DecisionError)
			counted = func(int) map[int]bool { return map[int]bool{200: true, 429: true} }
			phase("after", counted, limit+step)
			if e := counter(t, vec, "l", DecisionError); e != errsBefore {
				t.Fatalf("%d decisions failed after the failover", e-errsBefore)
			}
			if testredis.CommandCalls(t, replica.Addr, "evalsha") == evalsBefore {
				t.Fatal("the promoted replica ran no decision")
			}
			for u := range users {
				most := limit
				if tc.onError == "allow" && onVictim[u] {
					most = 2 * limit // the gap's requests counted in memory
				}
				if tc.kill && onVictim[u] {
					// A decision the master ran but had not yet sent to
					// its replica when killed is lost with it: one per
					// user at most, since a user's requests are sequential
					// and the replica is sent each write as it is run.
					most++
				}
				// Each failed decision may have been counted once by the
				// master (its answer lost), never twice.
				least := limit - failed[u]
				t.Logf("user %d (victim %v): allowed %d, failed %d", u, onVictim[u], allowed[u], failed[u])
				if allowed[u] > most || allowed[u] < least {
					t.Errorf("user %d (on the victim: %v): %d allowed, %d failed; want between %d and %d allowed", u, onVictim[u], allowed[u], failed[u], least, most)
				}
			}
			// The old master's breaker is probed once more (it is past
			// its retry time): gone from the slot map, it no longer
			// makes the edge unready with on_error: deny.
			clk.Add(probeInterval)
			if err := s.Ready(); err != nil {
				t.Errorf("not ready after the failover: %v", err)
			}
			// One Batcher per master the edge has sent decisions to: the
			// three first ones, and the promoted replica (the old master's
			// stays idle until the configuration is replaced). Beyond
			// their workers, the goroutines are those of before the fault.
			batchers := 0
			st.conn.shards.Range(func(_, b any) bool {
				if b.(*breaker).batch.Load() != nil {
					batchers++
				}
				return true
			})
			if batchers != 4 {
				t.Errorf("%d Batchers, want 4 (3 masters and the promoted replica)", batchers)
			}
			// go-redis keeps one goroutine per node whose dials failed,
			// dialling the killed master once a second until it answers or
			// the client is closed (with the configuration): one, not a
			// pile-up, and the same without the failover.
			goleak.VerifyNone(t, ignore,
				goleak.IgnoreAnyFunction("github.com/causewayhq/causeway/ratelimit.(*Batcher).run"),
				goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
		})
	}
}
