package auth

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestDeadlines(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		name  string
		setup func(d *deadlines[string])
		key   string
		at    time.Time
		live  bool
	}{
		{"never set", func(*deadlines[string]) {}, "a", t0, false},
		{"before its deadline", func(d *deadlines[string]) { d.set("a", t0.Add(time.Minute), t0) }, "a", t0.Add(59 * time.Second), true},
		{"at its deadline", func(d *deadlines[string]) { d.set("a", t0.Add(time.Minute), t0) }, "a", t0.Add(time.Minute), false},
		{"another key", func(d *deadlines[string]) { d.set("a", t0.Add(time.Minute), t0) }, "b", t0, false},
		{"a deadline already passed is not kept", func(d *deadlines[string]) { d.set("a", t0, t0) }, "a", t0.Add(-time.Second), false},
		{"set moves the deadline", func(d *deadlines[string]) {
			d.set("a", t0.Add(time.Minute), t0)
			d.set("a", t0.Add(time.Hour), t0)
		}, "a", t0.Add(30 * time.Minute), true},
		{"claim of a live key keeps its deadline", func(d *deadlines[string]) {
			d.set("a", t0.Add(time.Minute), t0)
			if d.claim("a", t0.Add(time.Hour), t0) {
				panic("claimed twice")
			}
		}, "a", t0.Add(2 * time.Minute), false},
		{"claim of an expired key", func(d *deadlines[string]) {
			d.set("a", t0.Add(time.Minute), t0)
			if !d.claim("a", t0.Add(time.Hour), t0.Add(2*time.Minute)) {
				panic("expired key not claimed")
			}
		}, "a", t0.Add(30 * time.Minute), true},
		// Full: the expired go first, so live keys survive a flood.
		{"full: the expired are swept first", func(d *deadlines[string]) {
			d.set("live", t0.Add(time.Hour), t0)
			for i := range d.limit - 1 {
				d.set(strconv.Itoa(i), t0.Add(time.Second), t0)
			}
			d.set("new", t0.Add(time.Hour), t0.Add(time.Minute))
		}, "live", t0.Add(time.Minute), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDeadlines[string](8)
			tc.setup(d)
			if got := d.live(tc.key, tc.at); got != tc.live {
				t.Fatalf("live(%q) = %v, want %v", tc.key, got, tc.live)
			}
			if n := len(d.m); n > d.limit || int64(n) != d.n.Load() {
				t.Fatalf("%d entries, count %d, limit %d", n, d.n.Load(), d.limit)
			}
		})
	}
}

// A flood of live keys past the limit never grows the set.
func TestDeadlinesBounded(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	d := newDeadlines[int](64)
	for i := range 10_000 {
		d.set(i, t0.Add(time.Hour), t0)
		if len(d.m) > 64 {
			t.Fatalf("%d entries after %d sets", len(d.m), i+1)
		}
	}
	if !d.live(9_999, t0) {
		t.Fatal("the newest key was dropped")
	}
}

// Of many callers claiming one key at once, exactly one wins, whatever
// the other keys do meanwhile (a replayed OIDC callback racing the first).
func TestDeadlinesClaimRace(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	for round := range 200 {
		d := newDeadlines[string](64) // room for every key: none is dropped
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				if d.claim("state", t0.Add(time.Minute), t0) {
					wins.Add(1)
				}
				d.set(strconv.Itoa(i), t0.Add(time.Minute), t0)
				_ = d.live("state", t0)
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("round %d: %d callers claimed the key", round, wins.Load())
		}
	}
}
