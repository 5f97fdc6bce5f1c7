package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/internal/redisclient"
	"github.com/redis/go-redis/v9"
)

// BatchClient is the part of a go-redis client the Batcher uses; every
// go-redis client (single node, Cluster, Sentinel) satisfies it. A
// Cluster client's pipeline splits the batch by slot and sends one
// pipeline to each master it touches.
type BatchClient interface {
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

// notSentError is a decision whose context ended while it still waited in
// the Batcher's queue, behind other decisions for the same Redis: Redis
// never saw it, so its time-out says nothing about Redis (the decisions in
// flight ahead of it do).
type notSentError struct{ err error }

func (e notSentError) Error() string {
	return "not sent (queued behind other decisions): " + e.err.Error()
}

func (e notSentError) Unwrap() error { return e.err }

// isNotSent reports whether err is a decision that never left the queue.
func isNotSent(err error) bool {
	var ns notSentError
	return errors.As(err, &ns)
}

// Batcher sends concurrent limiter decisions to Redis together: each
// decision is one EVALSHA, and the decisions waiting when a round trip is
// free go out as one pipeline (one write and one read on one connection)
// instead of one round trip each. Nothing ever waits for a batch to fill.
// A decision that finds nothing waiting and a round trip free is sent at
// once from its caller's goroutine, exactly as without a Batcher: handing
// it to a worker would cost two goroutine wake-ups (on a quiet machine,
// futex calls and thread wake-ups that doubled the CPU time of a lone
// decision) and batch nothing. Decisions that arrive while every round
// trip is in use queue, and a worker sends all of them as soon as one is
// free. Under load this saves Redis and the edge a socket read and write
// per decision.
//
// Each decision stays bounded by its caller's context: a caller whose
// context ends while it waits returns at once with the context's error,
// and its decision is not sent if it was still queued.
type Batcher struct {
	client   BatchClient
	maxBatch int
	queue    chan *call
	// slots holds one token per round trip in flight, direct or pipelined:
	// at most Workers at once.
	slots chan struct{}
	// pending counts decisions queued or held by a worker but not yet
	// sent; while any are, a new decision joins them instead of going
	// ahead alone.
	pending atomic.Int64
	// stop is closed by Close: workers exit, and callers still waiting
	// give up instead of waiting for a reply that will never come.
	stop chan struct{}
	// base is the parent of every pipeline's context; Close cancels it.
	base   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	// What was sent, for tests and benchmarks: decisions per round trip is
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
	// sent is set by the worker just before the decision goes to Redis:
	// a caller that gives up before then was not sent.
	sent atomic.Bool
}

// calls recycles calls whose reply was read; a call abandoned by its
// caller is left to the garbage collector, because a worker may still be
// holding it.
var calls = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// NewBatcher starts the workers that send decisions through client. Close
// stops them.
func NewBatcher(client BatchClient, opts BatchOptions) (*Batcher, error) {
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
		slots:  make(chan struct{}, opts.Workers),
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
// callers still waiting get an error at once. A decision sent directly
// runs on its caller's goroutine and ends like any call on the client.
// Close is idempotent.
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
	select {
	case <-b.stop:
		return [4]int64{}, errBatcherClosed
	default:
	}
	if b.pending.Load() == 0 {
		select {
		case b.slots <- struct{}{}:
			res, err := b.evalOne(ctx, key, args)
			<-b.slots
			return res, err
		default:
		}
	}
	c := calls.Get().(*call)
	c.ctx, c.key, c.args = ctx, key, args
	b.pending.Add(1)
	select {
	case b.queue <- c:
	case <-ctx.Done():
		b.pending.Add(-1)
		c.ctx = nil
		calls.Put(c) // never queued: nobody else holds it
		return [4]int64{}, notSentError{ctx.Err()}
	case <-b.stop:
		b.pending.Add(-1)
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
		// The worker may still hold c: it is left to the garbage collector.
		if !c.sent.Load() {
			return [4]int64{}, notSentError{ctx.Err()}
		}
		return [4]int64{}, ctx.Err()
	case <-b.stop:
		return [4]int64{}, errBatcherClosed
	}
}

// run is one worker: it takes the first waiting decision, waits for a
// free round trip, adds every other decision waiting by then (up to
// maxBatch), and sends them together.
func (b *Batcher) run() {
	defer b.wg.Done()
	w := &worker{
		b:     b,
		batch: make([]*call, 0, b.maxBatch),
		live:  make([]*call, 0, b.maxBatch),
		cmds:  make([]*redis.Cmd, 0, b.maxBatch),
	}
	for {
		// Stop before anything still queued: its callers have been told
		// the Batcher is closed.
		select {
		case <-b.stop:
			return
		default:
		}
		select {
		case <-b.stop:
			return
		case c := <-b.queue:
			w.batch = append(w.batch, c)
		}
		select {
		case <-b.stop:
			return
		case b.slots <- struct{}{}:
		}
	fill:
		for len(w.batch) < b.maxBatch {
			select {
			case c := <-b.queue:
				w.batch = append(w.batch, c)
			default:
				break fill
			}
		}
		b.pending.Add(-int64(len(w.batch)))
		w.send()
		<-b.slots
		// Drop the references: callers recycle their calls.
		clear(w.batch)
		clear(w.live)
		clear(w.cmds)
		w.batch, w.live, w.cmds = w.batch[:0], w.live[:0], w.cmds[:0]
	}
}

// worker is one worker's state, reused from batch to batch.
type worker struct {
	b     *Batcher
	batch []*call
	live  []*call
	cmds  []*redis.Cmd
}

// send sends w.batch and hands every caller its result.
func (w *worker) send() {
	// A caller that has given up has returned already: its decision is
	// not sent, so it is not counted against its client.
	var deadline time.Time
	bounded := true
	for _, c := range w.batch {
		if c.ctx.Err() != nil {
			continue
		}
		c.sent.Store(true)
		if d, ok := c.ctx.Deadline(); !ok {
			bounded = false
		} else if d.After(deadline) {
			deadline = d
		}
		w.live = append(w.live, c)
	}
	switch len(w.live) {
	case 0:
		return
	case 1:
		// Alone: an ordinary EVALSHA under the caller's own context costs
		// less than a pipeline of one.
		c := w.live[0]
		c.res, c.err = w.b.evalOne(c.ctx, c.key, c.args)
		c.done <- struct{}{}
		return
	}
	// The pipeline runs as long as its most patient caller waits; callers
	// with earlier deadlines stop waiting on their own. Without any
	// deadline the client's read and write time-outs bound it.
	ctx := w.b.base
	if bounded {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	w.cmds = w.b.pipeline(ctx, w.live, w.cmds)
	// A restarted or flushed Redis (or a new Cluster master) has lost the
	// script: load it once for the whole batch and resend the decisions
	// it refused. They were not run, so none counts twice. Another flush
	// can land between the load and the resend, hence a few rounds.
	var retry []*call
	var at []int
	for range redisclient.NoScriptRounds {
		retry, at = retry[:0], at[:0]
		for i, cmd := range w.cmds {
			if redisclient.IsNoScript(cmd.Err()) && w.live[i].ctx.Err() == nil {
				retry = append(retry, w.live[i])
				at = append(at, i)
			}
		}
		if len(retry) == 0 {
			break
		}
		if err := w.b.client.ScriptLoad(ctx, bucketScript.Source()).Err(); err != nil {
			for _, i := range at {
				w.cmds[i].SetErr(fmt.Errorf("loading the script after NOSCRIPT: %w", err))
			}
			break
		}
		for j, cmd := range w.b.pipeline(ctx, retry, nil) {
			w.cmds[at[j]] = cmd
		}
	}
	for i, c := range w.live {
		c.res, c.err = result(w.cmds[i])
		c.done <- struct{}{}
	}
}

// evalOne runs the script for one decision in its own round trip, loading
// the script first if Redis has lost it.
func (b *Batcher) evalOne(ctx context.Context, key string, args [4]int64) ([4]int64, error) {
	b.pipelines.Add(1)
	b.decisions.Add(1)
	return evalOne(ctx, b.client, key, args)
}

// pipeline sends one EVALSHA per call in one pipeline, appending the
// commands to cmds. Each command carries its own outcome: a Redis error in
// one (a broken bucket, NOSCRIPT) leaves the others' results intact, and a
// connection failure is set on all.
func (b *Batcher) pipeline(ctx context.Context, cs []*call, cmds []*redis.Cmd) []*redis.Cmd {
	pipe := b.client.Pipeline()
	for _, c := range cs {
		cmd := bucketScript.Cmd(ctx, []string{c.key}, c.args[0], c.args[1], c.args[2], c.args[3])
		// A pipeline holding a SendOnce command is never resent: part of
		// it may have run.
		_ = pipe.Process(ctx, redisclient.SendOnce{Cmder: cmd})
		cmds = append(cmds, cmd)
	}
	// Exec's error is the first failed command's; each command's own is
	// read from it.
	_, _ = pipe.Exec(ctx)
	b.pipelines.Add(1)
	b.decisions.Add(int64(len(cs)))
	return cmds
}

// result reads the script's four integers from cmd.
func result(cmd *redis.Cmd) ([4]int64, error) {
	var out [4]int64
	res, err := ints(cmd, len(out))
	if err != nil {
		return out, err
	}
	copy(out[:], res)
	return out, nil
}
