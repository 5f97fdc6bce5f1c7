package h1server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/h1"
)

// Connection states, for Shutdown: only an idle connection (or a new one
// that has sent nothing for newIdleAfter) is closed under it.
const (
	stateNew int32 = iota
	stateActive
	stateIdle
	stateGone // closed by Shutdown, hijacked, or handed to HTTP/2
	// stateParked: idle without a goroutine, owned by the server's parker
	// (park_linux.go) until it hands the connection back.
	stateParked
)

// newIdleAfter is how long a connection that has sent nothing since it was
// accepted counts as active for Shutdown, as in net/http.
const newIdleAfter = 5 * time.Second

// Buffer sizes. Reads start in a small buffer; a head that does not fit
// moves to one of MaxHeaderBytes. Response bodies smaller than
// bufferBeforeChunking that are complete when the handler returns go out
// with a Content-Length instead of chunked (net/http does the same).
const (
	smallReadSize        = 4 << 10
	writeSize            = 4 << 10
	bufferBeforeChunking = 2 << 10
)

var (
	smallReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, smallReadSize) }}
	writers      = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeSize) }}
	// pendings hold response bodies until their head goes out.
	pendings = sync.Pool{New: func() any { return new([bufferBeforeChunking]byte) }}
	// fieldArrays hold the parsed heads' field arrays between requests.
	fieldArrays = sync.Pool{New: func() any { return new(fieldArray) }}
	// largeReaders holds the buffers of heads over smallReadSize, by size.
	largeReaders sync.Map // int -> *sync.Pool
)

func largePool(size int) *sync.Pool {
	if p, ok := largeReaders.Load(size); ok {
		return p.(*sync.Pool)
	}
	p, _ := largeReaders.LoadOrStore(size, &sync.Pool{New: func() any { return bufio.NewReaderSize(nil, size) }})
	return p.(*sync.Pool)
}

// fieldArray is a head's field array as the pool holds it (a pointer, so
// that putting it back allocates nothing).
type fieldArray struct{ hs []h1.Header }

// conn is one client connection: what it keeps for its whole life, and
// all a parked connection holds. What serving a request needs (buffers
// while a request is read or answered, the parsed head, the chunked
// reader, the background read, the context) is in a serving, taken from a
// pool when the connection's goroutine starts and given back when it
// parks or ends: 10,000 idle connections must not cost 10,000 of them.
type conn struct {
	srv *Server
	// netc is the accepted connection, never replaced: what Close and
	// Shutdown close from other goroutines. tlsc is the TLS connection
	// over it (nil for plain HTTP); rw is whichever requests are read
	// from.
	netc net.Conn
	tlsc *tls.Conn
	// raw is the socket, to wait for the next request without a buffer
	// (waitReadable) and to park (nil until the first wait).
	raw syscall.RawConn
	// sv is the serving state, nil while parked (or before the
	// goroutine starts, or once it has ended).
	sv *serving

	remoteAddr string
	since      atomic.Int64 // unix nanoseconds of the last state change
	// idleUntil is the current wait's idle deadline in unix nanoseconds
	// (zero: none); the parker orders parked connections by it.
	idleUntil int64
	// idleArmed: the socket's read deadline is deadline(idleUntil), for
	// the current wait (armIdle).
	idleArmed bool
	// parkToken is the epoll token while parked (the parker's, under its
	// mutex).
	parkToken uint64
	state     atomic.Int32
	heapIndex int32 // in the parker's deadline heap
	connIndex int32 // in the server's connSet (-1: not there)
	// hijacked: a handler took the connection (or the HTTP/2 server
	// did); the goroutine leaves it alone from then on, and its serving
	// state goes with it, never back to the pool.
	hijacked bool
	// servedOne: a request has been served (the HTTP/2 preface is looked
	// for only before the first).
	servedOne bool
	// noRaw: the connection exposes no socket.
	noRaw bool
	// woken: the parker handed the connection back to a new goroutine,
	// which goes on waiting for the request the parked one waited for.
	woken bool
}

// serving is a connection's state while a goroutine serves it. It goes
// back to servings only when nothing can reach it through the connection
// any more: never after a hijack or a hand-over to HTTP/2 (the reader
// handed out reads through its connReader), and only once a background
// read has been ended.
type serving struct {
	cr      connReader
	br      *bufio.Reader // nil while waiting for a request
	large   bool          // br is a large (head-sized) reader
	bw      *bufio.Writer // nil while waiting for a request
	head    h1.Request
	fields  *fieldArray // head.Headers' array, nil while waiting
	chunked h1.ChunkedReader
	// reqStart: when the current request's head was first waited for.
	reqStart time.Time
	// The wait for readability (waitReadable): peekFn is peek, made once
	// per serving rather than at every wait.
	peekFn    func(uintptr) bool
	peekErr   error
	peekWoken bool // peek has looked once in this wait
}

var servings = sync.Pool{New: func() any {
	sv := new(serving)
	sv.cr.cond.L = &sv.cr.mu
	sv.cr.sv = sv
	sv.peekFn = sv.peek
	return sv
}}

func (s *Server) newConn(netc net.Conn) *conn {
	c := &conn{srv: s, netc: netc, remoteAddr: netc.RemoteAddr().String(), connIndex: -1}
	c.setState(stateNew)
	return c
}

// rw is what requests are read from and responses written to.
func (c *conn) rw() net.Conn {
	if c.tlsc != nil {
		return c.tlsc
	}
	return c.netc
}

// attach gives c a serving state for its goroutine.
func (c *conn) attach() {
	sv := servings.Get().(*serving)
	sv.cr.mu.Lock()
	// The sweep may still hold the reader from the state's previous
	// connection: it finds it disarmed and drops it (bgSweep.sweep).
	sv.cr.c = c
	sv.cr.hasByte, sv.cr.inRead, sv.cr.aborted, sv.cr.detached = false, false, false, false
	sv.cr.armed.Store(0)
	sv.cr.cancel = nil
	sv.cr.mu.Unlock()
	c.sv = sv
}

// detach gives c's serving state back to the pool. The caller has
// released the buffers and ended any background read, and nothing was
// read ahead (cr.hasByte is false).
func (c *conn) detach() {
	sv := c.sv
	c.sv = nil
	sv.reqStart = time.Time{}
	sv.peekErr, sv.peekWoken = nil, false
	sv.cr.mu.Lock()
	sv.cr.c, sv.cr.cancel = nil, nil
	sv.cr.mu.Unlock()
	servings.Put(sv)
}

// setState records c's state. Only a new connection's clock is read
// (closeIfIdle gives it newIdleAfter to send its first byte): the other
// states change twice per request, and time.Now is not free.
func (c *conn) setState(st int32) {
	if st == stateNew {
		c.since.Store(time.Now().UnixNano())
	}
	c.state.Store(st)
}

// closeIfIdle closes c if it waits for a request; the caller holds srv.mu.
func (c *conn) closeIfIdle() bool {
	st := c.state.Load()
	if st == stateNew && time.Since(time.Unix(0, c.since.Load())) < newIdleAfter {
		return false
	}
	if (st == stateIdle || st == stateNew) && c.state.CompareAndSwap(st, stateGone) {
		c.netc.Close()
		return true
	}
	return st == stateGone
}

// activate marks c as serving a request; false when Shutdown closed it as
// idle first.
func (c *conn) activate() bool {
	for {
		st := c.state.Load()
		if st == stateGone {
			return false
		}
		if st == stateActive || c.state.CompareAndSwap(st, stateActive) {
			return true
		}
	}
}

// serve is a new connection's goroutine; cfg is the TLS configuration
// (nil: plain HTTP).
func (c *conn) serve(cfg *tls.Config) { c.run(cfg, true) }

// resume is the goroutine of a connection the parker hands back.
func (c *conn) resume() { c.run(nil, false) }

// run serves c until it is closed, hijacked, handed to HTTP/2, or parked;
// start: c is new.
func (c *conn) run(cfg *tls.Config, start bool) {
	parked := false
	c.attach()
	defer func() {
		if err := recover(); err != nil {
			// A bug here must cost one connection, never the process.
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.srv.logf("h1server: panic serving %s: %v\n%s", c.remoteAddr, err, buf)
			c.rw().Close()
			parked = false
		}
		if parked {
			// The parker owns it now (its serving state went back
			// before it was parked).
			return
		}
		if !c.hijacked {
			c.release()
			if c.sv != nil {
				// A background read is ended (abortPendingRead) before
				// a request's handler returns or a panic is recovered.
				c.sv.cr.abortPendingRead()
				c.detach()
			}
		}
		c.srv.trackConn(c, false)
	}()
	if start && cfg != nil {
		if !c.handshake(cfg) {
			if !c.hijacked {
				c.netc.Close()
			}
			return
		}
	}
	var keep bool
	keep, parked = c.serveRequests(start)
	if !keep && !c.hijacked && c.state.Load() != stateGone {
		c.rw().Close()
	}
}

// handshake runs the TLS handshake under net/http's timeout (the shortest
// of the three read/write timeouts) and hands an "h2" connection over.
func (c *conn) handshake(cfg *tls.Config) bool {
	tc := tls.Server(c.netc, cfg)
	c.tlsc = tc
	if d := c.srv.handshakeTimeout(); d > 0 {
		dl := time.Now().Add(d)
		_ = tc.SetReadDeadline(dl)
		_ = tc.SetWriteDeadline(dl)
	}
	// The context cancels nothing, so crypto/tls starts no goroutine to
	// watch it: a Close interrupts the handshake by closing the socket.
	// It carries what a request's context does (ClientHelloInfo.Context).
	ctx := context.WithValue(c.srv.baseCtx, http.LocalAddrContextKey, c.netc.LocalAddr())
	if err := tc.HandshakeContext(ctx); err != nil {
		var re tls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader[:]) {
			// What net/http answers, so a client that got the scheme
			// wrong is told so.
			_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
			re.Conn.Close()
			return false
		}
		if !errors.Is(err, io.EOF) {
			c.srv.logf("h1server: TLS handshake error from %s: %v", c.remoteAddr, err)
		}
		return false
	}
	_ = tc.SetReadDeadline(time.Time{})
	_ = tc.SetWriteDeadline(time.Time{})
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		c.setState(stateGone)
		c.hijacked = true // the HTTP/2 server owns it now
		c.srv.trackConn(c, false)
		c.srv.serveH2(tc)
		return false
	}
	return true
}

func looksLikeHTTP(hdr []byte) bool {
	switch string(hdr) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

func (s *Server) handshakeTimeout() time.Duration {
	var d time.Duration
	for _, t := range []time.Duration{s.ReadHeaderTimeout, s.ReadTimeout, s.WriteTimeout} {
		if t > 0 && (d == 0 || t < d) {
			d = t
		}
	}
	return d
}

// release gives the buffers back (a hijacked connection keeps its reader).
func (c *conn) release() {
	c.releaseReader()
	c.releaseWriter()
}

func (c *conn) releaseReader() {
	sv := c.sv
	if sv == nil || sv.br == nil {
		return
	}
	// The parsed head and the chunked reader point into the buffer: an
	// idle connection must not keep it alive after it goes back. The
	// head's field array goes back too (a browser's head fills most of a
	// kilobyte of it).
	clear(sv.head.Headers[:cap(sv.head.Headers)])
	if sv.fields != nil {
		sv.fields.hs = sv.head.Headers[:0]
		fieldArrays.Put(sv.fields)
		sv.fields = nil
	}
	sv.head.Headers = nil
	sv.head.Reset()
	sv.chunked.Reset(nil)
	sv.br.Reset(nil)
	if sv.large {
		largePool(sv.br.Size()).Put(sv.br)
	} else {
		smallReaders.Put(sv.br)
	}
	sv.br, sv.large = nil, false
}

func (c *conn) releaseWriter() {
	sv := c.sv
	if sv == nil || sv.bw == nil {
		return
	}
	sv.bw.Reset(nil)
	writers.Put(sv.bw)
	sv.bw = nil
}

func (c *conn) reader() *bufio.Reader {
	sv := c.sv
	if sv.br == nil {
		sv.br = smallReaders.Get().(*bufio.Reader)
		sv.br.Reset(&sv.cr)
		sv.fields = fieldArrays.Get().(*fieldArray)
		sv.head.Headers = sv.fields.hs[:0]
	}
	return sv.br
}

func (c *conn) writer() *bufio.Writer {
	sv := c.sv
	if sv.bw == nil {
		sv.bw = writers.Get().(*bufio.Writer)
		sv.bw.Reset(c.rw())
	}
	return sv.bw
}

// grow moves the bytes read so far into a reader that can hold a whole
// head: a head over smallReadSize is rare, so its buffer is too.
func (c *conn) grow() {
	sv := c.sv
	size := c.srv.lim.MaxHeaderBytes + 1
	if sv.large || size <= sv.br.Size() {
		return
	}
	pending, _ := sv.br.Peek(sv.br.Buffered())
	big := largePool(size).Get().(*bufio.Reader)
	big.Reset(io.MultiReader(bytes.NewReader(bytes.Clone(pending)), &sv.cr))
	// Fill the new buffer with the old bytes now, so that the MultiReader
	// is only in the way until then.
	_, _ = big.Peek(len(pending))
	c.releaseReader()
	sv.br, sv.large = big, true
	sv.fields = fieldArrays.Get().(*fieldArray)
	sv.head.Headers = sv.fields.hs[:0]
}

// serveRequests reads and answers requests until the connection is done.
// It returns keep when the connection must stay open (hijacked, or handed
// to the HTTP/2 server), parked when the parker holds it (then keep too).
// first: nothing has been read from the connection yet.
func (c *conn) serveRequests(first bool) (keep, parked bool) {
	for {
		if first {
			// The first request's clock starts at accept, as in
			// net/http; later ones' when their first byte arrives.
			c.setReadDeadlines()
		}
		if !first || c.sv.br == nil || c.sv.br.Buffered() == 0 {
			switch c.waitForRequest(first) {
			case waitEnd:
				return c.hijacked, false
			case waitParked:
				return true, true
			}
		}
		if !c.activate() {
			return true, false // Shutdown closed it
		}
		if !first {
			c.setReadDeadlines()
		}
		first = false
		n, err := c.readHead(!c.servedOne)
		if err != nil {
			if errors.Is(err, errH2) {
				c.setState(stateGone)
				c.hijacked = true
				c.srv.trackConn(c, false)
				br := c.sv.br
				c.sv.br = nil // the replaying connection reads what it holds
				c.releaseWriter()
				_ = c.rw().SetReadDeadline(time.Time{})
				c.srv.serveH2(&replayConn{Conn: c.rw(), br: br})
				return true, false
			}
			var pe *h1.Error
			if errors.As(err, &pe) {
				c.refuse(pe.Status, pe.Msg)
			}
			return false, false
		}
		keep := c.serveOne(n)
		c.servedOne = true
		if c.hijacked {
			return true, false
		}
		if !keep || c.srv.shutting.Load() {
			return false, false
		}
		c.setState(stateIdle)
	}
}

// setReadDeadlines starts a request's read clock: the head must arrive
// within ReadHeaderTimeout (else ReadTimeout), the rest within ReadTimeout.
func (c *conn) setReadDeadlines() {
	s := c.srv
	c.sv.reqStart = time.Now()
	switch {
	case s.ReadHeaderTimeout > 0:
		_ = c.rw().SetReadDeadline(c.sv.reqStart.Add(s.ReadHeaderTimeout))
	case s.ReadTimeout > 0:
		_ = c.rw().SetReadDeadline(c.sv.reqStart.Add(s.ReadTimeout))
	default:
		_ = c.rw().SetReadDeadline(time.Time{})
	}
}

// errH2 is a connection that opened with the HTTP/2 preface.
var errH2 = errors.New("h1server: HTTP/2 preface")

// readHead reads until the buffer holds a whole head and parses it. A head
// is parsed once its end is in the buffer (or a limit is passed), not at
// every read: a client that sends a head a byte at a time must not make
// the server parse it from the start thousands of times.
// The HTTP/2 preface is looked for only at the start of a connection
// (first), as net/http does.
func (c *conn) readHead(first bool) (int, error) {
	br := c.reader()
	head, lim := &c.sv.head, &c.srv.lim
	scanned, lineChecked := 0, false
	for {
		buf, _ := br.Peek(br.Buffered())
		if first && c.srv.H2C && len(buf) > 0 && c.tlsc == nil {
			k := min(len(buf), len(h2Preface))
			if string(buf[:k]) == h2Preface[:k] {
				if k == len(h2Preface) {
					return 0, errH2
				}
				if _, err := br.Peek(br.Buffered() + 1); err != nil {
					return 0, err
				}
				continue
			}
		}
		ready := len(buf) > lim.MaxHeaderBytes ||
			bytes.Contains(buf[max(scanned-3, 0):], []byte("\r\n\r\n"))
		if !ready && len(buf) > lim.MaxRequestLine && bytes.IndexByte(buf, '\n') < 0 {
			ready = true // 414
		}
		if !ready && !lineChecked && bytes.IndexByte(buf, '\n') >= 0 {
			// The request line is complete: a malformed one is refused
			// before the rest is waited for.
			lineChecked = true
			if _, err := h1.Parse(buf, head, *lim); err != nil && !errors.Is(err, h1.ErrIncomplete) {
				return 0, err
			}
		}
		if ready {
			n, err := h1.Parse(buf, head, *lim)
			if !errors.Is(err, h1.ErrIncomplete) {
				return n, err
			}
		}
		scanned = len(buf)
		if br.Buffered() == br.Size() {
			c.grow()
			br = c.sv.br
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			if len(buf) > 0 && errors.Is(err, io.EOF) {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
	}
}

// waitOutcome is how a wait for the next request ended.
type waitOutcome int8

const (
	waitReady  waitOutcome = iota // a request's first byte is here
	waitEnd                       // close: timeout, EOF, error, or shutdown
	waitParked                    // the parker holds the connection
)

func readyIf(ok bool) waitOutcome {
	if ok {
		return waitReady
	}
	return waitEnd
}

// deadline is a unix-nanosecond deadline as a time (zero: none).
func deadline(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// waitForRequest waits for the first byte of the next request, with no
// buffer attached to the connection while it waits where that can be
// done, and, after a request, with no goroutine either once the wait has
// lasted parkAfter (waitOrPark). The idle clock is IdleTimeout (else
// ReadTimeout); the first request's is the header clock, already running.
func (c *conn) waitForRequest(first bool) waitOutcome {
	s := c.srv
	resumed := c.woken
	switch {
	case resumed:
		// Handed back by the parker: the same wait, on the same clock.
		c.woken = false
		if s.shutting.Load() {
			return waitEnd
		}
	case !first:
		c.setState(stateIdle)
		now := time.Now()
		switch {
		case s.IdleTimeout > 0:
			c.idleUntil = now.Add(s.IdleTimeout).UnixNano()
		case s.ReadTimeout > 0:
			c.idleUntil = now.Add(s.ReadTimeout).UnixNano()
		default:
			c.idleUntil = 0
		}
		// The idle clock goes on the socket only before a wait that
		// needs it (armIdle): a keep-alive client's next request mostly
		// arrives within hotWait (or waitOrPark's first wait), which sets
		// a deadline of its own, or is already buffered, and the request's header
		// clock replaces either. Set here as well, it was one more
		// deadline update (a runtime timer change) per request.
		c.idleArmed = false
		if out, ok := c.hotWait(now); ok {
			return out
		}
	}
	if c.sv.br != nil && c.sv.br.Buffered() > 0 {
		return waitReady
	}
	c.release()
	if !first && !c.sv.cr.hasByte {
		if out, ok := c.waitOrPark(resumed); ok {
			return out
		}
	}
	if !first {
		c.armIdle()
	}
	if c.tlsc == nil && !c.sv.cr.hasByte {
		if ok, err := c.waitReadable(); ok {
			return readyIf(err == nil)
		}
	}
	// No way to wait without reading: read one byte into the
	// connection's own one-byte buffer, then the rest into a buffer.
	return readyIf(c.sv.cr.readOneByte() == nil)
}

// armIdle puts the idle clock of the current wait on the socket, unless it
// is there already.
func (c *conn) armIdle() {
	if !c.idleArmed {
		_ = c.rw().SetReadDeadline(deadline(c.idleUntil))
		c.idleArmed = true
	}
}

// hotWait is the wait after a request on a plain connection that can be
// parked: for parkAfter it reads straight into the buffer the next head
// is parsed from, then parks as waitOrPark does. A keep-alive client
// that sends its next request at once (the common case under load) then
// costs one read and one deadline, where the wait without a buffer costs
// a peek, the read, and a deadline more. The buffers stay attached only
// for those few milliseconds; a parked connection holds none. ok is false
// when this wait does not apply (TLS, a byte or a pipelined head already
// held, no parking, the idle deadline comes sooner): the caller waits
// without a buffer, as before.
func (c *conn) hotWait(now time.Time) (waitOutcome, bool) {
	s, sv := c.srv, c.sv
	if sv.br != nil && sv.br.Buffered() > 0 {
		return waitReady, true
	}
	if c.tlsc != nil || sv.br == nil || sv.cr.hasByte || s.noPark || s.parkAfter < 0 {
		return 0, false
	}
	wait := s.parkAfter
	if wait == 0 {
		wait = defaultParkAfter
	}
	dl := now.Add(wait)
	if c.idleUntil != 0 && c.idleUntil <= dl.UnixNano() {
		return 0, false
	}
	if c.socket() == nil {
		return 0, false
	}
	p := s.parker()
	if p == nil {
		return 0, false
	}
	_ = c.rw().SetReadDeadline(dl)
	if _, err := sv.br.Peek(1); err == nil {
		return waitReady, true
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		return waitEnd, true
	}
	// Quiet for parkAfter: the buffers go back (nothing was read: a
	// timed-out read returns no bytes) and the connection parks. The
	// parker keeps the idle clock; armIdle puts it on the socket before
	// any wait on it.
	c.release()
	c.detach()
	if p.park(c) {
		return waitParked, true
	}
	c.attach()
	if c.state.Load() == stateGone {
		return waitEnd, true // Shutdown closed it
	}
	c.armIdle()
	ok, err := c.waitReadable()
	if !ok {
		err = c.sv.cr.readOneByte()
	}
	return readyIf(err == nil), true
}

// defaultParkAfter is how long a connection waits for its next request on
// its own goroutine before it is parked: a keep-alive client that sends
// its next request at once (a benchmark, a busy client) never pays for
// parking, one that goes quiet costs no goroutine from then on.
const defaultParkAfter = 5 * time.Millisecond

// waitOrPark waits for the next request for parkAfter, then parks the
// connection. ok is false when it cannot be parked (no socket, not
// Linux, the idle deadline comes sooner, the server is closing): then
// the caller waits as before. Only a connection with nothing buffered
// is parked: the caller released an empty reader, and crypto/tls gives
// whatever it holds (decrypted, or a whole record not yet decrypted) to a
// read before it touches the socket, so a read that times out proves it
// holds no request bytes. A partial record it keeps is completed by bytes
// that make the socket readable. resumed: the parker has just handed the
// connection back; it waits at least defaultParkAfter (what woke it is
// usually there to read) rather than go straight back.
func (c *conn) waitOrPark(resumed bool) (waitOutcome, bool) {
	s := c.srv
	if s.noPark {
		return 0, false
	}
	raw := c.socket()
	if raw == nil {
		return 0, false
	}
	p := s.parker()
	if p == nil {
		return 0, false
	}
	wait := s.parkAfter
	if wait == 0 || resumed {
		wait = max(wait, defaultParkAfter)
	}
	if wait > 0 {
		dl := time.Now().Add(wait)
		if c.idleUntil != 0 && c.idleUntil <= dl.UnixNano() {
			return 0, false
		}
		_ = c.rw().SetReadDeadline(dl)
		c.idleArmed = false
	} else if c.tlsc != nil {
		_ = c.rw().SetReadDeadline(aLongTimeAgo)
		c.idleArmed = false
	}
	if wait > 0 || c.tlsc != nil {
		var err error
		if c.tlsc == nil {
			_, err = c.waitReadable()
		} else {
			err = c.sv.cr.readOneByte()
		}
		if err == nil {
			return waitReady, true
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return waitEnd, true
		}
	}
	// The idle clock is not put back on the socket here: the parker keeps
	// it while the connection is parked, and waitForRequest puts it on
	// before the goroutine that takes the connection back (or this one,
	// when parking fails) waits on the socket again.
	// Nothing may run for the connection while it is parked, and it
	// keeps no buffer, timer, context or serving state: the next
	// goroutine takes them again. No background read is pending (the
	// request's ended before its handler returned) and no byte is held
	// (the caller checked).
	c.detach()
	if p.park(c) {
		return waitParked, true
	}
	c.attach()
	if c.state.Load() == stateGone {
		return waitEnd, true // Shutdown closed it
	}
	return 0, false
}

// refuse answers a request that cannot be served and closes: where the
// next request would start is not known.
func (c *conn) refuse(status int, msg string) {
	if c.srv.WriteTimeout > 0 {
		_ = c.rw().SetWriteDeadline(time.Now().Add(c.srv.WriteTimeout))
	}
	w := newResponse(c, nil)
	w.closeAfter = true
	writeError(w, status, msg)
	w.finish()
	c.closeGracefully()
}

// abort ends the connection of a response its handler abandoned (a panic,
// http.ErrAbortHandler: the forwarder's when the upstream's body broke
// off), so that the client can tell the answer was cut, and so that the
// answers before it still reach it.
//
// A response whose end the client finds by its framing (chunked, a
// Content-Length, or no body at all) is visibly cut by any close: the
// connection is closed as after a refusal (closeGracefully), write side
// first. A plain close with request bytes still unread in the socket
// sends a reset, and a reset makes the client's system discard what it
// had received and not yet read: a pipelining client lost the whole
// answers it was sent before this one.
//
// A body that ends at the close (HTTP/1.0, or no length given) would read
// as whole after any orderly close, the FIN or TLS close_notify: the
// connection is reset instead, which the client reads as an error.
func (c *conn) abort(w *response) {
	w.mu.Lock()
	// Late writes of a goroutine the handler left are refused from now
	// on: nothing more may reach the buffer being flushed below.
	w.handlerDone = true
	closeDelimited := w.headSent && !w.chunking && w.contentLength == -1 && !w.discard && bodyAllowedForStatus(w.status)
	w.mu.Unlock()
	if !closeDelimited {
		c.closeGracefully()
		return
	}
	raw := netConn(c.netc)
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	// The socket itself, not the TLS connection over it, whose Close
	// would send close_notify first; the caller still closes c.rw(),
	// which releases whatever wraps the socket.
	_ = raw.Close()
}

// closeGracefully closes after a response when the client may still be
// sending: the write side is shut first and what the client sends is read
// away for a moment, so that the close does not reset the connection
// before the client has read the response (a reset discards it).
func (c *conn) closeGracefully() {
	if c.sv.bw != nil {
		_ = c.sv.bw.Flush()
	}
	type closeWriter interface{ CloseWrite() error }
	var cw closeWriter
	if c.tlsc != nil {
		cw = c.tlsc
	} else if x, ok := netConn(c.netc).(closeWriter); ok {
		cw = x
	}
	if cw == nil || cw.CloseWrite() != nil {
		return
	}
	_ = c.rw().SetReadDeadline(time.Now().Add(rstAvoidance))
	var scratch [512]byte
	for {
		if _, err := c.rw().Read(scratch[:]); err != nil {
			return
		}
	}
}

// rstAvoidance is how long a closing connection reads away what the client
// still sends (net/http waits 500ms).
const rstAvoidance = 500 * time.Millisecond

// netConn unwraps a connection that wraps another (the connection cap's).
func netConn(c net.Conn) net.Conn {
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = u.NetConn()
	}
}

// connReader reads from the connection for the bufio.Reader; once a
// request's body is read, it keeps one read pending in the background so
// that a client that goes away cancels the request's context (what
// net/http does). A byte that read brings is handed to the next Read.
//
// The background read starts only once the handler has run for
// backgroundReadDelay with the body consumed: most requests are answered
// sooner, and for them a read started and aborted (a goroutine, a syscall,
// a deadline that wakes it) would be most of the engine's cost per request
// (BenchmarkServeKeepAlive). A client that leaves a longer request is
// noticed at most that much (plus one sweepPeriod) later. The process's
// sweep starts the read (bgSweep).
type connReader struct {
	// c is the connection served now (nil while the state is pooled);
	// sv is the serving state it is part of.
	c       *conn
	sv      *serving
	mu      sync.Mutex
	cond    sync.Cond
	hasByte bool
	byteBuf [1]byte
	inRead  bool
	aborted bool
	// armed is the sweep tick (bgSweep) at which the current or last
	// request's handler began to run with its body consumed, shifted left
	// by one, with the low bit set while the read is wanted (0: never
	// armed). Written under mu, read by the sweep without it.
	// listed: the reader is in the sweep's list (changed under the
	// sweep's mutex).
	armed  atomic.Uint64
	listed atomic.Bool
	// detached: a handler hijacked the connection, nothing reads from it
	// here any more.
	detached bool
	// cancel is the current request's context (nil between requests),
	// ended when the client goes away.
	cancel *requestContext
}

// backgroundReadDelay is how long a handler runs, body consumed, before a
// read is kept pending to notice a client that leaves.
const backgroundReadDelay = 5 * time.Millisecond

func (cr *connReader) Read(p []byte) (int, error) {
	cr.mu.Lock()
	if cr.inRead {
		cr.mu.Unlock()
		return 0, errConcurrentRead
	}
	if len(p) == 0 {
		cr.mu.Unlock()
		return 0, nil
	}
	if cr.hasByte {
		p[0] = cr.byteBuf[0]
		cr.hasByte = false
		cr.mu.Unlock()
		return 1, nil
	}
	cr.inRead = true
	cr.mu.Unlock()
	n, err := cr.c.rw().Read(p)
	cr.mu.Lock()
	cr.inRead = false
	if err != nil && cr.cancel != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		// The client went away. A read deadline is not that: the
		// handler that set it gets the error and answers (the edge's
		// 408 for a stalled body), and a context cancelled under it
		// would race with that answer.
		cr.cancel.end(nil)
	}
	cr.mu.Unlock()
	cr.cond.Broadcast()
	return n, err
}

var errConcurrentRead = errors.New("h1server: concurrent read on a connection")

// readOneByte waits for the next request's first byte without a buffer.
func (cr *connReader) readOneByte() error {
	cr.mu.Lock()
	if cr.hasByte {
		cr.mu.Unlock()
		return nil
	}
	cr.mu.Unlock()
	n, err := cr.c.rw().Read(cr.byteBuf[:])
	if n == 1 {
		cr.mu.Lock()
		cr.hasByte = true
		cr.mu.Unlock()
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// startBackgroundRead arranges for a read to be kept pending, from
// backgroundReadDelay on, while the handler runs with the request body
// consumed. The process's sweep starts it (bgSweep).
func (cr *connReader) startBackgroundRead() {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if cr.inRead || cr.hasByte || cr.armed.Load()&1 != 0 || cr.detached {
		return
	}
	if br := cr.sv.br; br != nil && br.Buffered() > 0 {
		// The next request is already here (pipelining): the client is
		// still there, and nothing must be read behind those bytes.
		return
	}
	sweep.arm(cr)
}

// fire starts the background read if the request armed is still the
// sweep's to start at tick now. Every decision is taken under mu from the
// state now: a reader the sweep saw armed for an earlier request (of this
// connection or of one the serving state served before) is left alone
// unless its current request is due too.
func (cr *connReader) fire(now uint64) {
	cr.mu.Lock()
	v := cr.armed.Load()
	if v&1 == 0 || now < v>>1+sweepsDue || cr.inRead || cr.hasByte || cr.detached {
		cr.mu.Unlock()
		return
	}
	cr.disarm()
	cr.inRead = true
	_ = cr.c.rw().SetReadDeadline(time.Time{})
	cr.mu.Unlock()
	go cr.backgroundRead()
}

func (cr *connReader) backgroundRead() {
	n, err := cr.c.rw().Read(cr.byteBuf[:])
	cr.mu.Lock()
	if n == 1 {
		cr.hasByte = true
	}
	deliberate := cr.aborted && errors.Is(err, os.ErrDeadlineExceeded)
	if err != nil && !deliberate && cr.cancel != nil {
		cr.cancel.end(nil) // the client went away
	}
	cr.aborted = false
	cr.inRead = false
	cr.mu.Unlock()
	cr.cond.Broadcast()
}

// abortPendingRead disarms the background read, or ends it and waits for
// it. Once it returns, nothing reads from the connection in the
// background until startBackgroundRead is called again (a timer still
// set finds nothing to do).
func (cr *connReader) abortPendingRead() {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	cr.disarm()
	if !cr.inRead {
		return
	}
	cr.aborted = true
	_ = cr.c.rw().SetReadDeadline(aLongTimeAgo)
	for cr.inRead {
		cr.cond.Wait()
	}
	_ = cr.c.rw().SetReadDeadline(time.Time{})
}

// disarm says the read is not wanted (any more); the tick of the last
// arming stays, for the sweep (keepSweeps). The caller holds mu.
func (cr *connReader) disarm() {
	if v := cr.armed.Load(); v&1 != 0 {
		cr.armed.Store(v &^ 1)
	}
}

// detach stops the background reads for good: a handler took the
// connection.
func (cr *connReader) detach() {
	cr.abortPendingRead()
	cr.mu.Lock()
	cr.detached = true
	cr.mu.Unlock()
}

func (cr *connReader) setCancel(f *requestContext) {
	cr.mu.Lock()
	cr.cancel = f
	cr.mu.Unlock()
}

var aLongTimeAgo = time.Unix(1, 0)
