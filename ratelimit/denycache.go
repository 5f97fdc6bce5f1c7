package ratelimit

import "sync"

// denyCache remembers refusals until their retry time so that a client far
// over its limit costs no Redis round trip per request. It is exact, not an
// approximation: a refusal writes nothing, and nothing but time can refill
// a bucket, so until RetryAfter has passed Redis would refuse again with the
// same answer (only the clocks' skew between edges can move it).
type denyCache struct {
	mu  sync.Mutex
	m   map[string]denial
	max int
	// misses counts refusals not remembered because the table was full
	// since its last scan for ended ones; scans counts those scans.
	misses, scans int
}

type denial struct {
	until, reset int64 // µs on the local clock
	limit        int
}

func newDenyCache(limit int) *denyCache {
	return &denyCache{m: make(map[string]denial), max: limit}
}

func (c *denyCache) get(key string, now int64) (Decision, bool) {
	c.mu.Lock()
	e, ok := c.m[key]
	if ok && now >= e.until {
		delete(c.m, key)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return Decision{}, false
	}
	return Decision{Limit: e.limit, RetryAfter: micros(e.until - now), ResetAfter: micros(max(e.reset-now, 0))}, true
}

func (c *denyCache) put(key string, now int64, d Decision) {
	if d.Allowed || d.RetryAfter <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		// Scanning the whole table for ended refusals costs O(max) under
		// the lock every limited request takes: a client varying its key
		// could make every refusal a scan once the table is full of live
		// ones. So scan once per eighth of the table's size in refusals
		// not remembered, which keeps the cost O(1) per refusal.
		c.misses++
		if c.misses < max(1, c.max/8) {
			return
		}
		c.misses = 0
		c.scans++
		for k, e := range c.m {
			if now >= e.until {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.max {
			// Full of live refusals: not caching costs round trips, never
			// correctness.
			return
		}
	}
	c.m[key] = denial{until: now + d.RetryAfter.Microseconds(), reset: now + d.ResetAfter.Microseconds(), limit: d.Limit}
}
