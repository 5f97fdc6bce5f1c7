package gateway

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/causewayhq/causeway/routes"
)

// EdgeOptions configures an Edge.
type EdgeOptions struct {
	// ConfigPath is the routes file; it is watched and reloaded on change.
	ConfigPath string
	Logger     *slog.Logger
	// Registry receives the edge's metrics (nil: a new registry). The admin
	// listener's /metrics serves it.
	Registry *prometheus.Registry
	// ReloadDebounce groups the burst of file events an editor or a
	// ConfigMap update makes into one reload (default 200ms).
	ReloadDebounce time.Duration
	// Pprof serves net/http/pprof under /debug/pprof/ on the admin
	// listener. Off by default: profiles reveal internals and cost CPU.
	Pprof bool
	// Inherited are listeners handed over by an upgrading parent process
	// (InheritedFromEnv); the edge uses them instead of binding.
	Inherited *Inherited
}

// Edge is the north-south gateway: listeners, the active configuration, and
// the machinery that swaps configurations without dropping requests.
type Edge struct {
	opts     EdgeOptions
	log      *slog.Logger
	registry *prometheus.Registry
	metrics  *metrics
	features []feature

	mu         sync.Mutex // serialises loads
	active     *activeConfig
	lastReload ReloadStatus
	current    atomicRuntime

	httpLn, httpsLn, adminLn net.Listener
	// rawHTTP and rawHTTPS are the sockets under any connection-limiting
	// wrapper: what an upgrade hands to the next process.
	rawHTTP, rawHTTPS net.Listener
	servers           []*http.Server
	adminServer       *http.Server
	serving           *sync.WaitGroup // done when every Serve call has returned

	bg       sync.WaitGroup // retire goroutines and the watcher
	bgCtx    context.Context
	bgCancel context.CancelFunc

	// nofile reads the file-descriptor limit the default connection cap
	// derives from (nil: the process's RLIMIT_NOFILE).
	nofile func() (uint64, error)
	// maxConns is the connection cap of each data listener (0: none).
	maxConns int
}

// activeConfig is the loaded file and what was built from it.
type activeConfig struct {
	file    *routes.File
	hash    [32]byte
	rt      *runtime
	access  *accessLog
	release []func() error
	// commits make the built state live (Edge.commit); undo frees it when
	// the file is refused instead. Both are cleared once either has run.
	commits []func()
	undo    []func()
}

// ReloadStatus is the outcome of the last load of the routes file, shown on
// the admin API.
type ReloadStatus struct {
	OK    bool      `json:"ok"`
	At    time.Time `json:"at"`
	Error string    `json:"error,omitempty"`
}

// NewEdge loads and validates the routes file and builds the first
// configuration. It binds nothing; Serve does.
func NewEdge(ctx context.Context, opts EdgeOptions) (*Edge, error) {
	if opts.ConfigPath == "" {
		return nil, errors.New("edge: a routes file is required")
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
	e := &Edge{opts: opts, log: opts.Logger, registry: opts.Registry}
	e.metrics = newMetrics(opts.Registry)
	e.bgCtx, e.bgCancel = context.WithCancel(context.Background())
	e.features = defaultFeatures(e)
	if err := e.load(ctx, false); err != nil {
		e.bgCancel()
		e.closeFeatures()
		return nil, err
	}
	return e, nil
}

// load reads the routes file and, if it is valid and differs from the
// active one (or force is set), builds and commits it. A refused file
// changes nothing: what its build made is undone and released.
func (e *Edge) load(ctx context.Context, force bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	data, err := os.ReadFile(e.opts.ConfigPath)
	if err == nil && !force && e.active != nil && sha256.Sum256(data) == e.active.hash && e.lastReload.OK {
		return nil // an editor's extra events: nothing changed
	}
	next, err := e.build(ctx, e.opts.ConfigPath)
	now := time.Now()
	if err != nil {
		e.metrics.reloads.WithLabelValues("failure").Inc()
		e.lastReload = ReloadStatus{OK: false, At: now, Error: err.Error()}
		return err
	}
	if e.active != nil {
		warnRestartNeeded(e.log, e.active.file, next.file)
	}
	prev := e.commit(next)
	e.metrics.reloads.WithLabelValues("success").Inc()
	e.metrics.configInfo.WithLabelValues().Set(float64(now.Unix()))
	e.lastReload = ReloadStatus{OK: true, At: now}
	if prev != nil {
		e.retire(prev)
	}
	return nil
}

// commit is the single point where a built configuration becomes live: the
// runtime requests are served with, then each feature's state (certificates,
// mesh identity, limiter store, tracer, access log) in feature order. Nothing
// in it can fail, so a configuration is either wholly live or not at all.
// The caller holds e.mu; it returns the configuration replaced.
func (e *Edge) commit(next *activeConfig) *activeConfig {
	prev := e.active
	e.active = next
	e.current.Store(next.rt)
	for _, c := range next.commits {
		c()
	}
	next.commits, next.undo = nil, nil
	return prev
}

// build loads the file and builds a configuration from it. It touches
// nothing live: every step that makes its work live is recorded in
// commits, every step that frees it on refusal in undo.
func (e *Edge) build(ctx context.Context, path string) (*activeConfig, error) {
	// Every file the configuration names is checked with the rest, so
	// one refusal lists every missing certificate and key at its key.
	f, err := routes.LoadWith(path, routes.Options{CheckFiles: true})
	if err != nil {
		return nil, err
	}
	for _, w := range f.Warnings {
		e.log.Warn("routes file", "warning", w.Error())
	}
	data, _ := os.ReadFile(path)
	ac := &activeConfig{file: f, hash: sha256.Sum256(data)}
	fail := func(err error) (*activeConfig, error) {
		ac.refuse()
		return nil, err
	}
	var undoAccess func()
	ac.access, undoAccess, err = e.accessLogFor(f.AccessLog)
	if err != nil {
		return fail(err)
	}
	if undoAccess != nil {
		ac.undo = append(ac.undo, undoAccess)
	}
	var prevFile *routes.File
	if e.active != nil {
		prevFile = e.active.file
	}
	deps := buildDeps{metrics: e.metrics, access: ac.access, pools: map[string]*transportPool{}, log: e.log}
	if e.active != nil {
		for _, u := range e.active.rt.upstreams {
			deps.pools[u.pool.key] = u.pool
		}
	}
	authAt := -1 // where beforeAuth stages go: just before auth's
	var beforeAuth []Stage
	for _, ft := range e.features {
		st, release, err := ft.prepare(ctx, f, prevFile)
		if release != nil {
			ac.release = append(ac.release, release)
		}
		if st.undo != nil {
			ac.undo = append(ac.undo, st.undo)
		}
		if st.commit != nil {
			ac.commits = append(ac.commits, st.commit)
		}
		if err != nil {
			return fail(err)
		}
		if _, ok := ft.(*authFeature); ok {
			authAt = len(deps.stages)
		}
		if st.beforeAuth != nil {
			beforeAuth = append(beforeAuth, st.beforeAuth)
		}
		if st.stage != nil {
			deps.stages = append(deps.stages, st.stage)
		}
		if st.tlsFor != nil {
			deps.tlsFor, deps.tlsKey = st.tlsFor, st.tlsKey
		}
	}
	if authAt < 0 {
		authAt = len(deps.stages)
	}
	deps.stages = slices.Insert(deps.stages, authAt, beforeAuth...)
	rt, err := buildRuntime(f, deps)
	if err != nil {
		return fail(err)
	}
	ac.rt = rt
	return ac, nil
}

// accessLogFor reuses the active access log when its output is unchanged,
// so a reload does not reopen (and briefly double-open) the file. A new
// output is opened now, so a file that cannot be opened refuses the routes
// file; undo closes it again, and removes it when opening created it.
func (e *Edge) accessLogFor(cfg routes.AccessLog) (*accessLog, func(), error) {
	if e.active != nil && e.active.access != nil && e.active.access.output == cfg.Output {
		if e.active.access.sample == cfg.Sample {
			return e.active.access, nil, nil
		}
		cp := *e.active.access
		cp.sample = cfg.Sample
		cp.closer = nil // the file stays owned by the first
		return &cp, nil, nil
	}
	return openAccessLogUndoable(cfg)
}

// refuse undoes and releases a configuration that did not become live.
func (ac *activeConfig) refuse() {
	for i := len(ac.undo) - 1; i >= 0; i-- {
		ac.undo[i]()
	}
	ac.undo, ac.commits = nil, nil
	ac.close()
}

func (ac *activeConfig) close() {
	if ac.rt != nil {
		ac.rt.close()
	}
	for i := len(ac.release) - 1; i >= 0; i-- {
		_ = ac.release[i]()
	}
}

// retire releases a replaced configuration once its last request is done.
// Until then it keeps serving the requests (and WebSockets) that began on it.
func (e *Edge) retire(old *activeConfig) {
	keepAccess := e.active.access == old.access || (old.access != nil && e.active.access != nil && old.access.closer == nil)
	retireWhenIdle(e.bgCtx, &e.bg, old.rt, func() {
		old.close()
		if !keepAccess {
			_ = old.access.Close()
		}
	})
}

// warnRestartNeeded logs settings that only take effect at the next start:
// listeners are bound once.
func warnRestartNeeded(log *slog.Logger, old, next *routes.File) {
	// Values, not identities: a reload allocates every pointer field afresh
	// (body_read_timeout), so == would warn on every SIGHUP.
	if !reflect.DeepEqual(old.Listen, next.Listen) {
		log.Warn("listen addresses changed in the routes file; they take effect at the next restart", "active", old.Listen, "file", next.Listen)
	}
	if !reflect.DeepEqual(old.Server, next.Server) {
		log.Warn("server timeouts changed in the routes file; they take effect at the next restart")
	}
	if !reflect.DeepEqual(old.TLS == nil, next.TLS == nil) {
		log.Warn("tls was added or removed in the routes file; the https listener changes at the next restart")
	}
}

// Reload re-reads the routes file now (what SIGHUP does).
func (e *Edge) Reload(ctx context.Context) error {
	err := e.load(ctx, true)
	e.logReload(err)
	return err
}

func (e *Edge) logReload(err error) {
	if err != nil {
		e.log.Error("routes file refused; the active configuration stays", "file", e.opts.ConfigPath, "error", err.Error())
		return
	}
	e.log.Info("routes file loaded", "file", e.opts.ConfigPath, "routes", len(e.Active().Routes))
}

// Active returns the configuration requests are served with now.
func (e *Edge) Active() *routes.File {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.active.file
}

// LastReload is the outcome of the latest load attempt.
func (e *Edge) LastReload() ReloadStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastReload
}

// ServeHTTP serves one data-plane request on the active configuration.
func (e *Edge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.current.Load().ServeHTTP(w, r)
}

// Listen binds the listeners of the active configuration. Tests use ":0"
// addresses and read the bound ones with Addr.
func (e *Edge) Listen() error {
	f := e.Active()
	addrs := []string{f.Listen.HTTP, f.Listen.HTTPS, f.Listen.Admin}
	var lns []net.Listener
	if in := e.opts.Inherited; in != nil {
		var err error
		if lns, err = in.take([]string{"http", "https", "admin"}, addrs); err != nil {
			return err
		}
	} else {
		var err error
		if lns, err = bindListeners(addrs...); err != nil {
			return err
		}
	}
	e.rawHTTP, e.rawHTTPS = lns[0], lns[1]
	data := 0
	for _, ln := range lns[:2] {
		if ln != nil {
			data++
		}
	}
	nofile := e.nofile
	if nofile == nil {
		nofile = rlimitNoFile
	}
	maxConns := listenerCap(f, data, nofile)
	e.maxConns = maxConns
	limit := func(ln net.Listener) net.Listener {
		if ln == nil {
			return nil
		}
		return newLimitListener(ln, f.Server.MaxConnectionsPerIP, maxConns)
	}
	e.httpLn, e.httpsLn, e.adminLn = limit(lns[0]), limit(lns[1]), lns[2]
	return nil
}

// Addr returns the bound address of a listener: "http", "https" or "admin".
func (e *Edge) Addr(which string) string {
	switch which {
	case "http":
		return listenerAddr(e.httpLn)
	case "https":
		return listenerAddr(e.httpsLn)
	case "admin":
		return listenerAddr(e.adminLn)
	}
	return ""
}

// Serve serves until ctx is cancelled, reloading on file change and SIGHUP,
// then shuts down gracefully: it stops accepting, lets in-flight requests
// finish up to server.shutdown_timeout, and returns.
func (e *Edge) Serve(ctx context.Context) error {
	if e.httpLn == nil && e.httpsLn == nil && e.adminLn == nil {
		if err := e.Listen(); err != nil {
			return err
		}
	}
	f := e.Active()
	data, err := e.dataServers(f)
	if err != nil {
		return err
	}
	for _, d := range data {
		e.servers = append(e.servers, d.srv)
	}
	// Watch before serving: a change made right after the first request
	// must not be missed.
	if err := e.watch(ctx); err != nil {
		e.log.Warn("routes file watching is off; reload with SIGHUP", "error", err.Error())
	}
	errc := make(chan error, len(data)+1)
	serving := serveAll(data, errc)
	if e.adminLn != nil {
		e.adminServer = newAdminServer(e.log, adminGuard(e.adminHandler(), func() routes.AdminAccess {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.active.file.Admin
		}))
		serveAll([]dataServer{{srv: e.adminServer, ln: e.adminLn}}, errc)
	}
	e.serving = serving
	e.opts.Inherited.signalReady()
	e.log.Info("edge serving", "http", e.Addr("http"), "https", e.Addr("https"), "admin", e.Addr("admin"), "routes", len(f.Routes), "max_connections_per_listener", e.maxConns)
	upgraded := false
	runErr := runUntil(ctx, errc, func() { _ = e.Reload(ctx) }, upgradeOnSignal(e.log, &upgraded,
		namedListener{"http", e.rawHTTP}, namedListener{"https", e.rawHTTPS}, namedListener{"admin", e.adminLn}))
	if upgraded {
		handOver(serving, e.rawHTTP, e.rawHTTPS)
	}
	e.shutdown(f.Server.ShutdownTimeout.D())
	return runErr
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
	srv *http.Server
	ln  net.Listener
	tls bool
}

func (e *Edge) newServer(f *routes.File, h http.Handler) *http.Server {
	return newHTTPServer(e.log, f.Server, h)
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

// shutdown stops the listeners and waits for in-flight requests up to
// timeout, then releases everything.
func (e *Edge) shutdown(timeout time.Duration) {
	shutdownServers(e.log, e.servers, e.serving, e.adminServer, timeout)
	e.Close()
}

// Close releases every resource of the edge. Serve calls it on the way out;
// call it directly only for an Edge that never served.
func (e *Edge) Close() {
	e.bgCancel()
	e.bg.Wait()
	e.mu.Lock()
	if e.active != nil {
		e.active.close()
		_ = e.active.access.Close()
		e.active = nil
	}
	e.mu.Unlock()
	e.closeFeatures()
	closeListeners(e.httpLn, e.httpsLn, e.adminLn)
}

func (e *Edge) closeFeatures() {
	for _, ft := range e.features {
		_ = ft.close()
	}
}

// watch reloads the routes file when it changes.
func (e *Edge) watch(ctx context.Context) error {
	// The files the authenticators read (API-key files, PEM keys, HMAC
	// secret files) are watched too: adding a key needs no SIGHUP. Their
	// change forces a rebuild, since the routes file itself is unchanged;
	// a broken one is refused like a broken routes file, and the keys in
	// use stay.
	return watchFiles(ctx, e.bgCtx, &e.bg, e.opts.ConfigPath, e.authFiles, e.opts.ReloadDebounce, e.log, func(authFileChanged bool) {
		err := e.load(ctx, authFileChanged)
		e.logReload(err)
	})
}
