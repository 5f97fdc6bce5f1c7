package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Pipeliner is the part of a go-redis client the Batcher uses; every
// go-redis client (single node, Cluster, Sentinel) satisfies it. A
// Cluster client's pipeline splits the batch by slot and sends one
// pipeline to each master it touches.
type Pipeliner interface {
	Scripter
	Pipeline() redis.Pipeliner
}

// BatchOptions configures a Batcher. The zero value is ready to use.
type BatchOptions struct {
	// Workers is how many pipelines may be in flight at once (default
	// GOMAXPROCS, at least 2): one slow pipeline must not hold up every
	// decision, and a lone decision always finds an idle worker.
	Workers int
	// MaxBatch bounds the decisions of one pipeline (default 128), so one
	// pipeline's reply stays small and a burst spreads over the workers.
	MaxBatch int
}

// DefaultMaxBatch is BatchOptions.MaxBatch when it is 0.
const DefaultMaxBatch = 128

// errBatcherClosed is what a decision gets once the Batcher is closed.
var errBatcherClosed = errors.New("batcher is closed")

// Batcher sends concurrent limiter decisions to Redis together: each
// decision is one EVALSHA, and whatever decisions are waiting when a worker
// is free go out as one pipeline (one write and one read on one
// connection) instead of one round trip each. A worker never waits for a
// batch to fill: a lone decision is sent at once, so latency at low load
// stays one round trip, and batches form by themselves while pipelines are
// in flight. Under load this saves Redis (and the edge) a read and a write
// system call per decision, which is most of what an EVALSHA of this
// script costs.
//
// Each decision stays bounded by its caller's context: a caller whose
// context ends while it waits returns at once with the context's error,
// and its decision is not sent if it was still queued.
type Batcher struct {
	client   Pipeliner
	maxBatch int
	queue    chan *call
	// stop is closed by Close: workers exit, and callers still waiting
	// give up instead of waiting for a reply that will never come.
	stop chan struct{}
	// base is the parent of every pipeline's context; Close cancels it.
	base   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	// What was sent, for tests and benchmarks: decisions per pipeline is
	// the saving.
	pipelines atomic.Int64
	decisions atomic.Int64
}

// call is one queued decision. The worker writes res and err and then
// signals done (buffered, so it never blocks on a caller that has gone).
type call struct {
	ctx  context.Context
	key  string
	args [4]int64 // the script's ARGV: now, rate, per, burst
	res  [4]int64
	err  error
	done chan struct{}
}

// calls recycles calls whose reply was read; a call abandoned by its
// caller is left to the garbage collector, because a worker may still be
// holding it.
var calls = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// NewBatcher starts the workers that send decisions through client. Close
// stops them.
func NewBatcher(client Pipeliner, opts BatchOptions) (*Batcher, error) {
	if client == nil {
		return nil, errors.New("ratelimit: redis batcher needs a client")
	}
	if opts.Workers < 0 {
		return nil, fmt.Errorf("ratelimit: redis batcher workers must not be negative (found %d)", opts.Workers)
	}
	if opts.MaxBatch < 0 {
		return nil, fmt.Errorf("ratelimit: redis batcher max batch must not be negative (found %d)", opts.MaxBatch)
	}
	if opts.Workers == 0 {
		opts.Workers = max(2, runtime.GOMAXPROCS(0))
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	base, cancel := context.WithCancel(context.Background())
	b := &Batcher{
		client:   client,
		maxBatch: opts.MaxBatch,
		// Room for a full batch per worker: callers rarely block on
		// sending, and a queued decision is never more than one round of
		// pipelines away from being sent.
		queue:  make(chan *call, opts.Workers*opts.MaxBatch),
		stop:   make(chan struct{}),
		base:   base,
		cancel: cancel,
	}
	b.wg.Add(opts.Workers)
	for range opts.Workers {
		go b.run()
	}
	return b, nil
}

// Close stops the workers and waits for them. A pipeline in flight ends
// when Redis answers, its deadline passes, or the client is closed;
// callers still waiting get an error at once. Close is idempotent.
func (b *Batcher) Close() error {
	b.once.Do(func() {
		close(b.stop)
		b.cancel()
	})
	b.wg.Wait()
	return nil
}

// eval runs the script for one bucket key with args, together with
// whatever other decisions are waiting.
func (b *Batcher) eval(ctx context.Context, key string, args [4]int64) ([4]int64, error) {
	if err := ctx.Err(); err != nil {
		return [4]int64{}, err
	}
	c := calls.Get().(*call)
	c.ctx, c.key, c.args = ctx, key, args
	select {
	case b.queue <- c:
	case <-ctx.Done():
		c.ctx = nil
		calls.Put(c) // never queued: nobody else holds it
		return [4]int64{}, ctx.Err()
	case <-b.stop:
		c.ctx = nil
		calls.Put(c)
		return [4]int64{}, errBatcherClosed
	}
	select {
	case <-c.done:
		res, err := c.res, c.err
		*c = call{done: c.done}
		calls.Put(c)
		return res, err
	case <-ctx.Done():
		return [4]int64{}, ctx.Err()
	case <-b.stop:
		return [4]int64{}, errBatcherClosed
	}
}

// run is one worker: it takes the first waiting decision, adds every other
// one already waiting (up to maxBatch), and sends them as one pipeline.
func (b *Batcher) run() {
	defer b.wg.Done()
	batch := make([]*call, 0, b.maxBatch)
	for {
		select {
		case <-b.stop:
			return
		case c := <-b.queue:
			batch = append(batch, c)
		}
	fill:
		for len(batch) < b.maxBatch {
			select {
			case c := <-b.queue:
				batch = append(batch, c)
			default:
				break fill
			}
		}
		b.send(batch)
		clear(batch) // drop the references: callers may recycle their calls
		batch = batch[:0]
	}
}

// send pipelines batch and hands every caller its result.
func (b *Batcher) send(batch []*call) {
	// A caller that has given up has returned already: its decision is
	// not sent, so it is not counted against its client.
	live := batch[:0:0]
	var deadline time.Time
	bounded := true
	for _, c := range batch {
		if c.ctx.Err() != nil {
			continue
		}
		if d, ok := c.ctx.Deadline(); !ok {
			bounded = false
		} else if d.After(deadline) {
			deadline = d
		}
		live = append(live, c)
	}
	if len(live) == 0 {
		return
	}
	// The pipeline runs as long as its most patient caller waits; callers
	// with earlier deadlines stop waiting on their own. Without any
	// deadline the client's read and write time-outs bound it.
	ctx := b.base
	if bounded {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	cmds := b.pipeline(ctx, live)
	var retry []int
	for i, cmd := range cmds {
		if isNoScript(cmd.Err()) && live[i].ctx.Err() == nil {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		// A restarted or flushed Redis (or a new Cluster master) has lost
		// the script: load it once for the whole batch and resend the
		// decisions it refused. They were not run, so none counts twice.
		if err := b.client.ScriptLoad(ctx, script).Err(); err != nil {
			for _, i := range retry {
				cmds[i].SetErr(fmt.Errorf("loading the script after NOSCRIPT: %w", err))
			}
		} else {
			again := make([]*call, len(retry))
			for j, i := range retry {
				again[j] = live[i]
			}
			for j, cmd := range b.pipeline(ctx, again) {
				cmds[retry[j]] = cmd
			}
		}
	}
	for i, c := range live {
		c.res, c.err = result(cmds[i])
		c.done <- struct{}{}
	}
}

// pipeline sends one EVALSHA per call in one pipeline. Each command carries
// its own outcome: a Redis error in one (a broken bucket, NOSCRIPT) leaves
// the others' results intact, and a connection failure is set on all.
func (b *Batcher) pipeline(ctx context.Context, cs []*call) []*redis.Cmd {
	pipe := b.client.Pipeline()
	cmds := make([]*redis.Cmd, len(cs))
	for i, c := range cs {
		cmds[i] = pipe.EvalSha(ctx, scriptSHA, []string{c.key}, c.args[0], c.args[1], c.args[2], c.args[3])
	}
	// Exec's error is the first command's; every command's own is read
	// from it below.
	_, _ = pipe.Exec(ctx)
	b.pipelines.Add(1)
	b.decisions.Add(int64(len(cs)))
	return cmds
}

// result reads the script's four integers from cmd.
func result(cmd *redis.Cmd) ([4]int64, error) {
	var out [4]int64
	res, err := cmd.Int64Slice()
	if err != nil {
		return out, err
	}
	if len(res) != len(out) {
		return out, fmt.Errorf("script returned %d values, want %d", len(res), len(out))
	}
	copy(out[:], res)
	return out, nil
}
