package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/redisclient"
	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/causewayhq/causeway/routes"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestNewBatcherBadConfig(t *testing.T) {
	client := redisClient(t, testredis.Start(t))
	tests := []struct {
		desc   string
		client BatchClient
		opts   BatchOptions
		want   string
	}{
		{"no client", nil, BatchOptions{}, "needs a client"},
		{"negative workers", client, BatchOptions{Workers: -1}, "workers must not be negative"},
		{"negative max batch", client, BatchOptions{MaxBatch: -1}, "max batch must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			b, err := NewBatcher(tc.client, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				if b != nil {
					b.Close()
				}
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func newBatcher(t testing.TB, client BatchClient, opts BatchOptions) *Batcher {
	t.Helper()
	b, err := NewBatcher(client, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func batchedRedis(t testing.TB, b *Batcher, clk *clock, prefix string) *Redis {
	t.Helper()
	opts := RedisOptions{Prefix: prefix, Batcher: b}
	if clk != nil {
		opts.Now = clk.Now
	}
	// The limiter's own client is not used when it has a Batcher.
	r, err := NewRedis(b.client, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// gatedClient is a real client that holds the lone EVALSHA of one bucket
// key (after Redis has run it) until the test lets it go. With one round
// trip allowed (Workers: 1), that makes "a round trip is in flight while
// others queue" happen on purpose instead of by chance, so the batch sent
// next is known exactly.
type gatedClient struct {
	BatchClient
	key     string
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func newGatedClient(c BatchClient, key string) *gatedClient {
	return &gatedClient{BatchClient: c, key: key, entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gatedClient) Process(ctx context.Context, cmd redis.Cmder) error {
	err := g.BatchClient.Process(ctx, cmd)
	// Once, and only after Redis has run it (not on a NOSCRIPT that the
	// caller answers by loading the script).
	if args := cmd.Args(); err == nil && cmd.Name() == "evalsha" && len(args) > 3 && strings.Contains(fmt.Sprint(args[3]), "|"+g.key+"}:") {
		g.once.Do(func() {
			g.entered <- struct{}{}
			<-g.release
		})
	}
	return err
}

// hold sends the gated decision and returns once the worker is held in it,
// with a func that releases the worker and returns that decision's error.
func (g *gatedClient) hold(r *Redis, l Limit) (release func() error) {
	done := make(chan error, 1)
	go func() {
		_, err := r.Allow(context.Background(), g.key, l)
		done <- err
	}()
	<-g.entered
	return func() error {
		close(g.release)
		return <-done
	}
}

// waitQueued waits until n decisions wait for the held round trip.
// decideAll starts one decision per key, each on its own goroutine, and
// returns a wait that gives their decisions and errors in key order.
func decideAll(r *Redis, l Limit, keys []string) (wait func() ([]Decision, []error)) {
	ds := make([]Decision, len(keys))
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ds[i], errs[i] = r.Allow(context.Background(), k, l)
		}()
	}
	return func() ([]Decision, []error) { wg.Wait(); return ds, errs }
}

// keyNames is k0..k(n-1), each name taken modulo mod (0: no modulo).
func keyNames(n, mod int) []string {
	ks := make([]string, n)
	for i := range ks {
		j := i
		if mod > 0 {
			j = i % mod
		}
		ks[i] = fmt.Sprintf("k%d", j)
	}
	return ks
}

func waitQueued(t *testing.T, b *Batcher, n int) {
	t.Helper()
	// A decision counts as pending before its send to the queue: wait for
	// the sends too. One worker holds at most one of them, waiting for a
	// free round trip (one slot each); the rest wait in the queue.
	for b.pending.Load() < int64(n) || len(b.queue) < n-cap(b.slots) {
		runtime.Gosched()
		time.Sleep(100 * time.Microsecond)
	}
}

// TestBatcherSendsQueuedTogether: decisions that queue while a pipeline
// is in flight go out as one pipeline, each EVALSHA once, with every
// caller getting its own bucket's answer.
func TestBatcherSendsQueuedTogether(t *testing.T) {
	srv := testredis.Start(t)
	g := newGatedClient(redisClient(t, srv), "held")
	b := newBatcher(t, g, BatchOptions{Workers: 1})
	clk := newClock()
	r := batchedRedis(t, b, clk, "q:")
	l := Limit{Name: "l", Rate: 2, Per: time.Hour}
	release := g.hold(r, l)

	const n = 50
	// Keys 0..24 twice: the second decision of each key finds one request
	// left, whichever of the two runs first.
	keys := keyNames(n, 25)
	wait := decideAll(r, l, keys)
	waitQueued(t, b, n)
	before := testredis.CommandCalls(t, srv.Addr, "evalsha")
	if err := release(); err != nil {
		t.Fatalf("the held decision: %v", err)
	}
	ds, errs := wait()
	remaining := map[string][]int{}
	for i, d := range ds {
		if errs[i] != nil || !d.Allowed {
			t.Fatalf("decision %d: %+v %v", i, d, errs[i])
		}
		remaining[keys[i]] = append(remaining[keys[i]], d.Remaining)
	}
	for k, rs := range remaining {
		if len(rs) != 2 || rs[0]+rs[1] != 1 {
			t.Fatalf("%s: remaining %v, want one 1 and one 0", k, rs)
		}
	}
	if got := testredis.CommandCalls(t, srv.Addr, "evalsha") - before; got != n {
		t.Fatalf("%d EVALSHA for %d queued decisions, want exactly one each", got, n)
	}
	if p, d := b.pipelines.Load(), b.decisions.Load(); p != 2 || d != n+1 {
		t.Fatalf("%d round trips for %d decisions, want 2 (the held one, then the %d queued together)", p, d, n)
	}
}

// TestBatcherConcurrentExact: 64 goroutines × 200 decisions over 8 keys,
// in 10 windows of a frozen clock, allow exactly what the sequential
// in-memory model allows: burst in the first window, then the refill.
func TestBatcherConcurrentExact(t *testing.T) {
	srv := testredis.Start(t)
	client := redisClient(t, srv)
	// Loaded up front, so every EVALSHA Redis counts is a decision (a
	// NOSCRIPT refusal counts as a call too).
	if err := client.ScriptLoad(context.Background(), script).Err(); err != nil {
		t.Fatal(err)
	}
	b := newBatcher(t, client, BatchOptions{})
	clk := newClock()
	r := batchedRedis(t, b, clk, "c:")
	model := NewMemory(clk.Now)
	l := Limit{Name: "l", Rate: 30, Per: time.Second, Burst: 100}
	const (
		goroutines = 64
		perG       = 200
		windows    = 10
		keys       = 8
	)
	for w := range windows {
		if w > 0 {
			clk.Add(time.Second)
		}
		want := 0
		for i := range goroutines * perG / windows {
			if d, _ := model.Allow(context.Background(), fmt.Sprintf("k%d", i%keys), l); d.Allowed {
				want++
			}
		}
		var mu sync.Mutex
		got := 0
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := 0
				for range perG / windows {
					d, err := r.Allow(context.Background(), fmt.Sprintf("k%d", g%keys), l)
					if err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						n++
					}
				}
				mu.Lock()
				got += n
				mu.Unlock()
			}()
		}
		wg.Wait()
		if got != want {
			t.Fatalf("window %d: allowed %d, the sequential model %d", w, got, want)
		}
		// burst (100) per key in the first window, then 30 per key.
		if wantModel := keys * map[bool]int{true: 100, false: 30}[w == 0]; want != wantModel {
			t.Fatalf("window %d: model allows %d, want %d", w, want, wantModel)
		}
	}
	if got := testredis.CommandCalls(t, srv.Addr, "evalsha"); int64(got) != b.decisions.Load() {
		t.Fatalf("Redis ran %d EVALSHA, the batcher sent %d", got, b.decisions.Load())
	}
	t.Logf("%d decisions in %d round trips", b.decisions.Load(), b.pipelines.Load())
}

// TestBatcherMatchesMemory: the random comparison of TestRedisMatchesMemory,
// with each step's decisions (distinct buckets, one clock reading) sent
// concurrently so they travel in pipelines: every decision must equal the
// Go model's, field by field.
func TestBatcherMatchesMemory(t *testing.T) {
	srv := testredis.Start(t)
	b := newBatcher(t, redisClient(t, srv), BatchOptions{})
	clk := newClock()
	mem := NewMemory(clk.Now)
	red := batchedRedis(t, b, clk, "eq:")
	limits := []Limit{
		{Name: "a", Rate: 3, Per: time.Second, Burst: 2},
		{Name: "b", Rate: 100, Per: time.Minute},
		{Name: "c", Rate: 7, Per: 13 * time.Millisecond, Burst: 5},
	}
	rng := rand.New(rand.NewPCG(3, 4))
	ctx := context.Background()
	type job struct {
		l    Limit
		key  string
		want Decision
	}
	for step := 0; step < 5000/12; step++ {
		clk.Add(time.Duration(rng.Int64N(int64(200*time.Millisecond))) / 1000 * 1000)
		var jobs []job
		for _, l := range limits {
			for k := range 4 {
				key := fmt.Sprintf("k%d", k)
				if rng.IntN(3) == 0 {
					continue
				}
				d, err := mem.Allow(ctx, key, l)
				if err != nil {
					t.Fatal(err)
				}
				jobs = append(jobs, job{l, key, d})
			}
		}
		got := make([]Decision, len(jobs))
		errs := make([]error, len(jobs))
		var wg sync.WaitGroup
		for i, j := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i], errs[i] = red.Allow(ctx, j.key, j.l)
			}()
		}
		wg.Wait()
		for i, j := range jobs {
			if errs[i] != nil || got[i] != j.want {
				t.Fatalf("step %d (%s %s): memory %+v, batched redis %+v %v", step, j.l.Name, j.key, j.want, got[i], errs[i])
			}
		}
	}
	t.Logf("%d decisions in %d round trips", b.decisions.Load(), b.pipelines.Load())
}

// TestBatcherNoScript: the script is flushed while decisions queue; the
// pipeline that finds it gone loads it once and resends exactly the
// refused decisions, which are then counted once each.
func TestBatcherNoScript(t *testing.T) {
	srv := testredis.Start(t)
	g := newGatedClient(redisClient(t, srv), "held")
	b := newBatcher(t, g, BatchOptions{Workers: 1})
	r := batchedRedis(t, b, newClock(), "ns:")
	l := Limit{Name: "l", Rate: 1, Per: time.Hour}
	release := g.hold(r, l)
	const n = 30
	wait := decideAll(r, l, keyNames(n, 0))
	waitQueued(t, b, n)
	if _, err := srv.Do("SCRIPT", "FLUSH"); err != nil {
		t.Fatal(err)
	}
	loads := testredis.CommandCalls(t, srv.Addr, "script|load")
	if err := release(); err != nil {
		t.Fatalf("the held decision: %v", err)
	}
	ds, errs := wait()
	for i := range n {
		if errs[i] != nil || !ds[i].Allowed {
			t.Fatalf("decision %d after SCRIPT FLUSH: allowed=%v %v", i, ds[i].Allowed, errs[i])
		}
	}
	if got := testredis.CommandCalls(t, srv.Addr, "script|load") - loads; got != 1 {
		t.Fatalf("%d SCRIPT LOADs for one batch, want 1", got)
	}
	// Each bucket was counted once: a second decision is refused.
	for i := range n {
		if d, err := r.Allow(context.Background(), fmt.Sprintf("k%d", i), l); err != nil || d.Allowed {
			t.Fatalf("k%d counted twice or not at all: %+v %v", i, d, err)
		}
	}
	if p := b.pipelines.Load(); p != 2+1+n {
		t.Fatalf("%d round trips, want %d: the held one, the batch, its resend, then %d lone ones", p, 2+1+n, n)
	}
}

// TestBatcherScriptFlushedMidRun: SCRIPT FLUSH five times while 32
// goroutines decide concurrently: no decision fails, and the count stays
// exact (a decision refused with NOSCRIPT did not run, so resending it
// counts it once).
func TestBatcherScriptFlushedMidRun(t *testing.T) {
	srv := testredis.Start(t)
	b := newBatcher(t, redisClient(t, srv), BatchOptions{})
	r := batchedRedis(t, b, newClock(), "fl:")
	l := Limit{Name: "l", Rate: 1, Per: time.Hour, Burst: 40}
	const goroutines, perG, keys = 32, 50, 4
	var mu sync.Mutex
	allowed := 0
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := range perG {
				// One goroutine flushes the script every ten of its own
				// decisions, while the others keep deciding.
				if g == 0 && i%10 == 5 {
					if _, err := srv.Do("SCRIPT", "FLUSH"); err != nil {
						t.Error(err)
						return
					}
				}
				d, err := r.Allow(context.Background(), fmt.Sprintf("k%d", g%keys), l)
				if err != nil {
					t.Errorf("goroutine %d decision %d: %v", g, i, err)
					return
				}
				if d.Allowed {
					n++
				}
			}
			mu.Lock()
			allowed += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	// A frozen clock: exactly the burst of every key.
	if want := keys * 40; allowed != want {
		t.Fatalf("allowed %d with the script flushed mid-run, want exactly %d", allowed, want)
	}
	if loads := testredis.CommandCalls(t, srv.Addr, "script|load"); loads < 5 {
		t.Fatalf("%d SCRIPT LOADs after 5 flushes", loads)
	}
}

// TestBatcherBrokenBucketInBatch: a bucket Redis refuses (its key holds a
// string) fails only its own decision inside a pipeline, as a key error;
// the rest of the batch is counted normally.
func TestBatcherBrokenBucketInBatch(t *testing.T) {
	srv := testredis.Start(t)
	g := newGatedClient(redisClient(t, srv), "held")
	b := newBatcher(t, g, BatchOptions{Workers: 1})
	r := batchedRedis(t, b, newClock(), "bb:")
	l := Limit{Name: "l", Rate: 5, Per: time.Minute}
	if _, err := srv.Do("SET", r.Key(l, "k3"), "not a hash"); err != nil {
		t.Fatal(err)
	}
	release := g.hold(r, l)
	const n = 8
	wait := decideAll(r, l, keyNames(n, 0))
	waitQueued(t, b, n)
	if err := release(); err != nil {
		t.Fatalf("the held decision: %v", err)
	}
	ds, errs := wait()
	for i := range n {
		switch {
		case i == 3 && !IsKeyError(errs[i]):
			t.Fatalf("broken bucket: %v, want a key error", errs[i])
		case i != 3 && (errs[i] != nil || !ds[i].Allowed):
			t.Fatalf("k%d beside a broken bucket: allowed=%v %v", i, ds[i].Allowed, errs[i])
		}
	}
	if p := b.pipelines.Load(); p != 2 {
		t.Fatalf("%d round trips, want 2 (a key error is not retried)", p)
	}
}

// TestBatcherCancelledWhileQueued: a caller whose context ends while its
// decision waits returns at once with the context's error, and the worker
// does not send (or count) the decision it left behind.
func TestBatcherCancelledWhileQueued(t *testing.T) {
	srv := testredis.Start(t)
	g := newGatedClient(redisClient(t, srv), "held")
	b := newBatcher(t, g, BatchOptions{Workers: 1})
	r := batchedRedis(t, b, newClock(), "cq:")
	l := Limit{Name: "l", Rate: 1, Per: time.Hour}
	release := g.hold(r, l)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := r.Allow(ctx, "gone", l)
		done <- err
	}()
	waitQueued(t, b, 1)
	cancel()
	// The worker is still held: the caller returns without it.
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v, want context.Canceled", err)
	}
	before := testredis.CommandCalls(t, srv.Addr, "evalsha")
	if err := release(); err != nil {
		t.Fatalf("the held decision: %v", err)
	}
	// Another decision goes through the same worker after the abandoned one.
	if d, err := r.Allow(context.Background(), "next", l); err != nil || !d.Allowed {
		t.Fatalf("next decision: %+v %v", d, err)
	}
	if got := testredis.CommandCalls(t, srv.Addr, "evalsha") - before; got != 1 {
		t.Fatalf("%d EVALSHA after the release, want 1 (the abandoned decision must not be sent)", got)
	}
	if n, _ := srv.Do("EXISTS", r.Key(l, "gone")); n != "0" {
		t.Fatal("the abandoned decision was counted")
	}
}

// TestBatcherClose: callers waiting when the Batcher closes get an error
// at once, Close does not wait for a decision running on its caller's
// goroutine (that one ends normally), and decisions after Close fail.
func TestBatcherClose(t *testing.T) {
	srv := testredis.Start(t)
	g := newGatedClient(redisClient(t, srv), "held")
	b, err := NewBatcher(g, BatchOptions{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	r := batchedRedis(t, b, newClock(), "cl:")
	l := Limit{Name: "l", Rate: 1, Per: time.Hour}
	release := g.hold(r, l)
	const n = 5
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := r.Allow(context.Background(), fmt.Sprintf("k%d", i), l)
			errs <- err
		}()
	}
	waitQueued(t, b, n)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-errs; !errors.Is(err, errBatcherClosed) {
			t.Fatalf("waiting caller at Close: %v, want errBatcherClosed", err)
		}
	}
	if err := release(); err != nil {
		t.Fatalf("the decision in flight at Close: %v", err)
	}
	if _, err := r.Allow(context.Background(), "after", l); !errors.Is(err, errBatcherClosed) {
		t.Fatalf("decision after Close: %v, want errBatcherClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// None of the queued decisions reached Redis.
	for i := range n {
		if v, _ := srv.Do("EXISTS", r.Key(l, fmt.Sprintf("k%d", i))); v != "0" {
			t.Fatalf("k%d was counted after Close", i)
		}
	}
}

// TestBatcherPaused: with Redis frozen (SIGSTOP) and a client time-out of
// a minute, every caller, in flight or queued, returns when its own
// per-call time-out ends, while Redis is still frozen; then the Batcher
// closes with no goroutine left behind.
func TestBatcherPaused(t *testing.T) {
	srv := testredis.Start(t)
	// After Start: its process's waiter ends in the test's cleanup.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	c, err := redisclient.New(&routes.Redis{URL: srv.URL(), Timeout: routes.Duration(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := NewBatcher(c, BatchOptions{Workers: 2, MaxBatch: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err := NewRedis(c, RedisOptions{Timeout: 200 * time.Millisecond, Batcher: b})
	if err != nil {
		t.Fatal(err)
	}
	l := Limit{Name: "l", Rate: 100, Per: time.Second}
	if _, err := r.Allow(context.Background(), "warm", l); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	const n = 40 // 2 workers × 4 in flight, the rest queued
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := r.Allow(context.Background(), fmt.Sprintf("k%d", i), l)
			errs <- err
		}()
	}
	for i := range n {
		// The caller's own deadline, or the socket deadline go-redis set
		// from it when both end at once.
		var timeout interface{ Timeout() bool }
		if err := <-errs; !errors.As(err, &timeout) || !timeout.Timeout() || !strings.Contains(err.Error(), `ratelimit "l": redis:`) {
			t.Fatalf("caller %d with Redis frozen: %v, want the per-call deadline, wrapped", i, err)
		}
	}
	// Every caller has returned, and Redis has not answered anything yet.
	srv.Resume()
	if d, err := r.Allow(context.Background(), "after", l); err != nil || !d.Allowed {
		t.Fatalf("after Resume: %+v %v", d, err)
	}
}

// TestBatcherRedisRestarted: with Redis killed, concurrent decisions fail
// (none hangs); restarted empty, they succeed again, the pipeline loading
// the lost script.
func TestBatcherRedisRestarted(t *testing.T) {
	srv := testredis.Start(t)
	b := newBatcher(t, redisClient(t, srv), BatchOptions{})
	// A per-call time-out, as the Service always sets: with Redis down,
	// go-redis's dial retries would otherwise run for seconds.
	r, err := NewRedis(b.client, RedisOptions{Prefix: "rs:", Timeout: 300 * time.Millisecond, Now: newClock().Now, Batcher: b})
	if err != nil {
		t.Fatal(err)
	}
	l := Limit{Name: "l", Rate: 1, Per: time.Hour}
	burst := func() []error {
		ds, errs := decideAll(r, l, keyNames(32, 0))()
		for i, d := range ds {
			if errs[i] == nil && !d.Allowed {
				errs[i] = fmt.Errorf("refused: %+v", d)
			}
		}
		return errs
	}
	for i, err := range burst() {
		if err != nil {
			t.Fatalf("decision %d before the outage: %v", i, err)
		}
	}
	srv.Stop()
	for i, err := range burst() {
		if err == nil {
			t.Fatalf("decision %d succeeded with Redis stopped", i)
		}
	}
	srv.Restart()
	// Pooled connections to the dead server fail once each; the go-redis
	// retries, or a second round, reach the new one.
	var errs []error
	for round := 0; round < 5; round++ {
		if errs = burst(); errors.Join(errs...) == nil {
			break
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if loads := testredis.CommandCalls(t, srv.Addr, "script|load"); loads < 1 {
		t.Fatal("the restarted Redis never had the script loaded")
	}
}

// TestBatcherTopologies: pipelines of decisions work on a single node,
// through Sentinel, and on a Cluster, where one pipeline's buckets live on
// different masters (go-redis splits it by slot) and each master may have
// lost the script.
func TestBatcherTopologies(t *testing.T) {
	single := testredis.Start(t)
	master := testredis.Start(t)
	sentinel := testredis.StartSentinel(t, master, "main")
	type topo struct {
		cfg   *routes.Redis
		nodes []*testredis.Server
	}
	topos := map[string]topo{
		"single":   {&routes.Redis{URL: single.URL()}, []*testredis.Server{single}},
		"sentinel": {&routes.Redis{Addrs: []string{sentinel.Addr}, MasterName: "main"}, []*testredis.Server{master}},
	}
	if !testing.Short() {
		cl := testredis.StartCluster(t)
		topos["cluster"] = topo{&routes.Redis{Addrs: cl.Addrs()[:1]}, cl.Nodes}
	}
	for _, name := range []string{"single", "sentinel", "cluster"} {
		tp, ok := topos[name]
		if !ok {
			continue
		}
		t.Run(name, func(t *testing.T) {
			tp.cfg.Timeout = routes.Duration(2 * time.Second)
			c, err := redisclient.New(tp.cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			g := newGatedClient(c, "held")
			b := newBatcher(t, g, BatchOptions{Workers: 1})
			r := batchedRedis(t, b, newClock(), "tp:")
			l := Limit{Name: "l", Rate: 3, Per: time.Hour}
			release := g.hold(r, l)
			const keys, perKey = 24, 4 // one more than the limit per key
			allowed := make([]int, keys)
			var mu sync.Mutex
			var wg sync.WaitGroup
			for i := range keys * perKey {
				wg.Add(1)
				go func() {
					defer wg.Done()
					d, err := r.Allow(context.Background(), fmt.Sprintf("user-%d", i%keys), l)
					if err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						mu.Lock()
						allowed[i%keys]++
						mu.Unlock()
					}
				}()
			}
			waitQueued(t, b, keys*perKey)
			for _, n := range tp.nodes {
				if _, err := n.Do("SCRIPT", "FLUSH"); err != nil {
					t.Fatal(err)
				}
			}
			if err := release(); err != nil {
				t.Fatalf("the held decision: %v", err)
			}
			wg.Wait()
			for k, n := range allowed {
				if n != 3 {
					t.Fatalf("user-%d: %d allowed of %d, want exactly 3", k, n, perKey)
				}
			}
			owners := 0
			for _, n := range tp.nodes {
				if v, _ := n.Do("DBSIZE"); v != "0" {
					owners++
				}
			}
			if name == "cluster" && owners < 2 {
				t.Fatalf("the batch's buckets landed on %d master(s); want them spread", owners)
			}
			// The held one, the batch, and the batch again after NOSCRIPT.
			if p, d := b.pipelines.Load(), b.decisions.Load(); p != 3 || d != 1+2*keys*perKey {
				t.Fatalf("%d EVALSHA sent in %d round trips, want %d in 3", d, p, 1+2*keys*perKey)
			}
		})
	}
}

// TestServiceBatchedOutage: many requests at once while Redis is frozen
// all get on_error (503 for deny, counted in memory for allow), each
// within its per-call time-out, and closing the Service leaves no
// goroutine behind even with Redis still frozen.
func TestServiceBatchedOutage(t *testing.T) {
	for _, onError := range []string{"allow", "deny"} {
		t.Run(onError, func(t *testing.T) {
			srv := testredis.Start(t)
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			file := testFile(t, fmt.Sprintf(`
redis: {url: %q, on_error: %s, timeout: 200ms}
rate_limits:
  l: {key: "header:X-User", limit: 1000, per: 1s}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}
`, srv.URL(), onError))
			vec := NewDecisionsMetric()
			s := New(context.Background(), Options{Now: newClock().Now, Decisions: vec})
			if err := s.Configure(context.Background(), file); err != nil {
				t.Fatal(err)
			}
			h := handlerFor(t, s, file.Routes[0], KeySources{})
			if w := h.do(map[string]string{"X-User": "warm"}); w.Code != 200 {
				t.Fatal(w.Code)
			}
			srv.Pause()
			defer srv.Resume()
			want := map[string]int{"allow": 200, "deny": 503}[onError]
			const n = 32
			codes := make(chan int, n)
			for i := range n {
				go func() { codes <- h.do(map[string]string{"X-User": fmt.Sprintf("u%d", i)}).Code }()
			}
			for range n {
				if code := <-codes; code != want {
					t.Fatalf("request with Redis frozen: %d, want %d", code, want)
				}
			}
			if got := counter(t, vec, "l", DecisionError); got != n {
				t.Fatalf("error decisions %d, want %d", got, n)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestQueuedTimeoutOpensNoBreaker: a decision whose time-out ends while it
// waits in the Batcher's queue behind a round trip in flight was never
// sent. It gets on_error, but Redis, which never saw it, stays in use:
// its breaker stays closed and the next decision goes to Redis.
func TestQueuedTimeoutOpensNoBreaker(t *testing.T) {
	tests := []struct {
		onError string
		want    int // the queued request's status
	}{
		{"allow", http.StatusOK},
		{"deny", http.StatusServiceUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.onError, func(t *testing.T) {
			srv := testredis.Start(t)
			file := testFile(t, fmt.Sprintf(`
redis: {url: %q, on_error: %s, timeout: 1s}
rate_limits:
  l: {key: "header:X-User", limit: 100, per: 1h}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}
`, srv.URL(), tc.onError))
			clk := newClock()
			vec := NewDecisionsMetric()
			s := newService(t, clk, vec, file)
			h := handlerFor(t, s, file.Routes[0], KeySources{})
			// One round trip at a time, held in flight by the test (after
			// Redis has run it), so the request below can only queue.
			st := s.cur.Load().store
			g := newGatedClient(st.conn.client, "held")
			b := newBatcher(t, g, BatchOptions{Workers: 1})
			st.limiter.opts.Batcher = b
			lim := LimitFromRoutes("l", file.RateLimits["l"])
			release := g.hold(st.limiter, lim)

			if w := h.do(map[string]string{"X-User": "queued"}); w.Code != tc.want {
				t.Fatalf("queued decision: %d, want %d", w.Code, tc.want)
			}
			if got := counter(t, vec, "l", DecisionError); got != 1 {
				t.Fatalf("%d decisions went to on_error, want 1", got)
			}
			if st := s.Redis(); !st.Reachable {
				t.Fatalf("status after a decision timed out unsent: %+v, want reachable", st)
			}
			if err := release(); err != nil {
				t.Fatalf("the held decision: %v", err)
			}
			before := testredis.CommandCalls(t, srv.Addr, "evalsha")
			if w := h.do(map[string]string{"X-User": "next"}); w.Code != http.StatusOK {
				t.Fatalf("next decision: %d", w.Code)
			}
			if got := testredis.CommandCalls(t, srv.Addr, "evalsha") - before; got != 1 || counter(t, vec, "l", DecisionError) != 1 {
				t.Fatalf("next decision: %d EVALSHA, %d errors; want it decided by Redis", got, counter(t, vec, "l", DecisionError))
			}
			if n, _ := srv.Do("EXISTS", st.limiter.Key(lim, "queued")); n != "0" {
				t.Fatal("the unsent decision was counted in Redis")
			}
		})
	}
}
