package test

import (
	"fmt"
	"io"
	"net/http"
	goruntime "runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testredis"
)

// A redis-server frozen with SIGSTOP (it accepts nothing and answers
// nothing, the worst stall: no reset, no refusal) while 200 clients of the
// edge each send a request with a user of their own. Every request is
// decided within the Redis timeout (200 ms) by on_error: allow serves all
// of them and the upstream receives each one once; deny answers 503 and
// the upstream receives none. When Redis thaws, the edge counts in it
// again (a limit of 3 gives 429 on the 4th request), and no goroutine is
// left from the frozen decisions (the count returns to what it was before
// the load).
func TestRedisFrozenThroughTheEdge(t *testing.T) {
	for _, onError := range []string{"allow", "deny"} {
		t.Run(onError, func(t *testing.T) {
			rdb := testredis.Start(t)
			up := newCountingUpstream(t)
			e := startEdge(t, header+fmt.Sprintf(`redis: {url: %q, on_error: %s, timeout: 200ms}
rate_limits:
  per-user: {key: "header:X-User", limit: 3, per: 1m}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, rate_limit: per-user, upstream: u}
`, rdb.URL(), onError, up.Listener.Addr().String()))
			url := "http://" + e.Addr("http") + "/x"
			send := func(client *http.Client, user string) (int, error) {
				return getAsUser(client, url, user)
			}
			// A guard against a hang, far beyond the 200 ms Redis timeout.
			client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			if status, err := send(client, "warm"); err != nil || status != 200 {
				t.Fatalf("before the freeze: %d %v", status, err)
			}
			client.CloseIdleConnections()
			before := goruntime.NumGoroutine()
			upBefore := up.n.Load()

			rdb.Pause()
			const clients = 200
			var wg sync.WaitGroup
			var mu sync.Mutex
			statuses := map[int]int{}
			var ok atomic.Int64
			for i := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
					status, err := send(c, fmt.Sprintf("frozen-%d", i))
					if err != nil {
						status = -1
					}
					if status == 200 {
						ok.Add(1)
					}
					mu.Lock()
					statuses[status]++
					mu.Unlock()
				}()
			}
			wg.Wait()
			rdb.Resume()
			t.Logf("on_error %s, Redis frozen: statuses %v", onError, statuses)
			want := map[string]int{"allow": 200, "deny": 503}[onError]
			if statuses[want] != clients {
				t.Fatalf("statuses %v while Redis was frozen, want %d x %d", statuses, clients, want)
			}
			if got := up.n.Load() - upBefore; got != ok.Load() {
				t.Fatalf("the upstream received %d requests, %d were answered 200", got, ok.Load())
			}
			// Thawed: decisions are Redis's again once the edge's probe
			// reaches it.
			if !waitFor(10*time.Second, func() bool {
				n, err := rdb.Do("EXISTS", "nothing")
				return err == nil && n == "0"
			}) {
				t.Fatal("Redis did not answer after SIGCONT")
			}
			limited := waitFor(10*time.Second, func() bool {
				user := fmt.Sprintf("after-%d", time.Now().UnixNano())
				for i := 1; i <= 3; i++ {
					if s, err := send(client, user); err != nil || s != 200 {
						return false
					}
				}
				s, err := send(client, user)
				return err == nil && s == 429
			})
			if !limited {
				t.Fatal("a limit of 3 did not give 429 on the 4th request after Redis thawed")
			}
			client.CloseIdleConnections()
			// The edge keeps idle upstream connections from the burst in
			// its pool (the upstream, a net/http server, holds a goroutine
			// for each): a pool, not a leak, so they are closed first.
			up.CloseClientConnections()
			// Nothing is left of the 200 frozen decisions: a bounded
			// number of the edge's own (Redis connections re-made) may
			// differ, never one per request.
			if !waitFor(20*time.Second, func() bool { return goruntime.NumGoroutine() <= before+20 }) {
				buf := make([]byte, 4<<20)
				buf = buf[:goruntime.Stack(buf, true)]
				t.Fatalf("goroutines %d after the freeze, %d before:\n%s", goruntime.NumGoroutine(), before, buf)
			}
			t.Logf("goroutines %d before, %d after", before, goruntime.NumGoroutine())
		})
	}
}

// getAsUser sends GET url with X-User: user (the rate limits' key in
// these tests), reads the answer whole and returns its status.
func getAsUser(client *http.Client, url, user string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-User", user)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
