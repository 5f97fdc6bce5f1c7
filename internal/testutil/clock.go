package testutil

import (
	"sync/atomic"
	"testing"
	"time"
)

// FakeClock is a clock tests move by hand; safe for concurrent use. Its
// Now is what code under test takes as its clock.
type FakeClock struct{ ns atomic.Int64 }

// NewFakeClock starts at 2026-01-01 00:00 UTC.
func NewFakeClock() *FakeClock {
	c := &FakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

// NewFakeClockAt starts at start: for what is held to certificates, which
// are dated by the wall clock.
func NewFakeClockAt(start time.Time) *FakeClock {
	c := &FakeClock{}
	c.ns.Store(start.UnixNano())
	return c
}

// Now is the clock's time.
func (c *FakeClock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

// Advance moves the clock forward by d.
func (c *FakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// WaitFor polls cond until it holds, failing the test after 10 s.
func WaitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
