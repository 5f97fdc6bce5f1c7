package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/causewayhq/causeway/gateway/internal/proxy"
	"github.com/causewayhq/causeway/gateway/internal/transport"
	"golang.org/x/net/http/httpguts"
)

// directProxy is a route's forwarding step: it turns the client's request
// into the upstream's, sends it through the upstream's attempt loop and
// relays the answer. It does what httputil.ReverseProxy did here, in the
// same order and with the same results on the wire (the differential test
// in direct_test.go sends the same requests through both), without what
// that generality cost per request: a deep clone of the request and then a
// second shallow one for the trace, a header map Del per hop-by-hop name,
// an allocation per response header copied to the client, a map built by
// mime.ParseMediaType for every Content-Type, a ProxyRequest and a
// close-guard for the body. What it keeps per request lives in the
// request's state (forwardState), allocated once with it.
//
// A request that asks for a protocol upgrade (WebSocket) still goes to
// ReverseProxy (tunnel): the upstream client (transport.H1) sends it and
// hands a 101's connection back as the response body, as ReverseProxy
// expects; the hijack and the two-way copy are ReverseProxy's to get right
// (back-pressure, half-close, cancellation), and an upgrade lives as long
// as its connection, so the per-request cost does not matter there.
type directProxy struct {
	transport http.RoundTripper
	// up, when set, says whether an outbound request's header can be
	// reused once the request is over (outboundHeader).
	up     *proxy.Upstream
	hooks  proxyHooks
	tunnel *httputil.ReverseProxy
}

// proxyHooks are what the route adds to forwarding, shared by directProxy
// and the ReverseProxy kept for upgrades: Rewrite, ModifyResponse and
// ErrorHandler in ReverseProxy's terms.
type proxyHooks struct {
	rewrite        func(in, out *http.Request)
	modifyResponse func(*http.Response) error
	errorHandler   func(http.ResponseWriter, *http.Request, error)
}

// forwardState is what directProxy keeps for one request, inside the
// request's reqState so it costs no allocation of its own.
type forwardState struct {
	url   url.URL
	body  forwardBody
	trace httptrace.ClientTrace
	// rw, mu and done serve got1xx: a 1xx that arrives once RoundTrip has
	// returned (net/http's Transport reads on a goroutine of its own) no
	// longer touches the response's header, as in ReverseProxy.
	rw   http.ResponseWriter
	mu   sync.Mutex
	done bool
	st   *reqState
}

// got1xx passes an upstream's 1xx response on to the client, filtered as
// guardInformational filters ReverseProxy's (which leaves this trace
// alone): none to an HTTP/1.0 client, no second 100 Continue, no
// hop-by-hop fields, and the headers the edge set before proxying kept for
// the final response.
func (f *forwardState) got1xx(code int, header textproto.MIMEHeader) error {
	st := f.st
	if st.http10 || code == http.StatusContinue {
		return nil
	}
	edge := st.rec.Header().Clone()
	f.write1xx(code, informationalFields(header))
	hdr := st.rec.Header()
	for k, v := range edge {
		if _, ok := hdr[k]; !ok {
			hdr[k] = v
		}
	}
	return nil
}

// write1xx writes a 1xx response as ReverseProxy does: the upstream's
// fields added to the response header, written, and the header cleared.
func (f *forwardState) write1xx(code int, header textproto.MIMEHeader) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return
	}
	h := f.rw.Header()
	copyHeader(h, http.Header(header))
	f.rw.WriteHeader(code)
	// WriteHeader does not clear the header map after a 1xx.
	clear(h)
}

func (f *forwardState) roundTripDone() {
	f.mu.Lock()
	f.done = true
	f.mu.Unlock()
}

// forwardBody is the outbound request's body: the client's, with a Close
// that only marks it closed. The transport closes the body it is given,
// and closing the server's request body would make it try to read the
// rest, which for a request waiting on 100-continue blocks. The handler
// marks it closed when it returns: the transport's body writer can outlive
// the handler, and net/http forbids reading a request body after that.
type forwardBody struct {
	rc     io.ReadCloser
	closed atomic.Bool
}

var errBodyAfterHandler = errors.New("gateway: request body read after the forwarder returned")

func (b *forwardBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errBodyAfterHandler
	}
	return b.rc.Read(p)
}

func (b *forwardBody) Close() error {
	b.closed.Store(true)
	return nil
}

// hopHeaders are the hop-by-hop headers of RFC 2616 §13.5.1, canonical,
// always removed (as ReverseProxy does, for compatibility with senders that
// do not list them in Connection).
var hopHeaders = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func (p *directProxy) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	if upgradeType(req.Header) != "" && (req.ProtoMajor != 1 || req.ProtoMinor != 0) {
		p.tunnel.ServeHTTP(rw, req)
		return
	}
	var ob *outboundHeader
	outreq, res := p.forward(rw, req, &ob)
	// Not deferred: after a panic (a response cut short) both are left
	// to the collector.
	if ob != nil && p.up.KeepsNothingOf(outreq) {
		ob.recycle()
		if res != nil {
			transport.RecycleHeader(res.Header)
		}
	}
}

// forward is ServeHTTP for a request that is not an upgrade. It returns
// the outbound request, and the upstream's response when it was relayed
// in full (its header copied to the client's field by field, its body
// read and closed); *ob is set when the outbound request's header came
// from outboundHeaders.
func (p *directProxy) forward(rw http.ResponseWriter, req *http.Request, ob **outboundHeader) (*http.Request, *http.Response) {
	// An HTTP/1.0 request's Upgrade is ignored (RFC 9110 7.8), and no 1xx
	// may go to an HTTP/1.0 client: it is sent on as an ordinary request,
	// its Upgrade and Connection removed with the other hop-by-hop fields,
	// and a 101 the upstream answers all the same is refused below.
	ctx := req.Context()
	if ctx.Done() == nil {
		// A context that never ends (a handler called outside a server):
		// the connection's close notification, if any, ends the request,
		// as in ReverseProxy.
		if cn, ok := rw.(http.CloseNotifier); ok { //nolint:staticcheck // what ReverseProxy does for such contexts
			var cancel context.CancelFunc
			ctx, cancel = context.WithCancel(ctx)
			defer cancel()
			notify := cn.CloseNotify()
			go func() {
				select {
				case <-notify:
					cancel()
				case <-ctx.Done():
				}
			}()
		}
	}
	st := stateFrom(ctx)
	f := &st.fwd
	f.rw, f.done, f.st = rw, false, st
	f.trace = httptrace.ClientTrace{Got1xxResponse: f.got1xx}

	// One shallow copy with the traced context, then fresh copies of what
	// the forwarding changes (URL, header, trailer). The client's request
	// stays as it came: the access log, the error answer and a retry read
	// it. The rest (TransferEncoding, Form, the path values) is shared and
	// only read.
	outreq := req.WithContext(httptrace.WithClientTrace(ctx, &f.trace))
	if req.URL != nil {
		f.url = *req.URL
		outreq.URL = &f.url
	}
	if p.up != nil && req.ContentLength == 0 && req.Method != http.MethodConnect && p.up.Mirror == nil {
		// Possibly a request the upstream's client keeps nothing of
		// (checked again once sent, ServeHTTP): its header map is
		// taken from the pool and given back at the end.
		*ob = outboundHeaders.Get().(*outboundHeader)
		outreq.Header = (*ob).clone(req.Header, outboundRoom)
	} else {
		outreq.Header = cloneHeader(req.Header, outboundRoom)
	}
	outreq.Trailer = nil // set after the rewrite (forwardedTrailer)
	if req.ContentLength == 0 {
		outreq.Body = nil // nil for requests that may be retried, as net/http wants
	}
	if outreq.Body != nil {
		f.body.rc = outreq.Body
		f.body.closed.Store(false)
		outreq.Body = &f.body
		defer f.body.Close()
	}
	if outreq.Header == nil {
		outreq.Header = make(http.Header)
	}
	outreq.Close = false

	h := outreq.Header
	removeHopByHop(h)
	// Trailers are passed on both ways; an upstream that cares is told so
	// only when the client said it would take them.
	if httpguts.HeaderValuesContainsToken(req.Header["Te"], "trailers") {
		h["Te"] = []string{"trailers"}
	}
	// The client's forwarding headers go; the rewrite sets the edge's.
	delete(h, "Forwarded")
	delete(h, "X-Forwarded-For")
	delete(h, "X-Forwarded-Host")
	delete(h, "X-Forwarded-Proto")
	outreq.URL.RawQuery = cleanQueryParams(outreq.URL.RawQuery)
	p.hooks.rewrite(req, outreq)
	if _, ok := outreq.Header["User-Agent"]; !ok {
		// Not Go's default User-Agent for a client that sent none. The
		// slice is shared: capped, so an Add copies it, and nothing
		// writes a header value in place.
		outreq.Header["User-Agent"] = noUserAgent
	}
	if outreq.Body != nil && req.ProtoMajor == 2 && st.body != nil && st.body.expect {
		// net/http's HTTP/2 server took the client's Expect off the
		// request (h2ExpectsContinue): the upstream is asked as an
		// HTTP/1.1 client's would be. The transport waits for its 100
		// before the first Read of the body, which is what sends the
		// client its own 100 (the upstream's is not passed on, see
		// got1xx); a final answer first is relayed with the body unread.
		outreq.Header["Expect"] = []string{"100-continue"}
	}
	if outreq.Body != nil {
		if outreq.Trailer = forwardedTrailer(req, outreq.Header); outreq.Trailer != nil {
			outreq.Body = &trailerBody{body: outreq.Body, in: req, out: outreq.Trailer}
		}
	}

	res, err := p.transport.RoundTrip(outreq)
	f.roundTripDone()
	if err != nil {
		p.hooks.errorHandler(rw, outreq, err)
		return outreq, nil
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// The request asked for no upgrade (those went to the tunnel): the
		// answers ReverseProxy gives such a 101. Its body is the
		// upstream's connection, closed here: nothing else would.
		if !p.modifyResponse(rw, res, outreq) {
			return outreq, nil
		}
		res.Body.Close()
		resUpType := upgradeType(res.Header)
		switch {
		case !isPrint(resUpType):
			err = fmt.Errorf("backend tried to switch to invalid protocol %q", resUpType)
		case resUpType != "":
			err = fmt.Errorf("backend tried to switch protocol %q when %q was requested", resUpType, "")
		default:
			err = errors.New("internal error: 101 switching protocols response with non-writable body")
		}
		p.hooks.errorHandler(rw, outreq, err)
		return outreq, nil
	}

	if err := transport.CheckAnnouncedTrailer(res.Trailer); err != nil {
		res.Body.Close()
		p.hooks.errorHandler(rw, outreq, err)
		return outreq, nil
	}
	conn := res.Header["Connection"] // its names are hop-by-hop as trailers too
	removeHopByHop(res.Header)
	if !p.modifyResponse(rw, res, outreq) {
		return outreq, nil
	}
	copyResponseHeader(rw.Header(), res.Header)
	if _, typed := res.Header["Content-Type"]; !typed {
		// Marked here already, not only when the head goes out
		// (recorder.WriteHeader): a stage between (compress) would sniff
		// a type of its own.
		markUntyped(rw.Header())
	}
	dropResponseTrailers(res, conn, rw.Header())

	// The transport moves the announced trailer names from the header to
	// res.Trailer: announce them again.
	announcedTrailers := len(res.Trailer)
	if announcedTrailers > 0 {
		keys := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		rw.Header().Add("Trailer", strings.Join(keys, ", "))
	}

	rw.WriteHeader(res.StatusCode)

	if err := copyResponse(rw, res.Body, streamed(res)); err != nil {
		defer res.Body.Close()
		// The response has started: all that is left is to abort it, so
		// the client sees a cut response, never a complete-looking one.
		// Outside a server (a test calling the handler) nobody would
		// recover the panic.
		if req.Context().Value(http.ServerContextKey) == nil {
			return outreq, nil
		}
		panic(http.ErrAbortHandler)
	}
	res.Body.Close() // now, not deferred: it fills res.Trailer
	if err := transport.CheckTrailer(res.Trailer); err != nil {
		// As a body that broke: the client gets a cut response.
		log.Printf("gateway: forwarder: %v", err)
		if req.Context().Value(http.ServerContextKey) == nil {
			return outreq, nil
		}
		panic(http.ErrAbortHandler)
	}
	dropResponseTrailers(res, conn, rw.Header()) // the fields not announced came now

	if len(res.Trailer) > 0 {
		// Chunked for the trailer: without the flush net/http may frame a
		// short body with a Content-Length, which leaves no room for it.
		_ = http.NewResponseController(rw).Flush()
	}
	if len(res.Trailer) == announcedTrailers {
		copyHeader(rw.Header(), res.Trailer)
		return outreq, res
	}
	// Trailers the upstream sent without announcing them.
	for k, vv := range res.Trailer {
		k = http.TrailerPrefix + k
		for _, v := range vv {
			rw.Header().Add(k, v)
		}
	}
	return outreq, res
}

var noUserAgent = []string{""}[:1:1]

// outboundRoom is how many fields the forwarding may add to a client's
// header: X-Forwarded-For, -Proto, -Host and -Port, Forwarded, X-Real-Ip,
// User-Agent and Te.
const outboundRoom = 8

// cloneHeader is http.Header.Clone with room for extra more fields: the
// map is made for them at once instead of growing while the edge adds its
// own (a map past 8 fields is rebuilt as a table: three allocations more
// per request).
func cloneHeader(h http.Header, extra int) http.Header {
	if h == nil {
		return nil
	}
	// One backing array for all values, as Clone does.
	nv := 0
	for _, vv := range h {
		nv += len(vv)
	}
	sv := make([]string, nv)
	h2 := make(http.Header, len(h)+extra)
	for k, vv := range h {
		if vv == nil {
			// Preserve nil values, as Clone does.
			h2[k] = nil
			continue
		}
		n := copy(sv, vv)
		h2[k] = sv[:n:n]
		sv = sv[n:]
	}
	return h2
}

// outboundHeader is an outbound request's header map and the array of its
// values, kept from one request to the next: made fresh, the map of a
// client's fields and the edge's (more than 8, so a table) and the array
// cost five allocations per request. A request's comes back to
// outboundHeaders only when nothing can still hold it once the forwarder
// has returned (proxy.Upstream.KeepsNothingOf: no body, sent by the own
// HTTP/1.1 client, no mirror; the route's hooks keep nothing of the
// outbound request, and the tunnel for upgrades never takes one).
type outboundHeader struct {
	h  http.Header
	sv []string
}

var outboundHeaders = sync.Pool{New: func() any { return new(outboundHeader) }}

// Past these a header is not kept: one large request would otherwise pin
// its table and array in the pool.
const (
	outboundKeepFields = 64
	outboundKeepValues = 128
)

// clone is cloneHeader into o's map and array.
func (o *outboundHeader) clone(h http.Header, extra int) http.Header {
	nv := 0
	for _, vv := range h {
		nv += len(vv)
	}
	if o.h == nil {
		o.h = make(http.Header, len(h)+extra)
	}
	if cap(o.sv) < nv {
		o.sv = make([]string, nv)
	}
	sv := o.sv[:nv]
	for k, vv := range h {
		if vv == nil {
			o.h[k] = nil
			continue
		}
		n := copy(sv, vv)
		o.h[k] = sv[:n:n]
		sv = sv[n:]
	}
	return o.h
}

// recycle empties o (its strings let go) and puts it back in the pool,
// unless it grew past what is kept; it reports whether it did.
func (o *outboundHeader) recycle() bool {
	if len(o.h) > outboundKeepFields || cap(o.sv) > outboundKeepValues {
		return false
	}
	clear(o.h)
	clear(o.sv[:cap(o.sv)])
	outboundHeaders.Put(o)
	return true
}

func (p *directProxy) modifyResponse(rw http.ResponseWriter, res *http.Response, outreq *http.Request) bool {
	if err := p.hooks.modifyResponse(res); err != nil {
		res.Body.Close()
		p.hooks.errorHandler(rw, outreq, err)
		return false
	}
	return true
}

// removeHopByHop removes the headers h's Connection header names, then the
// standard hop-by-hop ones.
func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

func isPrint(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// copyHeader adds src's values to dst, one Add per value.
func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		for _, v := range vv {
			dst.Add(k, v)
		}
	}
}

// copyResponseHeader is copyHeader for a response header the forwarder
// owns (the transport made it for this response, and nothing reads it
// once copied): a name the client's header does not have yet takes src's
// slice, capped so that a later Add copies it instead of writing into it.
func copyResponseHeader(dst, src http.Header) {
	for k, vv := range src {
		if len(vv) == 0 {
			continue
		}
		ck := http.CanonicalHeaderKey(k)
		if prev, ok := dst[ck]; ok {
			dst[ck] = append(prev, vv...)
			continue
		}
		dst[ck] = vv[:len(vv):len(vv)]
	}
}

// streamed reports whether a response is flushed to the client after every
// write: server-sent events, and any body of unknown length (a stream, a
// long poll). A response of known length is copied in full buffers.
func streamed(res *http.Response) bool {
	return isEventStream(res.Header.Get("Content-Type")) || res.ContentLength == -1
}

// isEventStream reports whether a Content-Type's media type is
// text/event-stream, as mime.ParseMediaType reads it; only for that type
// does it build the parameter map.
func isEventStream(ct string) bool {
	// ParseMediaType's media type is this or "" (on some errors).
	base, params, _ := strings.Cut(ct, ";")
	if strings.TrimSpace(strings.ToLower(base)) != "text/event-stream" {
		return false
	}
	if params == "" {
		return true
	}
	// Parameters it refuses (a repeated name) make it "".
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "text/event-stream"
}

// copyResponse copies the upstream's body to the client with a buffer from
// the shared pool. A streamed body is flushed after every write, and its
// header before the first read, so a client waiting on a stream (an
// EventSource, a long poll) has the answer's head at once, however long
// the first bytes take.
//
// ReverseProxy flushes that header from a timer goroutine started with
// the copy, which races with the first write: when the write wins, net/http
// sniffs a Content-Type the upstream never sent, and frames an empty
// streamed body with Content-Length: 0 instead of chunked. Flushing first
// gives what ReverseProxy gives when its timer wins (the usual outcome,
// TestForwarderMatchesReverseProxy), every time, without the timer and its
// goroutine.
func copyResponse(dst http.ResponseWriter, src io.Reader, streamed bool) error {
	var w io.Writer = dst
	if streamed {
		fw := flushWriter{dst: dst, rc: http.NewResponseController(dst)}
		_ = fw.rc.Flush()
		w = &fw
	}
	buf := sharedBuffers.Get()
	defer sharedBuffers.Put(buf)
	return copyBuffer(w, src, buf)
}

// copyBuffer returns write errors and read errors other than EOF.
func copyBuffer(dst io.Writer, src io.Reader, buf []byte) error {
	for {
		nr, rerr := src.Read(buf)
		if rerr != nil && rerr != io.EOF && rerr != context.Canceled { //nolint:errorlint // ReverseProxy's test: the bare sentinels, not wrapped ones
			log.Printf("gateway: forwarder read error during body copy: %v", rerr)
		}
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			if werr != nil {
				return werr
			}
			if nr != nw {
				return io.ErrShortWrite
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				rerr = nil
			}
			return rerr
		}
	}
}

// flushWriter flushes after every write.
type flushWriter struct {
	dst io.Writer
	rc  *http.ResponseController
}

func (f *flushWriter) Write(p []byte) (int, error) {
	n, err := f.dst.Write(p)
	_ = f.rc.Flush()
	return n, err
}

// queryMaxParams is net/url's bound on query parameters, past which
// ReverseProxy re-encodes the query.
const queryMaxParams = 10000

// reencodeQuery: GODEBUG=urlmaxqueryparams=N makes ReverseProxy re-encode
// every query, whatever its form; read once, as the runtime reads GODEBUG.
var reencodeQuery = strings.Contains(os.Getenv("GODEBUG"), "urlmaxqueryparams=")

// cleanQueryParams removes the parameters net/url cannot parse (a ';', a
// bad escape) by re-encoding the query, as ReverseProxy does before
// Rewrite; a query without them is kept as sent.
func cleanQueryParams(s string) string {
	reencode := func(s string) string {
		v, _ := url.ParseQuery(s)
		return v.Encode()
	}
	if reencodeQuery {
		return reencode(s)
	}
	if strings.Count(s, "&")+1 > queryMaxParams {
		return reencode(s)
	}
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			return reencode(s)
		case '%':
			if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
				return reencode(s)
			}
			i += 3
		default:
			i++
		}
	}
	return s
}

func ishex(c byte) bool {
	switch {
	case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		return true
	}
	return false
}

var _ http.Handler = (*directProxy)(nil)
