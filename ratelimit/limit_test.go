package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testredis"
)

// limiterKinds builds each limiter on a manual clock.
func limiterKinds(t *testing.T) []struct {
	name string
	make func(t *testing.T, clk *clock) Limiter
} {
	srv := testredis.Start(t)
	client := redisClient(t, srv)
	n := 0
	return []struct {
		name string
		make func(t *testing.T, clk *clock) Limiter
	}{
		{"memory", func(t *testing.T, clk *clock) Limiter { return NewMemory(clk.Now) }},
		{"redis", func(t *testing.T, clk *clock) Limiter {
			n++ // a fresh prefix per case keeps the cases apart on one server
			r, err := NewRedis(client, RedisOptions{Prefix: fmt.Sprintf("t%d:", n), Now: clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}},
	}
}

var exactLimits = []Limit{
	{Name: "ten-per-minute", Rate: 10, Per: time.Minute},
	{Name: "hundred-per-second-burst-20", Rate: 100, Per: time.Second, Burst: 20},
	{Name: "three-per-second-burst-2", Rate: 3, Per: time.Second, Burst: 2}, // interval 333333.3µs is not an integer
	{Name: "four-per-second-no-burst", Rate: 4, Per: time.Second, Burst: 1},
	{Name: "seven-per-hour-burst-3", Rate: 7, Per: time.Hour, Burst: 3},
	{Name: "burst-above-rate", Rate: 2, Per: time.Second, Burst: 50},
}

// TestExactBurst: an idle client gets exactly Burst requests at once, with
// Remaining counting down, then a refusal that says when to come back.
func TestExactBurst(t *testing.T) {
	ctx := context.Background()
	for _, kind := range limiterKinds(t) {
		for _, l := range exactLimits {
			t.Run(kind.name+"/"+l.Name, func(t *testing.T) {
				clk := newClock()
				lim := kind.make(t, clk)
				burst := l.Burst
				if burst == 0 {
					burst = l.Rate
				}
				for i := 1; i <= burst; i++ {
					d, err := lim.Allow(ctx, "k", l)
					if err != nil {
						t.Fatal(err)
					}
					if !d.Allowed || d.Remaining != burst-i || d.Limit != l.Rate {
						t.Fatalf("request %d: %+v, want allowed with %d remaining", i, d, burst-i)
					}
				}
				d, err := lim.Allow(ctx, "k", l)
				if err != nil {
					t.Fatal(err)
				}
				interval := ceilDiv(l.Per.Microseconds(), int64(l.Rate))
				if d.Allowed || d.RetryAfter != micros(interval) || d.ResetAfter != micros(ceilDiv(int64(burst)*l.Per.Microseconds(), int64(l.Rate))) {
					t.Fatalf("request %d: %+v, want refused with RetryAfter %v", burst+1, d, micros(interval))
				}
				// One µs early is still too early; on time is allowed.
				clk.Add(d.RetryAfter - time.Microsecond)
				if d, _ := lim.Allow(ctx, "k", l); d.Allowed {
					t.Fatalf("allowed 1µs before RetryAfter: %+v", d)
				}
				clk.Add(time.Microsecond)
				if d, _ := lim.Allow(ctx, "k", l); !d.Allowed {
					t.Fatalf("refused at RetryAfter: %+v", d)
				}
				// Other keys are counted apart.
				if d, _ := lim.Allow(ctx, "other", l); !d.Allowed || d.Remaining != burst-1 {
					t.Fatalf("another key: %+v", d)
				}
			})
		}
	}
}

// TestExactRate: a client sending as fast as allowed for ten windows gets
// exactly Burst + 10 × Rate requests, however the interval rounds. (With
// Burst 1 and an interval that is not a whole µs, a client cannot arrive
// exactly on time and what it is late by is lost, as in any GCRA: there is
// no room above one request to keep it. The cases avoid that one corner.)
func TestExactRate(t *testing.T) {
	for _, kind := range limiterKinds(t) {
		for _, l := range exactLimits {
			t.Run(kind.name+"/"+l.Name, func(t *testing.T) {
				clk := newClock()
				lim := kind.make(t, clk)
				burst := l.Burst
				if burst == 0 {
					burst = l.Rate
				}
				horizon := 10 * l.Per
				got := greedy(t, lim, clk, "k", l, horizon)
				want := burst + int(horizon.Microseconds()*int64(l.Rate)/l.Per.Microseconds())
				if got != want {
					t.Fatalf("allowed %d in %v, want exactly %d", got, horizon, want)
				}
			})
		}
	}
}

// TestRefillCapsAtBurst: however long a client is idle, it gets Burst at
// once, not more.
func TestRefillCapsAtBurst(t *testing.T) {
	ctx := context.Background()
	l := Limit{Name: "l", Rate: 5, Per: time.Second, Burst: 2}
	for _, kind := range limiterKinds(t) {
		t.Run(kind.name, func(t *testing.T) {
			clk := newClock()
			lim := kind.make(t, clk)
			for _, idle := range []time.Duration{0, time.Hour, 24 * 365 * time.Hour} {
				clk.Add(idle)
				n := 0
				for {
					d, err := lim.Allow(ctx, "k", l)
					if err != nil {
						t.Fatal(err)
					}
					if !d.Allowed {
						break
					}
					n++
				}
				if n != 2 {
					t.Fatalf("after %v idle: %d allowed at once, want 2", idle, n)
				}
			}
		})
	}
}

// TestClockBackwards: a decision stamped earlier than the last one (two
// edges' clocks disagree) refills nothing and never panics or goes negative.
func TestClockBackwards(t *testing.T) {
	ctx := context.Background()
	l := Limit{Name: "l", Rate: 1, Per: time.Second, Burst: 1}
	for _, kind := range limiterKinds(t) {
		t.Run(kind.name, func(t *testing.T) {
			clk := newClock()
			lim := kind.make(t, clk)
			if d, _ := lim.Allow(ctx, "k", l); !d.Allowed {
				t.Fatal("first request refused")
			}
			clk.Add(-time.Hour)
			d, err := lim.Allow(ctx, "k", l)
			if err != nil || d.Allowed || d.RetryAfter != time.Second {
				t.Fatalf("%+v %v, want refused with RetryAfter 1s", d, err)
			}
		})
		t.Run(kind.name+"/an old stamp does not rewind the bucket", func(t *testing.T) {
			l := Limit{Name: "l2", Rate: 1, Per: time.Second, Burst: 2}
			clk := newClock()
			lim := kind.make(t, clk)
			steps := []struct {
				at      time.Duration
				allowed bool
			}{
				{0, true},            // 2 → 1
				{time.Second, true},  // refilled to 2 → 1
				{0, true},            // an edge whose clock lags: 1 → 0
				{time.Second, false}, // the second between 0 and 1s was refilled once already
			}
			start := clk.Now()
			for i, st := range steps {
				clk.Add(start.Add(st.at).Sub(clk.Now()))
				d, err := lim.Allow(ctx, "k", l)
				if err != nil || d.Allowed != st.allowed {
					t.Fatalf("step %d at %v: %+v %v, want allowed=%v", i, st.at, d, err, st.allowed)
				}
			}
		})
	}
}

// TestChangedLimitStartsAfresh: after a reload changes a limit's numbers,
// state counted under the old ones is not misread in the new units.
func TestChangedLimitStartsAfresh(t *testing.T) {
	ctx := context.Background()
	old := Limit{Name: "l", Rate: 1, Per: time.Second, Burst: 1}
	changed := Limit{Name: "l", Rate: 1000, Per: time.Minute, Burst: 3}
	for _, kind := range limiterKinds(t) {
		t.Run(kind.name, func(t *testing.T) {
			lim := kind.make(t, newClock())
			if d, _ := lim.Allow(ctx, "k", old); !d.Allowed {
				t.Fatal("refused")
			}
			if d, _ := lim.Allow(ctx, "k", changed); !d.Allowed || d.Remaining != 2 {
				t.Fatalf("%+v, want a fresh burst of 3", d)
			}
		})
	}
}

func TestBadLimits(t *testing.T) {
	tests := []struct {
		desc string
		l    Limit
	}{
		{"zero rate", Limit{Name: "l", Rate: 0, Per: time.Second}},
		{"negative rate", Limit{Name: "l", Rate: -1, Per: time.Second}},
		{"zero per", Limit{Name: "l", Rate: 1}},
		{"per below a microsecond", Limit{Name: "l", Rate: 1, Per: 999 * time.Nanosecond}},
		{"negative burst", Limit{Name: "l", Rate: 1, Per: time.Second, Burst: -1}},
		{"burst × per beyond exact counting", Limit{Name: "l", Rate: 1, Per: 24 * time.Hour, Burst: 1 << 20}},
	}
	for _, kind := range limiterKinds(t) {
		for _, tc := range tests {
			t.Run(kind.name+"/"+tc.desc, func(t *testing.T) {
				_, err := kind.make(t, newClock()).Allow(context.Background(), "k", tc.l)
				if !errors.Is(err, errBadLimit) {
					t.Fatalf("err = %v, want an invalid-limit error", err)
				}
			})
		}
	}
}

// TestRedisMatchesMemory drives both limiters with the same random
// requests and clock steps: every decision must be identical, field by
// field, so the Lua script and the Go code are the same algorithm.
func TestRedisMatchesMemory(t *testing.T) {
	ctx := context.Background()
	client := redisClient(t, testredis.Start(t))
	clk := newClock()
	mem := NewMemory(clk.Now)
	red, err := NewRedis(client, RedisOptions{Prefix: "eq:", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	limits := []Limit{
		{Name: "a", Rate: 3, Per: time.Second, Burst: 2},
		{Name: "b", Rate: 100, Per: time.Minute},
		{Name: "c", Rate: 7, Per: 13 * time.Millisecond, Burst: 5},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5000; i++ {
		l := limits[rng.IntN(len(limits))]
		key := fmt.Sprintf("k%d", rng.IntN(4))
		// Mostly forward in whole µs, sometimes back (another edge's clock).
		step := time.Duration(rng.Int64N(int64(l.Per/time.Duration(l.Rate))*2)) / 1000 * 1000
		if rng.IntN(10) == 0 {
			step = -step / 2
		}
		clk.Add(step)
		dm, err := mem.Allow(ctx, key, l)
		if err != nil {
			t.Fatal(err)
		}
		dr, err := red.Allow(ctx, key, l)
		if err != nil {
			t.Fatal(err)
		}
		if dm != dr {
			t.Fatalf("step %d (%s %s): memory %+v, redis %+v", i, l.Name, key, dm, dr)
		}
	}
}
