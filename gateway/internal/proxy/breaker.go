package proxy

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/routes"
)

var (
	ErrBreakerOpen = errors.New("circuit breaker open")
	ErrOverloaded  = errors.New("too many pending requests")
)

// Breaker states.
const (
	breakerClosed int32 = iota
	breakerOpen
	breakerHalfOpen
)

// breaker guards one upstream. It bounds concurrency (max_requests in
// flight, max_pending more waiting for a slot; beyond that 503 at once, so
// a slow upstream cannot pile up the edge's goroutines and memory), and
// trips after consecutive_failures failed requests in a row: open, every
// request is refused for open_for; then half-open, half_open_requests
// probes go through; a good probe closes it, a failed one opens it again.
type breaker struct {
	name       string // the upstream, for logs
	log        *slog.Logger
	Slots      chan struct{} // nil: no max_requests
	maxPending int64
	Pending    atomic.Int64
	inflight   atomic.Int64 // with max_pending alone, it bounds requests in flight

	threshold   int32 // 0: never trips
	openFor     time.Duration
	halfOpenMax int32
	now         func() time.Time

	state    atomic.Int32
	failures atomic.Int32
	mu       sync.Mutex // guards the open -> half-open -> closed moves
	openedAt time.Time
	probes   int32
}

func NewBreaker(name string, cfg *routes.CircuitBreaker, now func() time.Time) *breaker {
	b := &breaker{
		name:        name,
		log:         slog.Default(),
		maxPending:  int64(cfg.MaxPending),
		threshold:   int32(cfg.ConsecutiveFailures),
		openFor:     cfg.OpenFor.D(),
		halfOpenMax: int32(cfg.HalfOpenRequests),
		now:         now,
	}
	if b.halfOpenMax <= 0 {
		b.halfOpenMax = 1
	}
	if cfg.MaxRequests > 0 {
		b.Slots = make(chan struct{}, cfg.MaxRequests)
	}
	return b
}

// Ticket is what acquire hands out and release takes back.
type Ticket struct {
	slot  bool // holds a max_requests slot
	count bool // counted in inflight (max_pending without max_requests)
	Probe bool // a half-open probe
}

// Acquire admits a request or says why not: errBreakerOpen, errOverloaded,
// or the context's error when the client left while waiting.
func (b *breaker) Acquire(ctx context.Context) (Ticket, error) {
	var t Ticket
	probe, ok := b.allow()
	if !ok {
		return t, ErrBreakerOpen
	}
	t.Probe = probe
	fail := func(err error) (Ticket, error) {
		if probe {
			b.abandonProbe()
		}
		return Ticket{}, err
	}
	switch {
	case b.Slots != nil:
		select {
		case b.Slots <- struct{}{}:
		default:
			if b.Pending.Add(1) > b.maxPending {
				b.Pending.Add(-1)
				return fail(ErrOverloaded)
			}
			select {
			case b.Slots <- struct{}{}:
				b.Pending.Add(-1)
			case <-ctx.Done():
				b.Pending.Add(-1)
				return fail(ctx.Err())
			}
		}
		t.slot = true
	case b.maxPending > 0:
		if b.inflight.Add(1) > b.maxPending {
			b.inflight.Add(-1)
			return fail(ErrOverloaded)
		}
		t.count = true
	}
	return t, nil
}

// Release returns the ticket and records whether the request failed.
func (b *breaker) Release(t Ticket, failed bool) {
	if t.slot {
		<-b.Slots
	}
	if t.count {
		b.inflight.Add(-1)
	}
	b.record(t.Probe, failed)
}

// allow says whether a request may go now, and whether it is a probe.
func (b *breaker) allow() (probe, ok bool) {
	if b.state.Load() == breakerClosed {
		return false, true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state.Load() {
	case breakerClosed:
		return false, true
	case breakerOpen:
		if b.now().Sub(b.openedAt) < b.openFor {
			return false, false
		}
		b.state.Store(breakerHalfOpen)
		b.probes = 0
	}
	if b.probes >= b.halfOpenMax {
		return false, false
	}
	b.probes++
	return true, true
}

func (b *breaker) abandonProbe() {
	b.mu.Lock()
	b.probes--
	b.mu.Unlock()
}

func (b *breaker) record(probe, failed bool) {
	if b.threshold == 0 {
		return
	}
	if probe {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.probes--
		if failed {
			b.trip()
			return
		}
		b.failures.Store(0)
		b.state.Store(breakerClosed)
		b.log.Info("circuit breaker closed: probe succeeded", "upstream", b.name)
		return
	}
	if !failed {
		if b.failures.Load() != 0 {
			b.failures.Store(0)
		}
		return
	}
	if b.failures.Add(1) >= b.threshold && b.state.Load() == breakerClosed {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.state.Load() == breakerClosed {
			b.trip()
		}
	}
}

// trip opens the breaker; b.mu is held.
func (b *breaker) trip() {
	b.state.Store(breakerOpen)
	b.openedAt = b.now()
	b.failures.Store(0)
	b.log.Warn("circuit breaker open", "upstream", b.name, "for", b.openFor.String())
}

// StateName is the breaker's state for tests and logs.
func (b *breaker) StateName() string {
	switch b.state.Load() {
	case breakerOpen:
		return "open"
	case breakerHalfOpen:
		return "half-open"
	}
	return "closed"
}
