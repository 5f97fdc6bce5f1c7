package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/h1"
)

// A request body is written by a goroutine of its own while the request's
// goroutine reads the response: an upstream may answer before it has read
// the body (413, 401, an answer to Expect without 100 Continue) and stop
// reading, or answer while it reads (a streaming echo). Written on the
// request's goroutine, the body would block on such an upstream and its
// answer would never be heard.
//
// The rules, each a test in body_test.go:
//   - The upstream never sees a cut body as complete. When the client's
//     body fails (a read error, a disconnect, a stall cut by the edge's body
//     timeout), is longer or shorter than its Content-Length, or ends with a
//     trailer field that must not be sent, the connection is closed where
//     the body stopped: a Content-Length body is short, a chunked one has no
//     last chunk.
//   - A connection is reused only when the client's body had all come and
//     was handed to the connection before the final response head
//     arrived, was written whole, and the response was read whole. An
//     upstream that answers early (a 413, a 401) without Connection: close
//     and never reads the rest leaves that rest in its socket, where it
//     may well fit although nobody reads it: that the writer got it all
//     out by the time the answer ended (http.Transport waits 50 ms for
//     that) says nothing about what the upstream read, and on a reused
//     connection the upstream reads the rest as the next request's head.
//     As nginx keeps no upstream connection whose request body was not
//     sent when the answer came, an answer that comes first closes the
//     connection. An early answer to a body already handed over whole
//     cannot be told from a late one: such an upstream has to read and
//     discard the rest or close, as HTTP/1.1 leaves it no other way to
//     stay in step. The cost falls on upstreams
//     that answer while they still read (a streaming echo of an upload):
//     their next request takes a new connection.
//   - Expect: 100-continue sends the head, then waits for the 100, the
//     final answer or expectTimeout (http.Transport's ExpectContinueTimeout,
//     1 s at the edge) before the body. A final answer first means the
//     body is not sent and the connection is not reused. Nor is it when
//     the timeout sent the body and the final answer then came without a
//     100: such an upstream answered without asking for the body and may
//     never read it, or read it as the next request.
//   - A stalled write is bounded by the upstream's timeout (the response
//     header timeout), for each write: an upstream that stops reading
//     fails the attempt as a timeout. The wait for the answer is bounded by
//     the same timeout from the end of the body on.
//   - A request is sent again on another connection only when no byte of
//     it reached the socket (RoundTrip, errStaleConn).

// expect states of a request with Expect: 100-continue.
const (
	expectNone    int32 = iota // no Expect, or the body was sent anyway
	expectWaiting              // the head is out, the body waits
	expectSend                 // 100 Continue (or the timeout): send the body
	expectSkip                 // a final answer came first: the body is not sent
)

// bodySend is the state of writing one request body beside its response;
// it belongs to its connection and is reused by the connection's requests.
type bodySend struct {
	c *h1Conn
	// Set by start, before the goroutine runs.
	ctx     context.Context
	req     *http.Request
	w       h1.BodyWriter
	chunked bool
	expect  atomic.Int32
	// asked: the request carried Expect: 100-continue (whatever settled
	// it since), set by start.
	asked bool
	// whole is set by the writer once the client's body has ended and
	// all of it is handed to the connection, just before the last flush:
	// the response side tells by it an answer that came before the body
	// was all there to send (roundTrip). Set before the flush, not after,
	// so that an upstream that reads the last bytes and answers at once
	// does not race the writer's return from that write.
	whole atomic.Bool
	wake  chan struct{} // the answer to an Expect came (capacity 1)
	done  chan struct{} // the writer has finished (capacity 1)

	mu       sync.Mutex
	headRead bool  // the final response head was read
	err      error // the writer's error, set before done
	sent     bool  // the body was written whole
}

func (s *bodySend) init(c *h1Conn) {
	s.c = c
	// As the response side reads them (getConn): no trailer section
	// net/http's read buffer would not hold.
	s.w.LimitTrailers(c.br.Size())
	s.wake = make(chan struct{}, 1)
	s.done = make(chan struct{}, 1)
}

// bodyBuffers lend the buffer a body is read into from the client.
var bodyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// start writes req's body, as framed by h, on a goroutine of its own.
func (s *bodySend) start(ctx context.Context, req *http.Request, h *h1.RequestHead) {
	s.ctx, s.req = ctx, req
	s.w.Reset(s.c.bw, h.Framing, h.ContentLength)
	s.chunked = h.Framing == h1.Chunked
	s.headRead, s.err, s.sent = false, nil, false
	s.whole.Store(false)
	select {
	case <-s.wake: // a 100 from the last request that nobody waited for
	default:
	}
	s.expect.Store(expectNone)
	s.asked = s.c.t.expectTimeout > 0 && expectsContinue(req.Header)
	if s.asked {
		s.expect.Store(expectWaiting)
	}
	go s.run()
}

func expectsContinue(h http.Header) bool {
	vv := h["Expect"]
	return len(vv) == 1 && asciiEqualFold(vv[0], "100-continue")
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// decide settles a pending Expect (to expectSend or expectSkip) and wakes
// the writer; it reports whether the Expect was still pending.
func (s *bodySend) decide(to int32) bool {
	if !s.expect.CompareAndSwap(expectWaiting, to) {
		return false
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

// answered is called when the final response head is in: a body still
// waiting for its 100 Continue is not sent, and answered reports that.
func (s *bodySend) answered() (unsent bool) {
	return s.decide(expectSkip)
}

// clearReadDeadline takes the response-header deadline off once the
// final head is read; from then on the writer no longer sets it.
func (s *bodySend) clearReadDeadline(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.headRead = true
	_ = s.c.nc.SetReadDeadline(time.Time{})
	if ctx.Err() != nil {
		// The context ended while the deadline was being cleared: its
		// AfterFunc may have run just before, so expire it again or the
		// body's reads would no longer notice.
		_ = s.c.nc.SetDeadline(aLongTimeAgo)
	}
}

// armReadDeadline bounds the wait for the response head from now on,
// unless the head is already in.
func (s *bodySend) armReadDeadline() {
	if s.c.t.headerTimeout <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.headRead {
		return
	}
	_ = s.c.nc.SetReadDeadline(time.Now().Add(s.c.t.headerTimeout))
	if s.ctx.Err() != nil {
		_ = s.c.nc.SetDeadline(aLongTimeAgo)
	}
}

// bodyReadError is the client's body failing: the request's fault, not
// the upstream's.
type bodyReadError struct{ err error }

func (e *bodyReadError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *bodyReadError) Unwrap() error { return e.err }

// run writes the body and reports how it went. The body is closed here,
// whatever happens: a Close while a Read is blocked in it may wait for
// that Read (net/http's request bodies do).
func (s *bodySend) run() {
	err := s.write()
	_ = s.req.Body.Close()
	abort := err != nil && !isUpstreamWriteError(err)
	s.mu.Lock()
	s.err = err
	s.sent = err == nil && s.expect.Load() != expectSkip
	s.mu.Unlock()
	switch {
	case abort:
		// The client's body failed, or does not fit its framing: the
		// upstream must not see the request as complete, so the
		// connection ends where the body stopped.
		s.c.close()
	case err != nil:
		// The upstream stopped reading or went away. It may have
		// answered (an early 413 and a close): the answer is read within
		// the response-header timeout.
		s.armReadDeadline()
	}
	s.done <- struct{}{}
}

// write sends the body: after the 100 Continue when asked for, read from
// the client in pieces of up to 32 KiB, a chunk per piece for a chunked
// body, each flushed so that a streamed body reaches the upstream as it
// comes.
func (s *bodySend) write() error {
	if s.expect.Load() == expectWaiting {
		t := time.NewTimer(s.c.t.expectTimeout)
		select {
		case <-s.wake:
		case <-t.C:
		case <-s.ctx.Done():
		}
		t.Stop()
		s.expect.CompareAndSwap(expectWaiting, expectSend)
		if err := s.ctx.Err(); err != nil {
			return err
		}
	}
	// The final answer may have come before this goroutine ever looked.
	if s.expect.Load() == expectSkip {
		return nil
	}
	bp := bodyBuffers.Get().(*[]byte)
	defer bodyBuffers.Put(bp)
	buf := *bp
	bw := s.c.bw
	for {
		// Room around the data for a chunk's framing (h1.WriteFramed).
		n, rerr := s.req.Body.Read(buf[h1.FrameHeadRoom : len(buf)-h1.FrameTailRoom])
		// Bytes that complete a Content-Length body make the request
		// whole for the upstream, which may serve it at once: they go out
		// only once the client's body has ended. An HTTP/2 client may
		// send every declared byte and then reset the stream instead of
		// ending it, abandoning the request; an HTTP/1.1 client's body
		// reports its end on the next read at no cost.
		if completes := !s.chunked && n > 0 && int64(n) == s.w.Left(); completes {
			if rerr == nil {
				rerr = s.confirmEnd()
			}
			if errors.Is(rerr, h1.ErrBodyLength) {
				return rerr
			}
			if rerr != nil && !errors.Is(rerr, io.EOF) {
				return &bodyReadError{err: rerr}
			}
		}
		if n > 0 {
			s.armWriteDeadline()
			if _, err := s.w.WriteFramed(buf, n); err != nil {
				return err
			}
			// A chunk goes out at once, unless the body ended with it:
			// then the last chunk follows it in the same write.
			if s.chunked && rerr == nil {
				if err := bw.Flush(); err != nil {
					return err
				}
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return &bodyReadError{err: rerr}
		}
	}
	// Trailers are read only now: a server's request fills them in at the
	// end of its body.
	if err := s.w.Close(s.req.Trailer); err != nil {
		return err
	}
	s.armWriteDeadline()
	s.whole.Store(true)
	if err := bw.Flush(); err != nil {
		return err
	}
	_ = s.c.nc.SetWriteDeadline(time.Time{})
	if s.ctx.Err() != nil {
		_ = s.c.nc.SetDeadline(aLongTimeAgo)
	}
	s.armReadDeadline()
	return nil
}

// confirmEnd reads on from a body whose announced length is all in hand:
// io.EOF when it ends there, h1.ErrBodyLength when it goes on, or the
// error that ended it (a reset stream, a client gone).
func (s *bodySend) confirmEnd() error {
	var one [1]byte
	for range 100 {
		n, err := s.req.Body.Read(one[:])
		if n > 0 {
			return h1.ErrBodyLength
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// armWriteDeadline gives the next write the upstream's timeout to make
// progress: an upstream that stops reading fails the request as a
// timeout instead of holding it.
func (s *bodySend) armWriteDeadline() {
	if s.c.t.headerTimeout <= 0 {
		return
	}
	_ = s.c.nc.SetWriteDeadline(time.Now().Add(s.c.t.headerTimeout))
	if s.ctx.Err() != nil {
		_ = s.c.nc.SetDeadline(aLongTimeAgo)
	}
}

// isUpstreamWriteError: the write to the upstream failed (it closed, reset
// or stopped reading), as opposed to the body or its framing.
func isUpstreamWriteError(err error) bool {
	var we *upstreamWriteError
	return errors.As(err, &we)
}

// upstreamWriteError marks a failed write to the upstream's socket.
type upstreamWriteError struct{ err error }

func (e *upstreamWriteError) Error() string { return "writing the request body: " + e.err.Error() }
func (e *upstreamWriteError) Unwrap() error { return e.err }

// failed is the error of a request whose response head could not be
// read: the body's own failure when it is the cause (the client's body
// broke, so the attempt is the client's fault; or the upstream stopped
// reading the body and that timed out), else err.
func (s *bodySend) failed(err error) error {
	c := s.c
	if !c.sending {
		return err
	}
	s.mu.Lock()
	werr := s.err
	s.mu.Unlock()
	var nerr net.Error
	switch {
	case werr == nil:
		return err
	case !isUpstreamWriteError(werr):
		return werr
	case errors.As(werr, &nerr) && nerr.Timeout():
		return fmt.Errorf("upstream stopped reading the request body: %w", werr)
	}
	return err
}

// maxWriteWait bounds how long a connection whose response was read
// whole waits for its body to finish before it is closed instead of
// reused (http.Transport waits 50 ms too).
const maxWriteWait = 50 * time.Millisecond

// wait reports whether the body was written whole, waiting up to
// maxWriteWait for the writer. A writer still running after that (an
// upstream that answered early and reads slowly, a client that is slow to
// send) is left to finish against a connection that will be closed.
func (s *bodySend) wait() bool {
	select {
	case <-s.done:
	default:
		t := time.NewTimer(maxWriteWait)
		select {
		case <-s.done:
			t.Stop()
		case <-t.C:
			return false
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// countingWriter is the socket under a connection's write buffer; it
// counts the bytes that reached the socket, so RoundTrip knows whether a
// request on a stale connection may be sent again.
type countingWriter struct {
	nc net.Conn
	n  int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.nc.Write(p)
	w.n += int64(n)
	if err != nil {
		err = &upstreamWriteError{err: err}
	}
	return n, err
}
