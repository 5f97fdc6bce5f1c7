package proxy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// The half-open state lets exactly half_open_requests probes through.
func TestBreakerHalfOpenProbes(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{}
	b := NewBreaker("u", &routes.CircuitBreaker{ConsecutiveFailures: 1, OpenFor: routes.Duration(time.Second), HalfOpenRequests: 2}, clock.Now)
	ctx := context.Background()
	tk, err := b.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b.Release(tk, true)
	if _, err := b.Acquire(ctx); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("open breaker admitted: %v", err)
	}
	clock.Advance(time.Second)
	p1, err1 := b.Acquire(ctx)
	p2, err2 := b.Acquire(ctx)
	_, err3 := b.Acquire(ctx)
	if err1 != nil || err2 != nil || !p1.Probe || !p2.Probe || !errors.Is(err3, ErrBreakerOpen) {
		t.Fatalf("half-open: %v %v %v", err1, err2, err3)
	}
	b.Release(p1, false)
	if b.StateName() != "closed" {
		t.Fatalf("state %s after a good probe", b.StateName())
	}
	b.Release(p2, false)
	tk, err = b.Acquire(ctx)
	if err != nil || tk.Probe {
		t.Fatalf("closed breaker: %+v %v", tk, err)
	}
}

// A client that leaves while waiting for a slot gives its place up.
func TestBreakerPendingClientLeaves(t *testing.T) {
	t.Parallel()
	b := NewBreaker("u", &routes.CircuitBreaker{MaxRequests: 1, MaxPending: 1}, time.Now)
	tk, err := b.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := b.Acquire(ctx)
		done <- err
	}()
	waitFor(t, func() bool { return b.Pending.Load() == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) || b.Pending.Load() != 0 {
		t.Fatalf("got %v, pending %d", err, b.Pending.Load())
	}
	b.Release(tk, false)
	if _, err := b.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestBreakerMaxPendingAlone(t *testing.T) {
	t.Parallel()
	b := NewBreaker("u", &routes.CircuitBreaker{MaxPending: 2}, time.Now)
	t1, _ := b.Acquire(context.Background())
	t2, _ := b.Acquire(context.Background())
	if _, err := b.Acquire(context.Background()); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("third request: %v", err)
	}
	b.Release(t1, false)
	b.Release(t2, false)
	if _, err := b.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
}
