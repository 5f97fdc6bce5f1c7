package h1server

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/causewayhq/causeway/internal/httperr"
)

// response is the http.ResponseWriter of one request. Its head goes out at
// the first Flush, when more than bufferBeforeChunking bytes of body are
// written, or when the handler returns: a body complete by then gets a
// Content-Length, a longer one is chunked (HTTP/1.1) or delimited by the
// close (HTTP/1.0). It also offers what http.ResponseController looks for:
// FlushError, Hijack, SetReadDeadline, SetWriteDeadline, EnableFullDuplex.
type response struct {
	mu  sync.Mutex // the 100 Continue of a body read elsewhere writes too
	c   *conn
	req *http.Request // nil for a refused head
	hdr http.Header

	status        int
	wroteHeader   bool // the final status is set
	headSent      bool // the head is in the write buffer
	handlerDone   bool
	hijacked      bool
	expect100     bool // the client waits for 100 Continue
	continued     bool // 100 Continue (or the final answer) was sent
	closeAfter    bool
	chunking      bool
	discard       bool  // HEAD: the body is counted, not sent
	contentLength int64 // -1: unknown
	addLength     bool  // the head adds Content-Length: contentLength
	written       int64
	pending       []byte // body written before the head went out
	pendBuf       *[bufferBeforeChunking]byte
	trailers      []string
	err           error // a write failed: the connection is done
}

func newResponse(c *conn, req *http.Request) *response {
	return &response{c: c, req: req, hdr: make(http.Header), contentLength: -1}
}

// writeError answers with the JSON error body every part of the edge
// sends.
func writeError(w *response, status int, msg string) {
	httperr.Write(w, nil, status, msg)
}

func (w *response) Header() http.Header { return w.hdr }

func (w *response) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.handlerDone {
		// The connection may be serving another request by now (or be
		// parked, without a writer): a late 1xx must not reach it.
		w.c.srv.logf("http: response.WriteHeader after the handler returned")
		return
	}
	w.writeHeaderLocked(code)
}

func (w *response) writeHeaderLocked(code int) {
	if w.hijacked {
		w.c.srv.logf("http: response.WriteHeader on hijacked connection")
		return
	}
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.writeInformational(code)
		return
	}
	w.wroteHeader = true
	w.status = code
	if cl := w.hdr.Get("Content-Length"); cl != "" {
		v, err := strconv.ParseInt(cl, 10, 64)
		if err == nil && v >= 0 {
			w.contentLength = v
		} else {
			w.c.srv.logf("http: invalid Content-Length of %q", cl)
			w.hdr.Del("Content-Length")
		}
	}
}

// writeInformational sends a 1xx response (103 Early Hints with the
// header as it is now) at once; it does not count as the answer.
func (w *response) writeInformational(code int) {
	if code == http.StatusContinue {
		if w.continued {
			return
		}
		w.continued = true
	}
	bw := w.c.writer()
	writeStatusLine(bw, code)
	if code != http.StatusContinue {
		// Never the fields that frame a body, which a 1xx does not have
		// (net/http leaves them out too): a client that took a 103's
		// Content-Length for a body would read the final response's
		// first bytes as that body.
		writeFields(bw, w.hdr, bodyFramingFields)
	}
	_, _ = bw.WriteString("\r\n")
	w.setErr(bw.Flush())
}

// sendContinue sends 100 Continue before the body's first read, unless
// the answer is already decided.
func (w *response) sendContinue() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.expect100 || w.continued || w.wroteHeader || w.hijacked {
		return nil
	}
	w.continued = true
	bw := w.c.writer()
	_, _ = bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	err := bw.Flush()
	w.setErr(err)
	return err
}

func (w *response) setErr(err error) {
	if err != nil && w.err == nil {
		w.err = err
	}
}

func (w *response) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if w.handlerDone {
		return 0, errAfterHandler
	}
	if !w.wroteHeader {
		w.writeHeaderLocked(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowedForStatus(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.contentLength != -1 && w.written > w.contentLength {
		return 0, http.ErrContentLength
	}
	if w.err != nil {
		return 0, w.err
	}
	if !w.headSent {
		if len(w.pending)+len(p) <= bufferBeforeChunking {
			if w.pendBuf == nil {
				w.pendBuf = pendings.Get().(*[bufferBeforeChunking]byte)
				w.pending = w.pendBuf[:0]
			}
			w.pending = append(w.pending, p...)
			return len(p), nil
		}
		w.writeHead(false)
	}
	if err := w.writeBody(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

var errAfterHandler = errors.New("h1server: write after the handler returned")

func (w *response) writeBody(p []byte) error {
	if w.discard || len(p) == 0 {
		return nil
	}
	bw := w.c.writer()
	if w.chunking {
		_, _ = bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(p)), 16))
		_, _ = bw.WriteString("\r\n")
		_, _ = bw.Write(p)
		_, err := bw.WriteString("\r\n")
		w.setErr(err)
		return err
	}
	_, err := bw.Write(p)
	w.setErr(err)
	return err
}

// Flush sends the head and what is buffered now.
func (w *response) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController.Flush calls.
func (w *response) FlushError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hijacked {
		return http.ErrHijacked
	}
	if w.handlerDone {
		// Flushed by finish already; the connection may be serving
		// another request by now.
		return errAfterHandler
	}
	if !w.wroteHeader {
		w.writeHeaderLocked(http.StatusOK)
	}
	if !w.headSent {
		w.writeHead(false)
	}
	if w.err != nil {
		return w.err
	}
	err := w.c.writer().Flush()
	w.setErr(err)
	return err
}

// finish completes the response once the handler has returned: the head
// if it has not gone out, the last chunk and the trailers, and a flush.
func (w *response) finish() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.handlerDone = true
	if w.hijacked {
		return
	}
	if !w.wroteHeader {
		w.writeHeaderLocked(http.StatusOK)
	}
	if !w.headSent {
		w.writeHead(true)
	}
	bw := w.c.writer()
	if w.chunking {
		_, _ = bw.WriteString("0\r\n")
		for _, k := range w.trailers {
			for _, v := range w.hdr[k] {
				writeField(bw, k, v)
			}
		}
		for k, vv := range w.hdr {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && validTrailer(name) {
				for _, v := range vv {
					writeField(bw, name, v)
				}
			}
		}
		_, _ = bw.WriteString("\r\n")
	}
	if w.contentLength != -1 && w.written != w.contentLength && bodyAllowedForStatus(w.status) &&
		(w.req == nil || w.req.Method != http.MethodHead) {
		// Fewer bytes than announced: the client can only tell by the
		// close.
		w.closeAfter = true
	}
	w.setErr(bw.Flush())
	if w.err != nil {
		w.closeAfter = true
	}
}

// writeHead writes the status line and the header, deciding the framing
// the way net/http's server does. final: the handler has returned, so a
// buffered body's length is known.
func (w *response) writeHead(final bool) {
	w.headSent = true
	w.continued = true // a final answer ends the wait for 100 Continue
	h := w.hdr
	code := w.status
	isHEAD := w.req != nil && w.req.Method == http.MethodHead
	w.discard = isHEAD

	w.trailers = w.trailers[:0]
	hasTrailers := false
	for _, v := range h["Trailer"] {
		// The framing is net/http's: chunked for any Trailer header,
		// even one whose names are not written.
		hasTrailers = true
		for k := range strings.SplitSeq(v, ",") {
			k = http.CanonicalHeaderKey(strings.TrimSpace(k))
			if k == "" {
				continue
			}
			if !httpguts.ValidTrailerHeader(k) {
				// As net/http's servers (HTTP/1.1 and HTTP/2): a field
				// RFC 9110 6.5.1 keeps out of trailers stays in the head.
				continue
			}
			w.trailers = append(w.trailers, k)
		}
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			hasTrailers = true
			break
		}
	}

	te := h.Get("Transfer-Encoding")
	hasTE := te != ""
	if final && w.contentLength == -1 && !hasTrailers && !hasTE && bodyAllowedForStatus(code) &&
		(!isHEAD || len(w.pending) > 0) {
		// Written after the header, not put into it: no allocation.
		w.contentLength = int64(len(w.pending))
		w.addLength = true
	}
	if _, haveType := h["Content-Type"]; !haveType && !hasTE && bodyAllowedForStatus(code) && len(w.pending) > 0 {
		h.Set("Content-Type", http.DetectContentType(w.pending))
	}

	hasCL := w.contentLength != -1
	switch {
	case isHEAD || !bodyAllowedForStatus(code):
		h.Del("Transfer-Encoding")
		switch {
		case code == http.StatusNotModified:
			// What net/http leaves out of a 304 (RFC 9110 15.4.5: no
			// representation metadata): the forwarder copies an
			// upstream's fields as they came, and a client that took
			// its Content-Length for a body would read the next
			// answer's first bytes as that body.
			h.Del("Content-Length")
			h.Del("Content-Type")
		case code == http.StatusNoContent || (code >= 100 && code < 200):
			h.Del("Content-Length")
		}
	case hasCL:
		h.Del("Transfer-Encoding")
	case w.req != nil && w.req.ProtoAtLeast(1, 1):
		if hasTE && te == "identity" {
			w.closeAfter = true
			h.Del("Transfer-Encoding")
		} else {
			w.chunking = true
			h.Set("Transfer-Encoding", "chunked")
		}
	default:
		// HTTP/1.0 cannot chunk: the close ends the body.
		w.closeAfter = true
		h.Del("Transfer-Encoding")
	}

	req := w.req
	if req == nil || req.Close || w.c.srv.shutting.Load() || hasToken(h["Connection"], "close") {
		w.closeAfter = true
	}
	switch {
	case w.closeAfter:
		if !hasToken(h["Connection"], "close") {
			h.Del("Connection")
			if req == nil || req.ProtoAtLeast(1, 1) {
				h.Set("Connection", "close")
			}
		}
	case req.ProtoMinor == 0:
		// An HTTP/1.0 client that asked to keep the connection is told
		// it is kept.
		if !hasToken(h["Connection"], "keep-alive") {
			h.Set("Connection", "keep-alive")
		}
	}
	bw := w.c.writer()
	writeStatusLine(bw, code)
	writeFields(bw, h, w.trailers)
	if w.addLength {
		_, _ = bw.WriteString("Content-Length: ")
		_, _ = bw.Write(strconv.AppendInt(bw.AvailableBuffer(), w.contentLength, 10))
		_, _ = bw.WriteString("\r\n")
	}
	if _, ok := h["Date"]; !ok {
		// A handler that sets Date to nil sends none, as in net/http.
		_, _ = bw.WriteString("Date: ")
		_, _ = bw.WriteString(httpDate())
		_, _ = bw.WriteString("\r\n")
	}
	_, _ = bw.WriteString("\r\n")
	if len(w.pending) > 0 {
		_ = w.writeBody(w.pending)
	}
	w.pending = nil
	if w.pendBuf != nil {
		pendings.Put(w.pendBuf)
		w.pendBuf = nil
	}
}

func writeStatusLine(bw *bufio.Writer, code int) {
	_, _ = bw.WriteString("HTTP/1.1 ")
	_, _ = bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10))
	_ = bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		_, _ = bw.WriteString(text)
	} else {
		_, _ = bw.WriteString("status code ")
		_, _ = bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10))
	}
	_, _ = bw.WriteString("\r\n")
}

// validTrailer reports whether a handler's http.TrailerPrefix field named
// name is written after the body: a valid field name that RFC 9110 6.5.1
// allows as a trailer. net/http's HTTP/2 server declares only those
// (net/http's HTTP/1.1 server writes any), so an HTTP/1.1 client of the
// engine gets the same trailers as an HTTP/2 one.
func validTrailer(name string) bool {
	return httpguts.ValidHeaderFieldName(name) && httpguts.ValidTrailerHeader(name)
}

// bodyFramingFields are what writeFields leaves out of a 1xx response.
var bodyFramingFields = []string{"Content-Length", "Transfer-Encoding"}

// writeFields writes h, leaving out the fields announced as trailers (the
// head may go out after the handler set their values: net/http writes the
// header as it was at WriteHeader) or otherwise excluded (skip), the
// TrailerPrefix ones, and fields whose names are invalid (as net/http does:
// a handler has no way to be told).
func writeFields(bw *bufio.Writer, h http.Header, skip []string) {
	for k, vv := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) || slices.Contains(skip, k) {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
}

// writeField writes one field; CR and LF in the value become spaces (no
// response splitting), as net/http writes them.
func writeField(bw *bufio.Writer, k, v string) {
	_, _ = bw.WriteString(k)
	_, _ = bw.WriteString(": ")
	if strings.ContainsAny(v, "\r\n") {
		v = strings.Map(func(r rune) rune {
			if r == '\r' || r == '\n' {
				return ' '
			}
			return r
		}, v)
	}
	_, _ = bw.WriteString(strings.TrimSpace(v))
	_, _ = bw.WriteString("\r\n")
}

func hasToken(vv []string, token string) bool {
	for _, v := range vv {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func bodyAllowedForStatus(code int) bool {
	switch {
	case code >= 100 && code <= 199:
		return false
	case code == http.StatusNoContent, code == http.StatusNotModified:
		return false
	}
	return true
}

// Hijack hands the connection to the handler (Upgrade, WebSocket): the
// reader keeps what was read past the request, and the head written so
// far is flushed first.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hijacked || w.handlerDone {
		return nil, nil, http.ErrHijacked
	}
	c := w.c
	sv := c.sv
	sv.cr.detach()
	if w.wroteHeader && !w.headSent {
		w.writeHead(false)
	}
	if sv.bw != nil {
		if err := sv.bw.Flush(); err != nil {
			return nil, nil, err
		}
	}
	w.hijacked = true
	c.hijacked = true
	c.setState(stateGone)
	c.srv.trackConn(c, false)
	rw := c.rw()
	_ = rw.SetDeadline(time.Time{})
	br := c.reader()
	if sv.cr.hasByte {
		// The background read's byte goes back in front.
		_, _ = br.Peek(br.Buffered() + 1)
	}
	c.releaseWriter()
	// The handler owns the reader now, and through it the serving state
	// (the reader reads through its connReader): neither goes back to a
	// pool.
	sv.br = nil
	return rw, bufio.NewReadWriter(br, bufio.NewWriter(rw)), nil
}

// SetReadDeadline is what http.ResponseController.SetReadDeadline calls.
func (w *response) SetReadDeadline(t time.Time) error { return w.c.rw().SetReadDeadline(t) }

// SetWriteDeadline is what http.ResponseController.SetWriteDeadline calls.
func (w *response) SetWriteDeadline(t time.Time) error { return w.c.rw().SetWriteDeadline(t) }

// EnableFullDuplex: the body can always be read while the response is
// written, so there is nothing to turn on.
func (w *response) EnableFullDuplex() error { return nil }

var (
	_ http.ResponseWriter = (*response)(nil)
	_ http.Flusher        = (*response)(nil)
	_ http.Hijacker       = (*response)(nil)
)

// httpDate is the Date field's value, formatted once a second. Read
// without a lock: every connection's goroutine asks for it.
func httpDate() string {
	now := time.Now().Unix()
	if d := date.Load(); d != nil && d.unix == now {
		return d.text
	}
	d := &dateText{unix: now, text: time.Unix(now, 0).UTC().Format(http.TimeFormat)}
	date.Store(d)
	return d.text
}

type dateText struct {
	unix int64
	text string
}

var date atomic.Pointer[dateText]
