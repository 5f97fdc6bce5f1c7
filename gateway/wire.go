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
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/causewayhq/causeway/auth"
	"github.com/causewayhq/causeway/gateway/edgetls"
	"github.com/causewayhq/causeway/internal/redisclient"
	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/ratelimit"
	"github.com/causewayhq/causeway/routes"
)

// defaultFeatures are the edge's features in chain order: a route runs
// auth, then its rate limits, then its plugins, then the proxy.
func defaultFeatures(e *Edge) []feature {
	principalOf = principalName
	limits := ratelimit.New(e.bgCtx, ratelimit.Options{Decisions: e.metrics.ratelimitDecision, Logger: e.log})
	e.registry.MustRegister(ratelimit.NewRedisUpCollector(limits))
	return []feature{
		&tracingFeature{log: e.log},
		&tlsFeature{e: e},
		&meshFeature{e: e},
		&authFeature{e: e},
		&rateLimitFeature{svc: limits},
		&pluginFeature{},
	}
}

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
	e  *Edge
	mu sync.Mutex
	// cur is the active configuration's set; pending the one built for a
	// load that has not been activated (and may yet fail).
	cur, pending *auth.Set
}

func (a *authFeature) prepare(ctx context.Context, f, _ *routes.File) (prepared, func() error, error) {
	a.mu.Lock()
	prev := a.cur
	a.mu.Unlock()
	set, err := auth.NewSet(ctx, f, prev, auth.Options{Failures: a.e.metrics.authFailures, Logger: a.e.log})
	if err != nil {
		return prepared{}, nil, err
	}
	a.mu.Lock()
	a.pending = set
	a.mu.Unlock()
	return prepared{stage: set}, set.Close, nil
}

func (a *authFeature) activate() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cur, a.pending = a.pending, nil
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
	if err := rl.svc.Configure(ctx, f); err != nil {
		return prepared{}, nil, err
	}
	trust, err := newTrustedProxies(f.TrustedProxies)
	if err != nil {
		return prepared{}, nil, err
	}
	src := ratelimit.KeySources{
		// The address the edge resolved as the request entered: one
		// reading of X-Forwarded-For for the whole pipeline.
		ClientIP: func(r *http.Request) string {
			if st := stateFrom(r.Context()); st != nil {
				return st.clientIP
			}
			return trust.clientIP(r)
		},
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
	return prepared{stage: namedStage{"ratelimit", stageFunc(func(route routes.Route) (func(http.Handler) http.Handler, error) {
		return rl.svc.Middleware(route, src)
	})}}, nil, nil
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
					if st := stateFrom(r.Context()); st != nil {
						// ip_filter's default client address.
						info.ClientIP, info.ClientIPUnresolved = st.peer.client, !st.peer.clientOK
					}
					ctx := plugins.WithRequestInfo(r.Context(), info)
					h.ServeHTTP(w, r.WithContext(ctx))
				})
			}, nil
		})
	}
	return prepared{stage: phase(plugins.AfterAuth), beforeAuth: phase(plugins.BeforeAuth)}, inst.Close, nil
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
}

func (m *meshFeature) prepare(ctx context.Context, f, _ *routes.File) (prepared, func() error, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f.Mesh == nil {
		return prepared{tlsFor: plainTLS}, nil, nil
	}
	if m.source == nil || !reflect.DeepEqual(m.cfg, f.Mesh) {
		src, err := mesh.SourceForEdge(m.e.bgCtx, f.Mesh, mesh.SourceOptions{
			Logger: m.e.log,
			Expiry: func(id string, notAfter time.Time) {
				m.e.metrics.certExpiry.WithLabelValues(id).Set(float64(notAfter.Unix()))
			},
		})
		if err != nil {
			return prepared{}, nil, &routes.Error{File: f.Path, Pos: f.At("mesh"), Path: "mesh", Msg: err.Error()}
		}
		if m.source != nil {
			// Connections already made keep their certificates; only new
			// handshakes read the old source, which stays valid until closed.
			old := m.source
			defer func() { _ = old.Close() }()
		}
		m.source, m.cfg = src, f.Mesh
	}
	src := m.source
	// Published on every load: the TLS feature resets the expiry gauge when
	// its certificates change.
	m.e.metrics.certExpiry.WithLabelValues(src.ID().String()).Set(float64(src.NotAfter().Unix()))
	return prepared{tlsFor: func(u routes.Upstream) (*tls.Config, error) {
		if u.MeshIdentity == "" {
			return plainTLS(u)
		}
		id, err := mesh.ParseID(u.MeshIdentity)
		if err != nil {
			return nil, fmt.Errorf("mesh_identity: %w", err)
		}
		return mesh.ClientConfig(src, id), nil
	}, tlsKey: f.Mesh.CertFile + "|" + f.Mesh.KeyFile + "|" + f.Mesh.BundleFile}, nil, nil
}

func (m *meshFeature) ready() error { return nil }

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
	return &tls.Config{MinVersion: tls.VersionTLS12}, nil
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
	opts := edgetls.Options{Logger: t.e.log, Expiry: t.e.metrics.certExpiry, CertReloads: t.e.metrics.certReloads}
	if f.TLS.ACME != nil && f.TLS.ACME.Cache == "redis" {
		if t.redis == nil || !reflect.DeepEqual(t.rcfg, f.Redis) {
			c, err := redisclient.New(f.Redis)
			if err != nil {
				return prepared{}, nil, &routes.Error{File: f.Path, Pos: f.At("redis"), Path: "redis", Msg: err.Error()}
			}
			if t.redis != nil {
				_ = t.redis.Close()
			}
			t.redis = c
		}
		opts.Redis, opts.RedisKeyPrefix = t.redis, f.Redis.KeyPrefix
	}
	// Series of certificates the new configuration no longer serves must go.
	t.e.metrics.certExpiry.Reset()
	mgr, err := edgetls.New(t.e.bgCtx, f.TLS, opts)
	if err != nil {
		// edgetls names the key path itself ("tls.certificates[0]: ...").
		return prepared{}, nil, &routes.Error{File: f.Path, Pos: f.At("tls"), Msg: strings.TrimPrefix(err.Error(), "tls: ")}
	}
	if t.mgr != nil {
		_ = t.mgr.Close()
	}
	t.mgr, t.cfg, t.rcfg = mgr, f.TLS, f.Redis
	t.current.Store(mgr)
	return prepared{}, nil, nil
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
