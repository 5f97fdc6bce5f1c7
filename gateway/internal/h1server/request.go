package h1server

import (
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/causewayhq/causeway/gateway/internal/h1"
)

// maxPostHandlerRead is how much of a request body the handler left unread
// is read away so that the connection can serve the next request; beyond
// it the connection closes (net/http's bound).
const maxPostHandlerRead = 256 << 10

// serveOne builds the request from the head (n bytes in the buffer), runs
// the handler, finishes the response, and says whether the connection can
// serve another request.
func (c *conn) serveOne(n int) bool {
	s := c.srv
	var st *perRequest
	var tlsState *tls.ConnectionState
	if c.tlsc != nil {
		// Request.TLS, read from the connection at every request rather
		// than kept with it (200 bytes per idle connection), in the
		// request's one allocation.
		both := new(struct {
			perRequest
			tls tls.ConnectionState
		})
		st, tlsState = &both.perRequest, &both.tls
		*tlsState = c.tlsc.ConnectionState()
	} else {
		st = new(perRequest)
	}
	r, err := c.newRequest(st, tlsState)
	if err != nil {
		var pe *h1.Error
		if errors.As(err, &pe) {
			c.refuse(pe.Status, pe.Msg)
		}
		return false
	}
	sv, rw := c.sv, c.rw()
	_, _ = sv.br.Discard(n)
	if s.ReadTimeout > 0 {
		// ReadTimeout covers the whole request, head included.
		_ = rw.SetReadDeadline(sv.reqStart.Add(s.ReadTimeout))
	} else {
		_ = rw.SetReadDeadline(time.Time{})
	}
	if s.WriteTimeout > 0 {
		_ = rw.SetWriteDeadline(time.Now().Add(s.WriteTimeout))
	} else {
		// Handlers rely on this (WriteDeadlineCleared): keep it before
		// the handler runs.
		_ = rw.SetWriteDeadline(time.Time{})
	}
	ctx := &st.ctx
	ctx.init(c)
	defer ctx.end(nil)
	sv.cr.setCancel(ctx)
	// The one copy of the request, with its final context: the handlers
	// store what they carry per request in it (SetValue, Cancel) rather
	// than copy the request again.
	req := r.WithContext(ctx)
	w := &st.w
	*w = response{c: c, req: req, hdr: make(http.Header), contentLength: -1}
	body := c.newBody(req, w, &st.body)
	req.Body = body
	if body == nil {
		req.Body = http.NoBody
		sv.cr.startBackgroundRead()
	}
	if !c.runHandler(w, req) {
		// The handler panicked: the response cannot be completed.
		sv.cr.abortPendingRead()
		sv.cr.setCancel(nil)
		c.abort(w)
		return false
	}
	if c.hijacked {
		sv.cr.setCancel(nil)
		return false
	}
	sv.cr.abortPendingRead()
	sv.cr.setCancel(nil)
	// Under the lock: a goroutine the handler left behind may still call
	// Write, WriteHeader or Flush, which read it under the lock.
	w.mu.Lock()
	w.handlerDone = true
	w.mu.Unlock()
	if body != nil && !body.finish(w) {
		w.closeAfter = true
	}
	if w.expect100 && !w.continued && body != nil && !body.sawEOF {
		// The client was not told to send the body: it may or may not
		// send it, so the connection cannot be reused.
		w.closeAfter = true
	}
	w.finish()
	if w.closeAfter {
		// A client that did not ask for the close may have pipelined
		// more requests, or still be sending this one's body: a plain
		// close with those bytes unread resets the connection, and the
		// reset makes the client's system discard the answers it had
		// received and not yet read, this one included. Such a close
		// is graceful (write side first, the rest read away for a
		// moment), as nginx's lingering close. A client that asked for
		// the close sends nothing after its request.
		if body != nil && !body.sawEOF || !req.Close {
			c.closeGracefully()
		}
		return false
	}
	return w.err == nil
}

// runHandler calls the handler; false when it panicked (logged unless with
// http.ErrAbortHandler, the way a handler asks for the connection to drop).
func (c *conn) runHandler(w *response, req *http.Request) (ok bool) {
	defer func() {
		if err := recover(); err != nil {
			if err != http.ErrAbortHandler { //nolint:errorlint // net/http compares the same way
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.srv.logf("http: panic serving %s: %v\n%s", c.remoteAddr, err, buf)
			}
			ok = false
		}
	}()
	h := c.srv.Handler
	if h == nil {
		h = http.NotFoundHandler()
	}
	if req.RequestURI == "*" && req.Method == http.MethodOptions {
		// What net/http's serverHandler does: a handler never sees
		// "OPTIONS *".
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		return true
	}
	h.ServeHTTP(w, req)
	return true
}

// perRequest is what serving one request allocates, in one allocation
// instead of one each (with Request.TLS over TLS): the context, the URL,
// the response writer, the body, and the first values of the header
// fields. It is never pooled: a handler may keep the request (its URL,
// its header, its context) or the writer after it returns, as under
// net/http.
type perRequest struct {
	ctx    requestContext
	url    url.URL
	w      response
	body   requestBody
	values [inlineValues]string
}

// inlineValues is how many header fields' values perRequest holds; a
// request with more allocates their array apart.
const inlineValues = 8

// newRequest turns the parsed head into an *http.Request as net/http's
// server would: canonical header keys, Host out of the header map, the URL
// parsed from the target, Trailer declarations moved to req.Trailer.
//
// It returns the request by value: the caller's WithContext makes the one
// copy that reaches the handler.
func (c *conn) newRequest(st *perRequest, tlsState *tls.ConnectionState) (http.Request, error) {
	hd := &c.sv.head
	// One string holds every name and value: one allocation for them all.
	method := internMethod(hd.Method)
	var total int
	for _, f := range hd.Headers {
		total += len(f.Name) + len(f.Value)
	}
	total += len(hd.Target)
	if method == "" {
		total += len(hd.Method)
	}
	var sb strings.Builder
	sb.Grow(total)
	if method == "" {
		sb.Write(hd.Method)
	}
	sb.Write(hd.Target)
	for _, f := range hd.Headers {
		sb.Write(f.Name)
		sb.Write(f.Value)
	}
	all := sb.String()
	off := 0
	take := func(n int) string { s := all[off : off+n]; off += n; return s }
	if method == "" {
		method = take(len(hd.Method))
	}
	target := take(len(hd.Target))

	req := http.Request{
		Method:     method,
		RequestURI: target,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: hd.Minor,
		Header:     make(http.Header, len(hd.Headers)),
		Close:      hd.Close,
		RemoteAddr: c.remoteAddr,
	}
	if hd.Minor == 0 {
		req.Proto = "HTTP/1.0"
	}
	values := st.values[:]
	if len(hd.Headers) > len(values) {
		values = make([]string, len(hd.Headers))
	}
	var hosts int
	for i, f := range hd.Headers {
		name := take(len(f.Name))
		if k, same := h1.CanonicalKey(f.Name); !same {
			name = k
		}
		v := take(len(f.Value))
		if name == "Host" {
			hosts++
			if !httpguts.ValidHostHeader(v) {
				return http.Request{}, &h1.Error{Status: http.StatusBadRequest, Msg: "malformed Host header"}
			}
		}
		if vv, ok := req.Header[name]; ok {
			req.Header[name] = append(vv, v)
			continue
		}
		values[i] = v
		req.Header[name] = values[i : i+1 : i+1]
	}
	// The URL, as net/http reads it (CONNECT's authority-form included).
	if !parsePlainTarget(&st.url, target) {
		raw := target
		justAuthority := method == http.MethodConnect && !strings.HasPrefix(raw, "/")
		if justAuthority {
			raw = "http://" + raw
		}
		u, err := url.ParseRequestURI(raw)
		if err != nil {
			return http.Request{}, &h1.Error{Status: http.StatusBadRequest, Msg: "malformed request target"}
		}
		if justAuthority {
			u.Scheme = ""
		}
		st.url = *u
	}
	req.URL = &st.url
	req.Host = req.URL.Host
	if req.Host == "" {
		req.Host = req.Header.Get("Host")
	}
	delete(req.Header, "Host")
	req.TLS = tlsState
	switch {
	case hd.Chunked:
		req.TransferEncoding = []string{"chunked"}
		req.ContentLength = -1
		// net/http moves it out of the header into TransferEncoding.
		delete(req.Header, "Transfer-Encoding")
		if err := declareTrailers(&req); err != nil {
			return http.Request{}, err
		}
	case hd.ContentLength >= 0:
		req.ContentLength = hd.ContentLength
	}
	return req, nil
}

// parsePlainTarget sets *u to what url.ParseRequestURI makes of target when
// target is a plain origin-form one: a path of characters that need no
// escaping (so Path is the target's and RawPath is empty), and any query.
// False for anything else, left to url.ParseRequestURI.
func parsePlainTarget(u *url.URL, target string) bool {
	if target == "" || target[0] != '/' || strings.HasPrefix(target, "//") {
		return false
	}
	path, query, hasQuery := strings.Cut(target, "?")
	for i := range len(path) {
		if !plainPathByte[path[i]] {
			return false
		}
	}
	for i := range len(query) {
		if b := query[i]; b < 0x20 || b == 0x7f {
			return false // ParseRequestURI refuses control bytes
		}
	}
	*u = url.URL{Path: path}
	if hasQuery {
		u.RawQuery = query
		u.ForceQuery = query == ""
	}
	return true
}

// plainPathByte: the bytes url.URL.EscapedPath leaves as they are.
var plainPathByte = func() (t [256]bool) {
	for c := range 256 {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			t[c] = true
		case strings.IndexByte("-_.~$&+,/:;=@", byte(c)) >= 0:
			t[c] = true
		}
	}
	return t
}()

// declareTrailers moves a chunked request's Trailer header to req.Trailer
// as net/http does, refusing the fields that may never be trailers.
func declareTrailers(req *http.Request) error {
	vv, ok := req.Header["Trailer"]
	if !ok {
		return nil
	}
	delete(req.Header, "Trailer")
	trailer := make(http.Header)
	for _, v := range vv {
		for k := range strings.SplitSeq(v, ",") {
			k = textproto.CanonicalMIMEHeaderKey(textproto.TrimString(k))
			switch k {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				return &h1.Error{Status: http.StatusBadRequest, Msg: "bad trailer key"}
			}
			if k != "" {
				trailer[k] = nil
			}
		}
	}
	if len(trailer) > 0 {
		req.Trailer = trailer
	}
	return nil
}

// internMethod returns the constant for a common method, "" for another:
// no string made for it, and comparisons against the constants are cheap.
func internMethod(m []byte) string {
	switch string(m) {
	case http.MethodGet:
		return http.MethodGet
	case http.MethodPost:
		return http.MethodPost
	case http.MethodHead:
		return http.MethodHead
	case http.MethodPut:
		return http.MethodPut
	case http.MethodDelete:
		return http.MethodDelete
	case http.MethodOptions:
		return http.MethodOptions
	case http.MethodPatch:
		return http.MethodPatch
	case http.MethodConnect:
		return http.MethodConnect
	}
	return ""
}

// requestBody is a request's body as the handler reads it: Content-Length
// or chunked framing over the connection's reader, the 100 Continue sent
// at the first read when the client asked for one, and the end of the
// body starting the background read that notices a client going away.
type requestBody struct {
	mu sync.Mutex // a handler may read from another goroutine
	// sv is the connection's serving state: the body reads through its
	// reader, and is closed before the state can go back to the pool.
	sv      *serving
	w       *response
	req     *http.Request
	chunked bool
	left    int64 // Content-Length bytes not yet read
	sawEOF  bool
	closed  bool
	// broken: the framing failed, where the next request starts is
	// unknown.
	broken bool
	err    error
}

// newBody returns the request's body, nil when it has none.
func (c *conn) newBody(req *http.Request, w *response, b *requestBody) *requestBody {
	sv := c.sv
	hd := &sv.head
	if !hd.Chunked && hd.ContentLength <= 0 {
		return nil
	}
	*b = requestBody{sv: sv, w: w, req: req, chunked: hd.Chunked, left: hd.ContentLength}
	if hd.Chunked {
		sv.chunked.Reset(sv.br)
	}
	// net/http honours Expect only from HTTP/1.1 clients.
	w.expect100 = hd.Expect100 && hd.Minor == 1
	return b
}

func (b *requestBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.sawEOF {
		return 0, io.EOF
	}
	if err := b.w.sendContinue(); err != nil {
		b.err = err
		return 0, err
	}
	n, err := b.read(p)
	if err == io.EOF { //nolint:errorlint // io.EOF is returned bare
		b.sawEOF = true
		b.sv.cr.startBackgroundRead()
	} else if err != nil {
		b.err = err
	}
	return n, err
}

func (b *requestBody) read(p []byte) (int, error) {
	if b.chunked {
		n, err := b.sv.chunked.Read(p)
		if err == io.EOF { //nolint:errorlint // io.EOF is returned bare
			b.setTrailers()
		} else if errors.Is(err, h1.ErrChunked) {
			// Where the next request starts is unknown.
			b.broken = true
		}
		return n, err
	}
	if b.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.sv.br.Read(p)
	b.left -= int64(n)
	if b.left == 0 {
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		b.broken = true
	}
	return n, err
}

// setTrailers fills req.Trailer with the trailer fields received, as
// net/http does (declared or not).
func (b *requestBody) setTrailers() {
	ts := b.sv.chunked.Trailers()
	if len(ts) == 0 {
		return
	}
	if b.req.Trailer == nil {
		b.req.Trailer = make(http.Header, len(ts))
	}
	for _, t := range ts {
		k, same := h1.CanonicalKey(t.Name)
		if same {
			k = string(t.Name)
		}
		b.req.Trailer[k] = append(b.req.Trailer[k], string(t.Value))
	}
}

func (b *requestBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}

// finish reads away what the handler left of the body (up to
// maxPostHandlerRead) so the next request can be read; false when the
// connection cannot serve another.
func (b *requestBody) finish(w *response) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.sawEOF {
		return true
	}
	if b.err != nil || b.broken || w.closeAfter {
		return false
	}
	if w.expect100 && !w.continued {
		return false // the body may never come
	}
	if !b.chunked && b.left > maxPostHandlerRead {
		return false
	}
	var scratch [4 << 10]byte
	read := 0
	for read <= maxPostHandlerRead {
		n, err := b.read(scratch[:])
		read += n
		if err == io.EOF { //nolint:errorlint // io.EOF is returned bare
			b.sawEOF = true
			return true
		}
		if err != nil {
			b.err = err
			return false
		}
	}
	return false
}
