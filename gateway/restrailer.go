package gateway

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Response trailers: the fields an upstream sends after its body go on to
// the client after the edge's (HTTP/1.1 chunked, or HTTP/2 trailers),
// filtered by the same check as request trailers (trailerForwardable), so
// that an upstream, hostile or buggy, cannot state in a trailer what the
// edge decided in the header: the request id, the trace context, a
// session cookie, CORS, security or rate-limit headers, X-Causeway-*.
//
// Unlike request trailers, fields the upstream did not announce in its
// Trailer header go on too: gRPC servers send grpc-status so, and both
// upstream transports (the edge's HTTP/1.1 one and net/http's HTTP/2 one)
// keep them. The edge's servers write them after the body with
// http.TrailerPrefix, over HTTP/1.1 and HTTP/2 alike.
//
// The edge's HTTP/1.1 transport refuses an upstream that announces or
// sends a field RFC 9110 6.5.1 keeps out of trailers (Content-Length,
// Host, Authorization, ...), or a trailer section over its 4 KiB read
// buffer: a 502 when announced, a cut response when sent. net/http's
// HTTP/2 transport (h2c upstreams) lets all of these through, so the
// forwarder refuses them the same way: the client sees the same answer
// whichever protocol the upstream speaks.

// responseTrailerLimit bounds an upstream's trailer section, counted as
// its HTTP/1.1 form (each field "Name: value\r\n", and the empty line):
// the edge's HTTP/1.1 transport reads no more (its read buffer), and the
// same bound holds for h2c upstreams.
const responseTrailerLimit = 4 << 10

// checkAnnouncedTrailer refuses an upstream's response that announces a
// trailer field that may not be one, as the HTTP/1.1 transport does.
func checkAnnouncedTrailer(res *http.Response) error {
	for k := range res.Trailer {
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidTrailerHeader(k) {
			return fmt.Errorf("upstream announced the forbidden trailer field %q", k)
		}
	}
	return nil
}

// dropResponseTrailers takes out of res.Trailer the names that do not go
// on to the client: conn is the response's Connection header as it came,
// stated the client's response header. A response without a body (to
// HEAD, a 204, a 304) has no trailer section: nothing is announced that
// cannot come, to HTTP/1.1 and HTTP/2 clients alike.
func dropResponseTrailers(res *http.Response, conn []string, stated ...http.Header) {
	if len(res.Trailer) == 0 {
		return
	}
	if res.Request != nil && res.Request.Method == http.MethodHead || res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusNotModified {
		clear(res.Trailer)
		return
	}
	for k := range res.Trailer {
		if !trailerForwardable(k, conn, stated...) {
			delete(res.Trailer, k)
		}
	}
}

// checkReceivedTrailer refuses, once the upstream's body has ended, a
// trailer section the HTTP/1.1 transport would have refused: a field that
// may not be a trailer, or a section over responseTrailerLimit.
func checkReceivedTrailer(t http.Header) error {
	size := len("\r\n")
	for k, vv := range t {
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidTrailerHeader(k) {
			return fmt.Errorf("upstream sent the forbidden trailer field %q", k)
		}
		for _, v := range vv {
			size += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	if size > responseTrailerLimit {
		return fmt.Errorf("upstream's trailer section is over %d bytes", responseTrailerLimit)
	}
	return nil
}

// tunnelTransport is the upstream's transport as the upgrade tunnel
// (httputil.ReverseProxy) sees it. An upstream that declines an upgrade
// (a 200, a 4xx) answers an ordinary response, and ReverseProxy copies
// its trailers to the client as they came: so the same checks as
// directProxy's run here, on the response before ReverseProxy announces
// its trailer names, and again at the end of the body (trailerEnd), where
// the transport fills res.Trailer, before ReverseProxy copies it. The
// response's Connection header is read here because ReverseProxy removes
// it (and the fields it names) before ModifyResponse.
type tunnelTransport struct{ rt http.RoundTripper }

func (t tunnelTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// A switch has no trailer. ReverseProxy refuses one to another
		// protocol than asked for, but leaves the upstream's connection
		// (the 101's body) open for as long as the upstream keeps it: a
		// hostile upstream could hold the edge's sockets so. The same
		// check, closing it.
		if got, asked := upgradeType(res.Header), upgradeType(req.Header); !isPrint(got) || !strings.EqualFold(got, asked) {
			res.Body.Close()
			return nil, fmt.Errorf("backend tried to switch protocol %q when %q was requested", got, asked)
		}
		return res, nil
	}
	if err := checkAnnouncedTrailer(res); err != nil {
		res.Body.Close()
		return nil, err
	}
	conn := res.Header["Connection"]
	// The client's response header: ReverseProxy copies the upstream's into
	// it, and the stages set theirs there as the head goes out.
	client := stateFrom(req.Context()).rec.Header()
	dropResponseTrailers(res, conn, res.Header, client)
	res.Body = &trailerEnd{rc: res.Body, res: res, conn: conn, client: client}
	return res, nil
}

// trailerEnd is a declined upgrade's response body: at its end it refuses
// a trailer section the HTTP/1.1 transport would have refused (a read
// error, which makes ReverseProxy cut the response), and on Close, which
// ReverseProxy calls before it copies res.Trailer, it drops the fields
// that do not go on, as directProxy does after its copy. Not at the end
// of the body: ReverseProxy may still be flushing the head from a timer
// goroutine then, which writes the client's header map; Close comes once
// its copy has stopped that timer.
type trailerEnd struct {
	rc     io.ReadCloser
	res    *http.Response
	conn   []string
	client http.Header
}

func (b *trailerEnd) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		if cerr := checkReceivedTrailer(b.res.Trailer); cerr != nil {
			return n, cerr
		}
	}
	return n, err
}

func (b *trailerEnd) Close() error {
	err := b.rc.Close()
	dropResponseTrailers(b.res, b.conn, b.res.Header, b.client)
	return err
}
