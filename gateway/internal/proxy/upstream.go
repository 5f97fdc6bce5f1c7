package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/transport"
	"github.com/causewayhq/causeway/internal/refpool"
	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/routes"
)

// Endpoint is one address of an upstream, with the state the balancers,
// the outlier detector and the health checker keep about it. An endpoint
// object lives as long as its address stays in the upstream's set, so its
// state survives discovery updates.
type Endpoint struct {
	Addr string // host:port
	// Label is addr as a metric label value: endpoints come from the routes
	// file or from discovery answers, so the set is bounded.
	Label  string
	Weight int

	// Inflight counts requests sent and not yet finished (least_request,
	// p2c_ewma).
	Inflight atomic.Int64
	Latency  PeakEWMA

	// Down is set by the active health check.
	Down atomic.Bool
	// ejectedUntil is when a passive ejection ends (Unix nanoseconds; 0:
	// not ejected). The return is lazy: the first look after that time
	// clears it, so no timer is needed per ejection.
	ejectedUntil atomic.Int64
	consecFail   atomic.Int32
	ejections    atomic.Int32
	lastEjected  atomic.Int64
	// checkOK and checkFail are the active checker's streaks.
	checkOK, checkFail atomic.Int32

	Health *healthState // nil for endpoints built outside an upstream (tests)
	// gauge is the handle on the endpoint's health series (HealthSeries),
	// shared by every object of this address in this upstream (the next
	// generation's, one under a new weight). Set before the endpoint is
	// published, then read-only.
	gauge *gaugeRef
}

// Available reports whether the endpoint may take a request now.
func (e *Endpoint) Available() bool {
	if e.Down.Load() {
		return false
	}
	until := e.ejectedUntil.Load()
	if until == 0 {
		return true
	}
	if e.Health == nil || e.Health.now().UnixNano() >= until {
		if e.ejectedUntil.CompareAndSwap(until, 0) && e.Health != nil {
			e.Health.returned(e)
		}
		return true
	}
	return false
}

// roundRobin cycles through the endpoints with one atomic counter, skipping
// those that are ejected or failing their health check.
type roundRobin struct {
	set  atomic.Pointer[[]*Endpoint]
	next atomic.Uint64
}

var _ balancer = (*roundRobin)(nil)

func (rr *roundRobin) Pick(_ *http.Request, avoid *Endpoint) (*Endpoint, bool) {
	eps := loadSet(&rr.set)
	n := uint64(len(eps))
	if n == 0 {
		return nil, false
	}
	// An unavailable endpoint is passed by drawing the next counter value,
	// not by taking its neighbour: its share then spreads over all the
	// others instead of doubling one of them.
	var fallback *Endpoint
	for i := uint64(0); i < n; i++ {
		e := eps[(rr.next.Add(1)-1)%n]
		if !e.Available() {
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
		if e.Available() && e != avoid {
			return e, true
		}
		if e == avoid && e.Available() {
			fallback = e
		}
	}
	return fallback, fallback != nil
}

func (rr *roundRobin) Update(eps []*Endpoint) { rr.set.Store(&eps) }

func loadSet(p *atomic.Pointer[[]*Endpoint]) []*Endpoint {
	if s := p.Load(); s != nil {
		return *s
	}
	return nil
}

// Upstream is the runtime form of a routes.Upstream.
type Upstream struct {
	Name   string
	Cfg    routes.Upstream
	Scheme string
	Pool   *TransportPool

	Bal       balancer
	log       *slog.Logger      // the edge's or sidecar's, for background work
	Transport http.RoundTripper // pool.transport behind retries, health and mirroring
	Health    *healthState
	retry     *retryPolicy
	Breaker   *breaker
	Mirror    *mirror
	// MeshID is the upstream's identity in the mesh (zero: outside it),
	// the audience of the caller tokens sent to it.
	MeshID mesh.ID
	hooks  *Hooks

	mu  sync.Mutex // serialises setEndpoints
	eps atomic.Pointer[[]*Endpoint]
	// published is set once the upstream's configuration is live
	// (Publish): only then does its endpoint set become the pool's, the
	// one the next configuration inherits health from. An upstream of a
	// configuration that is refused must not hand its copy of the live
	// endpoints' state, which goes stale at once, to the next one.
	published bool
	// carry is the previous configuration's endpoints by address, whose
	// health the first endpoint set inherits; nil once built.
	carry map[string]*Endpoint

	// Background work (active checks, discovery) stops with ctx.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// KeepsNothingOf reports whether, once the attempt loop has returned and
// the response body is closed, nothing the upstream runs holds req (its
// header map in particular): the pool is the own HTTP/1.1 client, which
// sends req itself and keeps nothing of it (transport.H1.KeepsNothingOf),
// and no mirror copies it. A retry sends a clone with a header of its own;
// Wrap keeps nothing either (Hooks).
func (u *Upstream) KeepsNothingOf(req *http.Request) bool {
	if u.Mirror != nil || u.Pool == nil {
		return false
	}
	h1, ok := u.Pool.Transport.(*transport.H1)
	return ok && h1.KeepsNothingOf(req)
}

// Tracker follows one proxied request through the attempt loop. The
// pipeline's per-request state is one; the loop never reaches into it.
type Tracker interface {
	// Attempt records the endpoint of an attempt and when it started.
	Attempt(ep *Endpoint, start time.Time)
	// BodyFailed reports whether the client's own body could not be read:
	// a failed attempt is then the client's fault, not the endpoint's (no
	// ejection, no retry).
	BodyFailed() bool
}

// noTracker is the tracker of requests nobody follows.
type noTracker struct{}

func (noTracker) Attempt(*Endpoint, time.Time) {}
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
	// every attempt gets its own span. It must keep nothing of a request
	// once its RoundTrip has returned (KeepsNothingOf).
	Wrap func(rt http.RoundTripper, upstream string) http.RoundTripper
	// ClientIP is the client address the edge resolved for the request in
	// ctx (trusted proxies applied), for ring_hash on client_ip; "" or nil:
	// the peer address.
	ClientIP func(ctx context.Context) string
	// HealthGauge is causeway_upstream_endpoint_healthy, shared by every
	// generation's upstreams.
	HealthGauge *HealthSeries
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
type Deps struct {
	// Pools shares connection pools between generations, by transportKey
	// (nil: a pool of the upstream's own).
	Pools  *refpool.Pool[string, *TransportPool]
	TLSFor TLSConfigFunc
	TLSKey string
	Log    *slog.Logger // background work (health, discovery); nil: slog.Default()
	// Now is the clock of ejections, breakers, retry budgets and of the
	// certificate expiries TLS connections are retired by (nil: time.Now).
	Now   func() time.Time
	Hooks Hooks
	// lookupGauge makes every write of an endpoint's health look its
	// series up, as before the series were carried across generations:
	// the reference the carried series are tested against.
	lookupGauge bool
}

// endpointSpec is an address and weight from the file or from discovery.
type endpointSpec struct {
	Addr   string
	Weight int
}

// New builds an upstream: its pool (shared with the previous
// configuration when the connection settings are unchanged), its balancer,
// resilience policies and endpoint source.
func New(name string, cfg routes.Upstream, deps Deps) (*Upstream, error) {
	newBal, ok := LookupBalancer(cfg.Balance)
	if !ok {
		return nil, fmt.Errorf("balance %q: unknown balancer (one of %s)", cfg.Balance, strings.Join(BalancerNames(), ", "))
	}
	bal, err := newBal(cfg, deps.Hooks.ClientIP)
	if err != nil {
		return nil, fmt.Errorf("balance %q: %w", cfg.Balance, err)
	}
	if deps.Pools == nil {
		deps.Pools = NewTransportPools()
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	var meshID mesh.ID // validated by routes; parsed before anything is acquired
	if cfg.MeshIdentity != "" {
		if meshID, err = mesh.ParseID(cfg.MeshIdentity); err != nil {
			return nil, fmt.Errorf("mesh_identity: %w", err)
		}
	}
	key := transportKey(name, cfg) + "|" + deps.TLSKey
	pool, _, err := deps.Pools.Acquire(key, func() (*TransportPool, error) {
		p, err := NewTransportPool(name, cfg, deps.TLSFor, now)
		if err == nil {
			p.Key = key
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
	u := &Upstream{Name: name, Cfg: cfg, Scheme: scheme, Bal: bal, Pool: pool, MeshID: meshID, hooks: &deps.Hooks}
	if prev := loadSet(&pool.endpoints); len(prev) > 0 {
		// The pool is shared with the previous configuration of this
		// upstream (same name and connection settings).
		u.carry = make(map[string]*Endpoint, len(prev))
		for _, e := range prev {
			u.carry[e.Addr] = e
		}
	}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	u.log = deps.Log
	if u.log == nil {
		u.log = slog.Default()
	}
	u.Health = NewHealthState(name, cfg.CircuitBreaker, deps.Hooks.HealthGauge, now)
	u.Health.lookupGauge = deps.lookupGauge
	u.Health.log = u.log
	if cfg.Retries != nil {
		u.retry = NewRetryPolicy(cfg.Retries, now)
	}
	if cfg.CircuitBreaker != nil {
		u.Breaker = NewBreaker(name, cfg.CircuitBreaker, now)
		u.Breaker.log = u.log
	}
	if cfg.Mirror != nil {
		u.Mirror = newMirror(cfg.Mirror, u.hooks)
	}
	// Below the retry loop, so every attempt has its own span.
	base := pool.Transport
	if deps.Hooks.Wrap != nil {
		base = deps.Hooks.Wrap(base, name)
	}
	u.Transport = &upstreamTransport{up: u, base: base}

	fail := func(err error) (*Upstream, error) {
		u.Close()
		_, _ = deps.Pools.Release(key)
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
			specs = append(specs, endpointSpec{Addr: a, Weight: cfg.Weights[a]})
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

// SetEndpoints replaces the endpoints of an upstream that lists them (not
// dns or endpoints_file, whose discovery owns the set): the edge's way of
// following a provider's endpoint changes without building a new
// configuration. As for discovery, endpoints that stay keep their health,
// ejection and in-flight state. Cfg keeps the endpoints it was built with.
func (u *Upstream) SetEndpoints(addrs []string) error {
	if u.Cfg.DNS != "" || u.Cfg.DNSSRV != "" || u.Cfg.EndpointsFile != "" {
		return fmt.Errorf("upstream %s: its endpoints come from discovery", u.Name)
	}
	specs := make([]endpointSpec, 0, len(addrs))
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		specs = append(specs, endpointSpec{Addr: a, Weight: u.Cfg.Weights[a]})
	}
	u.setEndpoints(specs)
	return nil
}

// setEndpoints replaces the endpoint set. Endpoints that stay keep their
// object (and so their health, ejection and in-flight counts); requests
// running on a removed endpoint finish on it.
func (u *Upstream) setEndpoints(specs []endpointSpec) {
	u.mu.Lock()
	defer u.mu.Unlock()
	old := map[string]*Endpoint{}
	for _, e := range loadSet(&u.eps) {
		old[e.Addr] = e
	}
	sort.Slice(specs, func(i, j int) bool { return specs[i].Addr < specs[j].Addr })
	next := make([]*Endpoint, 0, len(specs))
	for i, s := range specs {
		if i > 0 && specs[i-1].Addr == s.Addr {
			continue // discovery answers may repeat an address
		}
		w := s.Weight
		if w <= 0 {
			w = 1
		}
		if w2, ok := u.Cfg.Weights[s.Addr]; ok {
			w = w2 // the file's weight wins over discovery's
		}
		// A new weight makes a new object: balancers read weight without
		// locks.
		if e, ok := old[s.Addr]; ok && e.Weight == w {
			delete(old, s.Addr)
			next = append(next, e)
			continue
		}
		e := &Endpoint{Addr: s.Addr, Label: s.Addr, Weight: w, Health: u.Health}
		next = append(next, e)
		if from := old[s.Addr]; from != nil {
			u.inherit(e, from)
		} else if from := u.carry[s.Addr]; from != nil {
			u.inherit(e, from)
		} else {
			u.Health.added(e)
		}
	}
	for addr, e := range old {
		// An address whose weight changed is still there: keep its label.
		_, still := sortedSearch(next, addr)
		u.Health.removed(e, !still)
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
	u.Health.total.Store(int32(len(next)))
	u.eps.Store(&next)
	if u.published {
		u.Pool.endpoints.Store(&next)
	}
	u.Bal.Update(next)
}

// Publish makes the upstream's endpoints the ones the next configuration
// inherits health from: called when its configuration becomes live.
func (u *Upstream) Publish() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.published = true
	u.Pool.endpoints.Store(u.eps.Load())
}

// Reusable reports whether u can serve, unchanged, as the upstream name of
// a configuration that gives it cfg and deps: the same settings (pointer
// fields and maps compared by value), the endpoints it serves now (which
// the edge may have changed in place since it was built), and the same
// connection pool key, which holds the TLS source and the content of
// tls.ca_file (read again here: a rotated bundle needs a new upstream).
// Upstreams that follow DNS or an endpoints file, and those that mirror
// (their shadow is another generation's upstream), are never reused.
// deps' hooks, log and clock are assumed to be the server's, the same for
// every generation.
func (u *Upstream) Reusable(name string, cfg routes.Upstream, deps Deps) bool {
	if u.Name != name || cfg.DNS != "" || cfg.DNSSRV != "" || cfg.EndpointsFile != "" || cfg.Mirror != nil || u.Cfg.Mirror != nil ||
		u.Health.lookupGauge != deps.lookupGauge || u.Health.series != deps.Hooks.HealthGauge {
		return false
	}
	a, b := cfg, u.Cfg
	a.Endpoints, b.Endpoints = nil, nil
	if !reflect.DeepEqual(a, b) {
		return false
	}
	if !sameAddrs(cfg.Endpoints, loadSet(&u.eps)) {
		return false
	}
	return u.Pool.Key == transportKey(name, cfg)+"|"+deps.TLSKey
}

// sameAddrs says whether addrs, as setEndpoints reads them (trimmed,
// sorted, without repeats), are the addresses of eps.
func sameAddrs(addrs []string, eps []*Endpoint) bool {
	if len(addrs) < len(eps) {
		return false
	}
	if len(addrs) == len(eps) {
		// The common case, and without a copy: the same addresses in
		// the same order (a provider lists them sorted).
		same := true
		for i, e := range eps {
			if addrs[i] != e.Addr {
				same = false
				break
			}
		}
		if same {
			return true
		}
	}
	norm := make([]string, len(addrs))
	for i, a := range addrs {
		norm[i] = strings.TrimSpace(a)
	}
	sort.Strings(norm)
	norm = slices.Compact(norm)
	if len(norm) != len(eps) {
		return false
	}
	for i, e := range eps {
		if e.Addr != norm[i] {
			return false
		}
	}
	return true
}

// inherit gives e the health of from, the same address in the previous
// configuration (or under its previous weight): a reload must not put an
// endpoint that is down or ejected back into rotation. What the new
// configuration no longer checks is not inherited: without a health check
// nothing would ever bring a down endpoint back.
func (u *Upstream) inherit(e, from *Endpoint) {
	h := u.Health
	if g := from.gauge; g != nil && from.Health != nil && from.Health.series == h.series && from.Health.upstream == h.upstream && !g.gone.Load() {
		// The series' handle (HealthSeries), not looked up again.
		e.gauge = g
	}
	if u.Cfg.HealthCheck != nil {
		e.Down.Store(from.Down.Load())
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
	from.Latency.mu.Lock()
	v, last := from.Latency.value, from.Latency.last
	from.Latency.mu.Unlock()
	e.Latency.value, e.Latency.last = v, last
	h.set(e, !e.Down.Load() && e.ejectedUntil.Load() == 0)
}

// Endpoints is the current endpoint set.
func (u *Upstream) Endpoints() []*Endpoint { return loadSet(&u.eps) }

// Close stops the upstream's background work (health checks, discovery,
// mirrored requests). The pool is released by the runtime.
func (u *Upstream) Close() {
	if u.cancel != nil {
		u.cancel()
	}
	u.wg.Wait()
	if u.Mirror != nil {
		u.Mirror.close()
	}
}

// goBackground runs f until the upstream closes; a panic is logged and does
// not take the edge down.
func (u *Upstream) goBackground(what string, f func(ctx context.Context)) {
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		defer func() {
			if p := recover(); p != nil {
				u.log.Error("upstream background task panicked", "upstream", u.Name, "task", what, "panic", fmt.Sprint(p))
			}
		}()
		f(u.ctx)
	}()
}

// TransportPool is an upstream's connection pool. It is shared between the
// configurations of successive reloads while the upstream's connection
// settings stay the same, so a reload keeps the warm keep-alive connections.
type TransportPool struct {
	Key       string
	Transport http.RoundTripper
	CloseIdle func()
	// endpoints is the newest endpoint set of the upstream using the pool,
	// so the next configuration can inherit their health.
	endpoints atomic.Pointer[[]*Endpoint]
}

// NewTransportPools shares connection pools between generations, by
// transportKey; the last user's release closes the idle connections.
func NewTransportPools() *refpool.Pool[string, *TransportPool] {
	return refpool.New[string](func(p *TransportPool) error { p.CloseIdle(); return nil })
}

// transportKey identifies the connection settings of an upstream: two
// upstreams (or two versions of one) with the same key can share a pool.
func transportKey(name string, u routes.Upstream) string {
	return fmt.Sprintf("%s|%s|%s|%s|%d|%s|%s|%s", name, u.Scheme, u.MeshIdentity, u.ConnectTimeout.D(), u.MaxIdlePerHost, u.Timeout.D(), u.Protocol, tlsKey(u.TLS))
}

// dialTLSFunc makes the TLS client config for an upstream's connections; it
// is how the mesh hands the edge's identity to the pool (nil: plain HTTP or
// the system roots for scheme https).
type TLSConfigFunc func(u routes.Upstream) (*tls.Config, error)

// NewTransportPool builds the connection pool of upstream name. now is the
// clock its TLS connections' certificates are held to (nil: time.Now): a
// connection is not reused close to the expiry of a certificate its
// handshake exchanged.
func NewTransportPool(name string, u routes.Upstream, tlsFor TLSConfigFunc, now func() time.Time) (*TransportPool, error) {
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
		mt := transport.NewMesh(t, now)
		return &TransportPool{Transport: mt, CloseIdle: mt.CloseIdleConnections}, nil
	}
	if u.MeshIdentity == "" && u.Protocol == routes.DefaultProtocol {
		// Plain http through H1, https through TLSUpgrades, chosen where
		// the edge's own HTTP clients choose theirs.
		p, err := transport.ForScheme(u.Scheme, t, now)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: %w", name, err)
		}
		return &TransportPool{Transport: p, CloseIdle: p.CloseIdleConnections}, nil
	}
	if t.TLSClientConfig != nil {
		// protocol: h2 over TLS, toward a sidecar or not: HTTP/2
		// connections retired before their certificates expire.
		cb := transport.NewCertBound(t, now)
		if u.MeshIdentity != "" {
			// As transport.NewMesh's: a sidecar no longer trusted gets no
			// more streams on a connection made before.
			cb.RecheckPeers(t.TLSClientConfig.VerifyConnection)
		}
		return &TransportPool{Transport: cb, CloseIdle: cb.CloseIdleConnections}, nil
	}
	return &TransportPool{Transport: t, CloseIdle: t.CloseIdleConnections}, nil
}

var errNoEndpoint = errors.New("no endpoint available")

// sortedSearch finds addr in eps, which is sorted by address.
func sortedSearch(eps []*Endpoint, addr string) (*Endpoint, bool) {
	i := sort.Search(len(eps), func(i int) bool { return eps[i].Addr >= addr })
	if i < len(eps) && eps[i].Addr == addr {
		return eps[i], true
	}
	return nil, false
}

// Closed reports whether Close has run: the upstream's background work is
// stopped and it must serve no more requests.
func (u *Upstream) Closed() bool { return u.ctx.Err() != nil }
