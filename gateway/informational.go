package gateway

import (
	"context"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
)

// guardInformational wraps the hook through which ReverseProxy forwards an
// upstream's 1xx responses (103 Early Hints, 100 Continue) to the client,
// for the things it gets wrong for an edge:
//
//   - An HTTP/1.0 client gets none (RFC 9110 §15.2: a server must not send
//     a 1xx response to an HTTP/1.0 client). Such a client takes the 1xx
//     for the answer and the real one for garbage, or for the answer to
//     its next request.
//   - The response headers the edge set before proxying (X-Request-Id, the
//     RateLimit fields, a plugin's CORS headers) survive. ReverseProxy
//     copies the 1xx's header into the response's header map, writes the
//     1xx and clears the map, so without this they went out on the 1xx
//     and were missing from the final response.
//   - The 1xx's hop-by-hop fields, and those its Connection names, stop at
//     the edge as a final answer's do (RFC 9110 §7.6.1): ReverseProxy
//     passes a 103's Connection, Keep-Alive or Upgrade on as it came.
//
// The hook runs only when a 1xx arrives, and always before RoundTrip
// returns (http.Transport reads the 1xx responses before it hands out the
// final one; the calling-goroutine transport reads them on the request's
// goroutine), so it never races with the final response's headers.
//
// The edge's own forwarder applies the same rules in forwardState.got1xx;
// this guard now serves the ReverseProxy kept for protocol upgrades.
func guardInformational(ctx context.Context, st *reqState) {
	tr := httptrace.ContextClientTrace(ctx)
	if tr == nil || tr.Got1xxResponse == nil || tr == &st.fwd.trace {
		// The edge's own forwarder filters its 1xx itself
		// (forwardState.got1xx); this wraps ReverseProxy's, which still
		// serves protocol upgrades.
		return
	}
	forward := tr.Got1xxResponse
	tr.Got1xxResponse = func(code int, h textproto.MIMEHeader) error {
		if st.http10 || code == http.StatusContinue {
			// The edge's own server sends the client its 100 Continue
			// when the body is first read for the upstream; the
			// upstream's would be a second one.
			return nil
		}
		edge := st.rec.Header().Clone()
		err := forward(code, informationalFields(h))
		hdr := st.rec.Header()
		for k, v := range edge {
			if _, ok := hdr[k]; !ok {
				hdr[k] = v
			}
		}
		return err
	}
}

// informationalFields is an upstream's 1xx header as the client may get
// it: a copy without the hop-by-hop fields and the ones its Connection
// names (removeHopByHop, as for a final answer). The copy leaves the
// transport's header as it came; a 1xx is rare enough for it.
func informationalFields(h textproto.MIMEHeader) textproto.MIMEHeader {
	hh := http.Header(h).Clone()
	removeHopByHop(hh)
	return textproto.MIMEHeader(hh)
}
