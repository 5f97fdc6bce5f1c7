package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/pipeline"
	"github.com/causewayhq/causeway/gateway/internal/proxy"
	"github.com/causewayhq/causeway/internal/httperr"
	"github.com/causewayhq/causeway/routes"
)

// reqState is what the edge learns about one request as it passes through
// the stages; the outermost handler reads it for the access log and metrics.
// It is allocated once per request, with the response recorder inside it.
type reqState struct {
	rec       recorder
	start     time.Time
	requestID string
	clientIP  string // peer.ClientStr
	// stated holds the values of the request id (request and response)
	// and of a traceparent the edge starts; forwarded those of the
	// forwarding headers (pipeline.SetForwardedInto). Here rather than
	// allocated apart: the state is one allocation per request and never
	// reused, so the header slices over them stay the request's own.
	// With them the state is at the edge of its size class (896 bytes,
	// an 8-byte malloc header included; TestReqStateSizeClass): the bools
	// below sit together, where apart each took a word of padding.
	stated       [3]string
	forwarded    [6]string
	peer         pipeline.Peer // decided once as the request enters
	route        string
	routeHost    string // the route's match.host ("" for any host)
	routeMetrics *routeMetrics
	// routeTimer ends the request at the route's timeout (nil: none); a
	// successful upgrade stops it.
	routeTimer    *time.Timer
	upstream      string
	endpoint      *proxy.Endpoint
	upstreamStart time.Time
	upstreamDur   time.Duration
	upstreamErr   error
	principal     string
	// Written by the transport's body-writing goroutine, read by the
	// handler: atomics.
	bodyRead atomic.Int64
	bodyErr  atomic.Pointer[error]
	// body is the request body's wrapper; nil for requests without a body.
	body *clientBody
	// proxying is set while the upstream's answer is being relayed: its
	// header may go out while the transport still reads the body, which
	// must then be left alone. An answer of the edge's own clears it.
	proxying bool
	// http10: the client spoke HTTP/1.0, which must get no 1xx response
	// (see guardInformational).
	http10 bool
	// traceID is the W3C trace id the request carries on (for the log);
	// traceStarted is set when this hop started the trace. trace is nil
	// unless tracing is configured.
	traceStarted bool
	traceID      string
	trace        *reqTrace
	// fwd is the forwarder's (directProxy's) per-request part.
	fwd forwardState
}

type stateKey struct{}

// stateFrom is the state of a request inside the pipeline: runtime.ServeHTTP
// gives every request one before any stage runs, so a missing state is a
// programming error (a handler reached some other way), and it panics.
func stateFrom(ctx context.Context) *reqState {
	st, ok := ctx.Value(stateKey{}).(*reqState)
	if !ok {
		panic("gateway: request without pipeline state: it did not enter through runtime.ServeHTTP")
	}
	return st
}

// stateIn is the request's state for code that also runs outside the
// pipeline (the tracer's ID generator makes the IDs of every span, a
// background one too): nil there.
func stateIn(ctx context.Context) *reqState {
	st, _ := ctx.Value(stateKey{}).(*reqState)
	return st
}

// recorder captures the status and size of a response. Unwrap lets
// http.ResponseController reach the connection for flushing and for the
// hijack of protocol upgrades (WebSocket).
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	// wrote is set once the header went out: status alone cannot say so,
	// since the forwarder marks a vanished client 499 without writing.
	wrote bool
	// swallow drops the body of an error answer replaced by 408.
	swallow bool
	// untyped: the upstream's final answer has no Content-Type, and the
	// client gets none either (see markUntyped). The three flags share
	// one word: the request state stays in its size class
	// (TestReqStateSizeClass).
	untyped bool
	// body is the request's body wrapper (nil without a body): an error
	// answer written after a read timeout cut the body becomes 408.
	body *clientBody
	// stall is server.write_stall_timeout (0: off): every write and flush
	// must make progress within it, see armStall.
	stall time.Duration
}

// armStall gives the next write stall time to make progress. The deadline
// is moved at every write, so a slow but reading client is not cut, and a
// client that stopped reading makes the blocked write fail: net/http then
// closes the connection (HTTP/2: resets the stream), the copy from the
// upstream stops and the upstream request is cancelled.
func (r *recorder) armStall() {
	if r.stall > 0 {
		_ = http.NewResponseController(r.ResponseWriter).SetWriteDeadline(time.Now().Add(r.stall))
	}
}

func (r *recorder) WriteHeader(code int) {
	if code >= 200 && !r.wrote && r.body != nil && !r.body.st.proxying && !r.body.settleEarly() {
		// The edge answers before the body it does not want has all
		// arrived: the connection cannot carry another request.
		r.body.closing = true
		r.Header().Set("Connection", "close")
	}
	if code >= 200 && !r.wrote && r.body != nil && r.body.st.proxying && !r.body.complete() {
		// The upstream answered before the client's body was all read
		// (an early 413 or 401, an answer to Expect without 100
		// Continue, a streaming upstream). What is left of the body must
		// never be read as the next request, and net/http's own guards
		// against that (a body left with more than 256 KiB unread, an
		// expect-continue body never read) look for its own body types
		// in r.Body, where the edge's wrapper sits: so the answer says
		// Connection: close, and the connection ends after it.
		r.body.closing = true
		r.Header().Set("Connection", "close")
	}
	if code >= 400 && !r.wrote && r.body != nil && r.body.cut() {
		// Whatever failed after the client stopped sending (the forwarder's
		// 400 for a broken body, a plugin reading the body) failed because
		// of that: the client is told it was too slow, in one place. The
		// replaced answer's own body is dropped.
		r.answerBodyTimeout()
		r.swallow = true
		return
	}
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	if code >= 200 && !r.wrote {
		// Last before the head goes out, after every stage's hook (the
		// headers plugin sets its response fields in WriteHeader): a
		// declared trailer cannot take a header field out of the head.
		undeclareStatedTrailers(r.Header())
		dropBodylessFields(r.Header(), code)
		if r.untyped {
			markUntyped(r.Header())
		}
	}
	if code >= 200 {
		r.wrote = true
	}
	r.ResponseWriter.WriteHeader(code)
}

// markUntyped keeps net/http's servers (HTTP/2, and HTTP/1.1 under the
// deprecated engine) and the edge's own engine from sniffing a
// Content-Type (http.DetectContentType on the first write) onto an
// upstream answer that has none: the client gets the upstream's head as
// it came, as from Envoy or nginx, not a type the upstream never stated
// ("text/html" for a body that looks like HTML, which a browser would
// then render). A nil value in the header map is how a handler says so to
// all three, and none of them writes it as a field. A type a stage set
// (the headers plugin) stays.
func markUntyped(h http.Header) {
	if _, ok := h["Content-Type"]; !ok {
		h["Content-Type"] = nil
	}
}

// dropBodylessFields removes the Content-Length of a 204 or a 304, the
// answers that end at their head whatever the request, and a 304's
// Content-Type, before it goes out to any client.
//
// A 204 must not carry one (RFC 9110 8.6). A 304 may carry the length of
// the representation it stands for (RFC 9110 8.6, 15.4.5), and RFC 9113
// 8.1.1 lets an HTTP/2 response that has no content by definition keep
// it; but the same section makes a Content-Length that the DATA frames do
// not match malformed, and clients check it so for any status but HEAD's:
// Go's HTTP/2 client fails the body of such a 304 with an unexpected EOF,
// after the head it has already shown. net/http's HTTP/2 server sends
// whatever Content-Length the forwarder copied from the upstream, so
// without this an HTTP/2 client got exactly that. The edge sends no
// length it does not send the bytes of: a 304 validates a cached copy,
// which has its own length, so nothing is lost. The edge's HTTP/1.1
// engine already drops it (as every HTTP/1.1 client knows a 304 has no
// body, this only makes the HTTP/1.1 engines agree). A response to HEAD
// keeps its Content-Length: it is GET's (RFC 9110 9.3.2), and every
// client, HTTP/2 ones included, reads no body after HEAD.
//
// A 304's Content-Type goes too, for every client. RFC 9110 15.4.5 asks a
// 304 to carry no representation metadata beyond the validators and
// caching fields (a cache that freshens its stored response with the
// 304's fields, RFC 9111 4.3.4, would take a type over), and both HTTP/1.1
// engines already drop it (net/http's server as its suppressedHeaders304
// does, the edge's own as net/http), while net/http's HTTP/2 server sent
// it: h2 and h2c clients got a field HTTP/1.1 clients did not.
func dropBodylessFields(h http.Header, code int) {
	switch code {
	case http.StatusNoContent:
		delete(h, "Content-Length")
	case http.StatusNotModified:
		delete(h, "Content-Length")
		delete(h, "Content-Type")
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.swallow {
		return len(b), nil
	}
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.wrote = true
	r.armStall()
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	if r.swallow {
		return
	}
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.wrote = true
	r.armStall()
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

// Hijack is used by protocol upgrades; the status of an upgraded request is 101.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if r.status == 0 {
		r.status = http.StatusSwitchingProtocols
	}
	r.wrote = true
	c, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err != nil {
		return c, brw, err
	}
	if r.stall > 0 {
		// The tunnel is still the response: a client that stops reading
		// it must not hold it (and the upstream's connection, and the
		// configuration it pins) forever. ReverseProxy copies the
		// upstream's bytes to the connection returned here.
		c = &stallConn{Conn: c, stall: r.stall}
	}
	if brw == nil || brw.Reader.Buffered() == 0 {
		return c, brw, nil
	}
	// Bytes the client sent behind its request were read ahead into brw,
	// under either engine. ReverseProxy copies the tunnel from the
	// connection and never looks at brw: without this, what a client sends
	// before the 101 arrives would be lost. The connection returned reads
	// them first, and brw reads through it, so both see one stream.
	ahead, _ := brw.Reader.Peek(brw.Reader.Buffered())
	hc := &hijackedConn{Conn: c, ahead: bytes.Clone(ahead)}
	return hc, bufio.NewReadWriter(bufio.NewReader(hc), brw.Writer), nil
}

// stallConn is a hijacked client connection whose every write must make
// progress within stall (server.write_stall_timeout): the deadline moves
// before each piece of at most stallPiece bytes, so a tunnel that is
// quiet, or whose client reads slowly, is never cut, and one whose client
// stopped reading fails its write; ReverseProxy then ends the tunnel and
// closes both ends.
type stallConn struct {
	net.Conn
	stall time.Duration
}

const stallPiece = 32 << 10

func (c *stallConn) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), stallPiece)
		_ = c.SetWriteDeadline(time.Now().Add(c.stall))
		m, err := c.Conn.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// CloseWrite passes a half-close on, as the connection underneath does.
func (c *stallConn) CloseWrite() error { return closeWrite(c.Conn) }

// NetConn is the connection underneath, for what unwraps connections.
func (c *stallConn) NetConn() net.Conn { return c.Conn }

// hijackedConn is a hijacked connection whose first bytes were already
// read from the socket (recorder.Hijack).
type hijackedConn struct {
	net.Conn
	ahead []byte
}

func (c *hijackedConn) Read(p []byte) (int, error) {
	if len(c.ahead) > 0 {
		n := copy(p, c.ahead)
		c.ahead = c.ahead[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes as the connection underneath does: ReverseProxy
// passes the upstream's end of the tunnel on to the client with it.
func (c *hijackedConn) CloseWrite() error { return closeWrite(c.Conn) }

// NetConn is the connection underneath, for what unwraps connections.
func (c *hijackedConn) NetConn() net.Conn { return c.Conn }

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// answerBodyTimeout writes the 408 of a body cut by body_read_timeout,
// in place of whatever status the handlers had in mind.
func (r *recorder) answerBodyTimeout() {
	id := r.body.st.requestID
	// The rest of the body is not coming: nothing after it can be read.
	r.Header().Set("Connection", "close")
	r.body = nil // answered: the WriteHeader below goes through
	r.status = 0
	httperr.Write(r, &http.Request{Header: http.Header{httperr.RequestIDHeader: {id}}},
		http.StatusRequestTimeout, "the request body stalled: nothing arrived within the body read timeout")
}

// clientBody wraps a request body to count its bytes and to remember a
// read error that is the client's fault (a malformed chunk, a body cut short,
// a body that stalls), so the edge answers 400 (408 for a stall) and does not
// blame the upstream endpoint for it.
//
// With a read timeout it also bounds each wait for the client's next bytes:
// before every Read the connection's read deadline (HTTP/2: the stream's) is
// moved to now+timeout, so a slow but steady upload lives while one that
// stops is cut. Read runs on the transport's goroutine, which can outlive
// the handler; mu and finished make sure no deadline is touched once the
// handler has returned, when the connection (or the HTTP/2 stream's writer)
// is no longer this request's.
type clientBody struct {
	body io.ReadCloser
	st   *reqState

	// Set by wrapBody, then read-only.
	rc      *http.ResponseController // nil: no read timeout
	timeout time.Duration
	limit   time.Time // server.read_timeout's end of the whole request; zero: none
	w       http.ResponseWriter
	http1   bool
	// expect: the client sent Expect: 100-continue and sends the body only
	// once told to (by the first Read). Over HTTP/2 the forwarder puts the
	// expectation back on the outbound request (h2ExpectsContinue).
	expect bool
	// length is the declared Content-Length (-1: unknown, chunked).
	length int64

	// eof is set when the body was read to its end.
	eof atomic.Bool
	// closing: the answer said Connection: close (handler goroutine only).
	closing bool

	mu          sync.Mutex
	unsupported bool  // the writer has no deadlines: count only
	armed       bool  // a deadline of ours is set on the connection
	finished    bool  // the handler returned
	stalled     error // the timeout that cut the body; later reads return it
	// settling is set once the edge answers the request itself
	// (settleEarly): the forwarder, whose attempt has ended (a route
	// timeout), may still be reading the body for it. It reads no more,
	// and the expired deadline settleEarly sets to stop its read in flight
	// is not the client's stall.
	settling bool
	// reading is set while a Read of the client's body is in flight;
	// readDone, made by awaitRead, is closed when it returns.
	reading  bool
	readDone chan struct{}
	// done is the request's context's (net/http's, not a stage's): net/http
	// ends it when a read of the connection fails.
	done <-chan struct{}
}

// errBodyStalled wraps the deadline error of a body read cut by
// body_read_timeout (or read_timeout).
type errBodyStalled struct{ err error }

func (e *errBodyStalled) Error() string { return "request body stalled: " + e.err.Error() }
func (e *errBodyStalled) Unwrap() error { return e.err }

// wrapBody installs the body wrapper of a request that has a body. A
// timeout of 0 (body_read_timeout off) leaves the deadlines alone.
func (st *reqState) wrapBody(w http.ResponseWriter, r *http.Request, srv *routes.Server) io.ReadCloser {
	cb := &clientBody{body: r.Body, st: st, w: w, http1: r.ProtoMajor == 1, length: r.ContentLength, done: r.Context().Done(),
		expect: r.ProtoMajor == 1 && strings.EqualFold(r.Header.Get("Expect"), "100-continue") ||
			r.ProtoMajor == 2 && h2ExpectsContinue(r.Body)}
	if t := srv.BodyReadTimeout; t != nil && *t > 0 {
		cb.rc = http.NewResponseController(w)
		cb.timeout = t.D()
		if rt := srv.ReadTimeout.D(); rt > 0 {
			cb.limit = st.start.Add(rt)
		}
	}
	st.body, st.rec.body = cb, cb
	return cb
}

// h2ExpectsContinue reports whether net/http's HTTP/2 server took an
// "Expect: 100-continue" off the request whose body this is. It deletes
// the field from the request's header before the handler runs and keeps
// only a flag in its body type, which sends the 100 at the body's first
// Read. Without this, the expectation never reached the upstream: the
// forwarder's first Read of the body sent the client its 100 at once, so
// an upstream that would refuse the upload (417, 413, 401) could do so
// only after the whole body had come, as if the client had never asked.
// The flag is unexported, so it is read by reflection: field name and
// type are checked, and a Go release that renames it makes this report
// false (HTTP/2 requests then go out without Expect, as before), which
// TestH2ExpectContinueReachesUpstream catches.
func h2ExpectsContinue(body io.ReadCloser) bool {
	v := reflect.ValueOf(body)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return false
	}
	v = v.Elem()
	if v.Kind() != reflect.Struct || v.Type().Name() != "http2requestBody" {
		return false
	}
	f := v.FieldByName("needsContinue")
	return f.IsValid() && f.Kind() == reflect.Bool && f.Bool()
}

func (c *clientBody) Read(p []byte) (int, error) {
	if err := c.begin(); err != nil {
		return 0, err
	}
	n, err := c.body.Read(p)
	c.st.bodyRead.Add(int64(n))
	var stalled error
	switch {
	case err == nil:
	case err == io.EOF:
		c.eof.Store(true)
	case errors.Is(err, os.ErrDeadlineExceeded) && c.isSettling():
		// settleEarly expired the deadline under this read: the edge
		// answers the request itself, and the body is not wanted.
		err = errBodyNotWanted
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = &errBodyStalled{err: err}
		stalled = err
		c.st.bodyErr.CompareAndSwap(nil, &err)
	default:
		c.st.bodyErr.CompareAndSwap(nil, &err)
	}
	c.end(err == io.EOF, stalled)
	return n, err
}

// errBodyNotWanted ends the forwarder's reads of a body once the edge has
// answered the request itself (settleEarly): the attempt they fed is over.
var errBodyNotWanted = errors.New("request body not read: the edge answered the request itself")

func (c *clientBody) isSettling() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.settling
}

// begin starts a read: it marks it in flight and moves the read deadline.
// It returns the stall error when the body was already cut, so a drain
// after the cut (the forwarder's, the server's) does not wait a whole
// timeout again; and errBodyNotWanted once the edge answers itself, so
// that the forwarder, still reading for an attempt that ended, neither
// moves the deadline settleEarly set nor reads on.
func (c *clientBody) begin() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stalled != nil {
		return c.stalled
	}
	if c.settling {
		return errBodyNotWanted
	}
	c.reading = true
	if c.rc == nil || c.finished || c.unsupported {
		return nil
	}
	d := time.Now().Add(c.timeout)
	if !c.limit.IsZero() && c.limit.Before(d) {
		d = c.limit
	}
	if err := c.rc.SetReadDeadline(d); err != nil {
		// A writer without deadlines (http.ErrNotSupported): count only.
		c.unsupported = true
		return nil
	}
	c.armed = true
	return nil
}

// end records how a read ended (the body's end, or the stall that cut it)
// and wakes awaitRead. The request's error is recorded before (bodyErr),
// so whoever awaitRead wakes sees it too.
func (c *clientBody) end(eof bool, stalled error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reading = false
	if stalled != nil {
		c.stalled = stalled
	}
	if eof {
		// Before the server's own read for the next request, or its
		// watch for a client that hangs up, runs into our deadline.
		c.clearLocked()
	}
	if c.readDone != nil {
		close(c.readDone)
		c.readDone = nil
	}
}

// maxReadSettle bounds awaitRead. The read it waits for is the one whose
// failure ended the request's context, already on its way back: the
// bound is only there for a read that would not return.
const maxReadSettle = time.Second

// awaitRead waits, when the request's context has ended while a read of
// the body is in flight on the transport's goroutine, for that read to
// return. net/http ends the context inside the connection read that
// fails, before that read reports its error to the body's reader: the
// forwarder then sees its attempt cancelled (a client that left, nothing
// to answer) while the body has not said yet that it stalled, and the
// client would get an empty 200 instead of its 408. Without a read in
// flight, or with the context alive (an upstream that answered before
// reading the whole body, a slow upload still going), it returns at once.
func (c *clientBody) awaitRead() {
	select {
	case <-c.done:
	default:
		return
	}
	c.mu.Lock()
	if !c.reading {
		c.mu.Unlock()
		return
	}
	if c.readDone == nil {
		c.readDone = make(chan struct{})
	}
	done := c.readDone
	c.mu.Unlock()
	t := time.NewTimer(maxReadSettle)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// clear takes our deadline off the connection, leaving keep-alive and idle
// handling to the server. A cut body keeps its expired deadline: the server
// must not wait for the rest of it before closing the connection.
func (c *clientBody) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearLocked()
}

func (c *clientBody) clearLocked() {
	if !c.armed || c.stalled != nil || c.finished {
		return
	}
	c.armed = false
	_ = c.rc.SetReadDeadline(time.Time{})
}

// Close closes a body read to its end. A body with bytes left is not
// touched: closing net/http's body would read the rest, here, with no
// deadline (a client that stalls would hold the handler). The server
// closes it after the handler, within the bound endBody sets.
func (c *clientBody) Close() error {
	if !c.eof.Load() {
		return nil
	}
	if c.rc != nil {
		c.clear()
	}
	return c.body.Close()
}

// complete reports whether the whole body has been read (for HTTP/2,
// whether it matters: a stream's unread body never turns into requests).
// A declared length counts as read when all of it was: the transport may
// not have made the read that returns EOF yet.
func (c *clientBody) complete() bool {
	return !c.http1 || c.eof.Load() || c.length > 0 && c.st.bodyRead.Load() >= c.length
}

// awaitingContinue reports whether the client still waits for a
// 100 Continue before it sends the body: nothing of it was asked for.
func (c *clientBody) awaitingContinue() bool {
	return c.expect && c.st.bodyRead.Load() == 0 && !c.eof.Load()
}

// maxDrain is how much of an unread body the edge reads to keep the
// connection (net/http's own bound, maxPostHandlerReadBytes).
const maxDrain = 256 << 10

// settleEarly runs when the edge answers a request itself (a refusal, a
// plugin's answer, an upstream error) before the body was read. It takes
// what of the body has already arrived, without waiting for more, and
// reports whether the connection can carry the next request: only when the
// whole body was there. Otherwise the answer says Connection: close and is
// written at once; the client is not kept waiting while the edge reads a
// body it does not want, and a client that stops sending holds nothing.
// A client that still waits for 100 Continue has sent nothing to take.
func (c *clientBody) settleEarly() (keep bool) {
	if !c.http1 || c.eof.Load() {
		return true
	}
	if c.awaitingContinue() || c.cut() {
		return false
	}
	// The forwarder may still be reading the body, for an attempt that
	// ended without an answer (a route timeout while the client uploads):
	// it reads no more from here on. Its read in flight, under a deadline
	// it moved itself, would otherwise take the bytes the drain below is
	// after, and its end by the expired deadline below read as the
	// client's stall (a 408 in place of the 504); with a client that
	// keeps sending, a little at a time, the drain would wait for the
	// whole body, and the answer with it, past the route's timeout.
	c.mu.Lock()
	c.settling = true
	var inFlight chan struct{}
	if c.reading {
		if c.readDone == nil {
			c.readDone = make(chan struct{})
		}
		inFlight = c.readDone
	}
	c.mu.Unlock()
	if c.length < 0 {
		// A chunked body: a read cut by the expired deadline below would
		// leave net/http's chunked reader failed for good, so the
		// lingering read after the answer could not take the rest, and
		// closing with it unread resets the connection under a client
		// still sending (which then loses the answer: 1 run in a few of
		// TestBuildEndToEnd's streamed body over the limit under load).
		// Without a length there is no telling the body is all here
		// anyway: close after the answer, lingering.
		c.closing = true
		return false
	}
	rc := c.controller()
	// An expired deadline: bytes already buffered are read, the socket
	// is not waited on.
	if rc.SetReadDeadline(time.Now()) != nil {
		return false
	}
	if inFlight != nil {
		// The expired deadline ends the read in flight at once; the bound
		// is there for a read that would not return.
		t := time.NewTimer(maxReadSettle)
		select {
		case <-inFlight:
		case <-t.C:
		}
		t.Stop()
	}
	n, err := io.CopyN(io.Discard, c.body, maxDrain+1)
	if errors.Is(err, io.EOF) && n <= maxDrain {
		c.eof.Store(true)
		_ = rc.SetReadDeadline(time.Time{})
		return true
	}
	c.closing = true
	return false
}

// settleLate runs after the handlers, for an HTTP/1 body still not read to
// its end: the upstream answered without reading all of it, or the edge
// answered and decided to close. net/http would read the rest after the
// response, with no deadline; the edge reads it now, the response already
// flushed, within body_read_timeout and maxDrain. When the rest does not
// come, the read deadline stays expired so that net/http gives up at once.
func (c *clientBody) settleLate() {
	if !c.http1 || c.eof.Load() || c.cut() {
		return
	}
	rc := c.controller()
	if c.awaitingContinue() {
		// Nothing was asked for, so nothing comes: close at once.
		_ = rc.SetReadDeadline(time.Now())
		return
	}
	if c.closing || c.timeout <= 0 {
		c.linger(rc)
		return
	}
	_ = rc.Flush()
	if rc.SetReadDeadline(time.Now().Add(c.timeout)) != nil {
		return
	}
	n, err := io.CopyN(io.Discard, c.body, maxDrain+1)
	if errors.Is(err, io.EOF) && n <= maxDrain {
		c.eof.Store(true)
		_ = rc.SetReadDeadline(time.Time{})
		return
	}
	_ = rc.SetReadDeadline(time.Now())
}

// lingerTime and maxLinger bound a lingering close (nginx's
// lingering_close): after the answer is flushed, what the client is still
// sending is read and dropped for a moment before the connection closes.
// Closing with unread bytes makes the kernel reset the connection, and a
// client still uploading can then lose the answer it has not read yet (a
// 413 for a body over the limit, typically). The byte bound is as large as
// a second of a fast upload: with 1 MiB, 2 of 30 clients uploading 1-4 MiB
// to an upstream that answered 413 at once lost that answer to the reset
// (TestEarlyUpstreamAnswerToLargeUpload); the time bound is what holds a
// client that keeps sending.
const (
	lingerTime = time.Second
	maxLinger  = 16 << 20
)

func (c *clientBody) linger(rc *http.ResponseController) {
	_ = rc.Flush()
	if rc.SetReadDeadline(time.Now().Add(lingerTime)) == nil {
		_, _ = io.CopyN(io.Discard, c.body, maxLinger)
	}
	_ = rc.SetReadDeadline(time.Now())
}

func (c *clientBody) controller() *http.ResponseController {
	if c.rc != nil {
		return c.rc
	}
	return http.NewResponseController(c.w)
}

// cut reports whether body_read_timeout (or read_timeout) ended the body.
func (c *clientBody) cut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stalled != nil
}

// finish is called as the handler returns (also when it panics, as
// ReverseProxy does to abort a response): the deadline is cleared and never
// touched again.
func (c *clientBody) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearLocked()
	c.finished = true
}

// endBody runs once the handlers are done with a request that had a body:
// it releases the read deadline and, when a stall cut the body and nothing
// was answered yet (a client whose connection read failed counts as gone
// for the forwarder, which then writes nothing), answers 408. The access
// log then shows a client timeout, not an upstream error: the upstream only
// saw the request aborted because the client stopped sending.
func (st *reqState) endBody() {
	c := st.body
	if c == nil {
		return
	}
	// The read whose failure ended the request's context must have said
	// how the body ended before that end is read as a client that left.
	c.awaitRead()
	c.finish()
	if !c.cut() {
		if st.unanswered() {
			if st.bodyErr.Load() == nil {
				// Aborted once logged (runtime.serve): settleLate's flush
				// would send the empty 200 the abort is there to prevent.
				return
			}
			// The body broke before its end (a client that half-closed
			// mid-body, a cut connection): the 400 any broken body gets,
			// which a client that has really gone never reads.
			st.rec.status = 0
			httperr.Write(&st.rec, &http.Request{Header: http.Header{httperr.RequestIDHeader: {st.requestID}}},
				http.StatusBadRequest, "malformed or incomplete request body")
		}
		c.settleLate()
		return
	}
	st.upstreamErr = nil
	if !st.rec.wrote {
		st.rec.answerBodyTimeout()
	}
}

// unanswered says that the handlers took the client for gone (499) and
// wrote nothing. net/http ends a request's context when its read of the
// connection fails or meets the end of the stream, and a client that
// half-closed (it sent all it will and waits for the answer) looks just
// like one that left: returning without an answer would let the server
// send it an empty 200 for a request the upstream never answered.
func (st *reqState) unanswered() bool {
	return st.rec.status == statusClientClosed && !st.rec.wrote
}

// Attempt records the endpoint the upstream's attempt loop chose (the
// access log's and the metrics' endpoint) and when the attempt started.
func (st *reqState) Attempt(ep *proxy.Endpoint, start time.Time) {
	st.endpoint = ep
	st.upstreamStart = start
}

// BodyFailed reports whether the request's own body could not be read.
func (st *reqState) BodyFailed() bool { return st.bodyErr.Load() != nil }

var _ proxy.Tracker = (*reqState)(nil)

// trackRequest is the upstreams' Hooks.Track: the request's state, with
// the upstream's informational responses filtered on their way to the
// client.
func trackRequest(ctx context.Context) proxy.Tracker {
	st := stateFrom(ctx)
	guardInformational(ctx, st)
	return st
}

// resolvedClientIP is the upstreams' Hooks.ClientIP: the client address
// the entry pass resolved. Balancers pick inside the attempt loop, so the
// state is always there.
func resolvedClientIP(ctx context.Context) string { return stateFrom(ctx).clientIP }
