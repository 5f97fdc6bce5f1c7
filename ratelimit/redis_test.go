package ratelimit

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/redisclient"
	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/causewayhq/causeway/routes"
)

func TestNewRedisBadConfig(t *testing.T) {
	srv := testredis.Start(t)
	tests := []struct {
		desc string
		c    Scripter
		opts RedisOptions
		want string
	}{
		{"no client", nil, RedisOptions{}, "needs a client"},
		{"negative timeout", redisClient(t, srv), RedisOptions{Timeout: -time.Second}, "must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := NewRedis(tc.c, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestRedisKeys: one hash-tagged key per bucket, expiring when the bucket
// is full again, and untouched by refusals.
func TestRedisKeys(t *testing.T) {
	srv := testredis.Start(t)
	clk := newClock()
	r, err := NewRedis(redisClient(t, srv), RedisOptions{Prefix: "cw:", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l := Limit{Name: "per-ip", Rate: 2, Per: 10 * time.Second, Burst: 2}
	key := r.Key(l, "10.0.0.1")
	if key != "cw:rl:{per-ip|10.0.0.1}:2/10000000/2" {
		t.Fatalf("key %q", key)
	}
	d, err := r.Allow(ctx, "10.0.0.1", l)
	if err != nil || !d.Allowed {
		t.Fatalf("%+v %v", d, err)
	}
	pttl, err := srv.Do("PTTL", key)
	if err != nil {
		t.Fatal(err)
	}
	ms, _ := strconv.Atoi(pttl)
	// Expiry is ResetAfter (5s here) plus the 1s margin for a caller's
	// clock; Redis's own clock has run a little since.
	if limit := int(d.ResetAfter.Milliseconds()) + 1000; ms <= limit-1000 || ms > limit {
		t.Fatalf("PTTL %dms, want in (%v, %v]", ms, d.ResetAfter, d.ResetAfter+time.Second)
	}
	if _, err := r.Allow(ctx, "10.0.0.1", l); err != nil {
		t.Fatal(err)
	}
	before, _ := srv.Do("HGETALL", key)
	clk.Add(time.Second)
	if d, _ := r.Allow(ctx, "10.0.0.1", l); d.Allowed {
		t.Fatalf("third request allowed: %+v", d)
	}
	if after, _ := srv.Do("HGETALL", key); after != before {
		t.Fatalf("a refusal wrote to Redis: %q -> %q", before, after)
	}
	if n, _ := srv.Do("DBSIZE"); n != "1" {
		t.Fatalf("DBSIZE %s, want 1", n)
	}
	// Once the bucket is full again the key is gone: Redis holds no idle clients.
	if _, err := srv.Do("PEXPIRE", key, "1"); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if n, _ := srv.Do("EXISTS", key); n == "0" {
			break
		}
		if i > 1000 {
			t.Fatal("key never expired")
		}
		time.Sleep(time.Millisecond)
	}
	if d, _ := r.Allow(ctx, "10.0.0.1", l); !d.Allowed || d.Remaining != 1 {
		t.Fatalf("after expiry: %+v, want a full burst", d)
	}
}

// TestRedisReloadsScript: after SCRIPT FLUSH (a restarted or new master),
// the next decision loads the script once and carries on.
func TestRedisReloadsScript(t *testing.T) {
	srv := testredis.Start(t)
	r, err := NewRedis(redisClient(t, srv), RedisOptions{Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l := Limit{Name: "l", Rate: 100, Per: time.Second}
	for round := 0; round < 2; round++ {
		if _, err := srv.Do("SCRIPT", "FLUSH"); err != nil {
			t.Fatal(err)
		}
		loads := testredis.CommandCalls(t, srv.Addr, "script|load")
		for i := 0; i < 10; i++ {
			if d, err := r.Allow(ctx, "k", l); err != nil || !d.Allowed {
				t.Fatalf("round %d request %d: %+v %v", round, i, d, err)
			}
		}
		if got := testredis.CommandCalls(t, srv.Addr, "script|load") - loads; got != 1 {
			t.Fatalf("round %d: %d SCRIPT LOADs for 10 decisions, want 1", round, got)
		}
	}
	if n := testredis.CommandCalls(t, srv.Addr, "eval"); n != 0 {
		t.Fatalf("%d EVALs: the script text must not travel with decisions", n)
	}
}

// TestRedisTime: without an injected clock the script reads Redis's TIME,
// the clock all edges share.
func TestRedisTime(t *testing.T) {
	srv := testredis.Start(t)
	r, err := NewRedis(redisClient(t, srv), RedisOptions{Prefix: "x:"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Refill is one per hour: nothing refills while the test runs.
	l := Limit{Name: "l", Rate: 1, Per: time.Hour, Burst: 3}
	for i := 0; i < 3; i++ {
		d, err := r.Allow(ctx, "k", l)
		if err != nil || !d.Allowed {
			t.Fatalf("request %d: %+v %v", i, d, err)
		}
		// With Redis's clock the expiry has no margin: exactly ResetAfter.
		pttl, _ := srv.Do("PTTL", r.Key(l, "k"))
		if ms, _ := strconv.Atoi(pttl); ms <= 0 || int64(ms) > ceilDiv(d.ResetAfter.Microseconds(), 1000) {
			t.Fatalf("PTTL %s, want in (0, %v]", pttl, d.ResetAfter)
		}
	}
	if d, _ := r.Allow(ctx, "k", l); d.Allowed {
		t.Fatal("fourth request allowed")
	}
	stamp, err := srv.Do("HGET", r.Key(l, "k"), "t")
	if err != nil {
		t.Fatal(err)
	}
	now, err := srv.Do("TIME")
	if err != nil {
		t.Fatal(err)
	}
	secs, _ := strconv.ParseInt(strings.Split(now, "\n")[0], 10, 64)
	us, _ := strconv.ParseInt(stamp, 10, 64)
	if diff := secs - us/1_000_000; diff < 0 || diff > 60 {
		t.Fatalf("stored stamp %s is not Redis's time (TIME %s)", stamp, now)
	}
}

// TestRedisTimeout: a frozen Redis turns into an error within the
// limiter's time-out, not a stalled request.
func TestRedisTimeout(t *testing.T) {
	srv := testredis.Start(t)
	c, err := redisclient.New(&routes.Redis{URL: srv.URL(), Timeout: routes.Duration(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := NewRedis(c, RedisOptions{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	l := Limit{Name: "l", Rate: 1, Per: time.Second}
	if _, err := r.Allow(context.Background(), "k", l); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	defer srv.Resume()
	// The client's own time-out is a minute: only RedisOptions.Timeout can
	// end this call while the test is running.
	_, err = r.Allow(context.Background(), "k", l)
	if err == nil || !strings.Contains(err.Error(), `ratelimit "l": redis:`) {
		t.Fatalf("err = %v, want a wrapped time-out", err)
	}
}

// TestRedisCluster: against a Cluster of three masters started by the
// test, buckets spread over the masters and each stays exact.
func TestRedisCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("forming a cluster takes seconds")
	}
	cl := testredis.StartCluster(t)
	c, err := redisclient.New(&routes.Redis{Addrs: cl.Addrs()[:1], Timeout: routes.Duration(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	clk := newClock()
	r, err := NewRedis(c, RedisOptions{Prefix: "cw:", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	l := Limit{Name: "per-user", Rate: 10, Per: time.Second, Burst: 5}
	owners := map[string]bool{}
	for i := 0; i < 12; i++ {
		key := fmt.Sprintf("user-%d", i)
		kclk := newClock()
		kr, _ := NewRedis(c, RedisOptions{Prefix: "cw:", Now: kclk.Now})
		if got := greedy(t, kr, kclk, key, l, 2*time.Second); got != 5+20 {
			t.Fatalf("%s: allowed %d in 2s, want exactly 25", key, got)
		}
		for _, n := range cl.Nodes {
			if v, err := n.Do("EXISTS", r.Key(l, key)); err == nil && v == "1" {
				owners[n.Addr] = true
			}
		}
	}
	if len(owners) < 2 {
		t.Fatalf("buckets landed on %d master(s); want them spread", len(owners))
	}
	// The script is loaded on every master that needed it, once.
	for _, n := range cl.Nodes {
		if loads := testredis.CommandCalls(t, n.Addr, "script|load"); loads > 1 {
			t.Fatalf("%s: %d SCRIPT LOADs, want at most 1", n.Addr, loads)
		}
	}
}

// TestThreeEdgesShareOneLimit: three edges, each with its own Service and
// Redis connections, hammer one key concurrently; together they get the
// one limit, within 1 %.
func TestThreeEdgesShareOneLimit(t *testing.T) {
	srv := testredis.Start(t)
	clk := newClock()
	file := testFile(t, fmt.Sprintf(`
redis: {url: "%s", timeout: 2s}
rate_limits:
  shared: {key: "header:X-Tenant", limit: 100, per: 1s, burst: 100}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: shared}
`, srv.URL()))
	const (
		edges      = 3
		perEdge    = 3000
		step       = time.Millisecond // one request per ms in all: 10× the limit
		totalSteps = edges * perEdge
	)
	var handlers []httpHandler
	for i := 0; i < edges; i++ {
		s := New(context.Background(), Options{Now: clk.Now, RedisNow: clk.Now})
		t.Cleanup(func() { s.Close() })
		if err := s.Configure(context.Background(), file); err != nil {
			t.Fatal(err)
		}
		handlers = append(handlers, handlerFor(t, s, file.Routes[0], KeySources{}))
	}
	// The test's clock is not Redis's: a bucket idle for longer real time
	// than its fake reset plus the margin would expire early. A limit whose
	// reset is a second keeps that far from happening on a busy machine.
	var mu sync.Mutex
	allowed := 0
	var wg sync.WaitGroup
	for _, h := range handlers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := 0; i < perEdge; i++ {
				clk.Add(step)
				if code := h.do(map[string]string{"X-Tenant": "acme"}).Code; code == 200 {
					n++
				}
			}
			mu.Lock()
			allowed += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	want := 100 + int(time.Duration(totalSteps)*step/(10*time.Millisecond)) // burst + 100/s
	if diff := allowed - want; diff*100 > want || -diff*100 > want {
		t.Fatalf("three edges allowed %d together, want %d within 1%%", allowed, want)
	}
	t.Logf("three edges allowed %d, limit allows %d (%.2f%%)", allowed, want, 100*float64(allowed-want)/float64(want))
}

// TestTopologies: the Service counts in Redis reached as a single node
// (url), a Cluster (addrs) and through Sentinel (addrs + master_name),
// each started by the test.
func TestTopologies(t *testing.T) {
	single := testredis.Start(t)
	master := testredis.Start(t)
	sentinel := testredis.StartSentinel(t, master, "main")
	sections := map[string]string{
		"single":   fmt.Sprintf("redis: {url: %q, timeout: 1s}\n", single.URL()),
		"sentinel": fmt.Sprintf("redis: {addrs: [%q], master_name: main, timeout: 1s}\n", sentinel.Addr),
	}
	if !testing.Short() {
		cl := testredis.StartCluster(t)
		sections["cluster"] = fmt.Sprintf("redis: {addrs: [%q, %q], timeout: 1s}\n", cl.Addrs()[0], cl.Addrs()[1])
	}
	for _, name := range []string{"single", "sentinel", "cluster"} {
		section, ok := sections[name]
		if !ok {
			continue
		}
		t.Run(name, func(t *testing.T) {
			file := testFile(t, section+`
rate_limits:
  l: {key: "header:X-User", limit: 4, per: 1h}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}
`)
			vec := NewDecisionsMetric()
			s := newService(t, newClock(), vec, file)
			if err := s.Ready(); err != nil {
				t.Fatal(err)
			}
			h := handlerFor(t, s, file.Routes[0], KeySources{})
			for u := 0; u < 5; u++ {
				user := map[string]string{"X-User": fmt.Sprintf("user-%d", u)}
				for i := 0; i < 5; i++ {
					want := 200
					if i == 4 {
						want = 429
					}
					if w := h.do(user); w.Code != want {
						t.Fatalf("user %d request %d: %d, want %d", u, i, w.Code, want)
					}
				}
			}
			if e := counter(t, vec, "l", DecisionError); e != 0 {
				t.Fatalf("%d decisions failed in Redis", e)
			}
		})
	}
}

// TestEdgesDisagreeOnALimit: during a rolling reload the edges sharing a
// Redis run different numbers (or modes) for one limit. Each edge's state
// must not reset the other's: a client alternating between them (what a
// round-robin load balancer does by itself) gets at most each edge's own
// burst, never an unlimited stream of fresh ones.
func TestEdgesDisagreeOnALimit(t *testing.T) {
	srv := testredis.Start(t)
	tests := []struct {
		desc   string
		first  string // the limit's definition on the edge not yet reloaded
		second string // and on the reloaded one
		most   int    // both bursts: each edge's numbers counted on their own
	}{
		{"limit changed", "{key: client_ip, limit: 10, per: 1h}", "{key: client_ip, limit: 20, per: 1h}", 30},
		{"burst changed", "{key: client_ip, limit: 10, per: 1h, burst: 5}", "{key: client_ip, limit: 10, per: 1h}", 15},
		{"mode changed", "{key: client_ip, limit: 10, per: 1h}", "{key: client_ip, limit: 10, per: 1h, mode: lease}", 20},
	}
	for i, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			clk := newClock() // never moves: nothing refills
			var edges []httpHandler
			for _, def := range []string{tc.first, tc.second} {
				file := testFile(t, fmt.Sprintf(`
redis: {url: %q, timeout: 2s, key_prefix: "dis%d:"}
rate_limits: {l: %s}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}
`, srv.URL(), i, def))
				s := newService(t, clk, nil, file)
				edges = append(edges, handlerFor(t, s, file.Routes[0], KeySources{}))
			}
			allowed := 0
			for n := range 200 {
				if edges[n%2].do(nil).Code == http.StatusOK {
					allowed++
				}
			}
			if allowed > tc.most {
				t.Fatalf("one client alternating between the edges was allowed %d of 200, want at most %d", allowed, tc.most)
			}
		})
	}
}
