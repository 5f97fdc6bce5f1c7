package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"

	"errors"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/pipeline"
	"github.com/causewayhq/causeway/internal/httperr"
	"github.com/causewayhq/causeway/routes"
)

// bufferPool lends the 32 KiB copy buffers of httputil.ReverseProxy so that a
// proxied body does not allocate one per request. The pool holds array
// pointers: Put turns the slice back into one without allocating, where
// storing a new *[]byte cost an allocation per request.
type bufferPool struct{ p sync.Pool }

const copyBufferSize = 32 << 10

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { return new([copyBufferSize]byte) }}}
}

func (b *bufferPool) Get() []byte { return b.p.Get().(*[copyBufferSize]byte)[:] }

// Put takes back what Get lent; anything shorter (never handed out by
// Get) is left to the garbage collector.
func (b *bufferPool) Put(x []byte) {
	if cap(x) < copyBufferSize {
		return
	}
	b.p.Put((*[copyBufferSize]byte)(x[:copyBufferSize]))
}

var sharedBuffers = newBufferPool()

// target is one upstream as seen from one route: the route's path rewriting
// applied in front of the upstream's pool.
type target struct {
	up    *proxy.Upstream
	proxy http.Handler
}

// forwarder is the innermost handler of a route: it picks the upstream
// (header override, else split), passes the upstream's circuit breaker,
// then proxies. The endpoint is picked by the upstream's transport, for the
// first attempt and every retry alike.
type forwarder struct {
	route   string
	targets []target
	// cumulative weights for split; nil for a single upstream.
	weights []int
	total   int
	// overrides send requests carrying all of a target's headers to it,
	// whatever the weights say; checked in file order.
	overrides []headerOverride
	m         *metrics
	// caller puts the caller token on requests to mesh upstreams and takes
	// the header off every other (nil: neither).
	caller *callerSend
}

type headerOverride struct {
	target  int
	headers [][2]string // canonical name, exact value
}

func newForwarder(rc routes.Route, ups map[string]*proxy.Upstream, m *metrics, cs *callerSend, reverseProxy bool) *forwarder {
	f := &forwarder{route: rc.Name, m: m, caller: cs}
	add := func(name string) {
		u := ups[name]
		if u.Mirror != nil && u.Mirror.Shadow.Load() == nil {
			u.Mirror.Shadow.Store(ups[u.Cfg.Mirror.Upstream])
		}
		f.targets = append(f.targets, target{up: u, proxy: newProxy(rc, u, m, reverseProxy)})
	}
	if rc.Upstream != "" {
		add(rc.Upstream)
		return f
	}
	for i, s := range rc.Split {
		add(s.Upstream)
		f.total += s.Weight
		f.weights = append(f.weights, f.total)
		if len(s.Headers) > 0 {
			o := headerOverride{target: i}
			for _, k := range slices.Sorted(maps.Keys(s.Headers)) {
				o.headers = append(o.headers, [2]string{http.CanonicalHeaderKey(k), s.Headers[k]})
			}
			f.overrides = append(f.overrides, o)
		}
	}
	return f
}

func (f *forwarder) pick(r *http.Request) *target {
	if f.weights == nil {
		return &f.targets[0]
	}
	for _, o := range f.overrides {
		if matchHeaders(r.Header, o.headers) {
			return &f.targets[o.target]
		}
	}
	n := rand.IntN(f.total)
	for i, w := range f.weights {
		if n < w {
			return &f.targets[i]
		}
	}
	return &f.targets[len(f.targets)-1]
}

func matchHeaders(h http.Header, want [][2]string) bool {
	for _, kv := range want {
		v := h[kv[0]]
		if len(v) == 0 || v[0] != kv[1] {
			return false
		}
	}
	return true
}

func (f *forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := stateFrom(r.Context())
	t := f.pick(r)
	up := t.up
	st.upstream = up.Name
	if !setCallerToken(w, r, f.caller, up) {
		return
	}
	var tk proxy.Ticket
	if b := up.Breaker; b != nil {
		var err error
		if tk, err = b.Acquire(r.Context()); err != nil {
			if routeTimedOut(r.Context()) {
				httperr.Write(w, r, http.StatusGatewayTimeout, "route timeout")
				return
			}
			if r.Context().Err() != nil {
				st.rec.status = statusClientClosed
				return
			}
			msg := "upstream circuit breaker is open"
			if errors.Is(err, proxy.ErrOverloaded) {
				msg = "upstream overloaded: too many pending requests"
			}
			f.m.upstreamRequest(up.Name, "", http.StatusServiceUnavailable, 0)
			httperr.Write(w, r, http.StatusServiceUnavailable, msg)
			return
		}
	}
	st.upstreamStart = time.Now()
	if up.Breaker != nil {
		// Deferred: the proxying step (directProxy, or ReverseProxy for an
		// upgrade) aborts a response whose upstream body breaks by
		// panicking with http.ErrAbortHandler, and the slot must come back
		// all the same.
		defer func() {
			if p := recover(); p != nil {
				up.Breaker.Release(tk, true)
				panic(p)
			}
			failed := (st.upstreamErr != nil || st.rec.status >= 500)
			if st.rec.status == statusClientClosed {
				failed = false
			}
			up.Breaker.Release(tk, failed)
		}()
	}
	st.proxying = true
	t.proxy.ServeHTTP(w, r)
}

// newProxy is the route's forwarding step to u: the edge's own forwarder,
// or (reverseProxy) httputil.ReverseProxy alone, the reference the
// differential test compares it with.
func newProxy(rc routes.Route, u *proxy.Upstream, m *metrics, reverseProxy bool) http.Handler {
	hooks := newProxyHooks(rc, u, m)
	if reverseProxy {
		return newReverseProxy(hooks, u.Transport)
	}
	tunnel := newReverseProxy(hooks, tunnelTransport{rt: u.Transport})
	return &directProxy{transport: u.Transport, up: u, hooks: hooks, tunnel: tunnel}
}

// newReverseProxy is httputil.ReverseProxy with the route's hooks: the
// forwarder's tunnel for protocol upgrades (over tunnelTransport), or
// alone, over the upstream's transport as it is, the reference.
func newReverseProxy(h proxyHooks, rt http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Transport:  rt,
		BufferPool: sharedBuffers,
		// No periodic flush: ReverseProxy already flushes after every write
		// for text/event-stream and for responses of unknown length, so
		// streamed responses (SSE, long polls) reach the client as they
		// come, while responses of known length are copied in full buffers.
		// directProxy does the same (streamed).
		FlushInterval: 0,
		Rewrite: func(pr *httputil.ProxyRequest) {
			h.rewrite(pr.In, pr.Out)
			// ReverseProxy's copy of the request took the client's Trailer
			// as it was: announced names, and, behind a stage that read
			// the body first, every field received with its value. Only
			// the names the direct path would forward are announced, and
			// none is sent a value (the tunnel drops them, as before).
			pr.Out.Trailer = forwardedTrailer(pr.In, pr.Out.Header)
		},
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.errorHandler,
	}
}

func newProxyHooks(rc routes.Route, u *proxy.Upstream, m *metrics) proxyHooks {
	strip := ""
	if rc.StripPrefix {
		strip = strings.TrimSuffix(rc.Match.PathPrefix, "/")
	}
	hostRewrite := rc.HostRewrite
	um := m.forUpstream(u.Name)
	return proxyHooks{
		rewrite: func(in, out *http.Request) {
			st := stateFrom(in.Context())
			out.URL.Scheme = u.Scheme
			// The host is the endpoint's, set by the transport's attempt
			// loop (upstreamTransport.RoundTrip) once it has picked one.
			out.URL.Host = u.Name
			if strip != "" {
				stripPrefix(out.URL, in.URL, strip)
			}
			pipeline.SetForwardedInto(in, out, &st.peer, &st.forwarded)
			if hostRewrite != "" {
				// After SetForwarded, which reads the client's Host into
				// X-Forwarded-Host and Forwarded.
				out.Host = hostRewrite
			}
		},
		modifyResponse: func(resp *http.Response) error {
			st := stateFrom(resp.Request.Context())
			if resp.StatusCode == http.StatusSwitchingProtocols && st.routeTimer != nil {
				// The route's timeout bounds the upgrade, not the life of
				// the connection it gives.
				st.routeTimer.Stop()
			}
			st.upstreamDur = time.Since(st.upstreamStart)
			um.observe(st.endpoint.Label, resp.StatusCode, st.upstreamDur)
			// The edge's request id is the one the client sees.
			resp.Header.Del(httperr.RequestIDHeader)
			if resp.StatusCode >= http.StatusOK {
				_, typed := resp.Header["Content-Type"]
				st.rec.untyped = !typed
			}
			return nil
		},
		errorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			st := stateFrom(r.Context())
			kind := proxy.Classify(r.Context(), err)
			timedOut := routeTimedOut(r.Context())
			if kind == proxy.AttemptCanceled && !timedOut {
				// The client went away: nothing to answer; 499 in logs as nginx does.
				st.rec.status = statusClientClosed
				return
			}
			status, msg := kind.Status()
			if timedOut {
				// The route's own bound, not the endpoint's verdict alone
				// (stages and retries spent the time too); the client is
				// still there and gets an answer.
				status, msg = http.StatusGatewayTimeout, "route timeout"
			}
			st.proxying = false // the answer is the edge's own
			clientFault := st.bodyErr.Load() != nil || kind == proxy.FailRequest
			if st.bodyErr.Load() != nil {
				// The client's body broke (or stalled): not the upstream's
				// answer, so neither its metric nor its error in the log.
				status, msg = http.StatusBadRequest, "malformed or incomplete request body"
			}
			if !clientFault {
				st.upstreamDur = time.Since(st.upstreamStart)
				st.upstreamErr = err
				label := ""
				if st.endpoint != nil {
					label = st.endpoint.Label
				}
				um.observe(label, status, st.upstreamDur)
			}
			// What is left of the request body is settled by the answer
			// (state.go: settleEarly), without waiting for a client that
			// stalls.
			httperr.Write(w, r, status, msg)
		},
	}
}

// statusClientClosed is nginx's status for a client that closed the
// connection before the response: logged, never sent.
const statusClientClosed = proxy.StatusClientClosed

// stripPrefix removes prefix from out's path, keeping the escaped form
// consistent with the decoded one.
func stripPrefix(out, in *url.URL, prefix string) {
	out.Path = ensureSlash(strings.TrimPrefix(in.Path, prefix))
	out.RawPath = ""
	if in.RawPath != "" {
		if esc := in.EscapedPath(); strings.HasPrefix(esc, prefix) {
			out.RawPath = ensureSlash(esc[len(prefix):])
		}
	}
}

func ensureSlash(p string) string {
	if p == "" || p[0] != '/' {
		return "/" + p
	}
	return p
}
