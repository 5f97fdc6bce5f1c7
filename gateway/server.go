package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"

	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/causewayhq/causeway/gateway/internal/admin"
	"github.com/causewayhq/causeway/internal/filewatch"
	"github.com/causewayhq/causeway/internal/refpool"
	"github.com/causewayhq/causeway/routes"
)

// server is what the edge and the sidecar share: one configuration file and
// the generations built from it, the listeners, the admin API, and the
// lifecycle around them (load, commit, retire, watch, serve, hand over,
// drain). What differs between the two, how a file becomes a generation and
// which listeners serve what, is the role.
type server[C any] struct {
	kind     string // "edge" or "sidecar", in logs
	fileKind string // "routes file" or "sidecar file", in logs
	opts     Options
	log      *slog.Logger
	registry *prometheus.Registry
	metrics  *metrics
	role     role[C]

	mu         sync.Mutex // serialises loads; guards active, lastReload and fileRefused
	active     *generation[C]
	lastReload ReloadStatus
	// fileRefused: the last load of the configuration file was refused,
	// and lastReload says so. A rebuild from the active file's bytes (a
	// route source's change) leaves that report alone: it succeeds
	// without the file on disk, which stays refused until a load takes it.
	fileRefused bool
	// live is active for the request path: one atomic load per request.
	live atomic.Pointer[generation[C]]
	// afterLoad, set by tests only, runs in serveLive between loading the
	// live generation and counting the request on it: the window a reload
	// and retire can fall into.
	afterLoad atomic.Pointer[func()]

	// Resources shared by successive generations while their settings are
	// unchanged: a reload keeps warm upstream connections, the tracer's
	// queue and the open access-log file.
	pools *refpool.Pool[string, *proxy.TransportPool]
	// upstreams counts the generations holding each upstream: a build
	// takes over the live generation's unchanged upstreams (with their
	// endpoints' health, breakers and checkers), and an upstream is closed
	// when the last generation holding it is freed.
	upstreams *refpool.Pool[*proxy.Upstream, *proxy.Upstream]
	tracers   *refpool.Pool[string, *tracer]
	logs      *refpool.Pool[string, *accessLog]

	// nofile reads the file-descriptor limit the default connection cap
	// derives from (nil: the process's RLIMIT_NOFILE).
	nofile func() (uint64, error)
	// maxConns is the connection cap of each data listener (0: none).
	maxConns int

	names []string       // listener names, the admin listener last
	raw   []net.Listener // the bound sockets: what an upgrade hands over
	lns   []net.Listener // what is served: raw, data ones under the connection cap

	servers     []httpServer
	adminServer *http.Server
	serving     *sync.WaitGroup // done when every data Serve call has returned

	bg       sync.WaitGroup // retire goroutines, the watcher, identity sources
	bgCtx    context.Context
	bgCancel context.CancelFunc
	// closeOnce makes Close idempotent: Serve closes a server that fails
	// to start, and its caller may close it again.
	closeOnce sync.Once
}

// Options configures an Edge or a Sidecar.
type Options struct {
	// ConfigPath is the routes file (edge) or the sidecar file; it is
	// watched and reloaded on change.
	ConfigPath string
	Logger     *slog.Logger
	// Registry receives the metrics (nil: a new registry). The admin
	// listener's /metrics serves it.
	Registry *prometheus.Registry
	// ReloadDebounce groups the burst of file events an editor or a
	// ConfigMap update makes into one reload (default 200ms).
	ReloadDebounce time.Duration
	// Pprof serves net/http/pprof under /debug/pprof/ on the admin
	// listener. Off by default: profiles reveal internals and cost CPU.
	Pprof bool
	// Inherited are listeners handed over by an upgrading parent process
	// (InheritedFromEnv), used instead of binding.
	Inherited *Inherited
	// Clock is the clock of passive health ejections, circuit breakers,
	// retry budgets, authenticators and rate limits (in memory, leases and
	// the local denial cache; decisions in Redis keep Redis's clock), of
	// the mesh identity's validity checks and of the certificate expiries
	// pooled upstream TLS connections are retired by (nil: time.Now);
	// tests pass one they control.
	Clock func() time.Time
	// RouteSource builds the source of a routes file's
	// providers.kubernetes section (nil: the Kubernetes provider).
	RouteSource NewRouteSource
	// checkOnly builds without starting anything that would reach out
	// (Check: route sources are built, never run).
	checkOnly bool
	// noReuse builds every upstream afresh (tests: the reference that a
	// build taking over unchanged upstreams is compared with).
	noReuse bool
	// reverseProxy forwards with net/http/httputil.ReverseProxy instead of
	// the edge's own forwarder (directProxy): the reference behaviour the
	// differential test (direct_test.go) holds the forwarder to. Tests only.
	reverseProxy bool
}

// role is what the edge and the sidecar each add to the server.
type role[C any] interface {
	// build turns the configuration file into g (g.hash is set). It
	// touches nothing live: what makes its work live goes to g's commit
	// steps, what frees it to g's undo and release steps.
	build(ctx context.Context, g *generation[C]) error
	// kind names the configuration file in messages ("routes", "sidecar").
	kind() string
	// warnRestart logs the settings of next that take effect only at the
	// next start (listeners are bound once).
	warnRestart(old, next C)
	// listeners names the listeners and gives their addresses in cfg
	// ("": none); the admin listener is last, the data listeners before.
	listeners(cfg C) (names, addrs []string)
	// serverSettings are the data listeners' timeouts and connection
	// caps; maxSet says whether the file sets server.max_connections
	// (else the cap derives from the file-descriptor limit).
	serverSettings(cfg C) (server routes.Server, maxSet bool)
	// dataServers are the HTTP servers of the data listeners lns (nil
	// where a listener is not bound), in listeners' order, serving
	// HTTP/1.1 with engine (routes.HTTP1Engines).
	dataServers(cfg C, lns []net.Listener, engine string) []dataServer
	adminHandler() http.Handler
	adminAccess(cfg C) routes.AdminAccess
	// watched are the files besides the configuration file that a change
	// must rebuild from (API-key files, ...).
	watched() []string
	// closeRole frees what the role holds beyond generations.
	closeRole()
	// servingAttrs are logged once the server serves.
	servingAttrs(cfg C) []any
	// summary is logged after each successful load.
	summary(cfg C) []any
}

func newServer[C any](kind, fileKind string, opts Options, r role[C]) *server[C] {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.ReloadDebounce == 0 {
		opts.ReloadDebounce = 200 * time.Millisecond
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	s := &server[C]{
		kind: kind, fileKind: fileKind, opts: opts, log: opts.Logger, registry: opts.Registry,
		metrics: newMetrics(opts.Registry), role: r,
		pools:   proxy.NewTransportPools(),
		tracers: newTracerPool(),
		logs:    newAccessLogPool(),
	}
	s.upstreams = newUpstreamPool(s.pools)
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	return s
}

// generation is everything built from one version of the configuration
// file: the runtimes requests are served with, and the steps that make it
// live, undo it, and free it. It is immutable once committed, but for its
// upstreams' endpoint sets, which discovery changes in place (dns,
// endpoints_file, and the edge's Kubernetes endpoints: updateEndpoints,
// which also replaces cfg, under mu, to show them); a reload
// builds the next one beside it, and one function (server.commit) swaps
// them. The old one retires when its last request ends.
type generation[C any] struct {
	cfg  C
	hash [32]byte
	// data is the file as read once for this generation: hashed, then
	// parsed (readErr: it could not be read).
	data    []byte
	readErr error
	// rts are the runtimes requests run on: the edge's one, the sidecar's
	// inbound and outbound (nil where the file has none).
	rts      []*runtime
	loadedAt time.Time
	// commits run in order at the commit point and cannot fail; undo runs
	// in reverse when the file is refused instead; release runs in reverse
	// when the generation is done with (retired, refused or closed).
	commits []func()
	undo    []func()
	release []func()
}

func (g *generation[C]) onCommit(f func()) {
	if f != nil {
		g.commits = append(g.commits, f)
	}
}

func (g *generation[C]) onUndo(f func()) {
	if f != nil {
		g.undo = append(g.undo, f)
	}
}

func (g *generation[C]) onRelease(f func()) {
	if f != nil {
		g.release = append(g.release, f)
	}
}

// refuse undoes and frees a generation that did not become live.
func (g *generation[C]) refuse() {
	for i := len(g.undo) - 1; i >= 0; i-- {
		g.undo[i]()
	}
	g.undo, g.commits = nil, nil
	g.close()
}

// close frees what the generation holds: its runtimes, then its share of
// the resources, in reverse order of taking.
func (g *generation[C]) close() {
	for _, rt := range g.rts {
		if rt != nil {
			rt.close()
		}
	}
	// g.rts stays: a request that loaded g just before it was replaced
	// still reads it to find its runtime (serveLive), then goes elsewhere.
	for i := len(g.release) - 1; i >= 0; i-- {
		g.release[i]()
	}
	g.release = nil
}

// serveLive serves r on the i-th runtime of the live generation. The
// request is counted on that runtime before anything else of it is used,
// and the generation is then checked to be still live: retire frees a
// replaced generation as soon as it finds no request counted on it, so a
// request that loaded the generation just before the swap, and counted
// itself only after retire looked, would otherwise run on upstreams and
// pools already closed (an EOF to the client). Seeing it replaced, the
// request uncounts itself and takes the new one; seeing it still live,
// retire (which looks only after the swap) cannot miss the count.
func (s *server[C]) serveLive(i int, w http.ResponseWriter, r *http.Request) {
	rt := s.countLive(i)
	// Deferred outside the loop in countLive: a defer inside a loop is
	// allocated on the heap, one allocation per request.
	defer rt.inflight.Add(-1)
	rt.serve(w, r)
}

// countLive returns the i-th runtime of the live generation with the
// request counted on it (see serveLive).
func (s *server[C]) countLive(i int) *runtime {
	for {
		g := s.live.Load()
		rt := g.rts[i]
		if f := s.afterLoad.Load(); f != nil {
			(*f)()
		}
		rt.inflight.Add(1)
		if s.live.Load() == g {
			return rt
		}
		rt.inflight.Add(-1)
	}
}

// idle says whether no request runs on the generation.
func (g *generation[C]) idle() bool {
	for _, rt := range g.rts {
		if rt != nil && rt.inflight.Load() > 0 {
			return false
		}
	}
	return true
}

// runtime is the generation's i-th runtime (nil when absent).
func (g *generation[C]) runtime(i int) *runtime {
	if g == nil || i >= len(g.rts) {
		return nil
	}
	return g.rts[i]
}

// load reads the configuration file and, if it is valid and differs from
// the active one (or force is set), builds and commits it. A refused file
// changes nothing: what its build made is undone and released.
func (s *server[C]) load(ctx context.Context, force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// One read: the bytes hashed are the bytes built from. Reading the
	// file again to parse it could see a replacement, and the generation
	// built from it would carry the old content's hash, so that the file's
	// return to that content would be skipped as unchanged.
	data, err := routes.ReadFile(s.opts.ConfigPath, s.role.kind())
	if err == nil && !force && s.active != nil && sha256.Sum256(data) == s.active.hash && s.lastReload.OK {
		return nil // an editor's extra events: nothing changed
	}
	return s.build(ctx, data, err, true)
}

// rebuild builds a generation from the active one's file bytes: a change
// that comes from elsewhere (a route source) must not depend on the file
// on disk, which may be half-written or refused at this moment.
func (s *server[C]) rebuild(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == nil {
		return errors.New("no active configuration to rebuild")
	}
	return s.build(ctx, s.active.data, nil, false)
}

// build builds a generation from data and commits it unless it is
// refused; fromFile says data was read from the configuration file now
// (load), not taken from the active generation (rebuild). The caller
// holds s.mu.
func (s *server[C]) build(ctx context.Context, data []byte, err error, fromFile bool) error {
	next := &generation[C]{hash: sha256.Sum256(data), data: data, readErr: err, loadedAt: time.Now()}
	if err := s.role.build(ctx, next); err != nil {
		next.refuse()
		s.metrics.reloads.WithLabelValues("failure").Inc()
		if fromFile || !s.fileRefused {
			s.lastReload = ReloadStatus{OK: false, At: time.Now(), Error: err.Error()}
			s.fileRefused = fromFile
		}
		return err
	}
	if s.active != nil {
		s.role.warnRestart(s.active.cfg, next.cfg)
	}
	prev := s.commit(next)
	now := time.Now()
	s.metrics.reloads.WithLabelValues("success").Inc()
	s.metrics.configInfo.WithLabelValues().Set(float64(now.Unix()))
	if fromFile || !s.fileRefused {
		s.lastReload = ReloadStatus{OK: true, At: now}
		s.fileRefused = false
	}
	if prev != nil {
		s.retire(prev)
	}
	return nil
}

// commit is the single point where a built generation becomes live: the
// runtimes requests are served with, then each step its build recorded
// (certificates, identity, limiter store, tracer) in order. Nothing in it
// can fail, so a configuration is either wholly live or not at all. The
// caller holds s.mu; it returns the generation replaced.
func (s *server[C]) commit(next *generation[C]) *generation[C] {
	prev := s.active
	s.active = next
	s.live.Store(next)
	for _, rt := range next.rts {
		if rt != nil {
			rt.publish()
		}
	}
	for _, c := range next.commits {
		c()
	}
	next.commits, next.undo = nil, nil
	return prev
}

// retire frees a replaced generation once its last request is done. Until
// then it keeps serving the requests (and WebSockets) that began on it; at
// shutdown it is freed once the drain has done what it could.
func (s *server[C]) retire(old *generation[C]) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer old.close()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for !old.idle() {
			select {
			case <-tick.C:
			case <-s.bgCtx.Done():
				return
			}
		}
	}()
}

// Reload re-reads the configuration file now (what SIGHUP does).
func (s *server[C]) Reload(ctx context.Context) error {
	err := s.load(ctx, true)
	s.logReload(err)
	return err
}

func (s *server[C]) logReload(err error) {
	if err != nil {
		s.log.Error(s.fileKind+" refused; the active configuration stays", "file", s.opts.ConfigPath, "error", err.Error())
		return
	}
	s.log.Info(s.fileKind+" loaded", append([]any{"file", s.opts.ConfigPath}, s.role.summary(s.current())...)...)
}

// current is the active generation's configuration.
func (s *server[C]) current() C {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active.cfg
}

// LastReload is the outcome of the latest load attempt.
func (s *server[C]) LastReload() ReloadStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastReload
}

// Listen binds the listeners of the active configuration, or takes them
// over from an upgrading parent. Tests use ":0" addresses and read the
// bound ones with Addr.
func (s *server[C]) Listen() error {
	cfg := s.current()
	srv, maxSet := s.role.serverSettings(cfg)
	// A bad engine name is refused before anything is bound.
	if _, err := http1Engine(srv, os.LookupEnv); err != nil {
		return err
	}
	names, addrs := s.role.listeners(cfg)
	var lns []net.Listener
	var err error
	if in := s.opts.Inherited; in != nil {
		lns, err = in.take(names, addrs)
	} else {
		lns, err = bindListeners(addrs...)
	}
	if err != nil {
		return err
	}
	s.names, s.raw = names, lns
	data := 0
	for _, ln := range lns[:len(lns)-1] {
		if ln != nil {
			data++
		}
	}
	nofile := s.nofile
	if nofile == nil {
		nofile = rlimitNoFile
	}
	s.maxConns = listenerCap(srv, maxSet, data, nofile)
	s.lns = make([]net.Listener, len(lns))
	for i, ln := range lns {
		if ln == nil || i == len(lns)-1 {
			s.lns[i] = ln // the admin listener has no cap: it must answer when the data ones are full
			continue
		}
		s.lns[i] = newLimitListener(ln, srv.MaxConnectionsPerIP, s.maxConns)
	}
	return nil
}

// Addr returns the bound address of the named listener ("" when not bound).
func (s *server[C]) Addr(name string) string {
	for i, n := range s.names {
		if n == name {
			return listenerAddr(s.lns[i])
		}
	}
	return ""
}

// Serve serves until ctx is cancelled, reloading on file change and SIGHUP
// and handing over to a new binary on SIGUSR2, then shuts down gracefully:
// it stops accepting, lets in-flight requests finish up to
// server.shutdown_timeout, and returns.
func (s *server[C]) Serve(ctx context.Context) error {
	if s.lns == nil {
		if err := s.Listen(); err != nil {
			// What the configuration started (certificate watchers,
			// health checks, identity sources) must not outlive a server
			// that never served: Close frees it, as on the way out below.
			s.Close()
			return err
		}
	}
	cfg := s.current()
	settings, _ := s.role.serverSettings(cfg)
	engine, err := http1Engine(settings, os.LookupEnv)
	if err != nil {
		s.Close()
		return err
	}
	if engine == routes.HTTP1EngineNetHTTP {
		s.log.Warn("HTTP/1.1 served by net/http, which is deprecated and goes in the next release; leave server.http1_engine and " + HTTP1EngineEnv + " out to serve with causeway")
	}
	adminLn := len(s.lns) - 1
	data := s.role.dataServers(cfg, s.lns[:adminLn], engine)
	for _, d := range data {
		s.servers = append(s.servers, d.srv)
	}
	// Watch before serving: a change made right after the first request
	// must not be missed. The files the configuration refers to (API-key
	// files, PEM keys, secrets) are watched too, and their change forces a
	// rebuild, since the configuration file itself is unchanged; a broken
	// one is refused like a broken configuration file.
	if err := filewatch.Files(ctx, s.bgCtx, &s.bg, s.opts.ConfigPath, s.role.watched, s.opts.ReloadDebounce, s.log, func(extraChanged bool) {
		s.logReload(s.load(ctx, extraChanged))
	}); err != nil {
		s.log.Warn(s.fileKind+" watching is off; reload with SIGHUP", "error", err.Error())
	}
	errc := make(chan error, len(data)+1)
	serving := serveAll(data, errc)
	if s.lns[adminLn] != nil {
		s.adminServer = newAdminServer(s.log, admin.Guard(s.role.adminHandler(), func() routes.AdminAccess {
			return s.role.adminAccess(s.current())
		}), settings)
		serveAll([]dataServer{{srv: s.adminServer, ln: s.lns[adminLn]}}, errc)
	}
	s.serving = serving
	s.opts.Inherited.signalReady()
	attrs := []any{}
	for i, n := range s.names {
		attrs = append(attrs, n, listenerAddr(s.lns[i]))
	}
	// The engine is logged so that a run (or a test that starts the
	// binary) can tell which one serves.
	s.log.Info(s.kind+" serving", append(append(attrs, s.role.servingAttrs(cfg)...), "max_connections_per_listener", s.maxConns, "http1_engine", engine)...)
	upgraded := false
	named := make([]namedListener, len(s.names))
	for i, n := range s.names {
		named[i] = namedListener{n, s.raw[i]}
	}
	runErr := runUntil(ctx, errc, func() { _ = s.Reload(ctx) }, upgradeOnSignal(s.log, &upgraded, named...))
	if upgraded {
		handOver(serving, s.raw[:adminLn]...)
	}
	shutdownServers(s.log, s.servers, serving, s.adminServer, settings.ShutdownTimeout.D())
	s.Close()
	return runErr
}

// Close releases every resource of the server. Serve calls it on the way
// out, also when it fails to start; call it directly only for one that
// never served. A second call does nothing.
func (s *server[C]) Close() { s.closeOnce.Do(s.close) }

func (s *server[C]) close() {
	s.bgCancel()
	s.bg.Wait() // retired generations are freed
	s.mu.Lock()
	if s.active != nil {
		s.active.close()
		s.active = nil
	}
	s.mu.Unlock()
	s.role.closeRole()
	closeListeners(s.lns...)
}

// handOver stops this process accepting before it starts shutting down.
// net/http drops a request it reads once Shutdown has begun (the connection
// closes unanswered), which a client sees as EOF on a fresh connection; so
// the listeners close first, the new process takes every new connection,
// and the connections already accepted get time to send their request.
func handOver(serving *sync.WaitGroup, lns ...net.Listener) {
	closeListeners(lns...)
	serving.Wait() // every Serve loop has seen its listener close
	time.Sleep(handOverGrace)
}

// handOverGrace is how long connections accepted just before a hand-over
// have to send their first request before shutdown starts.
const handOverGrace = 500 * time.Millisecond

type dataServer struct {
	srv httpServer
	ln  net.Listener
	tls bool
}

// newHTTPServer applies the timeouts and limits that stop slow or greedy
// clients.
func newHTTPServer(log *slog.Logger, s routes.Server, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.ReadHeaderTimeout.D(),
		ReadTimeout:       s.ReadTimeout.D(),
		WriteTimeout:      s.WriteTimeout.D(),
		IdleTimeout:       s.IdleTimeout.D(),
		MaxHeaderBytes:    s.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}
