package transport

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
)

// Responses that end at their headers by rule — anything to HEAD, 204 and
// 304 — are where buggy upstreams most often write a body anyway. Those
// bytes can arrive after every check a pool makes (when the connection is
// returned and when it is taken), and then the next request on the
// connection reads them as its answer. HTTP/1.1 cannot tell such bytes from
// a response, so after these responses a connection is not reused: the
// calling-goroutine transport decides that itself (h1Conn.roundTrip), and
// for http.Transport, which puts a connection back in its pool before it
// hands out a bodiless response, emptyGuardConn ends the connection's input
// right after the head. A read that returns the head together with io.EOF
// makes http.Transport parse the response and then close the connection
// instead of pooling it (its persistConn notes the EOF), so no other
// request can be given the connection in between.

// guardEmptyResponses wraps dial's plain TCP connections in emptyGuardConn.
func guardEmptyResponses(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &emptyGuardConn{Conn: c}, nil
	}
}

// emptyGuardConn watches the start of each response on one connection of
// http.Transport. The transport's GotConn trace hook arms it when a request
// is given the connection (expect); the first bytes read after that are the
// response's head, or a 1xx head, after which the next read is.
type emptyGuardConn struct {
	net.Conn
	// Set on the request's goroutine (GotConn), read by the transport's
	// read loop.
	awaiting atomic.Bool // the next read starts a response
	head     atomic.Bool // the request is HEAD
	// Only the read loop uses these.
	ending bool    // the response ends the connection once its head is read
	tail   [3]byte // the last bytes of that head so far, for a split "\r\n\r\n"
	ended  bool    // the head was returned with io.EOF: nothing more is read
}

// NetConn is the connection underneath, for what needs more of it than
// net.Conn (an upgraded connection's half-close).
func (c *emptyGuardConn) NetConn() net.Conn { return c.Conn }

// expect arms c for the response to a request that was just given it.
func (c *emptyGuardConn) expect(head bool) {
	c.head.Store(head)
	c.awaiting.Store(true)
}

func armGuard(c net.Conn, head bool) {
	if g, ok := c.(*emptyGuardConn); ok {
		g.expect(head)
	}
}

// withEmptyGuard returns req with the trace that arms the guard. The trace
// is new for every request: httptrace.WithClientTrace composes the hooks
// already in the context into the trace it is given, so a shared one would
// be rewritten by every request.
func withEmptyGuard(req *http.Request) *http.Request {
	head := req.Method == http.MethodHead
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { armGuard(i.Conn, head) }}
	return req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
}

var headEndMark = []byte("\r\n\r\n")

func (c *emptyGuardConn) Read(p []byte) (int, error) {
	if c.ended {
		return 0, io.EOF
	}
	n, err := c.Conn.Read(p)
	if n == 0 {
		return n, err
	}
	b := p[:n]
	from := -1 // where this read's response head starts, if it does
	for pos := 0; c.awaiting.Load(); {
		status, ok := responseStatus(b[pos:])
		if !ok {
			// Not the start of a response (or a head split before its
			// status code): left to http.Transport.
			c.awaiting.Store(false)
			break
		}
		if status >= 200 {
			c.awaiting.Store(false)
			c.ending = c.head.Load() || status == http.StatusNoContent || status == http.StatusNotModified
			from = pos
			break
		}
		// A 1xx head: the next response starts after it, in this read or
		// at the next one. A 1xx head split across reads leaves the
		// guard unarmed.
		i := bytes.Index(b[pos:], headEndMark)
		if i < 0 {
			c.awaiting.Store(false)
			break
		}
		if pos += i + len(headEndMark); pos == n {
			break
		}
	}
	if !c.ending {
		return n, err
	}
	if from >= 0 {
		if i := bytes.Index(b[from:], headEndMark); i >= 0 {
			return c.end(from + i + len(headEndMark))
		}
		c.tail = [3]byte{}
		c.keepTail(b[from:])
		return n, err
	}
	// The head began in an earlier read: join its last bytes to this one.
	for k := 1; k <= len(c.tail) && k <= len(headEndMark)-1; k++ {
		need := headEndMark[k:]
		if bytes.HasSuffix(c.tail[:], headEndMark[:k]) && bytes.HasPrefix(b, need) {
			return c.end(len(need))
		}
	}
	if i := bytes.Index(b, headEndMark); i >= 0 {
		return c.end(i + len(headEndMark))
	}
	c.keepTail(b)
	return n, err
}

// end returns the head's last bytes with io.EOF and reads nothing more.
func (c *emptyGuardConn) end(n int) (int, error) {
	c.ending, c.ended = false, true
	return n, io.EOF
}

// keepTail remembers the last bytes read of a head still going on.
func (c *emptyGuardConn) keepTail(b []byte) {
	if len(b) >= len(c.tail) {
		copy(c.tail[:], b[len(b)-len(c.tail):])
		return
	}
	keep := len(c.tail) - len(b)
	copy(c.tail[:keep], c.tail[len(b):])
	copy(c.tail[keep:], b)
}

// responseStatus reads the status code at the start of a response head
// ("HTTP/1.1 204 ..."); ok is false for anything else, including a head
// split before its status code (the guard then leaves that response alone).
func responseStatus(b []byte) (int, bool) {
	const prefix = "HTTP/1."
	if len(b) < len(prefix)+5 || string(b[:len(prefix)]) != prefix || b[len(prefix)+1] != ' ' {
		return 0, false
	}
	d := b[len(prefix)+2 : len(prefix)+5]
	for _, ch := range d {
		if ch < '0' || ch > '9' {
			return 0, false
		}
	}
	return int(d[0]-'0')*100 + int(d[1]-'0')*10 + int(d[2]-'0'), true
}
