package transport

import (
	"bufio"
	"context"
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

	"golang.org/x/net/http/httpguts"

	"github.com/causewayhq/causeway/gateway/internal/h1"
)

// H1 sends the most common upstream request — a replayable method
// (GET, HEAD, OPTIONS, TRACE) without a body, to a plain-TCP HTTP/1.1
// upstream — on the calling goroutine: it writes the request, reads the
// response headers and hands back a body that returns the connection to the
// pool at EOF. http.Transport runs a read and a write goroutine per
// connection and passes every request and response between them through
// channels; for a small response on a keep-alive connection that hand-off
// cost as much CPU as the proxying itself (profile of the plain proxy under
// wrk). Everything else — bodies, upgrades, Expect, TLS, HTTP/2 — goes to
// the fallback http.Transport, which also keeps its own connections.
type H1 struct {
	fallback      *http.Transport
	dial          func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle       int           // per host; 0 keeps none
	idleTimeout   time.Duration // an idle connection older than this is closed
	headerTimeout time.Duration // 0: no bound on the wait for response headers
	lim           h1.Limits     // bounds of a response head (response.go)

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
		lim:           responseLimits(fallback.MaxResponseHeaderBytes),
		idle:          map[string][]*h1Conn{},
	}
}

// h1Conn is one upstream connection. It belongs to the pool while idle and
// to exactly one request (and then that request's response body) otherwise.
type h1Conn struct {
	t      *H1
	host   string
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
	timer  *time.Timer // closes the connection when it stays idle too long
	inIdle bool        // guarded by t.mu

	// raw and peek serve quiet; both are made once per connection, so the
	// check allocates nothing per request.
	raw       syscall.RawConn
	peek      func(fd uintptr) bool
	peekEmpty bool

	// The response being read: its parsed head (the fields array is
	// kept from response to response) and, for a chunked body, its
	// reader. Both belong to the request that holds the connection.
	head    h1.Response
	chunked h1.ChunkedReader
}

// fastPath reports whether req can take the calling-goroutine path.
func (t *H1) fastPath(req *http.Request) bool {
	if req.URL == nil || req.URL.Scheme != "http" || req.URL.Host == "" {
		return false
	}
	if req.Body != nil && req.Body != http.NoBody || req.ContentLength != 0 {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
	default:
		// Only these may be sent again when a reused connection turns
		// out to have been closed by the upstream while idle.
		return false
	}
	if _, ok := req.Header["Upgrade"]; ok {
		return false
	}
	if _, ok := req.Header["Expect"]; ok {
		return false
	}
	return len(req.TransferEncoding) == 0 && req.Trailer == nil
}

// Fallback is the http.Transport that carries every request H1 does not
// send itself (BenchmarkUpstreamTransport compares the two).
func (t *H1) Fallback() *http.Transport { return t.fallback }

func (t *H1) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.fastPath(req) {
		return t.fallback.RoundTrip(withEmptyGuard(req))
	}
	if err := validHeaders(req.Header); err != nil {
		return nil, err
	}
	ctx := req.Context()
	for {
		c, reused, err := t.getConn(ctx, req.URL.Host)
		if err != nil {
			return nil, err
		}
		resp, err := c.roundTrip(ctx, req)
		if err == nil {
			return resp, nil
		}
		c.close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if reused && errors.Is(err, errStaleConn) {
			// The upstream closed the connection while it sat idle and
			// saw nothing of this request: send it on another one.
			continue
		}
		return nil, err
	}
}

// validHeaders refuses what http.Transport refuses: a field that would
// split or corrupt the request on the wire.
func validHeaders(h http.Header) error {
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("net/http: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("net/http: invalid header field value for %q", k)
			}
		}
	}
	return nil
}

// errStaleConn is a reused connection that ended before any byte of the
// response arrived.
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
			t.mu.Unlock()
			c.close()
			t.mu.Lock()
			continue
		}
		if c.timer != nil {
			c.timer.Stop()
		}
		t.setIdle(host, stack)
		t.mu.Unlock()
		// Bytes that arrived while c sat idle answer nothing we asked
		// (a late body after a HEAD, an unsolicited response), and an EOF
		// means the upstream is gone: either way the next request must
		// not read from c.
		if !c.quiet() {
			c.close()
			t.mu.Lock()
			stack = t.idle[host]
			continue
		}
		return c, true, nil
	}
	t.setIdle(host, stack)
	t.mu.Unlock()

	nc, err := t.dial(ctx, "tcp", host)
	if err != nil {
		return nil, false, err
	}
	c := &h1Conn{t: t, host: host, nc: nc, br: bufio.NewReaderSize(nc, 4<<10), bw: bufio.NewWriterSize(nc, 4<<10)}
	// net/http refuses a trailer section that does not fit its read
	// buffer: so does this reader, with a buffer of the same size.
	c.chunked.LimitTrailers(c.br.Size())
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw, c.peek = raw, c.peekSocket
		}
	}
	return c, false, nil
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
	// stack (and stop it): c.timer is only touched under t.mu.
	if t.idleTimeout > 0 {
		if c.timer == nil {
			c.timer = time.AfterFunc(t.idleTimeout, c.expire)
		} else {
			c.timer.Reset(t.idleTimeout)
		}
	}
	t.idle[c.host] = append(t.idle[c.host], c)
	t.mu.Unlock()
}

// expire closes c if it is still idle when its timer fires.
func (c *h1Conn) expire() {
	t := c.t
	t.mu.Lock()
	if !c.inIdle {
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
	for _, c := range all {
		if c.timer != nil {
			c.timer.Stop()
		}
	}
	t.mu.Unlock()
	for _, c := range all {
		c.close()
	}
	t.fallback.CloseIdleConnections()
}

func (c *h1Conn) close() { _ = c.nc.Close() }

// aLongTimeAgo is a deadline that makes blocked reads and writes return.
var aLongTimeAgo = time.Unix(1, 0)

// maxInformational bounds the 1xx responses read before the final one.
const maxInformational = 5

func (c *h1Conn) roundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	// A client that leaves (or a per-try deadline) unblocks the reads and
	// writes below, and later the body's.
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(aLongTimeAgo) })
	if c.t.headerTimeout > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(c.t.headerTimeout))
	}
	err := req.Write(c.bw)
	if err == nil {
		err = c.bw.Flush()
	}
	if err == nil {
		// The first byte tells a live connection from one the upstream
		// closed while it was idle (EOF, or a reset for what we sent).
		_, err = c.br.Peek(1)
	}
	if err != nil {
		stop()
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
			return nil, fmt.Errorf("%w: %w", errStaleConn, err)
		}
		return nil, err
	}
	var resp *http.Response
	for informational := 0; ; informational++ {
		head, inBuffer, err := c.readHead()
		if err != nil {
			stop()
			return nil, err
		}
		// A 1xx head is checked as a final one is: net/http refuses the
		// same malformed heads whatever their status.
		resp, err = c.newResponse(req, head)
		_, _ = c.br.Discard(inBuffer)
		if err != nil {
			stop()
			return nil, err
		}
		if resp.StatusCode >= 200 {
			break
		}
		if resp.StatusCode == http.StatusSwitchingProtocols || informational >= maxInformational {
			stop()
			return nil, fmt.Errorf("upstream sent an unexpected %d response", resp.StatusCode)
		}
		// 103 Early Hints and the like: ReverseProxy forwards them
		// through the trace hook, as http.Transport would call it.
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				stop()
				return nil, err
			}
		}
	}
	if c.t.headerTimeout > 0 {
		_ = c.nc.SetReadDeadline(time.Time{})
		if ctx.Err() != nil {
			// The context ended while the deadline was being cleared:
			// its AfterFunc may have run just before, so expire it again
			// or the body's reads would no longer notice.
			_ = c.nc.SetDeadline(aLongTimeAgo)
		}
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
	keep := !resp.Close && !req.Close && req.Method != http.MethodHead &&
		resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified
	switch f := c.head.Framing(req.Method); {
	case f == h1.Chunked:
		c.chunked.Reset(c.br)
		fallthrough
	case f == h1.ToClose, f == h1.Length && c.head.ContentLength > 0:
		resp.Body = &h1Body{c: c, resp: resp, stop: stop, keep: keep, framing: f, left: c.head.ContentLength}
		return resp, nil
	}
	// No body by rule, or Content-Length: 0 (http.NoBody, as net/http).
	c.release(stop, keep)
	return resp, nil
}

// release ends c's use by one request: back to the pool when the response
// was read whole on a connection that stays open and the request's context
// never touched its deadline.
func (c *h1Conn) release(stop func() bool, keep bool) {
	// Bytes after the response are not an answer to anything we asked:
	// the connection is out of step and is not reused.
	if stop() && keep && c.quiet() {
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
	stop    func() bool
	keep    bool
	framing h1.Framing // Length, Chunked or ToClose
	left    int64      // Length: the bytes still to come
	// state: 0 reading, 1 read whole (connection released), 2 closed early.
	state atomic.Int32
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
			b.c.release(b.stop, b.keep)
		}
	case err != nil:
		if b.state.CompareAndSwap(0, 2) {
			b.stop()
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
	// Delimited by the close: its EOF is the end.
	return b.c.br.Read(p)
}

// Close before EOF closes the connection: what is left of the body is not
// worth reading (http.Transport does the same).
func (b *h1Body) Close() error {
	if b.state.CompareAndSwap(0, 2) {
		b.stop()
		b.c.close()
	}
	return nil
}
