package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want FailKind
	}{
		{"dial", ctx, &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, FailConnect},
		{"refused", ctx, fmt.Errorf("x: %w", syscall.ECONNREFUSED), FailConnect},
		{"reset", ctx, &net.OpError{Op: "read", Err: syscall.ECONNRESET}, FailReset},
		{"eof", ctx, io.EOF, FailReset},
		{"deadline", ctx, ErrPerTryTimeout, FailTimeout},
		{"other", ctx, errors.New("malformed HTTP response"), FailOther},
		{"client gone", cancelled, io.EOF, AttemptCanceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.ctx, tt.err); got != tt.want {
				t.Fatalf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestRetryBudgetArithmetic(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	p := NewRetryPolicy(&routes.Retries{Attempts: 1, BudgetPercent: 25}, clock.Now)
	for i := 0; i < RetryBudgetBurst; i++ {
		if !p.Budget.Withdraw() {
			t.Fatalf("burst retry %d refused", i)
		}
	}
	if p.Budget.Withdraw() {
		t.Fatal("retry beyond the burst allowed before any request paid in")
	}
	for i := 0; i < 4; i++ {
		p.Budget.Deposit()
	}
	if !p.Budget.Withdraw() || p.Budget.Withdraw() {
		t.Fatal("4 requests at 25% should pay for exactly one retry")
	}
	clock.Advance(300 * time.Millisecond)
	for i := 0; i < 3; i++ {
		if !p.Budget.Withdraw() {
			t.Fatalf("retry %d of the 3 that 300ms of the minimum rate pays for refused", i)
		}
	}
	if p.Budget.Withdraw() {
		t.Fatal("more retries than the minimum rate pays for")
	}
	for i := 0; i < 10000; i++ {
		p.Budget.Deposit()
	}
	if got := p.Budget.Tokens.Load(); got > RetryBudgetBurst*100 {
		t.Fatalf("budget saved up %d tokens", got)
	}
}

func TestBackoffIsBounded(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// With a nanosecond back-off the timer is usually ready by the time
	// Wait selects, so a select alone would pick it half of the time.
	for _, b := range []time.Duration{time.Nanosecond, time.Millisecond} {
		p := NewRetryPolicy(&routes.Retries{Backoff: routes.Duration(b), MaxBackoff: routes.Duration(2 * b)}, time.Now)
		for i := 0; i < 1000; i++ {
			if p.Wait(ctx, 40) {
				t.Fatalf("backoff %v, run %d: wait returned true for a client that left", b, i)
			}
		}
	}
}
