package auth

import (
	"sync"
	"sync/atomic"
	"time"
)

// deadlines remembers keys until a deadline each, bounded: the clients a
// basic authenticator blocks, the sign-in states an OIDC callback used, the
// cookie sessions logged out. Adding past limit entries sweeps the expired
// ones, then drops arbitrary others: a flood of new keys cannot grow it,
// and a dropped entry is only a deadline forgotten early (each user says
// what that costs). An expired entry is not deleted when read; the next
// sweep takes it.
type deadlines[K comparable] struct {
	limit int
	// n is len(m), so that a lookup in an empty set (the logged-out
	// sessions, read on every request of a session) takes no lock.
	n  atomic.Int64
	mu sync.RWMutex
	m  map[K]time.Time
}

func newDeadlines[K comparable](limit int) *deadlines[K] {
	return &deadlines[K]{limit: limit, m: map[K]time.Time{}}
}

// until is k's deadline while it has not passed.
func (d *deadlines[K]) until(k K, now time.Time) (time.Time, bool) {
	if d.n.Load() == 0 {
		return time.Time{}, false
	}
	d.mu.RLock()
	t, ok := d.m[k]
	d.mu.RUnlock()
	if !ok || !now.Before(t) {
		return time.Time{}, false
	}
	return t, true
}

// live reports whether k is remembered and its deadline has not passed.
func (d *deadlines[K]) live(k K, now time.Time) bool {
	_, ok := d.until(k, now)
	return ok
}

// set remembers k until t (nothing when t has passed).
func (d *deadlines[K]) set(k K, t, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.setLocked(k, t, now)
}

// claim remembers k until t unless it is remembered already: false then.
// The check and the write are one step, so of two callers racing with the
// same key exactly one gets true.
func (d *deadlines[K]) claim(k K, t, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.m[k]; ok && now.Before(old) {
		return false
	}
	d.setLocked(k, t, now)
	return true
}

func (d *deadlines[K]) setLocked(k K, t, now time.Time) {
	if !now.Before(t) {
		return
	}
	if _, ok := d.m[k]; !ok && len(d.m) >= d.limit {
		for old, ot := range d.m {
			if !now.Before(ot) {
				delete(d.m, old)
			}
		}
		for old := range d.m {
			if len(d.m) < d.limit {
				break
			}
			delete(d.m, old)
		}
	}
	d.m[k] = t
	d.n.Store(int64(len(d.m)))
}
