package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/causewayhq/causeway/gateway/internal/pipeline"
	"github.com/causewayhq/causeway/gateway/internal/proxy"
	"github.com/causewayhq/causeway/gateway/internal/transport"

	"github.com/redis/go-redis/v9"

	"github.com/causewayhq/causeway/auth"
	"github.com/causewayhq/causeway/gateway/edgetls"
	"github.com/causewayhq/causeway/internal/redisclient"
	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/ratelimit"
	"github.com/causewayhq/causeway/routes"
)

// defaultFeatures are the edge's features. Their stages run in chainOrder,
// whatever the order here; this order is the order of their commit steps
// (the TLS feature resets the expiry gauge the mesh feature then fills).
func defaultFeatures(e *Edge) []feature {
	limits := ratelimit.New(e.bgCtx, ratelimit.Options{Decisions: e.metrics.ratelimitDecision, Logger: e.log, Now: e.opts.Clock})
	e.registry.MustRegister(ratelimit.NewRedisUpCollector(limits), ratelimit.NewMemoryCollector(limits))
	authMetrics := auth.NewMetrics()
	e.registry.MustRegister(authMetrics.Collectors()...)
	return []feature{
		&tracingFeature{log: e.log, pool: e.tracers},
		&tlsFeature{e: e},
		&meshFeature{e: e},
		&authFeature{e: e, jwks: auth.NewJWKSCaches(), failures: ratelimit.NewMemory(e.opts.Clock), metrics: authMetrics},
		&rateLimitFeature{svc: limits},
		&pluginFeature{},
	}
}

// authStage is the auth feature's stage: the set's middleware, after which
// the principal it found is recorded on the request's state, for the access
// log and the trace, also when a later stage refuses the request (429).
type authStage struct{ set *auth.Set }

func (a authStage) Middleware(route routes.Route) (func(http.Handler) http.Handler, error) {
	mw, err := a.set.Middleware(route)
	if err != nil || mw == nil {
		return mw, err
	}
	// The set removes client copies of the headers its authenticators
	// state, on every route; the same names sent after the body must not
	// reach the upstream either (a trailer X-User-Id on a route without
	// auth, or one the principal has no claim for, would be the only
	// one).
	forwarded := a.set.ForwardedHeaders()
	// Nor a second copy of the route's credential: the edge verified (and
	// unless keep_token removed) the header's, and a trailer of that name
	// would be a credential nobody verified.
	forwarded = append(forwarded, a.set.CredentialHeaders(route)...)
	return func(next http.Handler) http.Handler {
		h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// A principal set earlier (a sidecar's verified caller) stays
			// when auth found none.
			if p := principalName(r.Context()); p != "" {
				st := stateFrom(r.Context())
				st.principal = p
			}
			next.ServeHTTP(w, r)
		}))
		if len(forwarded) == 0 {
			return h
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			dropTrailers(r, forwarded...)
			h.ServeHTTP(w, r)
		})
	}, nil
}

// principalName names the authenticated principal of a context for the
// access log: a subject or an API key name, never a credential.
func principalName(ctx context.Context) string {
	p := auth.FromContext(ctx)
	if p == nil {
		return ""
	}
	if p.KeyName != "" {
		return p.KeyName
	}
	return p.Subject
}

// authFeature builds the authenticators of each file, handing JWKS caches
// from one configuration to the next.
type authFeature struct {
	e *Edge
	// jwks shares JWKS caches between the sets of successive generations.
	jwks *auth.JWKSCaches
	// failures counts basic auth failures across generations: a reload
	// must not hand a guesser a fresh allowance.
	failures *ratelimit.Memory
	metrics  *auth.Metrics
	mu       sync.Mutex
	// cur is the live configuration's set, the one the next build takes
	// its JWKS caches from.
	cur *auth.Set
}

func (a *authFeature) prepare(ctx context.Context, f, _ *routes.File) (prepared, func() error, error) {
	a.mu.Lock()
	prev := a.cur
	a.mu.Unlock()
	set, err := auth.NewSet(ctx, f, prev, auth.Options{
		JWKS: a.jwks, Failures: a.e.metrics.authFailures, Logger: a.e.log, Now: a.e.opts.Clock,
		FailureLimiter: a.failures, Metrics: a.metrics,
		// HTTP and OPA ext_authz checks go the way requests go to an
		// upstream of the same scheme (plain http through H1, https
		// through TLSUpgrades), whose pools never hand bytes a server
		// sent past its answer to the next check.
		ExtAuthzTransport: func(scheme string, t *http.Transport) (http.RoundTripper, error) {
			return transport.ForScheme(scheme, t, a.e.opts.Clock)
		},
		ClientIP: func(r *http.Request) string { return stateFrom(r.Context()).clientIP },
		Origin: func(r *http.Request) string {
			st := stateFrom(r.Context())
			return pipeline.Origin(r, &st.peer, st.routeHost)
		},
	})
	if err != nil {
		return prepared{}, nil, err
	}
	return prepared{stages: map[string]Stage{stageAuth: namedStage{"auth", authStage{set}}}, commit: func() {
		a.mu.Lock()
		a.cur = set
		a.mu.Unlock()
	}}, set.Close, nil
}

func (a *authFeature) ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cur == nil {
		return nil
	}
	return a.cur.Ready()
}

// authFiles lists the files the active authenticators were built from.
func (e *Edge) authFiles() []string {
	for _, ft := range e.features {
		if a, ok := ft.(*authFeature); ok {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.cur != nil {
				return a.cur.Files()
			}
		}
	}
	return nil
}

func (a *authFeature) close() error { return nil } // each set is released with its configuration

// rateLimitFeature configures the long-lived limiter service from each file.
type rateLimitFeature struct {
	svc *ratelimit.Service
}

func (rl *rateLimitFeature) prepare(ctx context.Context, f, _ *routes.File) (prepared, func() error, error) {
	// The limits and the Redis client are built aside; the limiter serves
	// (and readiness reports) the live one until commit.
	next, err := rl.svc.Prepare(ctx, f)
	if err != nil {
		return prepared{}, nil, err
	}
	src := ratelimit.KeySources{
		// The address the edge resolved as the request entered: one
		// reading of X-Forwarded-For for the whole pipeline.
		ClientIP: func(r *http.Request) string { return stateFrom(r.Context()).clientIP },
		Claim: func(r *http.Request, name string) (string, bool) {
			if p := auth.FromContext(r.Context()); p != nil {
				return p.Claim(name)
			}
			return "", false
		},
		APIKey: func(r *http.Request) (string, bool) {
			if p := auth.FromContext(r.Context()); p != nil && p.KeyName != "" {
				return p.KeyName, true
			}
			return "", false
		},
	}
	return prepared{
		stages: map[string]Stage{stageRateLimit: namedStage{"ratelimit", stageFunc(func(route routes.Route) (func(http.Handler) http.Handler, error) {
			return next.Middleware(route, src)
		})}},
		commit: func() { rl.svc.Commit(next) },
		undo:   next.Abort,
	}, func() error { next.Release(); return nil }, nil
}

func (rl *rateLimitFeature) ready() error { return rl.svc.Ready() }

// redisStatus is the rate limits' Redis state for the admin API.
func (e *Edge) redisStatus() ratelimit.RedisStatus {
	for _, ft := range e.features {
		if rl, ok := ft.(*rateLimitFeature); ok {
			return rl.svc.Redis()
		}
	}
	return ratelimit.RedisStatus{}
}
func (rl *rateLimitFeature) close() error { return rl.svc.Close() }

// pluginFeature instantiates each file's plugins; an instance lives as long
// as the configuration that declared it.
type pluginFeature struct{}

func (pluginFeature) prepare(ctx context.Context, f, _ *routes.File) (prepared, func() error, error) {
	inst, err := plugins.NewInstances(ctx, f)
	if err != nil {
		return prepared{}, nil, err
	}
	phase := func(p plugins.Phase) Stage {
		return stageFunc(func(route routes.Route) (func(http.Handler) http.Handler, error) {
			if len(route.Plugins) == 0 {
				return nil, nil
			}
			chain, err := inst.ChainPhase(route.Plugins, p)
			if err != nil || chain == nil {
				return nil, err // nil: no instance of this phase on the route
			}
			name := route.Name
			return func(next http.Handler) http.Handler {
				h := chain(next)
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					info := plugins.RequestInfo{Route: name, RequestID: r.Header.Get("X-Request-Id")}
					st := stateFrom(r.Context())
					// ip_filter's default client address.
					info.ClientIP, info.ClientIPUnresolved = st.peer.Client, !st.peer.ClientOK
					ctx := plugins.WithRequestInfo(r.Context(), info)
					h.ServeHTTP(w, r.WithContext(ctx))
				})
			}, nil
		})
	}
	return prepared{stages: map[string]Stage{stagePlugins: phase(plugins.AfterAuth), stagePluginsBeforeAuth: phase(plugins.BeforeAuth)}}, inst.Close, nil
}

func (pluginFeature) ready() error { return nil }
func (pluginFeature) close() error { return nil }

// meshFeature holds the edge's workload identity and gives mesh upstreams
// an mTLS client configuration that checks the sidecar's identity.
type meshFeature struct {
	e      *Edge
	mu     sync.Mutex
	cfg    *routes.Mesh
	source *mesh.Source
	// gauges publish source's expiry and Workload API state once it is the
	// committed one.
	gauges *identityGauges
}

func (m *meshFeature) prepare(ctx context.Context, f, _ *routes.File) (prepared, func() error, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f.Mesh == nil {
		// The section is gone: at commit the identity is retired, so
		// readiness no longer waits for it and its series go.
		return prepared{tlsFor: plainTLS, commit: func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.source != nil {
				_ = m.source.Close()
				m.gauges.retire()
			}
			m.source, m.cfg, m.gauges = nil, nil, nil
		}}, nil, nil
	}
	src, built, gauges := m.source, false, m.gauges
	if src == nil || !reflect.DeepEqual(m.cfg, f.Mesh) {
		// Built aside: the live source keeps watching (and rotating) the
		// live identity until commit, and this one publishes its expiry
		// and Workload API state only once it is the live one.
		gauges = newIdentityGauges(m.e.metrics, f.Mesh.Source, f.Mesh.Socket)
		var err error
		src, err = mesh.SourceForEdge(m.e.bgCtx, f.Mesh, gauges.options(mesh.SourceOptions{Logger: m.e.log, Now: m.e.opts.Clock}))
		if err != nil {
			return prepared{}, nil, &routes.Error{File: f.Path, Pos: f.At("mesh"), Path: "mesh", Msg: err.Error()}
		}
		built = true
	}
	cfg := f.Mesh
	p := prepared{tlsFor: func(u routes.Upstream) (*tls.Config, error) {
		if u.MeshIdentity == "" {
			return plainTLS(u)
		}
		id, err := mesh.ParseID(u.MeshIdentity)
		if err != nil {
			return nil, fmt.Errorf("mesh_identity: %w", err)
		}
		return mesh.ClientConfig(src, id), nil
	}, tlsKey: fmt.Sprintf("%p", src)} // the source itself: a new one (any change of the section) needs new pools, as the sidecar's
	if f.Mesh.CallerToken != nil {
		p.caller = edgeCallerSend(f, src, m.e.opts.Clock)
	}
	p.commit = func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if old := m.source; old != nil && old != src {
			// Connections already made keep their certificates; only new
			// handshakes read the old source, which stays valid until closed.
			_ = old.Close()
		}
		gauges.commit(m.gauges)
		m.source, m.cfg, m.gauges = src, cfg, gauges
	}
	if built {
		p.undo = func() { _ = src.Close() }
	}
	return p, nil, nil
}

// ready is nil while the edge holds a valid workload identity: a SPIRE
// source without its first SVID, or an expired certificate, keeps the edge
// out of its load balancer.
func (m *meshFeature) ready() error {
	m.mu.Lock()
	src := m.source
	m.mu.Unlock()
	if src == nil {
		return nil
	}
	return src.Ready()
}

func (m *meshFeature) close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.source != nil {
		return m.source.Close()
	}
	return nil
}

// plainTLS is the client TLS of an upstream outside the mesh with scheme
// https: the system roots, TLS 1.2 or later.
func plainTLS(u routes.Upstream) (*tls.Config, error) {
	if u.MeshIdentity != "" {
		return nil, fmt.Errorf("mesh_identity %q needs the mesh section", u.MeshIdentity)
	}
	return proxy.UpstreamTLSConfig(u)
}

// tlsFeature runs north-south TLS: the https listener asks the current
// manager for its configuration at every handshake, so a reload that changes
// the tls section swaps the manager without rebinding.
type tlsFeature struct {
	e     *Edge
	mu    sync.Mutex
	cfg   *routes.TLS
	mgr   *edgetls.Manager
	redis redis.UniversalClient
	rcfg  *routes.Redis

	cached  atomic.Pointer[tlsHandlers]
	current atomic.Pointer[edgetls.Manager] // t.mgr, for lock-free reads
}

func (t *tlsFeature) prepare(ctx context.Context, f, _ *routes.File) (prepared, func() error, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f.TLS == nil {
		return prepared{}, nil, nil
	}
	if t.mgr != nil && reflect.DeepEqual(t.cfg, f.TLS) && reflect.DeepEqual(t.rcfg, f.Redis) {
		return prepared{}, nil, nil
	}
	// The new manager and its Redis client are built aside: handshakes keep
	// reading the live manager until commit, and the new one's expiry
	// series are held until then.
	opts := edgetls.Options{Logger: t.e.log, Expiry: t.e.metrics.certExpiry, HoldExpiry: true, CertReloads: t.e.metrics.certReloads,
		ACMEOrders:           t.e.metrics.acmeOrders,
		ProviderCertificates: f.Providers.Kubernetes != nil}
	if f.TLS.ACME != nil {
		opts.ACMEWait = f.TLS.ACME.HandshakeWait.D()
	}
	rdb := t.redis
	var newRedis redis.UniversalClient
	if f.TLS.ACME != nil && f.TLS.ACME.Cache == "redis" {
		if rdb == nil || !reflect.DeepEqual(t.rcfg, f.Redis) {
			c, err := redisclient.New(f.Redis)
			if err != nil {
				return prepared{}, nil, &routes.Error{File: f.Path, Pos: f.At("redis"), Path: "redis", Msg: err.Error()}
			}
			rdb, newRedis = c, c
		}
		opts.Redis, opts.RedisKeyPrefix = rdb, f.Redis.KeyPrefix
	}
	mgr, err := edgetls.New(t.e.bgCtx, f.TLS, opts)
	if err != nil {
		if newRedis != nil {
			_ = newRedis.Close()
		}
		// edgetls names the key path itself ("tls.certificates[0]: ...").
		return prepared{}, nil, &routes.Error{File: f.Path, Pos: f.At("tls"), Msg: strings.TrimPrefix(err.Error(), "tls: ")}
	}
	cfg, rcfg := f.TLS, f.Redis
	return prepared{
		commit: func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			oldMgr, oldRedis := t.mgr, t.redis
			t.mgr, t.cfg, t.rcfg = mgr, cfg, rcfg
			if newRedis != nil {
				t.redis = newRedis
			}
			t.current.Store(mgr)
			// Series of certificates the new configuration no longer serves
			// must go; the mesh feature, committed after this one,
			// publishes its own again.
			t.e.metrics.certExpiry.Reset()
			mgr.PublishExpiry()
			if oldMgr != nil {
				_ = oldMgr.Close()
			}
			if newRedis != nil && oldRedis != nil {
				_ = oldRedis.Close()
			}
		},
		undo: func() {
			_ = mgr.Close()
			if newRedis != nil {
				_ = newRedis.Close()
			}
		},
	}, nil, nil
}

// manager is the current manager; read per request and per handshake, so
// it is an atomic load rather than the feature's lock.
func (t *tlsFeature) manager() *edgetls.Manager { return t.current.Load() }

// tlsHandlers are the listeners' handlers for one manager, built once per
// manager rather than per request.
type tlsHandlers struct {
	mgr   *edgetls.Manager
	http  http.Handler // ACME HTTP-01, else redirect to https
	https http.Handler // the edge, with HSTS when configured
}

func (t *tlsFeature) handlers(edge http.Handler, httpsPort string) *tlsHandlers {
	mgr := t.manager()
	if h := t.cached.Load(); h != nil && h.mgr == mgr {
		return h
	}
	h := &tlsHandlers{mgr: mgr, http: mgr.HTTPHandler(httpsPort), https: mgr.WrapHSTS(edge)}
	t.cached.Store(h)
	return h
}

// config is the https listener's TLS configuration: every handshake asks
// the current manager.
func (t *tlsFeature) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		// The manager's own GetConfigForClient, not its TLSConfig: Go does
		// not follow a GetConfigForClient nested in a returned config, and
		// client-certificate auth lives there.
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			return t.manager().GetConfigForClient(hello)
		},
	}
}

func (t *tlsFeature) ready() error { return nil }

func (t *tlsFeature) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mgr != nil {
		_ = t.mgr.Close()
	}
	if t.redis != nil {
		_ = t.redis.Close()
	}
	return nil
}
