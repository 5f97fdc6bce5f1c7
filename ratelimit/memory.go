package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Memory counts limits in this process only: the limiter for an edge
// without a redis section, and the fallback that keeps counting while Redis
// is unreachable with on_error: allow. Time comes from the injected clock.
//
// Its table of keys is bounded (SetMaxKeys, DefaultMaxKeys). A bucket that
// has refilled to full is the same as no bucket, so such entries are
// dropped freely. A bucket that is not full is never dropped: that would
// hand its client a fresh burst, and a client rotating keys (addresses,
// API keys, header values) could then reset its own or a victim's count by
// forcing evictions. Instead, while the table is full, a new key is counted
// in one of overflowSlots shared buckets of its limit (chosen by a keyed
// hash, so a client cannot pick its neighbours), and a key that gets an
// entry of its own later starts no fuller than its shared bucket: a client
// moving between the table and the overflow never gains a token. The price
// of an attack that fills the table is paid by new keys, which share their
// overflow bucket with the attacker's keys that hash to it, never by keys
// already counted.
type Memory struct {
	now    func() time.Time
	seed   maphash.Seed
	shards [memShards]memShard

	// shardCap is the most keys one shard holds (MaxKeys / memShards,
	// rounded up).
	shardCap atomic.Int64
	// over holds the overflow buckets by limit name and signature.
	over sync.Map // string -> *overflow

	overflowed atomic.Uint64 // decisions made on an overflow bucket
	dropped    atomic.Uint64 // full buckets dropped
}

// memShards spreads keys over independently locked maps so concurrent
// requests for different clients rarely wait on each other.
const memShards = 64

// DefaultMaxKeys bounds the in-memory table unless SetMaxKeys says
// otherwise: at roughly 150 bytes per key (map slot, key string, entry),
// about 15 MB.
const DefaultMaxKeys = 100_000

// overflowSlots is how many shared buckets each limit has for the keys that
// find the table full: enough that a victim shares its bucket with a
// thousandth of an attacker's keys, at 16 KB per limit.
const overflowSlots = 1024

type memShard struct {
	mu sync.Mutex
	m  map[string]*memEntry
	// sweepAt is the map size at which the next sweep of idle entries runs;
	// sweeping when the map has doubled keeps the cost amortised O(1).
	sweepAt int
	// misses counts new keys sent to the overflow since the last sweep; at
	// the cap a sweep runs only once they are an eighth of the shard, so
	// an attacker filling the table cannot make every request a sweep.
	misses int
}

type memEntry struct {
	// params are the limit's the level was counted under (see
	// bucket.signature): compared as numbers, no string per request.
	params [3]int64
	level  int64
	last   int64 // µs since the Unix epoch
	full   int64 // µs at which the bucket is full again: idle entries past it are dropped
}

// overflow is one limit's shared buckets. A slot's zero value is a full
// bucket.
type overflow struct {
	mu    sync.Mutex
	slots [overflowSlots]struct {
		level, last int64
		used        bool
	}
}

var _ Limiter = (*Memory)(nil)

// NewMemory returns an in-memory limiter holding at most DefaultMaxKeys
// keys; now defaults to time.Now.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	m := &Memory{now: now, seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].m = make(map[string]*memEntry)
		m.shards[i].sweepAt = 1024
	}
	m.SetMaxKeys(DefaultMaxKeys)
	return m
}

// SetMaxKeys bounds the keys held (n <= 0: DefaultMaxKeys). Lowering it
// drops nothing at once: a shard above the new bound sends new keys to the
// overflow until its entries refill and are swept.
func (m *Memory) SetMaxKeys(n int) {
	if n <= 0 {
		n = DefaultMaxKeys
	}
	m.shardCap.Store(int64((n + memShards - 1) / memShards))
}

// Allow counts one request for key against l.
func (m *Memory) Allow(_ context.Context, key string, l Limit) (Decision, error) {
	b, err := l.bucket()
	if err != nil {
		return Decision{}, err
	}
	return m.allowAt(l.Name, key, b, m.now().UnixMicro()), nil
}

func (m *Memory) allowAt(name, key string, b bucket, now int64) Decision {
	// The table's key is name NUL key, built on the stack: looking it up
	// allocates nothing, and only a new entry's key is copied to the heap.
	var buf [128]byte
	k := append(append(append(buf[:0], name...), 0), key...)
	h := maphash.Bytes(m.seed, k)
	sh := &m.shards[h%memShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[string(k)]
	var level int64
	if ok && e.params == b.params() {
		level = b.refill(e.level, e.last, now)
		// An older stamp (edges' clocks disagree) must not move the stored
		// time back, or the same interval would be refilled twice.
		now = max(now, e.last)
	} else {
		sig := b.signature()
		if !ok && int64(len(sh.m)) >= m.shardCap.Load() {
			sh.misses++
			if sh.misses >= max(16, len(sh.m)/8) {
				m.sweep(sh, now)
			}
			if int64(len(sh.m)) >= m.shardCap.Load() {
				m.overflowed.Add(1)
				return m.overflowFor(name, sig).allow(h, b, now)
			}
		}
		// A new entry starts no fuller than the key's overflow bucket: the
		// key may have spent from it while the table was full.
		level = b.cap
		if v, found := m.over.Load(name + "\x00" + sig); found {
			level = min(level, v.(*overflow).level(h, b, now))
		}
	}
	level, d := b.take(level)
	if !d.Allowed {
		// A refusal changes nothing; a missing entry already means "full"
		// (or its overflow bucket's level, which refills on its own).
		return d
	}
	if !ok {
		e = &memEntry{}
		sh.m[string(k)] = e
		if len(sh.m) >= sh.sweepAt {
			m.sweep(sh, now)
		}
	}
	e.params, e.level, e.last = b.params(), level, now
	e.full = now + d.ResetAfter.Microseconds()
	return d
}

// sweep drops sh's entries whose bucket has refilled: they are
// indistinguishable from absent ones, so memory holds only clients that are
// actually limited.
func (m *Memory) sweep(sh *memShard, now int64) {
	n := len(sh.m)
	for k, e := range sh.m {
		if e.full <= now {
			delete(sh.m, k)
		}
	}
	m.dropped.Add(uint64(n - len(sh.m)))
	sh.sweepAt = max(1024, 2*len(sh.m))
	sh.misses = 0
}

func (m *Memory) overflowFor(name, sig string) *overflow {
	k := name + "\x00" + sig
	if v, ok := m.over.Load(k); ok {
		return v.(*overflow)
	}
	v, _ := m.over.LoadOrStore(k, &overflow{})
	return v.(*overflow)
}

// slot picks the overflow bucket of a key's hash: bits the shard index
// does not use.
func slot(h uint64) int { return int((h >> 32) % overflowSlots) }

// level is the level at now of the overflow bucket of the key hashed to h.
func (o *overflow) level(h uint64, b bucket, now int64) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := &o.slots[slot(h)]
	if !s.used {
		return b.cap
	}
	return b.refill(s.level, s.last, now)
}

// allow counts one request on the overflow bucket of the key hashed to h.
func (o *overflow) allow(h uint64, b bucket, now int64) Decision {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := &o.slots[slot(h)]
	level := b.cap
	if s.used {
		level = b.refill(s.level, s.last, now)
		now = max(now, s.last)
	}
	level, d := b.take(level)
	if d.Allowed {
		s.level, s.last, s.used = level, now, true
	}
	return d
}

// MemoryStats is what the in-memory limiter holds and has done, for the
// metrics.
type MemoryStats struct {
	Keys int
	// Overflowed counts decisions made on a shared overflow bucket because
	// the table was full; Dropped counts refilled buckets swept away.
	Overflowed, Dropped uint64
}

// Stats reports the table's size and its counters.
func (m *Memory) Stats() MemoryStats {
	return MemoryStats{Keys: m.Len(), Overflowed: m.overflowed.Load(), Dropped: m.dropped.Load()}
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

// memoryCollector exports the in-memory table of a Service's limits.
type memoryCollector struct {
	mem                 *Memory
	keys, over, dropped *prometheus.Desc
}

// NewMemoryCollector returns the collector of the in-memory limiter's
// metrics for s, for the gateway to register in its own registry:
// causeway_ratelimit_memory_keys, causeway_ratelimit_memory_overflow_total
// and causeway_ratelimit_memory_dropped_total.
func NewMemoryCollector(s *Service) prometheus.Collector {
	return memoryCollector{
		mem: s.mem,
		keys: prometheus.NewDesc("causeway_ratelimit_memory_keys",
			"Keys held by the in-memory rate limiter (at most rate_limit_memory.max_keys).", nil, nil),
		over: prometheus.NewDesc("causeway_ratelimit_memory_overflow_total",
			"In-memory rate-limit decisions made on a shared overflow bucket because the table of keys was full.", nil, nil),
		dropped: prometheus.NewDesc("causeway_ratelimit_memory_dropped_total",
			"In-memory rate-limit buckets dropped from the table after refilling to full (nothing is lost).", nil, nil),
	}
}

func (c memoryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.keys
	ch <- c.over
	ch <- c.dropped
}

func (c memoryCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.mem.Stats()
	ch <- prometheus.MustNewConstMetric(c.keys, prometheus.GaugeValue, float64(st.Keys))
	ch <- prometheus.MustNewConstMetric(c.over, prometheus.CounterValue, float64(st.Overflowed))
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(st.Dropped))
}

var _ prometheus.Collector = memoryCollector{}
