package gateway

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// reqState is what the edge learns about one request as it passes through
// the stages; the outermost handler reads it for the access log and metrics.
// It is allocated once per request, with the response recorder inside it.
type reqState struct {
	rec           recorder
	start         time.Time
	requestID     string
	clientIP      string
	route         string
	routeMetrics  *routeMetrics
	upstream      string
	endpoint      *endpoint
	upstreamStart time.Time
	upstreamDur   time.Duration
	upstreamErr   error
	principal     string
	// Written by the transport's body-writing goroutine, read by the
	// handler: atomics.
	bodyRead atomic.Int64
	bodyErr  atomic.Pointer[error]
	// traceID is the W3C trace id the request carries on (for the log);
	// traceStarted is set when this hop started the trace. trace is nil
	// unless tracing is configured.
	traceID      string
	traceStarted bool
	trace        *reqTrace
}

type stateKey struct{}

func stateFrom(ctx context.Context) *reqState {
	st, _ := ctx.Value(stateKey{}).(*reqState)
	return st
}

// capturePrincipal records who the request was authenticated as, once the
// auth stage has run (it puts the principal on the request's context).
func (st *reqState) capturePrincipal(r *http.Request) {
	if principalOf == nil {
		return
	}
	// Keep one set earlier (a sidecar's verified caller) when auth found none.
	if p := principalOf(r.Context()); p != "" {
		st.principal = p
	}
}

// principalOf names the authenticated principal of a context for the access
// log: a subject or an API key name, never a credential. Set by the auth wiring.
var principalOf func(ctx context.Context) string

// recorder captures the status and size of a response. Unwrap lets
// http.ResponseController reach the connection for flushing and for the
// hijack of protocol upgrades (WebSocket).
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

// Hijack is used by protocol upgrades; the status of an upgraded request is 101.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if r.status == 0 {
		r.status = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(r.ResponseWriter).Hijack()
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// clientBody wraps a request body to count its bytes and to remember a
// read error that is the client's fault (a malformed chunk, a body cut short),
// so the edge answers 400 and does not blame the upstream endpoint for it.
type clientBody struct {
	body io.ReadCloser
	st   *reqState
}

func (c *clientBody) Read(p []byte) (int, error) {
	n, err := c.body.Read(p)
	c.st.bodyRead.Add(int64(n))
	if err != nil && err != io.EOF {
		c.st.bodyErr.CompareAndSwap(nil, &err)
	}
	return n, err
}

func (c *clientBody) Close() error { return c.body.Close() }

// clientBodyFailed reports whether the request's own body could not be read.
func clientBodyFailed(ctx context.Context) bool {
	st := stateFrom(ctx)
	return st != nil && st.bodyErr.Load() != nil
}
