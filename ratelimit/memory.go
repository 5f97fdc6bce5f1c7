package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// Memory counts limits in this process only: the limiter for an edge
// without a redis section, and the fallback that keeps counting while Redis
// is unreachable with on_error: allow. Time comes from the injected clock.
type Memory struct {
	now    func() time.Time
	seed   maphash.Seed
	shards [memShards]memShard
}

// memShards spreads keys over independently locked maps so concurrent
// requests for different clients rarely wait on each other.
const memShards = 64

type memShard struct {
	mu sync.Mutex
	m  map[string]*memEntry
	// sweepAt is the map size at which the next sweep of idle entries runs;
	// sweeping when the map has doubled keeps the cost amortised O(1).
	sweepAt int
}

type memEntry struct {
	sig   string
	level int64
	last  int64 // µs since the Unix epoch
	full  int64 // µs at which the bucket is full again: idle entries past it are dropped
}

var _ Limiter = (*Memory)(nil)

// NewMemory returns an in-memory limiter; now defaults to time.Now.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	m := &Memory{now: now, seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].m = make(map[string]*memEntry)
		m.shards[i].sweepAt = 1024
	}
	return m
}

// Allow counts one request for key against l.
func (m *Memory) Allow(_ context.Context, key string, l Limit) (Decision, error) {
	b, err := l.bucket()
	if err != nil {
		return Decision{}, err
	}
	return m.allowAt(l.Name+"\x00"+key, b, m.now().UnixMicro()), nil
}

func (m *Memory) allowAt(key string, b bucket, now int64) Decision {
	sig := b.signature()
	sh := &m.shards[maphash.String(m.seed, key)%memShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[key]
	level := b.cap
	if ok && e.sig == sig {
		level = b.refill(e.level, e.last, now)
		// An older stamp (edges' clocks disagree) must not move the stored
		// time back, or the same interval would be refilled twice.
		now = max(now, e.last)
	}
	level, d := b.take(level)
	if !d.Allowed {
		// A refusal changes nothing; a missing entry already means "full".
		return d
	}
	if !ok {
		e = &memEntry{}
		sh.m[key] = e
		if len(sh.m) >= sh.sweepAt {
			sh.sweep(now)
		}
	}
	e.sig, e.level, e.last = sig, level, now
	e.full = now + d.ResetAfter.Microseconds()
	return d
}

// sweep drops entries whose bucket has refilled: they are indistinguishable
// from absent ones, so memory holds only clients that are actually limited.
func (sh *memShard) sweep(now int64) {
	for k, e := range sh.m {
		if e.full <= now {
			delete(sh.m, k)
		}
	}
	sh.sweepAt = max(1024, 2*len(sh.m))
}

// Len is the number of keys held, for tests and the admin API.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
