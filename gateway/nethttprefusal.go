package gateway

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/h1"
	"github.com/causewayhq/causeway/internal/httperr"
	"golang.org/x/net/http/httpguts"
)

// The deprecated net/http engine refuses request heads as Causeway's own
// engine (h1server) does: the same status, the same JSON error body
// (request_id empty, since no request was accepted), and Connection:
// close. Two seams, because net/http refuses in two places:
//
//   - A head net/http reads whole: net/http lets one run up to 4 KiB over
//     MaxHeaderBytes and has no request-line or field-count bound, so
//     headLimits checks, before the edge's handler, what the own engine's
//     parser bounds (h1server.Limits): the request line (414), the number
//     of fields and the head's size (431). The head is counted from the
//     parsed request ("Name: value" lines), net/http keeping no raw bytes.
//   - A head net/http refuses itself, before any handler runs (one over its
//     read limit, a malformed line, a bad Host): it writes a canned
//     text/plain answer straight to the connection, with no hook. On a plain
//     listener, refusalConn replaces that one write with the own engine's
//     answer, found by parsing the head it saw with the own engine's parser.
//     Over TLS net/http writes it into the *tls.Conn, which no listener can
//     wrap without losing HTTP/2 (net/http offers h2 only on a *tls.Conn)
//     and Request.TLS: those answers stay net/http's own, which the engine's
//     deprecation (and the own engine's default) leaves acceptable rather
//     than serving TLS twice.
//
// A MaxHeaderBytes raised above the file's, with the whole check moved into
// Causeway, was the other choice: it moves net/http's own refusal further
// out without removing it, and lets every connection buffer more.

// headLimits refuses an HTTP/1 request whose head the own engine would
// have refused, as it does.
func headLimits(next http.Handler, lim h1.Limits) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 1 {
			if status, msg := headProblem(r, lim); status != 0 {
				w.Header().Set("Connection", "close")
				httperr.Write(w, nil, status, msg)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// headProblem is the own engine's refusal of r's head (0 when none), the
// head counted as it would have been sent: "METHOD target HTTP/1.x\r\n",
// "Name: value\r\n" per field (Host, which net/http takes out of the
// header, included), and the empty line.
func headProblem(r *http.Request, lim h1.Limits) (int, string) {
	line := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + len("\r\n")
	if line > lim.MaxRequestLine {
		return http.StatusRequestURITooLong, "request line too long"
	}
	size, fields := line+len("\r\n"), 0
	if r.Host != "" {
		size += len("Host: ") + len(r.Host) + len("\r\n")
		fields++
	}
	for k, vv := range r.Header {
		for _, v := range vv {
			size += len(k) + len(": ") + len(v) + len("\r\n")
			fields++
		}
	}
	switch {
	case size > lim.MaxHeaderBytes:
		return http.StatusRequestHeaderFieldsTooLarge, "request head too large"
	case fields > lim.MaxHeaders:
		return http.StatusRequestHeaderFieldsTooLarge, "request too many header fields"
	}
	return 0, ""
}

// refusalListener wraps a plain listener's connections in refusalConn.
type refusalListener struct {
	net.Listener
	lim h1.Limits
	now func() time.Time
}

func (l refusalListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &refusalConn{Conn: c, lim: l.lim, now: l.now}, nil
}

// refusalConn keeps the bytes read since its last write, so that
// net/http's canned refusal of the head they start can be replaced by the
// own engine's. It keeps no more than one byte over the request-line
// limit: enough for the own engine's parser to tell a 414 from a 431 (net/
// http refuses a head by its size only once it is past every limit) and
// to find what is malformed in any head of ordinary size; beyond that the
// answer is net/http's status with the own engine's words. It stops for
// good once the connection carries another protocol (an h2c preface, a
// 101). Pipelined requests read in one go with the one answered are not
// told apart: a refusal of such a later head keeps net/http's status, with
// the own engine's words for it (startsRequest).
type refusalConn struct {
	net.Conn
	lim h1.Limits
	now func() time.Time

	mu   sync.Mutex
	seen []byte
	off  bool
}

func (c *refusalConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		if !c.off {
			if len(c.seen) == 0 && bytes.HasPrefix(p[:n], []byte("PRI * HTTP/2.0")) {
				c.off = true
			} else if room := c.lim.MaxRequestLine + 1 - len(c.seen); room > 0 {
				c.seen = append(c.seen, p[:min(n, room)]...)
			}
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *refusalConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.off {
		c.mu.Unlock()
		return c.Conn.Write(p)
	}
	status, text, canned := cannedRefusal(p)
	if !canned {
		if cap(c.seen) > keptSeen {
			c.seen = nil // an idle connection holds no large buffer
		} else {
			c.seen = c.seen[:0]
		}
		c.off = bytes.HasPrefix(p, []byte("HTTP/1.1 101 "))
		c.mu.Unlock()
		return c.Conn.Write(p)
	}
	var err error
	if startsRequest(c.seen) {
		var req h1.Request
		_, err = h1.Parse(c.seen, &req, c.lim)
	}
	c.seen = nil
	c.mu.Unlock()
	var pe *h1.Error
	if errors.As(err, &pe) {
		status, text = pe.Status, pe.Msg
	}
	if _, err := c.Conn.Write(refusalResponse(status, text, c.now())); err != nil {
		return 0, err
	}
	return len(p), nil
}

// startsRequest reports whether b begins as a request line does, with a
// method and a space. Bytes read since the last write start the refused
// head unless the client pipelined: then they may start anywhere in it
// (in a 200 KiB field, where the parser would find a "request line" too
// long), and only net/http's status is to be trusted.
func startsRequest(b []byte) bool {
	sp := bytes.IndexByte(b, ' ')
	if sp <= 0 || sp > 32 {
		return false
	}
	for _, ch := range b[:sp] {
		if !httpguts.IsTokenRune(rune(ch)) {
			return false
		}
	}
	return true
}

// keptSeen is the most refusalConn keeps allocated between requests: a
// head of ordinary size.
const keptSeen = 1 << 10

// CloseWrite lets net/http half-close after a 431 as it would on the
// socket, and the upgrade tunnel pass a client's half-close on.
func (c *refusalConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// NetConn is the connection under c (closeWrite walks it).
func (c *refusalConn) NetConn() net.Conn { return c.Conn }

// netHTTPErrorHeaders ends every head net/http's server writes itself when
// it cannot read a request (net/http/server.go, conn.serve).
const netHTTPErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// cannedRefusal reports whether p is one of net/http's own refusals, "HTTP/1.1
// NNN Reason[: text]" and netHTTPErrorHeaders in one write, and its status
// and a message for it when the own engine's parser finds none.
func cannedRefusal(p []byte) (int, string, bool) {
	rest, ok := bytes.CutPrefix(p, []byte("HTTP/1.1 "))
	if !ok {
		return 0, "", false
	}
	line, _, ok := bytes.Cut(rest, []byte(netHTTPErrorHeaders))
	if !ok || bytes.Contains(line, []byte("\r\n")) || len(line) < 4 || line[3] != ' ' {
		return 0, "", false
	}
	status, err := strconv.Atoi(string(line[:3]))
	if err != nil || status < 400 || status > 599 {
		return 0, "", false
	}
	switch _, text, found := bytes.Cut(line, []byte(": ")); {
	case status == http.StatusRequestHeaderFieldsTooLarge:
		return status, "request head too large", true
	case status == http.StatusNotImplemented:
		return status, "unsupported transfer coding", true
	case found:
		return status, string(text), true
	}
	return status, "malformed request", true
}

// refusalResponse is the own engine's refusal (h1server's conn.refuse):
// the JSON error body with an empty request id, and Connection: close.
func refusalResponse(status int, msg string, now time.Time) []byte {
	w := headerRecorder{h: http.Header{}}
	httperr.Write(&w, nil, status, msg)
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) + "\r\n")
	for _, k := range []string{"Content-Type", "Content-Length", "X-Content-Type-Options"} {
		b.WriteString(k + ": " + w.h.Get(k) + "\r\n")
	}
	b.WriteString("Connection: close\r\nDate: " + now.UTC().Format(http.TimeFormat) + "\r\n\r\n")
	b.Write(w.body)
	return b.Bytes()
}

// headerRecorder takes httperr.Write's answer apart.
type headerRecorder struct {
	h    http.Header
	body []byte
}

func (w *headerRecorder) Header() http.Header { return w.h }
func (w *headerRecorder) WriteHeader(int)     {}
func (w *headerRecorder) Write(p []byte) (int, error) {
	w.body = append(w.body, p...)
	return len(p), nil
}
