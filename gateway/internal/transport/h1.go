package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/h1"
)

// H1 sends HTTP/1.1 requests to a plain-TCP upstream on the calling
// goroutine: it writes the request head, reads the response headers and
// hands back a body that returns the connection to the pool at EOF. A
// request body is written by a goroutine of its own while the response is
// read (body.go), so an upstream that answers before it has read the whole
// body is heard. http.Transport runs a read and a write goroutine per
// connection and passes every request and response between them through
// channels; for a small response on a keep-alive connection that hand-off
// cost as much CPU as the proxying itself (profile of the plain proxy under
// wrk).
//
// An H1 made by NewH1TLS speaks HTTP/1.1 over TLS instead (the mesh hop,
// tlsconn.go), on connections of its own: one H1 is plain or TLS, never
// both.
//
// Protocol upgrades are sent as other requests are; a 101 hands the
// connection over as the response body (upgrade.go).
//
// The fallback http.Transport, which keeps its own connections, carries
// only what H1 does not speak: the other of plain and TLS, and HTTP/2 (the
// pool never gives H1 such an upstream, but a URL may still say so),
// CONNECT, and a request
// whose TransferEncoding names a coding other than chunked (net/http
// writes such a body as it comes; H1 would have to refuse it).
type H1 struct {
	fallback      *http.Transport
	dial          func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle       int           // per host; 0 keeps none
	idleTimeout   time.Duration // an idle connection older than this is closed
	headerTimeout time.Duration // 0: no bound on the wait for response headers
	// expectTimeout is how long a request with Expect: 100-continue waits
	// for the 100 before its body is sent anyway (0: it does not wait).
	expectTimeout time.Duration
	lim           h1.Limits // bounds of a response head (response.go)
	// tls, when set, is the configuration of every connection (NewH1TLS):
	// H1 then sends https requests and leaves http ones to the fallback.
	tls              *tls.Config
	handshakeTimeout time.Duration
	// now is the clock a pooled TLS connection's certificates are held
	// to (NewH1TLS; time.Now for NewH1). Idle timeouts stay on the wall
	// clock: they run on runtime timers.
	now func() time.Time
	// recheck, when set, is asked before a pooled TLS connection is used
	// again whether its peer, as its handshake found it, is still one to
	// talk to (the mesh: its chain against the current bundle, its ID
	// authorized; NewMesh). An error closes the connection and the
	// request dials: a new handshake decides.
	recheck func(tls.ConnectionState) error

	mu     sync.Mutex
	idle   map[string][]*h1Conn // by host:port, most recently used last
	closed bool
}

func NewH1(fallback *http.Transport) *H1 {
	dial := fallback.DialContext
	// The fallback's connections get the guard against bodies after
	// bodiless responses (emptyguard.go); the calling-goroutine path
	// decides that itself and needs the bare socket for its checks.
	fallback.DialContext = guardEmptyResponses(dial)
	return &H1{
		fallback:      fallback,
		dial:          dial,
		maxIdle:       fallback.MaxIdleConnsPerHost,
		idleTimeout:   fallback.IdleConnTimeout,
		headerTimeout: fallback.ResponseHeaderTimeout,
		expectTimeout: fallback.ExpectContinueTimeout,
		lim:           responseLimits(fallback.MaxResponseHeaderBytes),
		idle:          map[string][]*h1Conn{},
		now:           time.Now,
	}
}

// h1Conn is one upstream connection. It belongs to the pool while idle and
// to exactly one request (and then that request's response body) otherwise.
type h1Conn struct {
	t      *H1
	host   string
	nc     net.Conn // over TLS, the tls.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	cw     countingWriter // under bw: what reached the socket
	idleAt time.Time
	// timer closes the connection when it stays idle too long. It is
	// armed lazily (putConn, expire): a connection taken from the pool
	// keeps its pending timer, and one put back while the timer is still
	// pending leaves it alone; when it fires, expire re-arms it for what
	// is left of the newest idle period. Resetting (and stopping) a
	// runtime timer on every request cost as much as the rest of the
	// pool's bookkeeping (profile of BenchmarkProxy); this way the timer
	// fires about once per idle timeout per connection instead.
	timer      *time.Timer
	timerArmed bool // the timer is pending; guarded by t.mu
	inIdle     bool // guarded by t.mu
	// alone is the idle stack's array when c is put back to an empty one
	// (putConn): setIdle drops an emptied stack, and a new array for the
	// one connection of a host at each put-back cost an allocation per
	// request. A second connection's append copies it out (capacity 1);
	// guarded by t.mu.
	alone [1]*h1Conn

	// raw and peek serve quiet; both are made once per connection, so the
	// check allocates nothing per request.
	raw       syscall.RawConn
	peek      func(fd uintptr) bool
	peekEmpty bool
	// Over TLS (quietTLS): the TLS connection, the socket under it, and
	// the probe read's buffer.
	tc    *tls.Conn
	rc    *recordConn
	probe [1]byte
	// certsUntil is the earliest NotAfter of the certificates its
	// handshake exchanged, both ways (zero for plain connections): the
	// connection is not reused from then on (getConn).
	certsUntil time.Time
	// state is the connection's TLS state after its handshake, kept for
	// t.recheck (set only then).
	state *tls.ConnectionState

	// The response being read: its parsed head (the fields array is
	// kept from response to response) and, for a chunked body, its
	// reader. Both belong to the request that holds the connection.
	head    h1.Response
	chunked h1.ChunkedReader

	// send is the request body being written beside the response
	// (body.go); sending says whether this request has one.
	send    bodySend
	sending bool

	// unblock is unblockIO, made once: each request hands it to its
	// context's watch (watchEnd), and a closure made there cost an
	// allocation per request.
	unblock func()
}

// unblockIO makes c's blocked reads and writes return: the request's
// context ended.
func (c *h1Conn) unblockIO() { _ = c.nc.SetDeadline(aLongTimeAgo) }

// endWatcher is a request context that calls a function when it ends for
// less than context.AfterFunc costs: the edge's HTTP/1.1 engine's request
// context answers one under h1.EndWatchKey. A request's context is never
// reused, so a watch stopped late (by a response body read after its
// connection went back to the pool and on to another request) stops its
// own request's watch only.
type endWatcher interface {
	Done() <-chan struct{}
	// WatchEnd calls f once when the context ends (now when it has
	// ended); ok is false when it cannot take the watch.
	WatchEnd(f func()) (seq uint64, ok bool)
	// StopWatch reports whether it removed watch seq before it ran.
	StopWatch(seq uint64) bool
}

// endWatch is a request's watch on its context, which unblocks the
// connection's reads and writes when the context ends: an endWatcher's,
// or else context.AfterFunc's (afterStop).
type endWatch struct {
	w         endWatcher
	seq       uint64
	afterStop func() bool
}

// watchEnd has f called when ctx ends. The request's context's own watch
// serves only when ctx ends exactly when it does (the same Done channel):
// a context derived with a deadline or a cancel of its own (a per-try
// timeout) ends on its own, and gets context.AfterFunc.
func watchEnd(ctx context.Context, f func()) endWatch {
	if w, ok := ctx.Value(h1.EndWatchKey{}).(endWatcher); ok && w.Done() == ctx.Done() {
		if seq, ok := w.WatchEnd(f); ok {
			return endWatch{w: w, seq: seq}
		}
	}
	return endWatch{afterStop: context.AfterFunc(ctx, f)}
}

// stop reports, as the stop func of context.AfterFunc, whether it stopped
// the watch before its function ran.
func (e *endWatch) stop() bool {
	if e.w != nil {
		return e.w.StopWatch(e.seq)
	}
	return e.afterStop()
}

// sendsItself reports whether H1 sends req itself (see H1 for what it
// leaves to the fallback).
func (t *H1) sendsItself(req *http.Request) bool {
	scheme := "http"
	if t.tls != nil {
		scheme = "https"
	}
	if req.URL == nil || req.URL.Scheme != scheme || req.URL.Host == "" || req.Method == http.MethodConnect {
		return false
	}
	switch len(req.TransferEncoding) {
	case 0:
		return true
	case 1:
		return req.TransferEncoding[0] == "chunked"
	}
	return false
}

// KeepsNothingOf reports whether H1 sends req itself and holds nothing of
// it once RoundTrip has returned and the response body is closed: a
// request without a body, whose head H1 writes on the calling goroutine
// (a body is written by a goroutine of its own, body.go, and the fallback
// http.Transport's write loop may still hold a request after its
// response). The forwarder reuses such a request's header map for
// another request (gateway/direct.go: outboundHeader).
func (t *H1) KeepsNothingOf(req *http.Request) bool {
	return !hasBody(req) && t.sendsItself(req)
}

// Fallback is the http.Transport that carries every request H1 does not
// send itself (BenchmarkUpstreamTransport compares the two).
func (t *H1) Fallback() *http.Transport { return t.fallback }

func (t *H1) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.sendsItself(req) {
		return t.fallback.RoundTrip(withEmptyGuard(req))
	}
	var head h1.RequestHead
	if err := newRequestHead(req, &head); err != nil {
		closeBody(req)
		return nil, err
	}
	ctx := req.Context()
	for {
		c, reused, err := t.getConn(ctx, req.URL.Host)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := c.roundTrip(ctx, req, &head)
		if err == nil {
			return resp, nil
		}
		c.close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, errStaleConn) {
			if reused {
				// The upstream closed the connection while it sat idle
				// and saw nothing of this request (errStaleConn says when
				// that is known): send it on another one.
				continue
			}
			closeBody(req)
		}
		return nil, err
	}
}

// newRequestHead is the head H1 writes for req: its framing from the body
// (a length when known, else chunked; chunked too when there are trailers,
// which only chunked can carry), checked (h1.RequestHead.Check) before
// anything is written.
func newRequestHead(req *http.Request, h *h1.RequestHead) error {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	*h = h1.RequestHead{
		Method: req.Method,
		Target: req.URL.RequestURI(),
		Host:   host,
		Header: req.Header,
		Close:  req.Close,
	}
	switch {
	case !hasBody(req):
		if req.ContentLength > 0 {
			return fmt.Errorf("request: ContentLength=%d with no body", req.ContentLength)
		}
		// As net/http: a body-less POST, PUT or PATCH says so, for
		// servers that answer 411 Length Required otherwise.
		if req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
			h.Framing = h1.Length
		}
	case req.ContentLength > 0 && len(req.Trailer) == 0 && len(req.TransferEncoding) == 0:
		h.Framing, h.ContentLength = h1.Length, req.ContentLength
	default:
		// Unknown length (0 with a body means unknown, as in net/http).
		h.Framing, h.Trailer = h1.Chunked, req.Trailer
	}
	return h.Check()
}

func hasBody(req *http.Request) bool { return req.Body != nil && req.Body != http.NoBody }

func closeBody(req *http.Request) {
	if hasBody(req) {
		_ = req.Body.Close()
	}
}

// replayable: what may be sent again after bytes of it reached a
// connection the upstream had already closed (as net/http decides).
func replayable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return !hasBody(req)
	}
	return false
}

// certExpiryMargin is how long before a certificate of its handshake
// expires a TLS connection stops being reused. A request taken onto it
// just before the expiry would reach the peer just after it (a sidecar
// checks the caller's certificate at every request), and a loaded
// machine's request latency is far below this; a certificate renewed as it
// should be (SPIRE at half its life, `causeway ca issue` at two thirds)
// has long been replaced by then, so only connections made with the old
// one are retired.
const certExpiryMargin = 2 * time.Second

// errStaleConn is a reused connection that ended before any byte of the
// response arrived, for a request that may be sent again: one of which no
// byte reached the socket, or a replayable one.
var errStaleConn = errors.New("upstream closed an idle connection")

func (t *H1) getConn(ctx context.Context, host string) (*h1Conn, bool, error) {
	now := time.Now()
	t.mu.Lock()
	stack := t.idle[host]
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack[len(stack)-1] = nil
		stack = stack[:len(stack)-1]
		c.inIdle = false
		if t.idleTimeout > 0 && now.Sub(c.idleAt) > t.idleTimeout {
			// The stack is stored before the lock is let go and read
			// again after: another request in between must neither take
			// the slot just emptied nor have its put-back overwritten.
			t.setIdle(host, stack)
			t.mu.Unlock()
			c.close()
			t.mu.Lock()
			stack = t.idle[host]
			continue
		}
		t.setIdle(host, stack)
		t.mu.Unlock()
		// Bytes that arrived while c sat idle answer nothing we asked
		// (a late body after a HEAD, an unsolicited response), and an EOF
		// means the upstream is gone: either way the next request must
		// not read from c.
		// A connection outlives the handshake that checked the
		// certificates: past the validity of one of them (the upstream's,
		// or our own, since rotated) the peer would no longer accept it, and
		// a sidecar refuses a caller whose certificate expired on an open
		// connection. A new connection presents the current certificate.
		// Nor is it reused once its peer would no longer be accepted by a
		// new handshake (recheck): a root removed from the bundle cuts
		// off connections made before, as the sidecar's inbound side
		// cuts off its callers' (mesh.PeerIDs.Verified).
		if !c.quiet() || (!c.certsUntil.IsZero() && !t.now().Add(certExpiryMargin).Before(c.certsUntil)) ||
			(c.state != nil && t.recheck(*c.state) != nil) {
			c.close()
			t.mu.Lock()
			stack = t.idle[host]
			continue
		}
		return c, true, nil
	}
	t.setIdle(host, stack)
	t.mu.Unlock()

	if t.tls != nil {
		tc, rc, until, err := t.dialTLS(ctx, host, t.tls)
		if err != nil {
			return nil, false, err
		}
		c := t.newConn(host, tc)
		c.setTLS(tc, rc, until)
		return c, false, nil
	}
	nc, err := t.dial(ctx, "tcp", host)
	if err != nil {
		return nil, false, err
	}
	c := t.newConn(host, nc)
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw, c.peek = raw, c.peekSocket
		}
	}
	return c, false, nil
}

// newConn sets up a connection's buffers over nc (the socket, or the TLS
// connection over it).
func (t *H1) newConn(host string, nc net.Conn) *h1Conn {
	c := &h1Conn{t: t, host: host, nc: nc, br: bufio.NewReaderSize(nc, 4<<10)}
	c.unblock = c.unblockIO
	c.cw.nc = nc
	c.bw = bufio.NewWriterSize(&c.cw, 4<<10)
	c.send.init(c)
	// net/http refuses a trailer section that does not fit its read
	// buffer (TrailerLimit): so does this reader, as sent; CheckTrailer
	// then holds the fields read to the same bound as every transport's.
	c.chunked.LimitTrailers(TrailerLimit)
	return c
}

// setTLS records c's TLS connection, the socket under it and the earliest
// expiry of its handshake's certificates; and its state, when t rechecks
// its peers before reuse.
func (c *h1Conn) setTLS(tc *tls.Conn, rc *recordConn, until time.Time) {
	c.tc, c.rc, c.certsUntil = tc, rc, until
	if c.t.recheck != nil {
		cs := tc.ConnectionState()
		c.state = &cs
	}
}

// setIdle stores host's idle stack; an empty one is dropped, so endpoints
// that discovery has long replaced leave no entry behind. t.mu is held.
func (t *H1) setIdle(host string, stack []*h1Conn) {
	if len(stack) == 0 {
		delete(t.idle, host)
		return
	}
	t.idle[host] = stack
}

// putConn makes c idle, or closes it when the pool is full or closed.
func (t *H1) putConn(c *h1Conn) {
	t.mu.Lock()
	if t.closed || len(t.idle[c.host]) >= t.maxIdle {
		t.mu.Unlock()
		c.close()
		return
	}
	c.idleAt = time.Now()
	c.inIdle = true
	// The timer is armed before another request can take c from the
	// stack: c.timer is only armed under t.mu. A timer still pending
	// from an earlier idle period fires early and re-arms itself for
	// the rest of this one (expire).
	if t.idleTimeout > 0 && !c.timerArmed {
		if c.timer == nil {
			c.timer = time.AfterFunc(t.idleTimeout, c.expire)
		} else {
			c.timer.Reset(t.idleTimeout)
		}
		c.timerArmed = true
	}
	stack := t.idle[c.host]
	if len(stack) == 0 {
		stack = c.alone[:0:1]
	}
	t.idle[c.host] = append(stack, c)
	t.mu.Unlock()
}

// expire closes c if it is still idle when its timer fires and has been
// idle for the whole idle timeout; a connection used since the timer was
// armed gets it re-armed for what is left of its current idle period (or
// armed again by the next putConn, when it is busy now).
func (c *h1Conn) expire() {
	t := c.t
	t.mu.Lock()
	c.timerArmed = false
	if !c.inIdle {
		t.mu.Unlock()
		return
	}
	if left := t.idleTimeout - time.Since(c.idleAt); left > 0 {
		c.timer.Reset(left)
		c.timerArmed = true
		t.mu.Unlock()
		return
	}
	stack := t.idle[c.host]
	for i, x := range stack {
		if x == c {
			stack = append(stack[:i], stack[i+1:]...)
			break
		}
	}
	t.setIdle(c.host, stack)
	c.inIdle = false
	t.mu.Unlock()
	c.close()
}

// CloseIdleConnections closes the idle connections of both paths; the pool
// keeps no connection returned to it afterwards (it is being retired).
func (t *H1) CloseIdleConnections() {
	t.mu.Lock()
	t.closed = true
	var all []*h1Conn
	for h, stack := range t.idle {
		for _, c := range stack {
			c.inIdle = false
			all = append(all, c)
		}
		delete(t.idle, h)
	}
	t.mu.Unlock()
	for _, c := range all {
		c.close()
	}
	t.fallback.CloseIdleConnections()
}

// close closes c's socket and stops its idle timer, which may still be
// pending from an earlier idle period (putConn): a pending timer would keep
// the dead connection and its buffers reachable until it fires. c.timer is
// set once, under t.mu, before c is first put in the pool, and a closing
// connection is in no request's hands and no longer idle. Over TLS the
// socket is closed directly, skipping the close_notify alert, whose write
// could wait on an upstream that reads nothing.
func (c *h1Conn) close() {
	if c.rc != nil {
		_ = c.rc.Close()
	} else {
		_ = c.nc.Close()
	}
	c.t.mu.Lock()
	tm := c.timer
	c.timerArmed = false
	c.t.mu.Unlock()
	if tm != nil {
		tm.Stop()
	}
}

// aLongTimeAgo is a deadline that makes blocked reads and writes return.
var aLongTimeAgo = time.Unix(1, 0)

// maxInformational bounds the 1xx responses read before the final one.
const maxInformational = 5

func (c *h1Conn) roundTrip(ctx context.Context, req *http.Request, h *h1.RequestHead) (*http.Response, error) {
	// A client that leaves (or a per-try deadline) unblocks the reads and
	// writes below, and later the body's.
	watch := watchEnd(ctx, c.unblock)
	body := hasBody(req)
	upgrade := requestedUpgrade(req)
	c.sending = false
	if c.t.headerTimeout > 0 && !body {
		// With a body, the wait for the answer is bounded from the end of
		// the body on (bodySend.armReadDeadline), as http.Transport
		// bounds it.
		_ = c.nc.SetReadDeadline(time.Now().Add(c.t.headerTimeout))
	}
	written := c.cw.n
	err := h.Write(c.bw)
	if err == nil {
		err = c.bw.Flush()
	}
	if err == nil && !body {
		// The first byte tells a live connection from one the upstream
		// closed while it was idle (EOF, or a reset for what we sent).
		_, err = c.br.Peek(1)
	}
	if err != nil {
		watch.stop()
		if (c.cw.n == written || replayable(req)) &&
			(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
			return nil, fmt.Errorf("%w: %w", errStaleConn, err)
		}
		closeBody(req)
		return nil, err
	}
	if body {
		c.sending = true
		c.send.start(ctx, req, h)
	}
	var resp *http.Response
	var rbody *h1Body // allocated with resp, used when it has a body
	continued := false
	for informational := 0; ; informational++ {
		head, inBuffer, err := c.readHead()
		if err != nil {
			watch.stop()
			return nil, c.send.failed(err)
		}
		// A 1xx head is checked as a final one is: net/http refuses the
		// same malformed heads whatever their status.
		a, err := c.newResponse(req, head)
		_, _ = c.br.Discard(inBuffer)
		if err != nil {
			watch.stop()
			return nil, err
		}
		resp, rbody = &a.resp, &a.body
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols && upgrade != "" {
			break
		}
		if resp.StatusCode == http.StatusContinue && c.sending {
			continued = true
			c.send.decide(expectSend)
		}
		if resp.StatusCode == http.StatusSwitchingProtocols || informational >= maxInformational {
			watch.stop()
			return nil, fmt.Errorf("upstream sent an unexpected %d response", resp.StatusCode)
		}
		// 103 Early Hints and the like: ReverseProxy forwards them
		// through the trace hook, as http.Transport would call it.
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				watch.stop()
				return nil, err
			}
		}
	}
	// A body still waiting for a 100 Continue is not sent once the final
	// answer is in (bodySend.answered). One still being written when the
	// answer came may be written whole later, into the socket's buffers,
	// without the upstream ever reading it (body.go): not reused either.
	//
	// An Expect whose final answer came without a 100, after the timeout
	// sent the body anyway: the upstream answered without asking for the
	// body and may not read it (RFC 9110 10.1.1 leaves it to read or to
	// close): not reused.
	unsent := c.sending && (c.send.answered() || !c.send.whole.Load() || c.send.asked && !continued)
	if c.t.headerTimeout > 0 {
		c.send.clearReadDeadline(ctx)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// A copy of the watch goes with the tunnel: handing out the
		// method value of watch itself would move it to the heap for
		// every request, not only for upgrades.
		w := watch
		return c.switched(resp, w.stop, upgrade)
	}
	// A response to HEAD ends at its headers, but servers that also write
	// the body for HEAD are a classic bug. Such a body may arrive after
	// the checks in release and getConn have looked, and the next request
	// would read it as its answer: HTTP/1.1 cannot tell late bytes from a
	// response. HEAD is rare enough that a fresh connection costs nothing
	// that matters.
	//
	// The same holds for 204 and 304, which end at their headers whatever
	// the request; a body after them is the same bug, and its bytes can
	// arrive after both checks too (TestEdgeNeverLeaksLateBodiesAfterEmpty-
	// Responses, where they come 1 ms late). A 304 costs the next request a
	// new connection; that is the price of never reading another
	// response's bytes.
	//
	// A body that was announced but never sent (the answer came first)
	// leaves the upstream waiting for it, or reading the next request as
	// that body: not reused either. Nor is a declined upgrade's
	// (upgrade.go).
	keep := !resp.Close && !req.Close && req.Method != http.MethodHead && !unsent && upgrade == "" &&
		resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified
	switch f := c.head.Framing(req.Method); {
	case f == h1.Chunked:
		c.chunked.Reset(c.br)
		fallthrough
	case f == h1.ToClose, f == h1.Length && c.head.ContentLength > 0:
		*rbody = h1Body{c: c, resp: resp, watch: watch, keep: keep, framing: f, left: c.head.ContentLength}
		resp.Body = rbody
		return resp, nil
	}
	// No body by rule, or Content-Length: 0 (http.NoBody, as net/http).
	c.release(&watch, keep)
	return resp, nil
}

// release ends c's use by one request: back to the pool when the response
// was read whole on a connection that stays open, the request's body (if
// any) was written whole, and the request's context never touched its
// deadline.
func (c *h1Conn) release(watch *endWatch, keep bool) {
	if keep && c.sending {
		keep = c.send.wait()
	}
	// Bytes after the response are not an answer to anything we asked:
	// the connection is out of step and is not reused. Those already
	// buffered are seen here; the socket itself is asked only by getConn,
	// right before the connection is used again: bytes never leave a
	// socket unread, so whatever a look here could find, that look finds
	// too, and it is the one that guards the next request. (Asking here
	// as well cost one system call per request and changed nothing but
	// how long a spoiled connection sits in the pool before it is closed.)
	// A connection quiet cannot ask (no raw socket, no TLS) is never
	// pooled.
	if watch.stop() && keep && c.br.Buffered() == 0 && (c.raw != nil || c.tc != nil) {
		c.t.putConn(c)
		return
	}
	c.close()
}

// quiet reports whether nothing at all is waiting to be read on c: no
// buffered or unread bytes and no EOF. It asks the socket without
// blocking (recv with MSG_PEEK|MSG_DONTWAIT), so a reused connection
// costs one system call more and no goroutine, where net/http keeps a
// reader goroutine per idle connection for the same purpose. A connection
// that cannot be asked is never reused.
func (c *h1Conn) quiet() bool {
	if c.tc != nil {
		return c.quietTLS()
	}
	if c.br.Buffered() > 0 || c.raw == nil {
		return false
	}
	c.peekEmpty = false
	return c.raw.Read(c.peek) == nil && c.peekEmpty
}

// peekSocket is quiet's look at the socket. It never asks to wait for
// readiness: EAGAIN means nothing is there; no error means a byte (or,
// with nothing read, EOF).
func (c *h1Conn) peekSocket(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	c.peekEmpty = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
	return true
}

// h1Body is a response body, framed as its head says, that gives its
// connection back at EOF. Close may come from another goroutine while a
// Read is blocked: it closes the connection, which ends that Read.
type h1Body struct {
	c       *h1Conn
	resp    *http.Response // its Trailer is filled at the end of a chunked body
	watch   endWatch       // the request's; never another's (endWatcher)
	keep    bool
	framing h1.Framing // Length, Chunked or ToClose
	left    int64      // Length: the bytes still to come
	// state: 0 reading, 1 read whole (connection released), 2 closed early.
	state atomic.Int32
	// ended is set by the first Close, which calls ender (OnBodyClose).
	ended atomic.Bool
	ender BodyEnder
}

// BodyEnder is told when the caller closes a response body (OnBodyClose).
type BodyEnder interface{ BodyEnded() }

// OnBodyClose arranges for e.BodyEnded to be called once, by the first
// Close of resp's body and after the body's own closing, as a wrapper of
// the body whose Close called it would, without the wrapper's allocation.
// It reports false when resp's body is not H1's own body of resp (no body,
// http.NoBody, another transport's, or a body already wrapped) or has an
// ender already: the caller wraps the body then. Call it before resp's
// body reaches another goroutine.
func OnBodyClose(resp *http.Response, e BodyEnder) bool {
	b, ok := resp.Body.(*h1Body)
	if !ok || b.resp != resp || b.ender != nil || e == nil {
		return false
	}
	b.ender = e
	return true
}

func (b *h1Body) Read(p []byte) (int, error) {
	switch b.state.Load() {
	case 1:
		return 0, io.EOF
	case 2:
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.read(p)
	switch {
	case errors.Is(err, io.EOF):
		if b.state.CompareAndSwap(0, 1) {
			b.c.release(&b.watch, b.keep)
		}
	case err != nil:
		if b.state.CompareAndSwap(0, 2) {
			b.watch.stop()
			b.c.close()
		}
	}
	return n, err
}

// read reads the body as framed. A Content-Length body ends with its last
// byte (io.EOF comes with it, which releases the connection at once); one
// cut short is io.ErrUnexpectedEOF, as net/http reports it.
func (b *h1Body) read(p []byte) (int, error) {
	switch b.framing {
	case h1.Chunked:
		n, err := b.c.chunked.Read(p)
		if errors.Is(err, io.EOF) {
			if terr := readTrailers(b.resp, b.c.chunked.Trailers()); terr != nil {
				return n, terr
			}
		}
		return n, err
	case h1.Length:
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
		n, err := b.c.br.Read(p)
		b.left -= int64(n)
		if b.left == 0 {
			return n, io.EOF
		}
		return n, unexpectedEOF(err)
	}
	// Delimited by the close: its EOF is the end, over TLS only when the
	// upstream said so with close_notify. A bare FIN (a crashed upstream,
	// a cut connection) cannot be told from the end over plain TCP, but
	// over TLS it can, and a client must not get the cut body as whole.
	n, err := b.c.br.Read(p)
	if errors.Is(err, io.EOF) && b.c.rc != nil && b.c.rc.socketEOF {
		err = errNoCloseNotify
	}
	return n, err
}

// Close before EOF closes the connection: what is left of the body is not
// worth reading (http.Transport does the same).
func (b *h1Body) Close() error {
	if b.state.CompareAndSwap(0, 2) {
		b.watch.stop()
		b.c.close()
	}
	if b.ender != nil && b.ended.CompareAndSwap(false, true) {
		b.ender.BodyEnded()
	}
	return nil
}
