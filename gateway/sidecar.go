package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"reflect"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/causewayhq/causeway/gateway/internal/admin"
	"github.com/causewayhq/causeway/gateway/internal/pipeline"
	"github.com/causewayhq/causeway/internal/httperr"
	"github.com/causewayhq/causeway/internal/refpool"
	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/caller"
	"github.com/causewayhq/causeway/routes"
)

// PeerIDHeader carries the verified SPIFFE ID of the caller to the local
// service. Copies sent by anyone else are removed.
const PeerIDHeader = "X-Causeway-Peer-Id"

// ClientCertSubjectHeader carries the subject of the client certificate the
// edge verified (tls.client_auth) to the upstream; a client's own copy never
// passes.
const ClientCertSubjectHeader = pipeline.ClientCertSubjectHeader

// SidecarOptions configures a Sidecar (see Options).
type SidecarOptions = Options

// Sidecar is the mesh proxy beside a service. It is the edge's engine
// (router, pools, proxy, metrics) configured twice: inbound, mTLS from
// callers whose identity is checked, plain HTTP to the local service;
// outbound, plain HTTP from the local service, mTLS to the service named by
// the Host header with the server's identity checked. The lifecycle (load,
// commit, retire, listeners, drain, upgrade) is the server it shares with
// the edge.
type Sidecar struct {
	*server[*sidecarGen]
	// tracing gives each generation the tracer of the file's tracing
	// section.
	tracing tracingFeature
	// sources shares the workload identity between generations while the
	// identity section is unchanged.
	sources *refpool.Pool[string, *liveSource]
	// outbound runs the outbound.kubernetes source.
	outbound outboundSources
	// replay is the inbound callers' memory of caller token ids
	// (callers.replay), shared by every generation: a reload builds a new
	// verifier, and one with a memory of its own would accept once more
	// every token used before the reload.
	replay *caller.ReplayCache
}

// sidecarGen is one generation's sidecar file and the identity it was
// built with.
type sidecarGen struct {
	file   *routes.Sidecar
	source *mesh.Source
	gauges *identityGauges // source's expiry and Workload API state
	// serverTLS is the inbound listener's TLS configuration for source.
	serverTLS *tls.Config
	// outbound is the outbound runtime's model (the file's services and
	// the cluster's merged), which endpoint changes from Kubernetes update
	// in place (server.updateEndpoints). Guarded by the server's lock once
	// committed.
	outbound *routes.File
}

// liveSource is an identity source and the gauges that publish its
// expiry and Workload API state once it is committed.
type liveSource struct {
	*mesh.Source
	gauges *identityGauges
}

// NewSidecar loads the sidecar file and the workload's identity.
func NewSidecar(ctx context.Context, opts SidecarOptions) (*Sidecar, error) {
	if opts.ConfigPath == "" {
		return nil, errors.New("sidecar: a sidecar file is required")
	}
	s := &Sidecar{replay: caller.NewReplayCache()}
	s.server = newServer("sidecar", "sidecar file", opts, s)
	s.tracing = tracingFeature{pool: s.tracers, log: s.log}
	s.sources = refpool.New[string](func(ls *liveSource) error { return ls.Close() })
	s.outbound.init(s)
	if err := s.load(ctx, false); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// build loads the sidecar file into g: the identity (shared with the
// previous generation while the identity section is unchanged), the
// tracer, the access log, and the inbound and outbound runtimes.
func (s *Sidecar) kind() string { return "sidecar" }

func (s *Sidecar) build(ctx context.Context, g *generation[*sidecarGen]) (err error) {
	if g.readErr != nil {
		return g.readErr
	}
	cfg, err := routes.ParseSidecarWith(s.opts.ConfigPath, g.data, routes.Options{CheckFiles: true})
	if err != nil {
		return err
	}
	// As the edge's: what refuses the file from here on may quote a value
	// from a ${VAR} reference.
	defer func() { err = cfg.RedactEnv(err) }()
	for _, w := range cfg.Warnings {
		s.log.Warn("sidecar file", "warning", w.Error())
	}
	startOutbound, err := s.outbound.prepare(cfg)
	if err != nil {
		return err
	}
	g.onCommit(startOutbound)
	id := cfg.Identity
	key := fmt.Sprintf("%#v", id)
	ls, _, err := s.sources.Acquire(key, func() (*liveSource, error) {
		// Its gauges publish only once it is committed: a file refused
		// after this point leaves the metrics as they were.
		gauges := newIdentityGauges(s.metrics, id.Source, id.Socket)
		src, err := mesh.SourceForSidecar(s.bgCtx, id, gauges.options(mesh.SourceOptions{Logger: s.log, Now: s.opts.Clock}))
		return &liveSource{Source: src, gauges: gauges}, err
	})
	if err != nil {
		return &routes.Error{File: cfg.Path, Pos: cfg.At("identity"), Path: "identity", Msg: err.Error()}
	}
	g.onRelease(func() { _, _ = s.sources.Release(key) })
	var prev *identityGauges
	if s.active != nil {
		prev = s.active.cfg.gauges
	}
	g.onCommit(func() { ls.gauges.commit(prev) })
	g.cfg = &sidecarGen{file: cfg, source: ls.Source, gauges: ls.gauges, serverTLS: mesh.ServerConfig(ls.Source)}
	access, err := s.acquireAccessLog(g, cfg.AccessLog)
	if err != nil {
		return err
	}
	tr, release, commit, err := s.tracing.acquire(s.bgCtx, cfg.Tracing)
	if err != nil {
		return &routes.Error{File: cfg.Path, Pos: cfg.At("tracing"), Path: "tracing", Msg: err.Error()}
	}
	g.onRelease(release)
	g.onCommit(commit)
	tlsKey := fmt.Sprintf("%p", ls.Source)
	g.rts = make([]*runtime, 2)
	if cfg.Inbound != nil {
		if g.rts[0], err = s.inboundRuntime(cfg, ls.Source, access, tlsKey, tr); err != nil {
			return err
		}
	}
	if cfg.Outbound != nil {
		if g.rts[1], err = s.outboundRuntime(cfg, ls.Source, access, tlsKey, tr); err != nil {
			return err
		}
		g.cfg.outbound = g.rts[1].file
	}
	return nil
}

func (s *Sidecar) warnRestart(old, next *sidecarGen) {
	o, n := old.file, next.file
	if (o.Inbound == nil) != (n.Inbound == nil) || (o.Outbound == nil) != (n.Outbound == nil) || o.Admin != n.Admin ||
		(o.Inbound != nil && n.Inbound != nil && o.Inbound.Listen != n.Inbound.Listen) ||
		(o.Outbound != nil && n.Outbound != nil && o.Outbound.Listen != n.Outbound.Listen) {
		s.log.Warn("listeners changed in the sidecar file; they take effect at the next restart")
	}
	if !reflect.DeepEqual(o.Server, n.Server) {
		s.log.Warn("server timeouts changed in the sidecar file; they take effect at the next restart")
	}
}

func (s *Sidecar) listeners(c *sidecarGen) (names, addrs []string) {
	var in, out string
	if c.file.Inbound != nil {
		in = c.file.Inbound.Listen
	}
	if c.file.Outbound != nil {
		out = c.file.Outbound.Listen
	}
	return []string{"inbound", "outbound", "admin"}, []string{in, out, c.file.Admin}
}

func (s *Sidecar) serverSettings(c *sidecarGen) (routes.Server, bool) {
	_, set := c.file.Positions["server.max_connections"]
	return c.file.Server, set
}

// dataServers: the inbound listener speaks mTLS, with the identity of the
// live generation read at every handshake (a reload that changes the
// identity reaches it); the outbound one is plain HTTP (and h2c) from the
// local service.
func (s *Sidecar) dataServers(c *sidecarGen, lns []net.Listener, engine string) []dataServer {
	var data []dataServer
	if lns[0] != nil {
		srv := newDataServer(s.log, c.file.Server, engine, serverSpec{
			handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				s.serveLive(0, w, r)
			}),
			tls: &tls.Config{
				MinVersion: tls.VersionTLS12,
				NextProtos: []string{"h2", "http/1.1"},
				GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
					return s.live.Load().cfg.serverTLS, nil
				},
			},
		})
		data = append(data, dataServer{srv: srv, ln: lns[0], tls: true})
	}
	if lns[1] != nil {
		srv := newDataServer(s.log, c.file.Server, engine, serverSpec{h2c: true, handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.serveLive(1, w, r)
		})})
		data = append(data, dataServer{srv: srv, ln: lns[1]})
	}
	return data
}

func (s *Sidecar) adminAccess(c *sidecarGen) routes.AdminAccess { return c.file.AdminAccess }

func (s *Sidecar) watched() []string { return nil }

func (s *Sidecar) closeRole() {}

func (s *Sidecar) servingAttrs(c *sidecarGen) []any {
	return []any{"id", c.source.ID().String()}
}

func (s *Sidecar) summary(*sidecarGen) []any { return nil }

// Reload re-reads the sidecar file now (SIGHUP).
func (s *Sidecar) Reload() error { return s.server.Reload(context.Background()) }

// ID is the workload identity the sidecar presents.
func (s *Sidecar) ID() string { return s.current().source.ID().String() }

// grpcContentType matches the Content-Type of a gRPC request
// (application/grpc, application/grpc+proto, application/grpc;...), not
// gRPC-Web's.
const grpcContentType = `application/grpc([+;].*)?`

// inboundRuntime: the routes to the local service (gRPC calls on HTTP/2,
// the rest as they came), behind the caller check.
func (s *Sidecar) inboundRuntime(cfg *routes.Sidecar, source *mesh.Source, access *accessLog, tlsKey string, tr *tracer) (*runtime, error) {
	in := cfg.Inbound
	f := &routes.File{
		Version: 1,
		// Callers are authenticated sidecars or the edge: the client address
		// they forward is believed, so the service sees the real client.
		TrustedProxies: []string{"0.0.0.0/0", "::/0"},
		Server:         cfg.Server,
		AccessLog:      cfg.AccessLog,
		Upstreams: map[string]routes.Upstream{
			"local": {Endpoints: []string{in.ForwardTo}, Timeout: in.Timeout},
			// gRPC exists only over HTTP/2, and a local gRPC server
			// without TLS speaks h2c: a gRPC call (by its content type,
			// the one thing every gRPC request carries) is forwarded on
			// HTTP/2, whatever the caller's hop was. gRPC-Web
			// (application/grpc-web) is HTTP/1.1 and stays on "local".
			"local-grpc": {Endpoints: []string{in.ForwardTo}, Timeout: in.Timeout, Protocol: "h2c"},
		},
		Routes: []routes.Route{
			{Name: "inbound", Match: routes.Match{PathPrefix: "/"}, Upstream: "local"},
			{Name: "inbound-grpc", Match: routes.Match{PathPrefix: "/", HeadersRegex: map[string]string{"Content-Type": grpcContentType}}, Upstream: "local-grpc"},
		},
	}
	if err := f.Normalize(); err != nil {
		return nil, err
	}
	authz, err := mesh.InboundAuthorizer(in, cfg.Identity.TrustDomain)
	if err != nil {
		return nil, err
	}
	callers, err := newSidecarCallers(in, source, s.replay, s.metrics.callerTokens, s.log, s.opts.Clock)
	if err != nil {
		return nil, err
	}
	peers := newPeerCounts(s.metrics.meshRequests.MustCurryWith(prometheus.Labels{"direction": "inbound"}))
	// The caller's ID is read from its certificate on every request, and
	// the certificate's chain checked again against the bundle and the
	// clock (a connection outlives both), but parsed and verified once per
	// connection while neither changed: the certificate is the same object
	// for every request of a connection (mesh.PeerIDs).
	peerIDs := mesh.NewPeerIDs()
	check := stageFunc(func(routes.Route) (func(http.Handler) http.Handler, error) {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r.Header.Del(PeerIDHeader)
				id, ok, err := peerIDs.Verified(r.TLS, source)
				if !ok {
					// The TLS configuration requires a verified certificate, so
					// this is a request that did not come over mTLS at all.
					peers.inc("none", "403")
					httperr.Write(w, r, http.StatusForbidden, "mutual TLS required")
					return
				}
				if err != nil {
					// Verified at the handshake, no longer now: the certificate
					// expired, or its root left the bundle, while the caller
					// kept its connection open. The connection is closed after
					// this answer, so a caller that holds a current
					// certificate gets its next request through on a new one.
					peers.inc("invalid", "403")
					s.log.Info("caller certificate no longer valid on an open connection", "error", err.Error())
					w.Header().Set("Connection", "close")
					httperr.Write(w, r, http.StatusForbidden, "caller certificate no longer valid")
					return
				}
				if err := authz(id); err != nil {
					peers.inc("denied", "403")
					httperr.Write(w, r, http.StatusForbidden, "caller identity not allowed")
					return
				}
				if _, ok := callers.check(w, r, id); !ok {
					peers.inc(id.String(), statusLabel(stateFrom(r.Context()).rec.status))
					return
				}
				r.Header.Set(PeerIDHeader, id.String())
				st := stateFrom(r.Context())
				st.principal = id.String() // the access log's principal: the verified caller
				next.ServeHTTP(w, r)
				code := http.StatusOK
				if st := stateFrom(r.Context()); st.rec.status != 0 {
					code = st.rec.status
				}
				peers.inc(id.String(), statusLabel(code))
			})
		}, nil
	})
	return buildRuntime(f, buildDeps{metrics: s.metrics, pools: s.pools, upstreams: s.upstreams, access: access, stages: tracedStages(tr, check), tlsKey: tlsKey, log: s.log, now: s.opts.Clock, reverseProxy: s.opts.reverseProxy})
}

// outboundRuntime: one route per service, chosen by Host, each to an
// upstream reached over mTLS that must present the service's identity.
func (s *Sidecar) outboundRuntime(cfg *routes.Sidecar, source *mesh.Source, access *accessLog, tlsKey string, tr *tracer) (*runtime, error) {
	out := cfg.Outbound
	f := &routes.File{
		Version:        1,
		TrustedProxies: []string{"127.0.0.0/8", "::1/128"},
		Server:         cfg.Server,
		AccessLog:      cfg.AccessLog,
		Mesh:           outboundMesh(cfg, source),
		Upstreams:      map[string]routes.Upstream{},
	}
	names := slices.Sorted(maps.Keys(out.Services))
	for _, name := range names {
		svc := out.Services[name]
		f.Upstreams[name] = routes.Upstream{Endpoints: svc.Endpoints, MeshIdentity: svc.Identity, Balance: svc.Balance, Timeout: svc.Timeout}
		f.Routes = append(f.Routes, routes.Route{Name: name, Match: routes.Match{Host: name}, Upstream: name})
	}
	if err := f.Normalize(); err != nil {
		return nil, err
	}
	f, err := s.outbound.merge(cfg, f)
	if err != nil {
		return nil, err
	}
	identities := outboundIdentities(f)
	peers := newPeerCounts(s.metrics.meshRequests.MustCurryWith(prometheus.Labels{"direction": "outbound"}))
	count := stageFunc(func(route routes.Route) (func(http.Handler) http.Handler, error) {
		// A route split between upstreams (a Service whose pods run under
		// several ServiceAccounts) learns its peer from the upstream the
		// request went to.
		peer := identities[route.Upstream]
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				next.ServeHTTP(w, r)
				code := http.StatusOK
				st := stateFrom(r.Context())
				if st.rec.status != 0 {
					code = st.rec.status
				}
				p := peer
				if id := identities[st.upstream]; id != "" {
					p = id
				}
				if p == "" {
					p = "none" // no endpoint to call, so no peer
				}
				peers.inc(p, statusLabel(code))
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
	send := stripCaller
	if cfg.Inbound != nil && cfg.Inbound.Callers != nil && out.CallerToken != nil {
		var err error
		if send, err = sidecarExchange(cfg.Inbound.Callers, out.CallerToken, source, s.metrics.callerTokens, s.opts.Clock); err != nil {
			return nil, err
		}
	}
	return buildRuntime(f, buildDeps{metrics: s.metrics, pools: s.pools, upstreams: s.upstreams, access: access, stages: tracedStages(tr, count), tlsFor: tlsFor, tlsKey: tlsKey, log: s.log, now: s.opts.Clock, caller: send, reverseProxy: s.opts.reverseProxy})
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
		for _, name := range slices.Sorted(maps.Keys(cfg.Outbound.Services)) {
			if sid, err := mesh.ParseID(cfg.Outbound.Services[name].Identity); err == nil {
				td = sid.TrustDomain().Name()
				break
			}
		}
	}
	return &routes.Mesh{TrustDomain: td, Source: id.Source, Socket: id.Socket, SPIFFEID: id.SPIFFEID, CertFile: id.CertFile, KeyFile: id.KeyFile, BundleFile: id.BundleFile, FederatedBundles: id.FederatedBundles}
}

func (s *Sidecar) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		source := s.current().source
		notAfter, id := source.NotAfter(), source.ID().String()
		// No identity yet (a SPIRE source waiting for its agent) or an
		// expired one: every handshake would fail.
		if err := errors.Join(source.Ready(), s.outbound.ready()); err != nil {
			admin.WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reasons": err.Error()})
			return
		}
		admin.WriteJSON(w, http.StatusOK, map[string]any{"ready": true, "id": id, "certificate_not_after": notAfter.UTC()})
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		cfg, last, loaded := s.active.cfg.file, s.lastReload, s.active.loadedAt
		s.mu.Unlock()
		admin.WriteJSON(w, http.StatusOK, map[string]any{"file": cfg.Path, "loaded_at": loaded.UTC().Format(time.RFC3339Nano), "last_reload": last, "config": admin.ConfigView(cfg)})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
	s.observer().register(mux) // /routes, /upstreams, the dashboard at /
	if s.opts.Pprof {
		admin.RegisterPprof(mux)
	}
	return mux
}
