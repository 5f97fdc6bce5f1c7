package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/causewayhq/causeway/internal/redisclient"
)

// Leases (mode: lease, docs/ratelimit.md). An edge takes a lease of n
// tokens for a key from Redis in one atomic script, which subtracts them
// from the key's bucket there, then spends them locally without a round
// trip, and renews in the background before they run out. Tokens are
// handed out only by Redis, so the edges together never admit more than
// the bucket allows; the price is that tokens held by one edge are not
// available to another (bounded: a lease is at most a share of the burst,
// and expires after hold).
//
// Spending a token later than it was granted shifts it into a later window.
// So that no window of the spend times ever holds more than the limit
// allows either, a lease bucket's burst is smaller than the limit's by what
// refills during one hold (leaseBurst): every token spent in [a, b] was
// granted in [a-hold, b], and the bucket grants at most
// burst' + rate·(b-a+hold)/per = burst + rate·(b-a)/per there.

// leaseScript takes up to want tokens from the bucket of KEYS[1] (the
// bucket algorithm of script, with burst already lease-sized) and records
// the edge as seen. ARGV: those of bucketLua, then want and the edge id.
// Returns {granted, remaining, retry µs, reset µs, edges seen in the last
// 2 s}.
const leaseScript = bucketLua + `
local want = tonumber(ARGV[5])
local edge = 'e:' .. ARGV[6]
local all = redis.call('HGETALL', KEYS[1])
local f = {}
for i = 1, #all, 2 do f[all[i]] = all[i + 1] end
local level = levelAt(tonumber(f['l']), tonumber(f['t']), f['p'])
local edges = 1
for k, v in pairs(f) do
  if string.sub(k, 1, 2) == 'e:' and k ~= edge then
    if now - tonumber(v) < 2000000 then edges = edges + 1 else redis.call('HDEL', KEYS[1], k) end
  end
end
local n = math.min(want, math.floor(level / per))
if n < 1 then
  return {0, 0, ceildiv(per - level, rate), ceildiv(cap - level, rate), edges}
end
level = level - n * per
local reset = ceildiv(cap - level, rate)
redis.call('HSET', KEYS[1], 'l', string.format('%.0f', level), 't', string.format('%.0f', now), 'p', sig, edge, string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], math.max(1, ceildiv(reset, 1000) + margin, 2000))
return {n, math.floor(level / per), 0, reset, edges}
`

var leaseRun = redisclient.NewScript(leaseScript)

// maxHold is the longest a leased token may wait to be spent.
const maxHold = time.Second

// leaseHold is how long tokens of a lease for b stay spendable: a second,
// or a twentieth of the window for short windows, so that leaseBurst takes
// at most about 5 % of a limit's burst.
func leaseHold(b bucket) int64 {
	return min(maxHold.Microseconds(), b.per/20)
}

// leaseBucket is b with its burst reduced by what refills during one hold,
// so that spending a token up to a hold after its grant can never put a
// window over the limit (see the package comment above). At least 1.
func leaseBucket(b bucket) bucket {
	refill := ceilDiv(b.rate*leaseHold(b), b.per) // tokens refilled in one hold
	burst := max(1, b.burst-refill)
	return bucket{rate: b.rate, per: b.per, burst: burst, cap: burst * b.per}
}

// leaseTable holds this edge's leases, by bucket key and signature, across
// reloads (a limit that did not change keeps its leases). Its background
// work (renewals) stops with Close.
type leaseTable struct {
	edge string           // this edge's id in the buckets' edge counts
	now  func() time.Time // the Service's clock

	mu  sync.Mutex // guards m, last and gen; taken before a lease's own lock, never after
	m   map[string]*lease
	max int // maxLeases; smaller in the test that makes the table evict
	// last is the clock's latest reading (µs), and gen counts the times
	// it read earlier than that: a step back of the wall clock ends every
	// grant held (see grant.expired).
	last int64
	gen  uint64

	// bg guards starting background work against close. It is a lock of
	// its own because a lease starts work while holding its lock.
	bg     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newLeaseTable(now func() time.Time) *leaseTable {
	var id [6]byte
	_, _ = rand.Read(id[:])
	ctx, cancel := context.WithCancel(context.Background())
	return &leaseTable{edge: hex.EncodeToString(id[:]), now: now, m: map[string]*lease{}, max: maxLeases, ctx: ctx, cancel: cancel}
}

// reading is one reading of the clock for the leases' holds.
type reading struct {
	t   time.Time
	us  int64  // t in µs since the Unix epoch
	gen uint64 // the table's gen when it was read
}

// read reads the clock. Readings are taken under t.mu, so that they are
// ordered: one earlier than the one before is the clock stepping back,
// not two requests racing.
func (t *leaseTable) read() reading {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.readLocked()
}

func (t *leaseTable) readLocked() reading {
	now := t.now()
	us := now.UnixMicro()
	if us < t.last {
		t.gen++
	}
	t.last = us
	return reading{t: now, us: us, gen: t.gen}
}

// maxLeases bounds the table: past it, expired and empty leases are
// dropped, which costs a round trip at their keys' next request.
const maxLeases = 1 << 16

// get returns key's lease and a reading of the clock.
func (t *leaseTable) get(key string) (*lease, reading) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.readLocked()
	l := t.m[key]
	if l == nil {
		if len(t.m) >= t.max {
			for k, x := range t.m {
				if x.idle(now) {
					delete(t.m, k)
				}
			}
		}
		l = &lease{}
		t.m[key] = l
	}
	return l, now
}

// close stops renewals; tokens still held are lost to this
// window (under-admission, never over).
func (t *leaseTable) close() {
	t.bg.Lock()
	t.cancel()
	t.bg.Unlock()
	t.wg.Wait()
}

// lease is one key's tokens on this edge: at most two grants (the current
// one and a renewal), each spendable until its own expiry.
type lease struct {
	mu      sync.Mutex
	grants  [2]grant
	n       int
	last    Decision // Redis's last word on the bucket, for the headers
	rate    float64  // local demand, requests per second (EWMA)
	seenAt  int64    // µs of the previous request
	edges   int      // edges that took leases of this bucket lately
	pending bool     // a renewal is under way
}

type grant struct {
	tokens  int64
	expires int64     // µs on the wall clock: at + the hold
	at      time.Time // when the grant's request went out
	gen     uint64    // the table's gen then
}

// expired reports whether g may no longer be spent at now. A leased token
// may only be spent within a hold of its grant in real time: that is what
// keeps a lease bucket within the limit in every window. The edge's wall
// clock can step (an NTP correction, a resumed VM), so the hold is over
// when any of these says so: the wall clock has passed the expiry; it
// stepped back since the grant (the table's gen moved on: how much real
// time passed is then unknown); or the monotonic clock, when the readings
// carry one (time.Now's do, an injected clock's do not), has measured a
// hold since the grant.
func (g *grant) expired(now reading) bool {
	return now.us >= g.expires || now.gen != g.gen || now.t.Sub(g.at) >= time.Duration(g.expires-g.at.UnixMicro())*time.Microsecond
}

// observe updates the demand estimate with a request at now.
func (l *lease) observe(now int64) {
	if l.seenAt > 0 && now > l.seenAt {
		inst := 1e6 / float64(now-l.seenAt)
		l.rate += 0.2 * (inst - l.rate)
	} else if l.seenAt == 0 {
		l.rate = 0
	}
	l.seenAt = now
}

// expire drops grants past their expiry, with their unspent tokens. They
// are not given back to the bucket: by now it may have refilled to full,
// which counted them already, and tokens added on top of a full bucket
// that other leases then draw from would let the edges spend a whole burst
// plus the tokens given back at one moment. A return could only be exact
// if the bucket knew every edge's unspent tokens. What is lost is at most
// what the edge held, until the bucket refills (never more than the limit).
// It reports how many were dropped.
func (l *lease) expire(now reading) (dropped int64) {
	j := 0
	for i := range l.n {
		if l.grants[i].expired(now) {
			dropped += l.grants[i].tokens
			continue
		}
		l.grants[j] = l.grants[i]
		j++
	}
	l.n = j
	return dropped
}

func (l *lease) available() int64 {
	var n int64
	for i := range l.n {
		n += l.grants[i].tokens
	}
	return n
}

// take spends one token, from the grant that expires first.
func (l *lease) take() bool {
	for i := range l.n {
		if l.grants[i].tokens > 0 {
			l.grants[i].tokens--
			return true
		}
	}
	return false
}

// add holds tokens granted by a request sent at at, spendable for hold
// (µs).
func (l *lease) add(tokens int64, at reading, hold int64) {
	if tokens <= 0 {
		return
	}
	if l.n == len(l.grants) {
		// Both slots taken: the new tokens join the later grant under its
		// (earlier) expiry, the stricter of the two.
		l.grants[1].tokens += tokens
		return
	}
	l.grants[l.n] = grant{tokens: tokens, expires: at.us + hold, at: at.t, gen: at.gen}
	l.n++
}

func (l *lease) idle(now reading) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.expire(now) == 0 && l.n == 0 && !l.pending
}

// want is the size of the next lease: what the local demand spends in half
// a hold, at least 1 (a quiet key asks per request, as exact does), at
// most an even share of the lease burst among the edges seen, halved, so
// tokens never pile up on one edge while another starves.
func (l *lease) want(b bucket, hold int64) int64 {
	n := int64(math.Ceil(l.rate * float64(hold) / 2e6))
	edges := int64(max(1, l.edges))
	share := max(1, b.burst/(2*edges))
	return min(max(1, n), share)
}

// leaseResult is one reply of leaseScript.
type leaseResult struct {
	granted int64
	d       Decision
	edges   int
}

// takeLease runs leaseScript for key.
func (r *Redis) takeLease(ctx context.Context, key string, l Limit, b bucket, want int64, edge string) (leaseResult, error) {
	if r.opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.opts.Timeout)
		defer cancel()
	}
	res := leaseRun.Run(ctx, r.client, []string{r.key(l.Name, key, b)}, r.now(), b.rate, b.per, b.burst, want, edge)
	if err := res.Err(); err != nil {
		return leaseResult{}, fmt.Errorf("ratelimit %q: redis: %w", l.Name, err)
	}
	v, err := ints(res, 5)
	if err != nil {
		return leaseResult{}, fmt.Errorf("ratelimit %q: redis: %w", l.Name, err)
	}
	return leaseResult{granted: v[0], edges: int(v[4]), d: Decision{
		Allowed: v[0] > 0, Limit: l.Rate, Remaining: int(v[1]), RetryAfter: micros(v[2]), ResetAfter: micros(v[3]),
	}}, nil
}

func (r *Redis) now() int64 {
	if r.opts.Now != nil {
		return r.opts.Now().UnixMicro()
	}
	return 0
}

// spendLease takes a token from the lease this edge holds for key, if it
// holds one, and starts a renewal when the lease runs low.
func (s *Service) spendLease(st *store, rl *routeLimit, key string) (Decision, bool) {
	t := s.leases
	lk := leaseKey(st, rl, key)
	l, now := t.get(lk)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.observe(now.us)
	l.expire(now)
	if !l.take() {
		return Decision{}, false
	}
	d := l.last
	d.Allowed, d.RetryAfter = true, 0
	d.Remaining += int(l.available())
	if want := l.want(rl.lb, rl.hold); l.available() <= want/2 && !l.pending && !st.conn.anyDown() {
		l.pending = true
		t.renew(st, rl, key, l, want)
	}
	return d, true
}

// takeLease asks Redis for a lease on the request's way (the edge holds no
// token for key): one token of it is spent on this request, the rest kept.
func (s *Service) takeLease(ctx context.Context, st *store, rl *routeLimit, key string) (Decision, error) {
	l, now := s.leases.get(leaseKey(st, rl, key))
	l.mu.Lock()
	want := l.want(rl.lb, rl.hold)
	l.mu.Unlock()
	res, err := st.limiter.takeLease(ctx, key, rl.limit, rl.lb, want, s.leases.edge)
	if err != nil {
		return Decision{}, err
	}
	l.mu.Lock()
	l.edges, l.last = res.edges, res.d
	if res.granted > 1 {
		// Spendable for one hold from before the request went out: the
		// grant came later, so no token is spent more than a hold after
		// Redis handed it out.
		l.add(res.granted-1, now, rl.hold)
	}
	l.mu.Unlock()
	d := res.d
	if d.Allowed {
		d.Remaining += int(res.granted - 1)
	}
	return d, nil
}

func leaseKey(st *store, rl *routeLimit, key string) string {
	return st.conn.id + "\x00" + st.limiter.opts.Prefix + "\x00" + rl.limit.Name + "\x00" + rl.sig + "\x00" + key
}

// renew takes the next lease in the background.
func (t *leaseTable) renew(st *store, rl *routeLimit, key string, l *lease, want int64) {
	if !t.start() {
		l.pending = false
		return
	}
	go func() {
		defer t.wg.Done()
		t0 := t.read()
		res, err := st.limiter.takeLease(t.ctx, key, rl.limit, rl.lb, want, t.edge)
		l.mu.Lock()
		defer l.mu.Unlock()
		l.pending = false
		if err != nil {
			// The next request without a token asks on its own way and
			// meets the outage there, where on_error applies.
			return
		}
		l.edges, l.last = res.edges, res.d
		l.add(res.granted, t0, rl.hold)
	}()
}

// start registers one background task; false once the table is closed.
func (t *leaseTable) start() bool {
	t.bg.Lock()
	defer t.bg.Unlock()
	if t.ctx.Err() != nil {
		return false
	}
	t.wg.Add(1)
	return true
}
