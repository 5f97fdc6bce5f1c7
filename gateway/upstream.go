package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/causewayhq/causeway/gateway/internal/transport"
	"github.com/causewayhq/causeway/internal/refpool"
	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/routes"
)

// endpoint is one address of an upstream, with the state the balancers,
// the outlier detector and the health checker keep about it. An endpoint
// object lives as long as its address stays in the upstream's set, so its
// state survives discovery updates.
type endpoint struct {
	addr string // host:port
	// label is addr as a metric label value: endpoints come from the routes
	// file or from discovery answers, so the set is bounded.
	label  string
	weight int

	// inflight counts requests sent and not yet finished (least_request,
	// p2c_ewma).
	inflight atomic.Int64
	latency  peakEWMA

	// down is set by the active health check.
	down atomic.Bool
	// ejectedUntil is when a passive ejection ends (Unix nanoseconds; 0:
	// not ejected). The return is lazy: the first look after that time
	// clears it, so no timer is needed per ejection.
	ejectedUntil atomic.Int64
	consecFail   atomic.Int32
	ejections    atomic.Int32
	lastEjected  atomic.Int64
	// checkOK and checkFail are the active checker's streaks.
	checkOK, checkFail atomic.Int32

	health *healthState // nil for endpoints built outside an upstream (tests)
}

// available reports whether the endpoint may take a request now.
func (e *endpoint) available() bool {
	if e.down.Load() {
		return false
	}
	until := e.ejectedUntil.Load()
	if until == 0 {
		return true
	}
	if e.health == nil || e.health.now().UnixNano() >= until {
		if e.ejectedUntil.CompareAndSwap(until, 0) && e.health != nil {
			e.health.returned(e)
		}
		return true
	}
	return false
}

// roundRobin cycles through the endpoints with one atomic counter, skipping
// those that are ejected or failing their health check.
type roundRobin struct {
	set  atomic.Pointer[[]*endpoint]
	next atomic.Uint64
}

var _ balancer = (*roundRobin)(nil)

func (rr *roundRobin) pick(_ *http.Request, avoid *endpoint) (*endpoint, bool) {
	eps := loadSet(&rr.set)
	n := uint64(len(eps))
	if n == 0 {
		return nil, false
	}
	// An unavailable endpoint is passed by drawing the next counter value,
	// not by taking its neighbour: its share then spreads over all the
	// others instead of doubling one of them.
	var fallback *endpoint
	for i := uint64(0); i < n; i++ {
		e := eps[(rr.next.Add(1)-1)%n]
		if !e.available() {
			continue
		}
		if e == avoid {
			fallback = e
			continue
		}
		return e, true
	}
	// Few draws found nothing (many endpoints down): look at every one.
	for _, e := range eps {
		if e.available() && e != avoid {
			return e, true
		}
		if e == avoid && e.available() {
			fallback = e
		}
	}
	return fallback, fallback != nil
}

func (rr *roundRobin) update(eps []*endpoint) { rr.set.Store(&eps) }

func loadSet(p *atomic.Pointer[[]*endpoint]) []*endpoint {
	if s := p.Load(); s != nil {
		return *s
	}
	return nil
}

// upstream is the runtime form of a routes.Upstream.
type upstream struct {
	name   string
	cfg    routes.Upstream
	scheme string
	pool   *transportPool

	bal       balancer
	log       *slog.Logger      // the edge's or sidecar's, for background work
	transport http.RoundTripper // pool.transport behind retries, health and mirroring
	health    *healthState
	retry     *retryPolicy
	breaker   *breaker
	mirror    *mirror
	// meshID is the upstream's identity in the mesh (zero: outside it),
	// the audience of the caller tokens sent to it.
	meshID mesh.ID
	hooks  *Hooks

	mu  sync.Mutex // serialises setEndpoints
	eps atomic.Pointer[[]*endpoint]
	// carry is the previous configuration's endpoints by address, whose
	// health the first endpoint set inherits; nil once built.
	carry map[string]*endpoint

	// Background work (active checks, discovery) stops with ctx.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Tracker follows one proxied request through the attempt loop. The
// pipeline's per-request state is one; the loop never reaches into it.
type Tracker interface {
	// Attempt records the endpoint of an attempt and when it started.
	Attempt(ep *endpoint, start time.Time)
	// BodyFailed reports whether the client's own body could not be read:
	// a failed attempt is then the client's fault, not the endpoint's (no
	// ejection, no retry).
	BodyFailed() bool
}

// noTracker is the tracker of requests nobody follows.
type noTracker struct{}

func (noTracker) Attempt(*endpoint, time.Time) {}
func (noTracker) BodyFailed() bool             { return false }

// Hooks are how the upstream engine reports to whoever runs it, without
// knowing its types. Every field may be nil.
type Hooks struct {
	// Track returns the tracker of the request in ctx, and may prepare the
	// request's context (the edge filters informational responses there).
	Track func(ctx context.Context) Tracker
	// Observe counts one attempt: the upstream, the endpoint's label, the
	// status (502/504 for failures) and the time to the response headers.
	Observe func(upstream, endpoint string, status int, d time.Duration)
	// Wrap goes around the pool's transport, below the attempt loop, so
	// every attempt gets its own span.
	Wrap func(rt http.RoundTripper, upstream string) http.RoundTripper
	// HealthGauge is causeway_upstream_endpoint_healthy.
	HealthGauge *prometheus.GaugeVec
}

func (h *Hooks) track(ctx context.Context) Tracker {
	if h.Track == nil {
		return noTracker{}
	}
	return h.Track(ctx)
}

func (h *Hooks) observe(upstream, endpoint string, status int, d time.Duration) {
	if h.Observe != nil {
		h.Observe(upstream, endpoint, status, d)
	}
}

// upstreamDeps is what building an upstream needs from the generation.
type upstreamDeps struct {
	// pools shares connection pools between generations, by transportKey
	// (nil: a pool of the upstream's own).
	pools  *refpool.Pool[string, *transportPool]
	tlsFor tlsConfigFunc
	tlsKey string
	log    *slog.Logger // background work (health, discovery); nil: slog.Default()
	// now is the clock of ejections, breakers and retry budgets (nil:
	// time.Now).
	now   func() time.Time
	hooks Hooks
}

// endpointSpec is an address and weight from the file or from discovery.
type endpointSpec struct {
	addr   string
	weight int
}

// newUpstreamFrom builds an upstream: its pool (shared with the previous
// configuration when the connection settings are unchanged), its balancer,
// resilience policies and endpoint source.
func newUpstreamFrom(name string, cfg routes.Upstream, deps upstreamDeps) (*upstream, error) {
	newBal, ok := lookupBalancer(cfg.Balance)
	if !ok {
		return nil, fmt.Errorf("balance %q: unknown balancer (one of %s)", cfg.Balance, strings.Join(balancerNames(), ", "))
	}
	bal, err := newBal(cfg)
	if err != nil {
		return nil, fmt.Errorf("balance %q: %w", cfg.Balance, err)
	}
	if deps.pools == nil {
		deps.pools = newTransportPools()
	}
	now := deps.now
	if now == nil {
		now = time.Now
	}
	var meshID mesh.ID // validated by routes; parsed before anything is acquired
	if cfg.MeshIdentity != "" {
		if meshID, err = mesh.ParseID(cfg.MeshIdentity); err != nil {
			return nil, fmt.Errorf("mesh_identity: %w", err)
		}
	}
	key := transportKey(name, cfg) + "|" + deps.tlsKey
	pool, _, err := deps.pools.Acquire(key, func() (*transportPool, error) {
		p, err := newTransportPool(name, cfg, deps.tlsFor)
		if err == nil {
			p.key = key
		}
		return p, err
	})
	if err != nil {
		return nil, err
	}
	scheme := cfg.Scheme
	if cfg.MeshIdentity != "" {
		scheme = "https" // mTLS to the sidecar
	}
	u := &upstream{name: name, cfg: cfg, scheme: scheme, bal: bal, pool: pool, meshID: meshID, hooks: &deps.hooks}
	if prev := loadSet(&pool.endpoints); len(prev) > 0 {
		// The pool is shared with the previous configuration of this
		// upstream (same name and connection settings).
		u.carry = make(map[string]*endpoint, len(prev))
		for _, e := range prev {
			u.carry[e.addr] = e
		}
	}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	u.log = deps.log
	if u.log == nil {
		u.log = slog.Default()
	}
	var gauge *prometheus.GaugeVec
	if deps.hooks.HealthGauge != nil {
		gauge = deps.hooks.HealthGauge.MustCurryWith(prometheus.Labels{"upstream": name})
	}
	u.health = newHealthState(name, cfg.CircuitBreaker, gauge, now)
	u.health.log = u.log
	if cfg.Retries != nil {
		u.retry = newRetryPolicy(cfg.Retries, now)
	}
	if cfg.CircuitBreaker != nil {
		u.breaker = newBreaker(name, cfg.CircuitBreaker, now)
		u.breaker.log = u.log
	}
	if cfg.Mirror != nil {
		u.mirror = newMirror(cfg.Mirror, u.hooks)
	}
	// Below the retry loop, so every attempt has its own span.
	base := pool.transport
	if deps.hooks.Wrap != nil {
		base = deps.hooks.Wrap(base, name)
	}
	u.transport = &upstreamTransport{up: u, base: base}

	fail := func(err error) (*upstream, error) {
		u.close()
		_, _ = deps.pools.Release(key)
		return nil, err
	}
	switch {
	case cfg.DNS != "" || cfg.DNSSRV != "":
		if err := u.startDNS(); err != nil {
			return fail(err)
		}
	case cfg.EndpointsFile != "":
		if err := u.startFile(); err != nil {
			return fail(err)
		}
	default:
		specs := make([]endpointSpec, 0, len(cfg.Endpoints))
		for _, a := range cfg.Endpoints {
			a = strings.TrimSpace(a)
			specs = append(specs, endpointSpec{addr: a, weight: cfg.Weights[a]})
		}
		u.setEndpoints(specs)
	}
	u.mu.Lock()
	u.carry = nil
	u.mu.Unlock()
	if cfg.HealthCheck != nil {
		u.startHealthCheck(*cfg.HealthCheck)
	}
	return u, nil
}

// setEndpoints replaces the endpoint set. Endpoints that stay keep their
// object (and so their health, ejection and in-flight counts); requests
// running on a removed endpoint finish on it.
func (u *upstream) setEndpoints(specs []endpointSpec) {
	u.mu.Lock()
	defer u.mu.Unlock()
	old := map[string]*endpoint{}
	for _, e := range loadSet(&u.eps) {
		old[e.addr] = e
	}
	sort.Slice(specs, func(i, j int) bool { return specs[i].addr < specs[j].addr })
	next := make([]*endpoint, 0, len(specs))
	for i, s := range specs {
		if i > 0 && specs[i-1].addr == s.addr {
			continue // discovery answers may repeat an address
		}
		w := s.weight
		if w <= 0 {
			w = 1
		}
		if w2, ok := u.cfg.Weights[s.addr]; ok {
			w = w2 // the file's weight wins over discovery's
		}
		// A new weight makes a new object: balancers read weight without
		// locks.
		if e, ok := old[s.addr]; ok && e.weight == w {
			delete(old, s.addr)
			next = append(next, e)
			continue
		}
		e := &endpoint{addr: s.addr, label: s.addr, weight: w, health: u.health}
		next = append(next, e)
		if from := old[s.addr]; from != nil {
			u.inherit(e, from)
		} else if from := u.carry[s.addr]; from != nil {
			u.inherit(e, from)
		} else {
			u.health.added(e)
		}
	}
	for addr, e := range old {
		// An address whose weight changed is still there: keep its label.
		_, still := sortedSearch(next, addr)
		u.health.removed(e, !still)
	}
	if prev := loadSet(&u.eps); len(old) == 0 && len(prev) == len(next) {
		same := true
		for i := range next {
			same = same && next[i] == prev[i]
		}
		if same {
			// A refresh that changed nothing keeps the balancer's state
			// (smooth weighted round robin's current weights).
			return
		}
	}
	u.health.total.Store(int32(len(next)))
	u.eps.Store(&next)
	u.pool.endpoints.Store(&next)
	u.bal.update(next)
}

// inherit gives e the health of from, the same address in the previous
// configuration (or under its previous weight): a reload must not put an
// endpoint that is down or ejected back into rotation. What the new
// configuration no longer checks is not inherited: without a health check
// nothing would ever bring a down endpoint back.
func (u *upstream) inherit(e, from *endpoint) {
	h := u.health
	if u.cfg.HealthCheck != nil {
		e.down.Store(from.down.Load())
		e.checkOK.Store(from.checkOK.Load())
		e.checkFail.Store(from.checkFail.Load())
	}
	if h.consecutive > 0 {
		e.consecFail.Store(from.consecFail.Load())
		e.ejections.Store(from.ejections.Load())
		e.lastEjected.Store(from.lastEjected.Load())
		if until := from.ejectedUntil.Load(); until != 0 {
			e.ejectedUntil.Store(until)
			h.ejected.Add(1)
		}
	}
	from.latency.mu.Lock()
	v, last := from.latency.value, from.latency.last
	from.latency.mu.Unlock()
	e.latency.value, e.latency.last = v, last
	h.set(e, !e.down.Load() && e.ejectedUntil.Load() == 0)
}

// endpoints is the current endpoint set.
func (u *upstream) endpoints() []*endpoint { return loadSet(&u.eps) }

// close stops the upstream's background work (health checks, discovery,
// mirrored requests). The pool is released by the runtime.
func (u *upstream) close() {
	if u.cancel != nil {
		u.cancel()
	}
	u.wg.Wait()
	if u.mirror != nil {
		u.mirror.close()
	}
}

// goBackground runs f until the upstream closes; a panic is logged and does
// not take the edge down.
func (u *upstream) goBackground(what string, f func(ctx context.Context)) {
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		defer func() {
			if p := recover(); p != nil {
				u.log.Error("upstream background task panicked", "upstream", u.name, "task", what, "panic", fmt.Sprint(p))
			}
		}()
		f(u.ctx)
	}()
}

// transportPool is an upstream's connection pool. It is shared between the
// configurations of successive reloads while the upstream's connection
// settings stay the same, so a reload keeps the warm keep-alive connections.
type transportPool struct {
	key       string
	transport http.RoundTripper
	closeIdle func()
	// endpoints is the newest endpoint set of the upstream using the pool,
	// so the next configuration can inherit their health.
	endpoints atomic.Pointer[[]*endpoint]
}

// newTransportPools shares connection pools between generations, by
// transportKey; the last user's release closes the idle connections.
func newTransportPools() *refpool.Pool[string, *transportPool] {
	return refpool.New[string](func(p *transportPool) error { p.closeIdle(); return nil })
}

// transportKey identifies the connection settings of an upstream: two
// upstreams (or two versions of one) with the same key can share a pool.
func transportKey(name string, u routes.Upstream) string {
	return fmt.Sprintf("%s|%s|%s|%s|%d|%s|%s", name, u.Scheme, u.MeshIdentity, u.ConnectTimeout.D(), u.MaxIdlePerHost, u.Timeout.D(), u.Protocol)
}

// dialTLSFunc makes the TLS client config for an upstream's connections; it
// is how the mesh hands the edge's identity to the pool (nil: plain HTTP or
// the system roots for scheme https).
type tlsConfigFunc func(u routes.Upstream) (*tls.Config, error)

func newTransportPool(name string, u routes.Upstream, tlsFor tlsConfigFunc) (*transportPool, error) {
	dialer := &net.Dialer{Timeout: u.ConnectTimeout.D(), KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:                 nil, // an edge never goes through an environment proxy
		DialContext:           dialer.DialContext,
		MaxIdleConns:          0, // bounded per host below
		MaxIdleConnsPerHost:   u.MaxIdlePerHost,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: u.Timeout.D(),
		ExpectContinueTimeout: time.Second,
		// The client's Accept-Encoding is passed through as is; the transport
		// must not add gzip and decompress behind the client's back.
		DisableCompression: true,
		ForceAttemptHTTP2:  false,
	}
	if u.Scheme == "https" || u.MeshIdentity != "" {
		if tlsFor == nil {
			return nil, fmt.Errorf("upstream %q: TLS to the upstream is configured but no TLS source is available", name)
		}
		cfg, err := tlsFor(u)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: %w", name, err)
		}
		t.TLSClientConfig = cfg
		t.TLSHandshakeTimeout = u.ConnectTimeout.D()
		// HTTP/2 multiplexes requests over few connections to a TLS upstream.
		t.ForceAttemptHTTP2 = true
	}
	switch u.Protocol {
	case "h2c":
		// HTTP/2 with prior knowledge over plain TCP: what a gRPC server
		// without TLS speaks. Trailers and streams pass as they come.
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
	case "h2":
		t.Protocols = new(http.Protocols)
		t.Protocols.SetHTTP2(true)
	}
	if u.MeshIdentity != "" && u.Protocol == routes.DefaultProtocol {
		mt := transport.NewMesh(t)
		return &transportPool{transport: mt, closeIdle: mt.CloseIdleConnections}, nil
	}
	if u.Scheme == "http" && u.MeshIdentity == "" && u.Protocol == routes.DefaultProtocol {
		h1 := transport.NewH1(t)
		return &transportPool{transport: h1, closeIdle: h1.CloseIdleConnections}, nil
	}
	return &transportPool{transport: t, closeIdle: t.CloseIdleConnections}, nil
}

var errNoEndpoint = errors.New("no endpoint available")

// sortedSearch finds addr in eps, which is sorted by address.
func sortedSearch(eps []*endpoint, addr string) (*endpoint, bool) {
	i := sort.Search(len(eps), func(i int) bool { return eps[i].addr >= addr })
	if i < len(eps) && eps[i].addr == addr {
		return eps[i], true
	}
	return nil, false
}
