package proxy

import (
	"testing"
	"time"
)

// A health checker's verdicts follow its thresholds exactly.
func TestHealthThresholds(t *testing.T) {
	t.Parallel()
	h := NewHealthState("u", nil, nil, time.Now)
	u := &Upstream{Name: "u", Health: h}
	hc := &HealthChecker{Up: u}
	hc.Cfg.HealthyThreshold, hc.Cfg.UnhealthyThreshold = 2, 3
	e := &Endpoint{Addr: "a:1", Label: "a:1", Weight: 1, Health: h}
	steps := []struct {
		ok   bool
		down bool
	}{
		{false, false}, {false, false}, {true, false}, // a success resets the failure streak
		{false, false}, {false, false}, {false, true}, // third failure in a row
		{true, true}, {false, true}, {true, true}, {true, false}, // two successes in a row
	}
	for i, s := range steps {
		hc.Record(e, s.ok)
		if e.Down.Load() != s.down {
			t.Fatalf("step %d (ok=%v): down=%v, want %v", i, s.ok, e.Down.Load(), s.down)
		}
	}
}
