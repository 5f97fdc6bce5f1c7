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
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/internal/redisclient"
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
	opts   Options
	log    *slog.Logger
	now    func() time.Time
	mem    *Memory
	denied *denyCache

	cur atomic.Pointer[snapshot]

	mu     sync.Mutex // serialises Configure and Close
	conn   *conn      // the client of the current configuration
	conns  map[*conn]struct{}
	closed bool
}

// snapshot is one applied configuration. Middlewares keep the snapshot that
// was current when they were built.
type snapshot struct {
	limits  map[string]routes.RateLimit
	trusted []netip.Prefix
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

	down    atomic.Bool
	mu      sync.Mutex
	retryAt int64 // µs: when the next probe may run
	probing bool
	lastErr error

	// A replaced client must stay open while any middleware built on it
	// can still serve (in-flight requests, or a reload refused after this
	// package had applied it), and no longer. refs counts the snapshots
	// using it; a snapshot's release runs when the garbage collector finds
	// it unreachable, i.e. when no middleware holds it any more.
	refs      atomic.Int64
	retired   atomic.Bool
	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool
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
		opts:   opts,
		log:    log,
		now:    now,
		mem:    NewMemory(now),
		denied: newDenyCache(denyCacheSize),
		conns:  make(map[*conn]struct{}),
	}
}

// Configure applies f.Redis and f.RateLimits. On error the previous
// configuration stays in force.
func (s *Service) Configure(ctx context.Context, f *routes.File) error {
	p, err := s.Prepare(ctx, f)
	if err != nil {
		return err
	}
	s.Commit(p)
	return nil
}

// Prepared is a configuration built by Prepare and not yet in force: its
// Middleware can be built, but the Service keeps deciding (and Ready keeps
// reporting) with the configuration in force until Commit. Abort frees it
// instead.
type Prepared struct {
	s    *Service
	snap *snapshot
	// fresh is a Redis client made for this configuration alone; Abort
	// closes it, Commit makes it the Service's.
	fresh *conn
	done  bool
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
	p := &Prepared{s: s, snap: &snapshot{limits: limits, trusted: trusted}}
	if f.Redis != nil {
		id, err := connID(f.Redis)
		if err != nil {
			return nil, fmt.Errorf("ratelimit: configure: %w", err)
		}
		next := s.conn
		if next == nil || next.id != id {
			client, err := redisclient.New(f.Redis)
			if err != nil {
				return nil, fmt.Errorf("ratelimit: configure: %w", err)
			}
			batch, err := NewBatcher(client, BatchOptions{})
			if err != nil {
				_ = client.Close()
				return nil, fmt.Errorf("ratelimit: configure: %w", err)
			}
			next = &conn{id: id, client: client, batch: batch, timeout: redisclient.Timeout(f.Redis), log: s.log}
			next.check(ctx, s.now().UnixMicro())
			p.fresh = next
		}
		lim, err := NewRedis(next.client, RedisOptions{Prefix: f.Redis.KeyPrefix, Timeout: next.timeout, Now: s.opts.RedisNow, Batcher: next.batch})
		if err != nil {
			if p.fresh != nil {
				_ = p.fresh.close()
			}
			return nil, fmt.Errorf("ratelimit: configure: %w", err)
		}
		p.snap.store = &store{conn: next, limiter: lim, deny: f.Redis.OnError == "deny"}
		next.refs.Add(1)
		runtime.AddCleanup(p.snap, (*conn).release, next)
	}
	return p, nil
}

// Middleware is Service.Middleware on the prepared configuration.
func (p *Prepared) Middleware(route routes.Route, src KeySources) (func(http.Handler) http.Handler, error) {
	return p.s.middleware(p.snap, route, src)
}

// Commit puts p in force: Ready reports on it, Middleware builds on it, and
// a Redis client it replaced closes once no middleware uses it.
func (s *Service) Commit(p *Prepared) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.done {
		return
	}
	p.done = true
	if s.closed {
		if p.fresh != nil {
			_ = p.fresh.close()
		}
		return
	}
	var next *conn
	if p.snap.store != nil {
		next = p.snap.store.conn
		s.conns[next] = struct{}{}
	}
	if s.conn != nil && s.conn != next {
		s.conn.retire()
	}
	for c := range s.conns {
		if c.isClosed() {
			delete(s.conns, c)
		}
	}
	s.conn = next
	s.cur.Store(p.snap)
}

// Abort frees a configuration that will not be committed: a Redis client
// made for it alone is closed now. Middlewares built on it must not be used.
func (p *Prepared) Abort() {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	if p.done {
		return
	}
	p.done = true
	if p.fresh != nil {
		p.fresh.retired.Store(true)
		_ = p.fresh.close()
	}
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

// retire marks c as no longer the current client: it closes as soon as no
// snapshot uses it.
func (c *conn) retire() {
	c.retired.Store(true)
	if c.refs.Load() == 0 {
		c.close()
	}
}

func (c *conn) release() {
	if c.refs.Add(-1) == 0 && c.retired.Load() {
		c.close()
	}
}

func (c *conn) close() error {
	c.closeOnce.Do(func() {
		// The client first: closing it ends pipelines in flight at once,
		// so the batcher's workers stop without waiting out a time-out.
		c.closeErr = c.client.Close()
		c.batch.Close()
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
	if !c.down.Load() {
		st.Reachable = true
		return st
	}
	now := s.now().UnixMicro()
	if c.tryProbe(now) {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		err := c.client.Ping(ctx).Err()
		cancel()
		c.report(err, now)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st.Reachable = !c.down.Load()
	if !st.Reachable && c.lastErr != nil {
		st.LastError = c.lastErr.Error()
	}
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
	var errs []error
	for c := range s.conns {
		errs = append(errs, c.close())
	}
	clear(s.conns)
	s.conn = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ratelimit: closing redis: %w", err)
	}
	return nil
}

// check loads the script (on every master of a Cluster), so the first
// decision is one round trip, and so that Ready is truthful from the start.
// An unreachable Redis is not a configuration error: on_error decides, and
// a later NOSCRIPT loads the script then.
func (c *conn) check(ctx context.Context, now int64) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	c.report(c.client.ScriptLoad(ctx, script).Err(), now)
}

// usable says whether this decision should go to Redis: always while it is
// up; while it is down, only for the one request that probes it after
// probeInterval.
func (c *conn) usable(now int64) bool {
	if !c.down.Load() {
		return true
	}
	return c.tryProbe(now)
}

func (c *conn) tryProbe(now int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.down.Load() {
		return true
	}
	if c.probing || now < c.retryAt {
		return false
	}
	c.probing = true
	return true
}

// report records the outcome of a Redis call and logs transitions only, so
// an outage is two log lines, not one per request.
func (c *conn) report(err error, now int64) {
	if err == nil && !c.down.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.probing = false
	if err == nil {
		c.down.Store(false)
		c.lastErr = nil
		c.log.Info("ratelimit: redis reachable again; counting in redis")
		return
	}
	c.lastErr = err
	c.retryAt = now + probeInterval.Microseconds()
	if !c.down.Swap(true) {
		c.log.Warn("ratelimit: redis unreachable; applying on_error", "error", err.Error())
	}
}

// abandonProbe lets another request probe when this one was cancelled
// before Redis answered.
func (c *conn) abandonProbe() {
	if !c.down.Load() {
		return
	}
	c.mu.Lock()
	c.probing = false
	c.mu.Unlock()
}
