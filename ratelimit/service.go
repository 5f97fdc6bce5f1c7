package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/internal/redisclient"
	"github.com/causewayhq/causeway/internal/refpool"
	"github.com/causewayhq/causeway/routes"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Decision label values of causeway_ratelimit_decisions_total.
const (
	DecisionAllowed = "allowed"
	DecisionLimited = "limited"
	// DecisionError counts decisions Redis could not make (unreachable or
	// too slow). With on_error: allow the in-memory fallback's outcome is
	// counted as allowed or limited as well.
	DecisionError = "error"
)

// NewDecisionsMetric returns the counter vector Options.Decisions expects,
// for the gateway to register in its own registry.
func NewDecisionsMetric() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "causeway_ratelimit_decisions_total",
		Help: "Rate-limit decisions by limit and outcome (allowed, limited, error).",
	}, []string{"limit", "decision"})
}

// Options configures a Service.
type Options struct {
	// Decisions counts decisions; labels: limit, decision. May be nil.
	Decisions *prometheus.CounterVec
	Logger    *slog.Logger
	// Now is the clock of the in-memory limiter and the local denial cache
	// (default time.Now).
	Now func() time.Time
	// RedisNow, when set, stamps Redis decisions instead of Redis's own
	// TIME, so tests are exact without sleeping. Leave it nil in
	// production: Redis's clock is the one clock all edges share.
	RedisNow func() time.Time
}

// probeInterval is how long an unreachable Redis is left alone before one
// request tries it again; meanwhile decisions go straight to on_error, so
// an outage costs no time-out per request.
const probeInterval = 500 * time.Millisecond

// denyCacheSize bounds the local memory of refusals.
const denyCacheSize = 1 << 16

// Service applies the routes file's rate limits. It lives across reloads:
// in-memory counters survive a reload, and a reload that does not change how
// Redis is reached keeps the same client and connections.
type Service struct {
	// ctx bounds the Redis calls made outside a request (loading the
	// scripts when a configuration is committed): the server's lifetime.
	ctx    context.Context
	opts   Options
	log    *slog.Logger
	now    func() time.Time
	mem    *Memory
	denied *denyCache
	leases *leaseTable

	cur atomic.Pointer[snapshot]

	mu sync.Mutex // serialises Configure and Close
	// conns are the Redis clients by connID, each held by the Service
	// while it is the current configuration's and by every Prepared built
	// on it until that is released: a client stays open while any
	// middleware built on it can still serve, and no longer.
	conns *refpool.Pool[string, *conn]
	// connKey is the current configuration's client ("": none), on which
	// the Service holds its own reference.
	connKey string
	closed  bool
}

// snapshot is one applied configuration. Middlewares keep the snapshot that
// was current when they were built.
type snapshot struct {
	limits  map[string]routes.RateLimit
	trusted []netip.Prefix
	maxKeys int    // rate_limit_memory.max_keys (0: DefaultMaxKeys)
	store   *store // nil: count in memory
}

// store is the Redis side of a snapshot.
type store struct {
	conn    *conn
	limiter *Redis
	deny    bool // on_error: deny
}

// conn is one Redis client and what is known about its reachability.
type conn struct {
	id      string // identity of the connection settings, password included as a hash
	client  redis.UniversalClient
	batch   *Batcher // pipelines concurrent decisions on client; closed with it
	timeout time.Duration
	log     *slog.Logger

	// whole is the breaker of the whole client: a single Redis, or a
	// Cluster failing in a way no one master explains (its slot map cannot
	// be read, the scripts cannot be loaded). While it is down, every
	// decision follows it.
	whole breaker
	// cluster is the client when it is a Redis Cluster client; its masters
	// then each have a breaker of their own, so that one master failing
	// sends only the keys in its slots to on_error.
	cluster *redis.ClusterClient
	shards  sync.Map // master address -> *breaker

	// shardMu guards starting a master's Batcher against close.
	shardMu     sync.Mutex
	shardClosed bool

	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool

	// checkOnce runs check when a configuration with this client is
	// first committed.
	checkOnce sync.Once
}

// New returns a Service with no limits; call Configure before Middleware.
func New(ctx context.Context, opts Options) *Service {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Service{
		ctx:    ctx,
		opts:   opts,
		log:    log,
		now:    now,
		mem:    NewMemory(now),
		denied: newDenyCache(denyCacheSize),
		leases: newLeaseTable(now),
		conns:  refpool.New[string]((*conn).close),
	}
}

// Configure applies f.Redis and f.RateLimits. On error the previous
// configuration stays in force. Middleware built on an earlier
// configuration must not be used once the next one is applied (its Redis
// client may be closed); a server that keeps serving on the old one while
// the new one is built uses Prepare, Commit and Release instead.
func (s *Service) Configure(ctx context.Context, f *routes.File) error {
	p, err := s.Prepare(ctx, f)
	if err != nil {
		return err
	}
	s.Commit(p)
	p.Release()
	return nil
}

// Prepared is a configuration built by Prepare and not yet in force: its
// Middleware can be built, but the Service keeps deciding (and Ready keeps
// reporting) with the configuration in force until Commit. It holds its
// Redis client open until Release, which its owner calls once no
// middleware built on it can run any more (or at once, as Abort, when it
// is not committed).
type Prepared struct {
	s    *Service
	snap *snapshot
	// connKey is the client this configuration holds ("": none).
	connKey string
	conn    *conn
	once    sync.Once
	done    bool // committed or aborted; guarded by s.mu
}

// Prepare builds a configuration from f without changing the one in
// force: limits, and a Redis client when how Redis is reached changed.
func (s *Service) Prepare(ctx context.Context, f *routes.File) (*Prepared, error) {
	if f == nil {
		return nil, errors.New("ratelimit: configure: no routes file")
	}
	limits := make(map[string]routes.RateLimit, len(f.RateLimits))
	for name, rl := range f.RateLimits {
		if _, err := LimitFromRoutes(name, rl).bucket(); err != nil {
			return nil, fmt.Errorf("ratelimit: configure: %w", err)
		}
		limits[name] = rl
	}
	trusted := make([]netip.Prefix, 0, len(f.TrustedProxies))
	for _, p := range f.TrustedProxies {
		pfx, err := routes.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("ratelimit: configure: trusted_proxies: %w", err)
		}
		trusted = append(trusted, pfx)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("ratelimit: configure: service is closed")
	}
	if f.RateLimitMemory.MaxKeys < 0 {
		return nil, fmt.Errorf("ratelimit: configure: rate_limit_memory.max_keys must not be negative (found %d)", f.RateLimitMemory.MaxKeys)
	}
	p := &Prepared{s: s, snap: &snapshot{limits: limits, trusted: trusted, maxKeys: f.RateLimitMemory.MaxKeys}}
	if f.Redis != nil {
		id, err := connID(f.Redis)
		if err != nil {
			return nil, fmt.Errorf("ratelimit: configure: %w", err)
		}
		next, _, err := s.conns.Acquire(id, func() (*conn, error) {
			client, err := redisclient.New(f.Redis)
			if err != nil {
				return nil, err
			}
			batch, err := NewBatcher(client, BatchOptions{})
			if err != nil {
				_ = client.Close()
				return nil, err
			}
			c := &conn{id: id, client: client, batch: batch, timeout: redisclient.Timeout(f.Redis), log: s.log}
			c.whole.ping = client
			c.cluster, _ = client.(*redis.ClusterClient)
			// No round trip yet: the file may still be refused, and
			// a refused file must reach no Redis it names (nor log
			// about one). Commit loads the scripts.
			return c, nil
		})
		if err != nil {
			return nil, fmt.Errorf("ratelimit: configure: %w", err)
		}
		p.connKey, p.conn = id, next
		lim, err := NewRedis(next.client, RedisOptions{Prefix: f.Redis.KeyPrefix, Timeout: next.timeout, Now: s.opts.RedisNow, Batcher: next.batch})
		if err != nil {
			_, _ = s.conns.Release(id)
			return nil, fmt.Errorf("ratelimit: configure: %w", err)
		}
		if next.cluster != nil {
			lim.batches = next
		}
		p.snap.store = &store{conn: next, limiter: lim, deny: f.Redis.OnError == "deny"}
	}
	return p, nil
}

// Middleware is Service.Middleware on the prepared configuration.
func (p *Prepared) Middleware(route routes.Route, src KeySources) (func(http.Handler) http.Handler, error) {
	return p.s.middleware(p.snap, route, src)
}

// Commit puts p in force: Ready reports on it, Middleware builds on it,
// and the client it replaced closes once no configuration holds it.
func (s *Service) Commit(p *Prepared) {
	if s.commit(p) && p.conn != nil {
		// The first configuration in force with this client loads the
		// scripts (see check), so that Ready is truthful from now on.
		// Outside s.mu: a Redis that does not answer holds this up to
		// the client's timeout, and Ready and Redis must not wait on it.
		p.conn.checkOnce.Do(func() { p.conn.check(s.ctx, s.now().UnixMicro()) })
	}
}

// commit is Commit's bookkeeping; false when p is not put in force.
func (s *Service) commit(p *Prepared) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.done || s.closed {
		p.done = true
		return false
	}
	p.done = true
	if p.connKey != "" {
		_, _ = s.conns.Load(p.connKey) // the Service's own reference
	}
	if s.connKey != "" {
		_, _ = s.conns.Release(s.connKey)
	}
	s.connKey = p.connKey
	s.mem.SetMaxKeys(p.snap.maxKeys)
	s.cur.Store(p.snap)
	return true
}

// Release drops p's hold on its Redis client; call it once no middleware
// built on p can run. It is safe to call more than once.
func (p *Prepared) Release() {
	p.once.Do(func() {
		if p.connKey != "" {
			_, _ = p.s.conns.Release(p.connKey)
		}
	})
}

// Abort frees a configuration that will not be committed: a Redis client
// made for it alone is closed now. Middlewares built on it must not be used.
func (p *Prepared) Abort() {
	p.s.mu.Lock()
	p.done = true
	p.s.mu.Unlock()
	p.Release()
}

// connID identifies how Redis is reached: a reload with the same identity
// keeps the client. It is a hash, so neither the password from
// password_env nor one written into the URL is kept in it.
func connID(r *routes.Redis) (string, error) {
	c := *r
	c.OnError, c.KeyPrefix = "", "" // per-configuration, not per-connection
	pw := ""
	if c.PasswordEnv != "" {
		v, ok := os.LookupEnv(c.PasswordEnv)
		if !ok || v == "" {
			return "", fmt.Errorf("redis: password_env names %s, which is not set or empty", c.PasswordEnv)
		}
		pw = v
	}
	h := sha256.New()
	fmt.Fprintf(h, "%#v\x00%s", c, pw)
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (c *conn) close() error {
	c.closeOnce.Do(func() {
		// The client first: closing it ends pipelines in flight at once,
		// so the batcher's workers stop without waiting out a time-out.
		c.closeErr = c.client.Close()
		c.batch.Close()
		c.shardMu.Lock()
		c.shardClosed = true
		c.shardMu.Unlock()
		c.shards.Range(func(_, b any) bool {
			if bt := b.(*breaker).batch.Load(); bt != nil {
				bt.Close()
			}
			return true
		})
		c.closed.Store(true)
	})
	return c.closeErr
}

func (c *conn) isClosed() bool { return c.closed.Load() }

// RedisStatus is what is known about the Redis of the current
// configuration, for the admin API and the metrics.
type RedisStatus struct {
	// Configured is false when limits are counted in memory only; the
	// other fields are then zero.
	Configured bool   `json:"configured"`
	Reachable  bool   `json:"reachable"`
	OnError    string `json:"on_error,omitempty"`
	// LastError is why the last call failed while Redis is unreachable.
	LastError string `json:"last_error,omitempty"`
}

// Redis reports the state of the current configuration's Redis. While it is
// down, a call may probe it (at most once per probeInterval, shared with
// requests), so that the state recovers even when no limited request comes.
func (s *Service) Redis() RedisStatus {
	snap := s.cur.Load()
	if snap == nil || snap.store == nil {
		return RedisStatus{}
	}
	st := RedisStatus{Configured: true, OnError: "allow"}
	if snap.store.deny {
		st.OnError = "deny"
	}
	c := snap.store.conn
	now := s.now().UnixMicro()
	st.Reachable = true
	c.eachBreaker(func(b *breaker) {
		if !b.down.Load() {
			return
		}
		if b.tryProbe(now) {
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			err := b.ping.Ping(ctx).Err()
			if err != nil && b.node != "" && !c.servesSlots(b.node) {
				// A master that failed over: its keys are counted on the
				// replica that took its slots, so the edge is not
				// unready because the old address is gone.
				b.retired.Store(true)
				c.log.Info("ratelimit: redis master no longer serves any slot; its keys follow the new master", "master", b.node)
			}
			cancel()
			b.report(c.log, err, now)
			if b.retired.Load() {
				return
			}
		}
		if err := b.err(); err != nil && st.Reachable {
			st.Reachable = false
			st.LastError = err.Error()
			if b.node != "" {
				st.LastError = "master " + b.node + ": " + st.LastError
			}
		}
	})
	return st
}

// Ready reports whether decisions can be made as configured: nil unless
// Redis is configured, unreachable, and on_error is deny. With allow an
// outage is absorbed (decisions are counted in memory), so it must not take
// the edge out of its load balancer: a Redis restart would otherwise empty
// the pool of every edge at once.
func (s *Service) Ready() error {
	st := s.Redis()
	if !st.Configured || st.Reachable || st.OnError != "deny" {
		return nil
	}
	return fmt.Errorf("ratelimit: redis unreachable and on_error is deny: %s", st.LastError)
}

// redisUp exports causeway_ratelimit_redis_up: 1 while the configured
// Redis answers, 0 while it does not; nothing when limits are in memory.
type redisUp struct {
	svc  *Service
	desc *prometheus.Desc
}

// NewRedisUpCollector returns the collector of causeway_ratelimit_redis_up
// for s, for the gateway to register in its own registry.
func NewRedisUpCollector(s *Service) prometheus.Collector {
	return redisUp{svc: s, desc: prometheus.NewDesc("causeway_ratelimit_redis_up",
		"Whether the rate limits' Redis is reachable (1) or not (0); on_error decides what an outage does. Absent without redis.",
		[]string{"on_error"}, nil)}
}

func (r redisUp) Describe(ch chan<- *prometheus.Desc) { ch <- r.desc }

func (r redisUp) Collect(ch chan<- prometheus.Metric) {
	st := r.svc.Redis()
	if !st.Configured {
		return
	}
	v := 0.0
	if st.Reachable {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(r.desc, prometheus.GaugeValue, v, st.OnError)
}

var _ prometheus.Collector = redisUp{}

// Close releases every Redis client. Middlewares built earlier must no
// longer be used.
func (s *Service) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.leases.close()
	if s.connKey != "" {
		_, _ = s.conns.Release(s.connKey)
		s.connKey = ""
	}
	// Configurations not yet released (a shutdown that could not wait for
	// them) lose their clients now: the Service is gone.
	var errs []error
	s.conns.Range(func(_ string, c *conn) bool {
		errs = append(errs, c.close())
		return true
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ratelimit: closing redis: %w", err)
	}
	return nil
}

// check loads the scripts (on every master of a Cluster), so the first
// decision is one round trip, and so that Ready is truthful from the start.
// An unreachable Redis is not a configuration error: on_error decides, and
// a later NOSCRIPT loads the script then.
func (c *conn) check(ctx context.Context, now int64) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	err := c.client.ScriptLoad(ctx, script).Err()
	if err == nil {
		err = c.client.ScriptLoad(ctx, leaseScript).Err()
	}
	c.whole.report(c.log, err, now)
}

// breaker is what is known about the reachability of a Redis client, or
// of one Cluster master.
type breaker struct {
	node string        // the master's address; "" for the whole client
	ping redis.Cmdable // probed by RedisStatus while down
	// batch pipelines the decisions for this master's slots (a Cluster
	// master's breaker only); started with its first decision, under
	// conn.shardMu.
	batch atomic.Pointer[Batcher]

	// reload asks the Cluster client for a fresh slot map (a Cluster
	// master's breaker only): see report.
	reload func()
	// retired: the master no longer serves any slot of the Cluster (it
	// failed over, its replica took its slots). Its breaker then says
	// nothing about Redis: it is left out of readiness and of anyDown
	// until the address serves slots again.
	retired atomic.Bool

	down    atomic.Bool
	mu      sync.Mutex
	retryAt int64 // µs: when the next probe may run
	probing bool
	lastErr error
}

// breakerFor returns the breaker a decision on the Redis key rkey follows:
// the whole client's while it is down or without a Cluster; else that of
// the master serving rkey's slot, from the client's slot map (no round trip).
func (c *conn) breakerFor(ctx context.Context, rkey func() string) *breaker {
	if c.cluster == nil || c.whole.down.Load() {
		return &c.whole
	}
	if b := c.shard(ctx, rkey()); b != nil {
		return b
	}
	return &c.whole
}

// shard returns the breaker of the Cluster master serving key's slot, or
// nil when the client's slot map cannot say.
func (c *conn) shard(ctx context.Context, key string) *breaker {
	node, err := c.cluster.MasterForKey(ctx, key)
	if err != nil {
		return nil
	}
	addr := node.Options().Addr
	v, ok := c.shards.Load(addr)
	if !ok {
		v, _ = c.shards.LoadOrStore(addr, &breaker{node: addr, ping: node, reload: func() { c.cluster.ReloadState(context.Background()) }})
	}
	b := v.(*breaker)
	if b.retired.Load() {
		b.retired.Store(false) // the slot map gives it slots again
	}
	return b
}

// servesSlots asks the Cluster whether addr is the master of some slot.
// Only an answer that names other masters says no.
func (c *conn) servesSlots(addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	slots, err := c.cluster.ClusterSlots(ctx).Result() //nolint:staticcheck // CLUSTER SHARDS needs Redis 7; CLUSTER SLOTS answers on every version
	if err != nil || len(slots) == 0 {
		return true
	}
	for _, r := range slots {
		if len(r.Nodes) > 0 && r.Nodes[0].Addr == addr {
			return true
		}
	}
	return false
}

// eval sends a decision through the Batcher of the master serving key: a
// Batcher has a few round trips in flight at a time, and one shared by all
// masters would let a master that stopped answering (each of its round
// trips waiting out the time-out) hold the decisions of every other master
// in its queue until they time out too.
func (c *conn) eval(ctx context.Context, key string, args [4]int64) ([4]int64, error) {
	b := c.shard(ctx, key)
	if b == nil {
		return c.batch.eval(ctx, key, args)
	}
	bt := b.batch.Load()
	if bt == nil {
		c.shardMu.Lock()
		if bt = b.batch.Load(); bt == nil && !c.shardClosed {
			// The Cluster client routes each command to its slot's
			// master, so this Batcher's pipelines only reach b's master.
			bt, _ = NewBatcher(c.client, BatchOptions{}) // a client and default options: cannot fail
			b.batch.Store(bt)
		}
		c.shardMu.Unlock()
	}
	if bt == nil {
		return [4]int64{}, errBatcherClosed
	}
	return bt.eval(ctx, key, args)
}

// eachBreaker calls f with the whole client's breaker, then each master's.
func (c *conn) eachBreaker(f func(*breaker)) {
	f(&c.whole)
	c.shards.Range(func(_, v any) bool {
		if b := v.(*breaker); !b.retired.Load() {
			f(b)
		}
		return true
	})
}

// anyDown reports whether some breaker is open: some keys go to on_error.
func (c *conn) anyDown() bool {
	down := false
	c.eachBreaker(func(b *breaker) { down = down || b.down.Load() })
	return down
}

// usable says whether this decision should go to Redis: always while it is
// up; while it is down, only for the one request that probes it after
// probeInterval.
func (b *breaker) usable(now int64) bool {
	if !b.down.Load() {
		return true
	}
	return b.tryProbe(now)
}

func (b *breaker) tryProbe(now int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.down.Load() {
		return true
	}
	if b.probing || now < b.retryAt {
		return false
	}
	b.probing = true
	return true
}

// report records the outcome of a Redis call and logs transitions only, so
// an outage is two log lines, not one per request.
func (b *breaker) report(log *slog.Logger, err error, now int64) {
	if err == nil && !b.down.Load() {
		return
	}
	if err != nil && b.reload != nil {
		// A master that cannot be reached may have been replaced: killed,
		// its replica promoted. The Cluster client learns a new slot map
		// only from a MOVED, which a dead master never sends, or once a
		// minute, so until then it would send the master's keys to the
		// dead address. Each failure (while down, one probe per
		// probeInterval) asks for the map again; go-redis runs one
		// reload at a time, in the background.
		b.reload()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
	attrs := []any{}
	if b.node != "" {
		attrs = append(attrs, "master", b.node)
	}
	if err == nil {
		b.down.Store(false)
		b.lastErr = nil
		log.Info("ratelimit: redis reachable again; counting in redis", attrs...)
		return
	}
	b.lastErr = err
	b.retryAt = now + probeInterval.Microseconds()
	if !b.down.Swap(true) {
		log.Warn("ratelimit: redis unreachable; applying on_error", append(attrs, "error", err.Error())...)
	}
}

// err is why the breaker is open; nil while it is closed.
func (b *breaker) err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.down.Load() {
		return nil
	}
	if b.lastErr == nil {
		return errors.New("unreachable")
	}
	return b.lastErr
}

// abandonProbe lets another request probe when this one was cancelled
// before Redis answered.
func (b *breaker) abandonProbe() {
	if !b.down.Load() {
		return
	}
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}
