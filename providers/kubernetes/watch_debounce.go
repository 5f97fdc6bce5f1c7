package kubernetes

import "time"

// debounce decides when a burst of watch events becomes one snapshot. A
// rollout touches many EndpointSlices within milliseconds; rebuilding the
// model for each would swap generations needlessly, so changes wait for a
// quiet period, but never longer than max, so a steady trickle of events
// cannot starve the edge of updates. It holds no clock: the caller passes
// the time in, which keeps it deterministic under test.
type debounce struct {
	quiet, max  time.Duration
	first, last time.Time // zero when nothing is pending
}

// changed records an event seen at now.
func (d *debounce) changed(now time.Time) {
	if d.first.IsZero() {
		d.first = now
	}
	d.last = now
}

// due reports whether pending changes should be flushed at now; if they
// are not yet due, wait is how long until they will be. Flushing clears
// the pending state.
func (d *debounce) due(now time.Time) (flush bool, wait time.Duration) {
	if d.first.IsZero() {
		return false, 0
	}
	at := d.last.Add(d.quiet)
	if limit := d.first.Add(d.max); limit.Before(at) {
		at = limit
	}
	if now.Before(at) {
		return false, at.Sub(now)
	}
	d.first, d.last = time.Time{}, time.Time{}
	return true, 0
}
