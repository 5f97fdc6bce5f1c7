package gateway

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// EdgeOptions configures an Edge (see Options).
type EdgeOptions = Options

// Edge is the north-south gateway: the shared server (listeners, the
// active generation, reload and drain) with the edge's features: TLS,
// authentication, rate limits, plugins, tracing and the mesh identity.
type Edge struct {
	*server[*routes.File]
	opts     EdgeOptions
	features []feature
	sources  routeSources
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
	e := &Edge{opts: opts}
	e.server = newServer("edge", "routes file", opts, e)
	e.sources.init(e)
	e.features = defaultFeatures(e)
	if err := e.load(ctx, false); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// build loads the routes file into g. Each feature prepares its part of
// the chain (and its commit, undo and release steps), then the runtime is
// built on the stages in feature order.
func (e *Edge) kind() string { return "routes" }

func (e *Edge) build(ctx context.Context, g *generation[*routes.File]) (err error) {
	// Every file the configuration names is checked with the rest, so
	// one refusal lists every missing certificate and key at its key.
	if g.readErr != nil {
		return g.readErr
	}
	f, err := routes.ParseWith(e.opts.ConfigPath, g.data, routes.Options{CheckFiles: true})
	if err != nil {
		return err
	}
	// What refuses the file from here on (a feature, a plugin, a
	// provider, the runtime) may quote a value the file took from a
	// ${VAR} reference: the refusal is logged and shown on /config.
	parsed := f
	defer func() { err = parsed.RedactEnv(err) }()
	// The file is what the source's policies are checked against: set it
	// before the source (re)starts at this commit.
	base, data := f, g.data
	g.onCommit(func() { e.sources.setBase(base, data) })
	startSource, err := e.sources.prepare(f)
	if err != nil {
		return err
	}
	g.onCommit(startSource)
	if f, err = e.sources.merge(f); err != nil {
		return err
	}
	for _, w := range f.Warnings {
		e.log.Warn("routes file", "warning", w.Error())
	}
	g.cfg = f
	access, err := e.acquireAccessLog(g, f.AccessLog)
	if err != nil {
		return err
	}
	var prevFile *routes.File
	if e.active != nil {
		prevFile = e.active.cfg
	}
	deps := buildDeps{metrics: e.metrics, access: access, pools: e.pools, upstreams: e.upstreams, log: e.log, now: e.opts.Clock, caller: stripCaller, reverseProxy: e.opts.reverseProxy}
	if rt := e.active.runtime(0); rt != nil && !e.opts.noReuse {
		// Under the server's lock (load, rebuild): the live generation
		// cannot be replaced or freed meanwhile, nor its upstreams'
		// endpoints changed in place.
		deps.prev = rt.upstreams
		deps.prevRoutes = rt
	}
	var stages []map[string]Stage
	for _, ft := range e.features {
		st, release, err := ft.prepare(ctx, f, prevFile)
		if release != nil {
			g.onRelease(func() { _ = release() })
		}
		g.onUndo(st.undo)
		g.onCommit(st.commit)
		if err != nil {
			return err
		}
		stages = append(stages, st.stages)
		if st.tlsFor != nil {
			deps.tlsFor, deps.tlsKey = st.tlsFor, st.tlsKey
		}
		if st.caller != nil {
			deps.caller = st.caller
		}
	}
	deps.stages = orderStages(stages)
	rt, err := buildRuntime(f, deps)
	if err != nil {
		return err
	}
	g.rts = []*runtime{rt}
	return nil
}

// warnRestart logs settings that only take effect at the next start:
// listeners are bound once.
func (e *Edge) warnRestart(old, next *routes.File) {
	// Values, not identities: a reload allocates every pointer field afresh
	// (body_read_timeout), so == would warn on every SIGHUP.
	if !reflect.DeepEqual(old.Listen, next.Listen) {
		e.log.Warn("listen addresses changed in the routes file; they take effect at the next restart", "active", old.Listen, "file", next.Listen)
	}
	if !reflect.DeepEqual(old.Server, next.Server) {
		e.log.Warn("server timeouts changed in the routes file; they take effect at the next restart")
	}
	if !reflect.DeepEqual(old.TLS == nil, next.TLS == nil) {
		e.log.Warn("tls was added or removed in the routes file; the https listener changes at the next restart")
	}
}

func (e *Edge) listeners(f *routes.File) (names, addrs []string) {
	return []string{"http", "https", "admin"}, []string{f.Listen.HTTP, f.Listen.HTTPS, f.Listen.Admin}
}

func (e *Edge) serverSettings(f *routes.File) (routes.Server, bool) {
	_, set := f.Positions["server.max_connections"]
	return f.Server, set
}

func (e *Edge) adminAccess(f *routes.File) routes.AdminAccess { return f.Admin }

// watched are the files the authenticators read (API-key files, PEM keys,
// HMAC secret files): adding a key needs no SIGHUP.
func (e *Edge) watched() []string {
	return append(e.authFiles(), upstreamCAFiles(e.current())...)
}

// upstreamCAFiles are the upstreams' tls.ca_file bundles of f. They are
// read when a generation is built, so a changed bundle (a rotated private
// CA) takes a rebuild, as a changed API-key file does: the new roots serve
// new connections (the upstream's TLS settings key its connection pool by
// the bundle's content), and a bundle that does not parse refuses the
// rebuild, leaving the old roots serving.
func upstreamCAFiles(f *routes.File) []string {
	var files []string
	if f == nil {
		return nil
	}
	for _, name := range slices.Sorted(maps.Keys(f.Upstreams)) {
		if t := f.Upstreams[name].TLS; t != nil && t.CAFile != "" {
			files = append(files, t.CAFile)
		}
	}
	return files
}

func (e *Edge) closeRole() {
	for _, ft := range e.features {
		_ = ft.close()
	}
}

func (e *Edge) servingAttrs(f *routes.File) []any { return []any{"routes", len(f.Routes)} }

func (e *Edge) summary(f *routes.File) []any { return []any{"routes", len(f.Routes)} }

// Active returns the configuration requests are served with now.
func (e *Edge) Active() *routes.File { return e.current() }

// ServeHTTP serves one data-plane request on the active configuration.
func (e *Edge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.serveLive(0, w, r)
}
