package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"

	"github.com/causewayhq/causeway/gateway/internal/h1server"
	"github.com/causewayhq/causeway/gateway/internal/pipeline"
	"github.com/causewayhq/causeway/internal/httperr"
	"github.com/causewayhq/causeway/internal/refpool"
	"github.com/causewayhq/causeway/routes"
)

// Stage builds one step of a route's middleware chain (auth, rate limit,
// plugins) for a loaded configuration. Stages run in the order given.
type Stage interface {
	Middleware(route routes.Route) (func(http.Handler) http.Handler, error)
}

// runtime is one loaded routes file turned into handlers. It is immutable
// once built; a reload builds a new one and swaps the pointer, so a request
// runs entirely on the configuration it started with.
type runtime struct {
	file      *routes.File
	router    *pipeline.Router
	upstreams map[string]*proxy.Upstream
	trust     *pipeline.TrustedProxies
	metrics   *metrics
	caller    *callerSend
	accessLog *accessLog
	// reverseProxy: see buildDeps.
	reverseProxy bool
	loadedAt     time.Time
	// inflight counts requests running on this configuration, so resources
	// are released only after the last one finishes.
	inflight atomic.Int64
	// held holds a reference to each of upstreams, dropped at close: an
	// upstream the next generation reuses is closed (and its connection
	// pool released) only when the last generation holding it is done.
	held *refpool.Pool[*proxy.Upstream, *proxy.Upstream]
	// reused counts the upstreams taken over from the previous generation.
	reused int
	// handlers are the handlers of file.Routes, index for index: the next
	// generation takes a route's forwarder over when it would build the
	// same one (takeOver).
	handlers []builtRoute
	// routesReused counts the routes whose forwarder was taken over from
	// the previous generation.
	routesReused int
}

// builtRoute is one route's handler as a generation built it, and the
// forwarder inside it.
type builtRoute struct {
	h  *routeHandler
	fw *forwarder
}

// buildDeps are the long-lived pieces a runtime is built with.
type buildDeps struct {
	metrics *metrics
	// pools shares upstream connection pools between generations, by
	// transportKey (nil: a pool of this runtime's own).
	pools *refpool.Pool[string, *proxy.TransportPool]
	// upstreams counts the generations holding each upstream (nil: a
	// count of this runtime's own; newUpstreamPool).
	upstreams *refpool.Pool[*proxy.Upstream, *proxy.Upstream]
	// prev are the live generation's upstreams, which this one takes over
	// where they are Reusable (nil: every upstream is built).
	prev map[string]*proxy.Upstream
	// prevRoutes is the live generation, whose routes' forwarders this
	// one takes over where it would build the same (nil: every forwarder
	// is built).
	prevRoutes *runtime
	tlsFor     proxy.TLSConfigFunc
	tlsKey     string
	stages     []Stage
	access     *accessLog
	log        *slog.Logger // background work of upstreams (health, discovery); nil: slog.Default()
	// now is the clock of ejections, breakers, retry budgets and of the
	// certificate expiries pooled TLS connections are retired by (nil:
	// time.Now).
	now func() time.Time
	// caller puts caller tokens on requests to mesh upstreams and removes
	// the header from every other (nil: neither).
	caller *callerSend
	// reverseProxy forwards with httputil.ReverseProxy instead of the
	// edge's own forwarder (Options.reverseProxy).
	reverseProxy bool
}

func buildRuntime(f *routes.File, deps buildDeps) (*runtime, error) {
	trust, err := pipeline.NewTrustedProxies(f.TrustedProxies)
	if err != nil {
		return nil, err
	}
	if deps.pools == nil {
		deps.pools = proxy.NewTransportPools()
	}
	if deps.upstreams == nil {
		deps.upstreams = newUpstreamPool(deps.pools)
	}
	rt := &runtime{
		held:         deps.upstreams,
		file:         f,
		upstreams:    map[string]*proxy.Upstream{},
		trust:        trust,
		metrics:      deps.metrics,
		caller:       deps.caller,
		accessLog:    deps.access,
		reverseProxy: deps.reverseProxy,
		loadedAt:     time.Now(),
	}
	var errs routes.Errors
	for _, name := range slices.Sorted(maps.Keys(f.Upstreams)) {
		cfg := f.Upstreams[name]
		if old := deps.prev[name]; old != nil && old.Reusable(name, cfg, upstreamDeps(deps)) {
			// The live generation holds old, so it is in the pool; the
			// reference taken here is this runtime's, dropped at its close
			// (also when this generation is refused).
			if _, ok := deps.upstreams.Load(old); ok {
				rt.upstreams[name] = old
				rt.reused++
				continue
			}
		}
		u, err := newUpstream(name, cfg, deps)
		if err != nil {
			errs = append(errs, &routes.Error{File: f.Path, Pos: f.At("upstreams." + name), Path: "upstreams." + name, Msg: err.Error()})
			continue
		}
		if _, _, err := deps.upstreams.Acquire(u, func() (*proxy.Upstream, error) { return u, nil }); err != nil {
			panic(err) // a constructor that cannot fail
		}
		rt.upstreams[name] = u
	}
	if len(errs) > 0 {
		rt.close()
		return nil, errs
	}
	entries := make([]pipeline.RouteEntry, 0, len(f.Routes))
	rt.handlers = make([]builtRoute, 0, len(f.Routes))
	prev := takeOver{rt: deps.prevRoutes}
	for i := range f.Routes {
		rc := &f.Routes[i]
		h, err := rt.routeHandlerFrom(i, rc, deps.stages, &prev)
		if err != nil {
			p := fmt.Sprintf("routes[%d]", i)
			var located *routes.Error
			var list routes.Errors
			switch {
			case errors.As(err, &list):
				errs = append(errs, list...)
			case errors.As(err, &located):
				errs = append(errs, located)
			default:
				errs = append(errs, &routes.Error{File: f.Path, Pos: f.At(p), Path: p, Msg: err.Error()})
			}
			continue
		}
		rt.handlers = append(rt.handlers, h)
		entries = append(entries, pipeline.RouteEntry{Cfg: rc, Handler: h.h})
	}
	if len(errs) > 0 {
		rt.close()
		return nil, errs
	}
	rt.router = pipeline.NewRouter(entries)
	return rt, nil
}

// newUpstream builds an upstream for this generation, reporting to its
// metrics, tracing and per-request state through the engine's hooks.
func newUpstream(name string, cfg routes.Upstream, deps buildDeps) (*proxy.Upstream, error) {
	return proxy.New(name, cfg, upstreamDeps(deps))
}

func upstreamDeps(deps buildDeps) proxy.Deps {
	ud := proxy.Deps{Pools: deps.pools, TLSFor: deps.tlsFor, TLSKey: deps.tlsKey, Log: deps.log, Now: deps.now,
		Hooks: proxy.Hooks{Track: trackRequest, Wrap: traceTransport, ClientIP: resolvedClientIP}}
	if m := deps.metrics; m != nil {
		ud.Hooks.Observe = m.upstreamRequest
		ud.Hooks.HealthGauge = m.endpointHealth
	}
	return ud
}

// newUpstreamPool counts the generations holding each upstream; the last
// one's release stops the upstream's background work and releases its
// connection pool.
func newUpstreamPool(pools *refpool.Pool[string, *proxy.TransportPool]) *refpool.Pool[*proxy.Upstream, *proxy.Upstream] {
	return refpool.New[*proxy.Upstream](func(u *proxy.Upstream) error {
		u.Close() // health checks, discovery, mirrored requests
		_, err := pools.Release(u.Pool.Key)
		return err
	})
}

// publish makes the runtime's upstreams' endpoints the ones the next
// generation inherits health from: at its commit point.
func (rt *runtime) publish() {
	for _, u := range rt.upstreams {
		u.Publish()
	}
}

// routeHandlerFrom assembles rc, route i of the model: request info, the
// stages in order, then the forwarder; or takes over the live
// generation's handler (prev) where that is exactly what it would build.
func (rt *runtime) routeHandlerFrom(i int, rc *routes.Route, stages []Stage, prev *takeOver) (builtRoute, error) {
	fw, rm := prev.forwarder(rt, i, rc)
	if fw == nil {
		fw, rm = newForwarder(*rc, rt.upstreams, rt.metrics, rt.caller, rt.reverseProxy), rt.metrics.forRoute(rc.Name)
	} else {
		rt.routesReused++
	}
	var h http.Handler = fw
	traced := tracingStages(stages)
	for j := len(stages) - 1; j >= 0; j-- {
		mw, err := stages[j].Middleware(*rc)
		if err != nil {
			return builtRoute{}, err
		}
		if mw != nil {
			h = withStageSpan(stages[j], mw, traced)(h)
		}
	}
	return builtRoute{h: &routeHandler{name: rc.Name, host: rc.Match.Host, timeout: rc.Timeout.D(), next: h, metrics: rm}, fw: fw}, nil
}

// takeOver finds the live generation's forwarder of a route for the
// generation being built: the innermost handler, which holds the route's
// upstreams and their proxies and is most of a route's building. The
// stages around it are built afresh every time, as they belong to each
// generation's features. A forwarder is taken over only when building it
// again would give the same: the same route, field by field; each target
// the very upstream this generation sends to (taken over itself, so with
// the same settings, endpoints and state); none mirrored (building a
// forwarder wires the mirror's shadow); and the same metrics, caller token
// sender and forwarding engine. A forwarder holds nothing else of its
// generation, so it serves this one exactly as one built afresh would. The
// live generation is only read: a refused build leaves it as it was.
type takeOver struct {
	rt     *runtime
	byName map[string]int // rt's routes by name, made at the first miss by index
}

// forwarder returns the live generation's forwarder for rc, route i of
// the model being built, and its route metrics; nil when one must be built.
func (t *takeOver) forwarder(rt *runtime, i int, rc *routes.Route) (*forwarder, routeMetrics) {
	old := t.rt
	if old == nil || old.metrics != rt.metrics || old.caller != rt.caller || old.reverseProxy != rt.reverseProxy {
		return nil, routeMetrics{}
	}
	j := i
	if j >= len(old.handlers) || old.file.Routes[j].Name != rc.Name {
		if t.byName == nil {
			t.byName = make(map[string]int, len(old.handlers))
			for k := range old.handlers {
				t.byName[old.file.Routes[k].Name] = k
			}
		}
		var ok bool
		if j, ok = t.byName[rc.Name]; !ok {
			return nil, routeMetrics{}
		}
	}
	b := old.handlers[j]
	if !old.file.Routes[j].Equal(*rc) || len(b.fw.targets) != max(len(rc.Split), 1) {
		return nil, routeMetrics{}
	}
	for k, tg := range b.fw.targets {
		name := rc.Upstream
		if len(rc.Split) > 0 {
			name = rc.Split[k].Upstream
		}
		if u := rt.upstreams[name]; u == nil || u != tg.up || u.Mirror != nil {
			return nil, routeMetrics{}
		}
	}
	// The route metrics are metrics.forRoute's for the route's name, which
	// the same metrics always answer alike.
	return b.fw, b.h.metrics
}

// routeHandler marks the request with its route for the log and metrics.
type routeHandler struct {
	name    string
	host    string // the route's match.host, which the OIDC origin is held to
	timeout time.Duration
	next    http.Handler
	metrics routeMetrics
}

// errRouteTimeout is the cause of a request context ended by the route's
// timeout, which is how the forwarder tells it from a client that left.
var errRouteTimeout = fmt.Errorf("route timeout: %w", context.DeadlineExceeded)

func (h *routeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := stateFrom(r.Context())
	st.route = h.name
	st.routeHost = h.host
	st.routeMetrics = &h.metrics
	if h.timeout > 0 {
		// A timer rather than a context deadline: an upgrade that succeeds
		// stops it (forwarder), so a WebSocket outlives the route's bound.
		if cancel := h1server.Cancel(r.Context()); cancel != nil {
			// Served by the edge's own HTTP/1.1 engine: the route bounds
			// the whole request, whose context is cancelled with the
			// route's cause, without a context and a request copy of
			// its own.
			st.routeTimer = time.AfterFunc(h.timeout, func() { cancel(errRouteTimeout) })
			defer st.routeTimer.Stop()
			h.next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithCancelCause(r.Context())
		st.routeTimer = time.AfterFunc(h.timeout, func() { cancel(errRouteTimeout) })
		defer func() {
			st.routeTimer.Stop()
			cancel(nil)
		}()
		r = r.WithContext(ctx)
	}
	h.next.ServeHTTP(w, r)
}

// routeTimedOut reports whether the route's timeout ended the request.
func routeTimedOut(ctx context.Context) bool { return errors.Is(context.Cause(ctx), errRouteTimeout) }

// ServeHTTP is the edge's data-plane entry point for one configuration.
func (rt *runtime) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt.inflight.Add(1)
	defer rt.inflight.Add(-1)
	rt.serve(w, r)
}

// serve is ServeHTTP for a request already counted in rt.inflight.
func (rt *runtime) serve(w http.ResponseWriter, r *http.Request) {
	rt.metrics.inflight.Inc()
	defer rt.metrics.inflight.Dec()

	st := &reqState{start: time.Now()}
	st.rec.ResponseWriter = w
	if d := rt.file.Server.WriteStallTimeout; d != nil && *d > 0 {
		st.rec.stall = d.D()
		// A deadline the previous response on this connection left must
		// not cut this one before its first write arms its own (the
		// engine cleared it already when it has no write_timeout: not a
		// second time); and the end of the response net/http writes
		// after this handler returns gets a full period.
		if !h1server.WriteDeadlineCleared(r.Context()) {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		}
		defer st.rec.armStall()
	}
	// Hop-by-hop headers go first: nothing the edge sets below may be
	// nominated away by the client's Connection header.
	var names []string // the trailers the client announced
	if len(r.Trailer) > 0 {
		pipeline.DropNominatedTrailers(r.Header, r.Trailer)
		pipeline.DropUnderscoreTrailers(r.Trailer, &rt.file.Server)
		names = announcedTrailers(r.Trailer)
	}
	pipeline.DropHopByHop(r.Header)
	st.peer = rt.trust.Resolve(r)
	st.clientIP = st.peer.ClientStr
	st.http10 = r.ProtoMajor == 1 && r.ProtoMinor == 0
	pipeline.SanitizeHeaders(r.Header, st.peer.Trusted, &rt.file.Server)
	st.requestID = r.Header.Get(httperr.RequestIDHeader)
	var startedTrace string // "" unless made below
	if !pipeline.ValidRequestID(st.requestID) {
		if !validTraceparent(r.Header.Get(traceparentHeader)) {
			st.requestID, startedTrace = newRequestIDs()
		} else {
			st.requestID = pipeline.NewUUID()
		}
	}
	// The values the edge states here share one array instead of a slice
	// each (Header.Set's), held in the request's state (allocated anyway,
	// never reused). Each slice is capped: an Add to one copies it rather
	// than write into its neighbour.
	vals := &st.stated
	vals[0], vals[1] = st.requestID, st.requestID
	r.Header[httperr.RequestIDHeader] = vals[0:1:1]
	w.Header()[httperr.RequestIDHeader] = vals[1:2:2]
	st.propagateTraceInto(r, vals[2:3:3], startedTrace)
	if r.Body != nil && r.Body != http.NoBody {
		if r.ProtoMajor == 1 {
			// Without full duplex, net/http reads what is left of the
			// request body (and then closes it) the moment the response
			// headers go out, while the upstream transport may still be
			// reading the same body to its end: the transport then fails
			// its write, closes the upstream connection, and the response
			// being copied is cut short (golang/go#40747; about one POST
			// in thousands under load). It would also drain a refused
			// request's body, with no deadline, before writing the refusal.
			// endBody bounds what is left instead.
			_ = http.NewResponseController(w).EnableFullDuplex()
		}
		r.Body = st.wrapBody(w, r, &rt.file.Server)
		defer st.body.finish() // also when a handler panics (ReverseProxy aborting a response)
	}

	// The edge's own HTTP/1.1 engine holds the state in the request's
	// context itself, which spares a context and a copy of the request;
	// under net/http's servers the state takes a context.WithValue.
	ctx, derived := r.Context(), false
	if !h1server.SetValue(ctx, stateKey{}, st) {
		ctx, derived = context.WithValue(ctx, stateKey{}, st), true
	}
	if names != nil {
		ctx, derived = context.WithValue(ctx, announcedKey{}, &announced{names: names}), true
	}
	if derived {
		r = r.WithContext(ctx)
	}
	refusal := rt.checkRequest(r)
	if refusal == "" {
		if clean := pipeline.CleanPath(r.URL.Path); clean != r.URL.Path {
			u := *r.URL
			u.Path, u.RawPath = clean, ""
			r.URL = &u
		}
	}
	var h http.Handler
	var vars map[string]string
	if refusal == "" && r.Method != http.MethodConnect {
		h, vars = rt.router.Match(r)
	}
	switch {
	case refusal != "":
		httperr.Write(&st.rec, r, http.StatusBadRequest, refusal)
	case r.Method == http.MethodConnect:
		// The edge and the sidecar are reverse proxies: a CONNECT would
		// otherwise be sent on to a route's upstream as a request of its
		// own (a tunnel nobody asked for, to whatever the upstream does
		// with the method).
		st.rec.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		httperr.Write(&st.rec, r, http.StatusMethodNotAllowed, "CONNECT is not supported: this is a reverse proxy, not a forward proxy")
	case h == nil:
		httperr.Write(&st.rec, r, http.StatusNotFound, "no route matches this request")
	default:
		if len(vars) > 0 {
			r = mux.SetURLVars(r, vars)
		}
		h.ServeHTTP(&st.rec, r)
	}
	st.endBody() // 408 for a body cut by body_read_timeout
	if st.rec.status == 0 {
		// A handler that wrote nothing still answered 200 to the client.
		st.rec.status = http.StatusOK
	}
	d := time.Since(st.start)
	if st.routeMetrics != nil {
		st.routeMetrics.observe(r.Method, st.rec.status, d)
	} else {
		rt.metrics.unmatched.observe(r.Method, st.rec.status, d)
	}
	rt.accessLog.log(r, st, d)
	if st.unanswered() {
		// Logged as 499; the connection is cut rather than answered with
		// the empty 200 the server would send for a handler that wrote
		// nothing (see unanswered). A client that has gone never sees it.
		panic(http.ErrAbortHandler)
	}
}

// checkRequest refuses a request line the edge and an upstream could read
// differently (see CheckH2Host, methodCaseMismatch, checkPath,
// normalizeHost), and removes a trailing dot from the Host. It returns the message of the 400,
// or "".
func (rt *runtime) checkRequest(r *http.Request) string {
	if r.ProtoMajor == 2 {
		if msg := pipeline.CheckH2Host(r); msg != "" {
			return msg
		}
	}
	if pipeline.MethodCaseMismatch(r.Method) {
		return "method " + r.Method + " must be upper case: methods are case-sensitive"
	}
	if msg := pipeline.CheckPath(r.URL.Path, rt.file.Server.PathNormalization == routes.PathNormalizationStrict); msg != "" {
		return msg
	}
	host, ok := pipeline.NormalizeHost(r.Host)
	if !ok {
		return "malformed Host: an empty label or an invalid port"
	}
	r.Host = host
	return ""
}

// close releases what this runtime owns once no request runs on it.
func (rt *runtime) close() {
	for _, u := range rt.upstreams {
		_, _ = rt.held.Release(u)
	}
	rt.upstreams = nil
}
