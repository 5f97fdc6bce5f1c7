package gateway

import (
	"io"
	"net/http"

	"github.com/causewayhq/causeway/gateway/internal/transport"
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
// An upstream that announces or sends a field RFC 9110 6.5.1 keeps out of
// trailers (Content-Length, Host, Authorization, ...), or a trailer
// section over 4 KiB, is refused: a 502 when announced, a cut response
// when sent. The rule is transport's (CheckAnnouncedTrailer, CheckTrailer):
// the edge's HTTP/1.1 transport applies it as it reads; net/http's HTTP/2
// transport (h2c upstreams) lets all of these through, so the forwarder
// and the upgrade tunnel apply the same rule to every response: the client
// sees the same answer whichever protocol the upstream speaks.

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
		if cerr := transport.CheckTrailer(b.res.Trailer); cerr != nil {
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
