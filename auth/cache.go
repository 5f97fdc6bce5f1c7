package auth

import (
	"sync"
	"time"
)

// maxCacheTTL bounds how long a verified token is remembered even when its
// exp is far away, so a cache can never outlive a configuration mistake by
// much.
const maxCacheTTL = 5 * time.Minute

// tokenCache remembers tokens that verified, until their exp (plus leeway)
// or until the keys that verified them change. Only tokens that verified are
// stored, so a flood of forged tokens cannot fill it; when full, an
// arbitrary entry goes (Go's map order), which is cheap and good enough for
// a cache whose misses cost one signature check.
type tokenCache struct {
	mu   sync.RWMutex
	size int
	m    map[string]cacheEntry
}

type cacheEntry struct {
	p       *Principal
	until   time.Time
	version uint64 // of the JWKS key set that verified the token
}

func newTokenCache(size int) *tokenCache {
	if size <= 0 {
		return nil
	}
	return &tokenCache{size: size, m: make(map[string]cacheEntry, min(size, 1024))}
}

func (c *tokenCache) get(tok string, now time.Time, version uint64) (*Principal, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.RLock()
	e, ok := c.m[tok]
	c.mu.RUnlock()
	if !ok || e.version != version || !now.Before(e.until) {
		return nil, false
	}
	return e.p, true
}

func (c *tokenCache) put(tok string, e cacheEntry, now time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[tok]; !ok && len(c.m) >= c.size {
		c.evictLocked(now)
	}
	c.m[tok] = e
}

// evictSample is how many entries a full cache looks at for an expired one
// before dropping one that is still valid.
const evictSample = 8

// evictLocked drops one entry: an expired one if the sample holds one, else
// the first sampled (Go's map order makes that an arbitrary one).
func (c *tokenCache) evictLocked(now time.Time) {
	var victim string
	n := 0
	for k, e := range c.m {
		if n == 0 {
			victim = k
		}
		if !now.Before(e.until) {
			victim = k
			break
		}
		if n++; n == evictSample {
			break
		}
	}
	delete(c.m, victim)
}

func (c *tokenCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// remove forgets tok (a session ended here).
func (c *tokenCache) remove(tok string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.m, tok)
	c.mu.Unlock()
}
