package kubernetes

import (
	"testing"
	"time"
)

func TestDebounce(t *testing.T) {
	const ms = time.Millisecond
	type step struct {
		at    time.Duration // offset from the start
		event bool          // an event arrives at this offset; otherwise due is checked
		flush bool
		wait  time.Duration
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"nothing pending", []step{{at: 0, flush: false, wait: 0}}},
		{"one event waits for quiet", []step{
			{at: 0, event: true},
			{at: 50 * ms, wait: 50 * ms},
			{at: 100 * ms, flush: true},
			{at: 101 * ms, flush: false, wait: 0},
		}},
		{"burst is coalesced", []step{
			{at: 0, event: true},
			{at: 60 * ms, event: true},
			{at: 100 * ms, wait: 60 * ms},
			{at: 159 * ms, wait: 1 * ms},
			{at: 160 * ms, flush: true},
		}},
		{"steady trickle is capped by max", func() []step {
			var s []step
			for i := time.Duration(0); i < 1000*ms; i += 50 * ms {
				s = append(s, step{at: i, event: true})
			}
			return append(s,
				step{at: 999 * ms, wait: 1 * ms},
				step{at: 1000 * ms, flush: true},
			)
		}()},
		{"late check flushes", []step{
			{at: 0, event: true},
			{at: 5 * time.Second, flush: true},
		}},
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := debounce{quiet: 100 * ms, max: time.Second}
			for i, s := range tt.steps {
				now := start.Add(s.at)
				if s.event {
					d.changed(now)
					continue
				}
				flush, wait := d.due(now)
				if flush != s.flush || wait != s.wait {
					t.Fatalf("step %d at %v: due = (%v, %v), want (%v, %v)", i, s.at, flush, wait, s.flush, s.wait)
				}
			}
		})
	}
}
