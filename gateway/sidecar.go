package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.yaml.in/yaml/v3"

	"github.com/causewayhq/causeway/internal/httperr"
	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/routes"
)

// PeerIDHeader carries the verified SPIFFE ID of the caller to the local
// service. Copies sent by anyone else are removed.
const PeerIDHeader = "X-Causeway-Peer-Id"

// SidecarOptions configures a Sidecar.
type SidecarOptions struct {
	ConfigPath     string
	Logger         *slog.Logger
	Registry       *prometheus.Registry
	ReloadDebounce time.Duration
	// Pprof serves net/http/pprof on the admin listener (off by default).
	Pprof bool
	// Inherited are listeners handed over by an upgrading parent process
	// (InheritedFromEnv); the sidecar uses them instead of binding.
	Inherited *Inherited
}

// Sidecar is the mesh proxy beside a service. It is the edge's engine
// (router, pools, proxy, metrics) configured twice: inbound, mTLS from
// callers whose identity is checked, plain HTTP to the local service;
// outbound, plain HTTP from the local service, mTLS to the service named by
// the Host header with the server's identity checked.
type Sidecar struct {
	opts     SidecarOptions
	log      *slog.Logger
	registry *prometheus.Registry
	metrics  *metrics

	mu         sync.Mutex
	cfg        *routes.Sidecar
	hash       [32]byte
	source     *mesh.Source
	in, out    *runtime
	lastReload ReloadStatus
	inbound    atomicRuntime
	outbound   atomicRuntime
	// access is the access log shared by both runtimes; retiredAccess are
	// replaced ones, closed at Close (a retired runtime may still write).
	access        *accessLog
	retiredAccess []*accessLog
	// tracing holds the tracer of the file's tracing section.
	tracing tracingFeature

	inLn, outLn, adminLn net.Listener
	servers              []*http.Server
	adminServer          *http.Server

	bg       sync.WaitGroup
	bgCtx    context.Context
	bgCancel context.CancelFunc
}

// NewSidecar loads the sidecar file and the workload's identity.
func NewSidecar(ctx context.Context, opts SidecarOptions) (*Sidecar, error) {
	if opts.ConfigPath == "" {
		return nil, errors.New("sidecar: a sidecar file is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.ReloadDebounce == 0 {
		opts.ReloadDebounce = 200 * time.Millisecond
	}
	s := &Sidecar{opts: opts, log: opts.Logger, registry: opts.Registry, metrics: newMetrics(opts.Registry)}
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	if err := s.load(false); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Sidecar) load(force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.opts.ConfigPath)
	if err == nil && !force && s.cfg != nil && sha256.Sum256(data) == s.hash && s.lastReload.OK {
		return nil
	}
	err = s.build(data)
	if err != nil {
		s.metrics.reloads.WithLabelValues("failure").Inc()
		s.lastReload = ReloadStatus{At: time.Now(), Error: err.Error()}
		return err
	}
	s.metrics.reloads.WithLabelValues("success").Inc()
	s.lastReload = ReloadStatus{OK: true, At: time.Now()}
	return nil
}

// build loads the file and activates it; the caller holds s.mu.
func (s *Sidecar) build(data []byte) error {
	cfg, err := routes.LoadSidecarWith(s.opts.ConfigPath, routes.Options{CheckFiles: true})
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings {
		s.log.Warn("sidecar file", "warning", w.Error())
	}
	source := s.source
	id := cfg.Identity
	if source == nil || s.cfg == nil || s.cfg.Identity != id {
		source, err = mesh.SourceForSidecar(s.bgCtx, id, mesh.SourceOptions{
			Logger: s.log,
			Expiry: func(id string, notAfter time.Time) {
				s.metrics.certExpiry.WithLabelValues(id).Set(float64(notAfter.Unix()))
			},
			Connected: s.metrics.workloadAPIConnected(id.Source, id.Socket),
		})
		if err != nil {
			return &routes.Error{File: cfg.Path, Pos: cfg.At("identity"), Path: "identity", Msg: err.Error()}
		}
	}
	newIn, newOut, commitTracer, err := s.runtimes(cfg, source)
	if err != nil {
		if source != s.source {
			_ = source.Close()
		}
		return err
	}
	if s.cfg != nil && (!reflect.DeepEqual(s.cfg.Inbound == nil, cfg.Inbound == nil) || !reflect.DeepEqual(s.cfg.Outbound == nil, cfg.Outbound == nil) || s.cfg.Admin != cfg.Admin) {
		s.log.Warn("listeners changed in the sidecar file; they take effect at the next restart")
	}
	oldIn, oldOut, oldSource := s.in, s.out, s.source
	if s.access != nil && s.access != access(newIn, newOut) {
		// Closed once the old runtimes are done; see retire.
		s.retiredAccess = append(s.retiredAccess, s.access)
	}
	s.access = access(newIn, newOut)
	s.cfg, s.hash, s.source, s.in, s.out = cfg, sha256.Sum256(data), source, newIn, newOut
	s.inbound.Store(newIn)
	s.outbound.Store(newOut)
	commitTracer()
	s.retire(oldIn, oldOut)
	if oldSource != nil && oldSource != source {
		// Established connections keep their certificates.
		_ = oldSource.Close()
	}
	return nil
}

// runtimes builds the inbound and outbound engines of cfg. It touches
// nothing live: commit makes the tracer it built current; on error what it
// built is already freed.
func (s *Sidecar) runtimes(cfg *routes.Sidecar, source *mesh.Source) (in, out *runtime, commit func(), err error) {
	pools := map[string]*transportPool{}
	for _, rt := range []*runtime{s.in, s.out} {
		if rt != nil {
			for _, u := range rt.upstreams {
				pools[u.pool.key] = u.pool
			}
		}
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	access := s.access
	if access == nil || access.output != cfg.AccessLog.Output || access.sample != cfg.AccessLog.Sample {
		var undoAccess func()
		if access, undoAccess, err = openAccessLogUndoable(cfg.AccessLog); err != nil {
			return nil, nil, nil, err
		}
		undo = append(undo, undoAccess)
	}
	tlsKey := fmt.Sprintf("%p", source)
	s.tracing.log = s.log
	tr, release, commit, err := s.tracing.acquire(s.bgCtx, cfg.Tracing)
	if err != nil {
		return nil, nil, nil, &routes.Error{File: cfg.Path, Pos: cfg.At("tracing"), Path: "tracing", Msg: err.Error()}
	}
	if release != nil {
		defer release() // each runtime holds its own reference
	}
	if cfg.Inbound != nil {
		in, err = s.inboundRuntime(cfg, pools, access, tlsKey, tr)
		if err != nil {
			return nil, nil, nil, err
		}
		undo = append(undo, in.close)
	}
	if cfg.Outbound != nil {
		out, err = s.outboundRuntime(cfg, source, pools, access, tlsKey, tr)
		if err != nil {
			return nil, nil, nil, err
		}
	}
	if commit == nil {
		commit = func() {}
	}
	return in, out, commit, nil
}

// inboundRuntime: one route to the local service, behind the caller check.
func (s *Sidecar) inboundRuntime(cfg *routes.Sidecar, pools map[string]*transportPool, access *accessLog, tlsKey string, tr *tracer) (*runtime, error) {
	in := cfg.Inbound
	f := &routes.File{
		Version: 1,
		// Callers are authenticated sidecars or the edge: the client address
		// they forward is believed, so the service sees the real client.
		TrustedProxies: []string{"0.0.0.0/0", "::/0"},
		Server:         cfg.Server,
		AccessLog:      cfg.AccessLog,
		Upstreams:      map[string]routes.Upstream{"local": {Endpoints: []string{in.ForwardTo}, Timeout: in.Timeout}},
		Routes:         []routes.Route{{Name: "inbound", Match: routes.Match{PathPrefix: "/"}, Upstream: "local"}},
	}
	f, err := reparse(cfg.Path+" (inbound)", f)
	if err != nil {
		return nil, err
	}
	authz, err := mesh.InboundAuthorizer(in)
	if err != nil {
		return nil, err
	}
	peers := s.metrics.meshRequests.MustCurryWith(prometheus.Labels{"direction": "inbound"})
	check := stageFunc(func(routes.Route) (func(http.Handler) http.Handler, error) {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r.Header.Del(PeerIDHeader)
				id, ok := mesh.PeerIDFromRequest(r)
				if !ok {
					// The TLS configuration requires a verified certificate, so
					// this is a request that did not come over mTLS at all.
					peers.WithLabelValues("none", "403").Inc()
					httperr.Write(w, r, http.StatusForbidden, "mutual TLS required")
					return
				}
				if err := authz(id); err != nil {
					peers.WithLabelValues("denied", "403").Inc()
					httperr.Write(w, r, http.StatusForbidden, "caller identity not allowed")
					return
				}
				r.Header.Set(PeerIDHeader, id.String())
				if st := stateFrom(r.Context()); st != nil {
					st.principal = id.String() // the access log's principal: the verified caller
				}
				next.ServeHTTP(w, r)
				code := http.StatusOK
				if st := stateFrom(r.Context()); st != nil && st.rec.status != 0 {
					code = st.rec.status
				}
				peers.WithLabelValues(id.String(), statusLabel(code)).Inc()
			})
		}, nil
	})
	return buildRuntime(f, buildDeps{metrics: s.metrics, pools: pools, access: access, stages: tracedStages(tr, check), tlsKey: tlsKey, log: s.log})
}

// outboundRuntime: one route per service, chosen by Host, each to an
// upstream reached over mTLS that must present the service's identity.
func (s *Sidecar) outboundRuntime(cfg *routes.Sidecar, source *mesh.Source, pools map[string]*transportPool, access *accessLog, tlsKey string, tr *tracer) (*runtime, error) {
	out := cfg.Outbound
	f := &routes.File{
		Version:        1,
		TrustedProxies: []string{"127.0.0.0/8", "::1/128"},
		Server:         cfg.Server,
		AccessLog:      cfg.AccessLog,
		Mesh:           outboundMesh(cfg, source),
		Upstreams:      map[string]routes.Upstream{},
	}
	names := sortedServiceNames(out.Services)
	identities := map[string]string{}
	for _, name := range names {
		svc := out.Services[name]
		f.Upstreams[name] = routes.Upstream{Endpoints: svc.Endpoints, MeshIdentity: svc.Identity, Balance: svc.Balance, Timeout: svc.Timeout}
		f.Routes = append(f.Routes, routes.Route{Name: name, Match: routes.Match{Host: name}, Upstream: name})
		identities[name] = svc.Identity
	}
	f, err := reparse(cfg.Path+" (outbound)", f)
	if err != nil {
		return nil, err
	}
	peers := s.metrics.meshRequests.MustCurryWith(prometheus.Labels{"direction": "outbound"})
	count := stageFunc(func(route routes.Route) (func(http.Handler) http.Handler, error) {
		peer := identities[route.Name]
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				next.ServeHTTP(w, r)
				code := http.StatusOK
				if st := stateFrom(r.Context()); st != nil && st.rec.status != 0 {
					code = st.rec.status
				}
				peers.WithLabelValues(peer, statusLabel(code)).Inc()
			})
		}, nil
	})
	tlsFor := func(u routes.Upstream) (*tls.Config, error) {
		id, err := mesh.ParseID(u.MeshIdentity)
		if err != nil {
			return nil, err
		}
		return mesh.ClientConfig(source, id), nil
	}
	return buildRuntime(f, buildDeps{metrics: s.metrics, pools: pools, access: access, stages: tracedStages(tr, count), tlsFor: tlsFor, tlsKey: tlsKey, log: s.log})
}

// outboundMesh is the mesh section of the outbound runtime's synthesised
// routes file: the sidecar's own identity settings. Its trust domain only
// serves validation: identity.trust_domain, else the current ID's, else (a
// SPIRE source still waiting for its first SVID) the first service's, which
// source spire does not hold the others to.
func outboundMesh(cfg *routes.Sidecar, source *mesh.Source) *routes.Mesh {
	id := cfg.Identity
	td := id.TrustDomain
	if td == "" {
		td = source.ID().TrustDomain().Name()
	}
	if td == "" {
		for _, name := range sortedServiceNames(cfg.Outbound.Services) {
			if sid, err := mesh.ParseID(cfg.Outbound.Services[name].Identity); err == nil {
				td = sid.TrustDomain().Name()
				break
			}
		}
	}
	return &routes.Mesh{TrustDomain: td, Source: id.Source, Socket: id.Socket, CertFile: id.CertFile, KeyFile: id.KeyFile, BundleFile: id.BundleFile}
}

func sortedServiceNames(m map[string]routes.OutboundService) []string {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// access is the access log of whichever runtime exists.
func access(in, out *runtime) *accessLog {
	if in != nil {
		return in.accessLog
	}
	if out != nil {
		return out.accessLog
	}
	return nil
}

// reparse runs a synthesised routes file through the loader, so it gets the
// same defaults and validation as a file a user wrote.
func reparse(name string, f *routes.File) (*routes.File, error) {
	data, err := yaml.Marshal(f)
	if err != nil {
		return nil, err
	}
	return routes.Parse(name, data)
}

func (s *Sidecar) retire(rts ...*runtime) {
	for _, rt := range rts {
		if rt != nil {
			retireWhenIdle(s.bgCtx, &s.bg, rt, rt.close)
		}
	}
}

// Reload re-reads the sidecar file now (SIGHUP).
func (s *Sidecar) Reload() error {
	err := s.load(true)
	s.logReload(err)
	return err
}

func (s *Sidecar) logReload(err error) {
	if err != nil {
		s.log.Error("sidecar file refused; the active configuration stays", "file", s.opts.ConfigPath, "error", err.Error())
		return
	}
	s.log.Info("sidecar file loaded", "file", s.opts.ConfigPath)
}

// Listen binds the inbound, outbound and admin listeners.
func (s *Sidecar) Listen() error {
	s.mu.Lock()
	cfg := s.cfg
	s.mu.Unlock()
	var in, out string
	if cfg.Inbound != nil {
		in = cfg.Inbound.Listen
	}
	if cfg.Outbound != nil {
		out = cfg.Outbound.Listen
	}
	var lns []net.Listener
	var err error
	if inh := s.opts.Inherited; inh != nil {
		lns, err = inh.take([]string{"inbound", "outbound", "admin"}, []string{in, out, cfg.Admin})
	} else {
		lns, err = bindListeners(in, out, cfg.Admin)
	}
	if err != nil {
		return err
	}
	s.inLn, s.outLn, s.adminLn = lns[0], lns[1], lns[2]
	return nil
}

// Addr returns the bound address of "inbound", "outbound" or "admin".
func (s *Sidecar) Addr(which string) string {
	switch which {
	case "inbound":
		return listenerAddr(s.inLn)
	case "outbound":
		return listenerAddr(s.outLn)
	case "admin":
		return listenerAddr(s.adminLn)
	}
	return ""
}

// ID is the workload identity the sidecar presents.
func (s *Sidecar) ID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.source.ID().String()
}

// Serve serves until ctx is cancelled, then drains like the edge.
func (s *Sidecar) Serve(ctx context.Context) error {
	if s.inLn == nil && s.outLn == nil && s.adminLn == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	cfg, source := s.cfg, s.source
	s.mu.Unlock()
	newServer := func(h http.Handler) *http.Server { return newHTTPServer(s.log, cfg.Server, h) }
	var data []dataServer
	if s.inLn != nil {
		srv := newServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.inbound.Load().ServeHTTP(w, r) }))
		// Every handshake reads the current certificate and bundle from the
		// source; a client without a certificate fails the handshake.
		srv.TLSConfig = mesh.ServerConfig(source)
		data = append(data, dataServer{srv: srv, ln: s.inLn, tls: true})
	}
	if s.outLn != nil {
		srv := withH2C(newServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.outbound.Load().ServeHTTP(w, r) })))
		data = append(data, dataServer{srv: srv, ln: s.outLn})
	}
	for _, d := range data {
		s.servers = append(s.servers, d.srv)
	}
	if err := watchFile(ctx, s.bgCtx, &s.bg, s.opts.ConfigPath, s.opts.ReloadDebounce, s.log, func() { s.logReload(s.load(false)) }); err != nil {
		s.log.Warn("sidecar file watching is off; reload with SIGHUP", "error", err.Error())
	}
	errc := make(chan error, len(data)+1)
	serving := serveAll(data, errc)
	if s.adminLn != nil {
		s.adminServer = newAdminServer(s.log, adminGuard(s.adminHandler(), func() routes.AdminAccess {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.cfg.AdminAccess
		}))
		serveAll([]dataServer{{srv: s.adminServer, ln: s.adminLn}}, errc)
	}
	s.log.Info("sidecar serving", "id", source.ID().String(), "inbound", s.Addr("inbound"), "outbound", s.Addr("outbound"), "admin", s.Addr("admin"))
	s.opts.Inherited.signalReady()
	upgraded := false
	runErr := runUntil(ctx, errc, func() { _ = s.Reload() }, upgradeOnSignal(s.log, &upgraded,
		namedListener{"inbound", s.inLn}, namedListener{"outbound", s.outLn}, namedListener{"admin", s.adminLn}))
	if upgraded {
		handOver(serving, s.inLn, s.outLn)
	}
	shutdownServers(s.log, s.servers, serving, s.adminServer, cfg.Server.ShutdownTimeout.D())
	s.Close()
	return runErr
}

func (s *Sidecar) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		source := s.source
		s.mu.Unlock()
		notAfter, id := source.NotAfter(), source.ID().String()
		// No identity yet (a SPIRE source waiting for its agent) or an
		// expired one: every handshake would fail.
		if err := source.Ready(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reasons": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ready": true, "id": id, "certificate_not_after": notAfter.UTC()})
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		cfg, last := s.cfg, s.lastReload
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"file": cfg.Path, "last_reload": last, "config": configView(cfg)})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
	s.observer().register(mux) // /routes, /upstreams, the dashboard at /
	return mux
}

// Close releases the sidecar's resources.
func (s *Sidecar) Close() {
	s.bgCancel()
	s.bg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rt := range []*runtime{s.in, s.out} {
		if rt != nil {
			rt.close()
		}
	}
	s.in, s.out = nil, nil
	for _, al := range append(s.retiredAccess, s.access) {
		_ = al.Close()
	}
	s.access, s.retiredAccess = nil, nil
	if s.source != nil {
		_ = s.source.Close()
	}
	closeListeners(s.inLn, s.outLn, s.adminLn)
}
