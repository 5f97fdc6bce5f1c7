package gateway

import (
	"net/http"
	"net/textproto"
	"strings"

	"github.com/causewayhq/causeway/internal/edgeheader"
	"golang.org/x/net/http/httpguts"
)

// The one check of a trailer field's name, for both directions: the
// request trailers a client sends on to the upstream (reqtrailer.go) and
// the response trailers an upstream sends on to the client (restrailer.go).
// A trailer is a header field that comes late, and a service, a client
// library or a framework that merges trailers into the header (as many
// do) must not find there a field the edge decided on, so the names the
// edge keeps out of one direction's trailers it keeps out of the other's:
//
//   - not a valid field name, or a field RFC 9110 6.5.1 keeps out of
//     trailers (also once '_' is read as '-') (httpguts.ValidTrailerHeader: framing, routing,
//     authentication, controls, If-*): what net/http's HTTP/2 server
//     refuses to declare, and what the edge's HTTP/1.1 transport refuses
//     from an upstream;
//   - hop-by-hop (also once '_' is read as '-'): the standard names, and those the message's Connection
//     header nominates;
//   - a name the edge states for the service (internal/edgeheader:
//     client-address, X-Forwarded-*, URL overrides, X-Causeway-*);
//   - a name only the header may carry (headerOnlyTrailer): the request
//     id and the trace context the edge decides on, every X-Causeway-*
//     name, and the response fields the edge, its plugins and a sidecar
//     set for the client (Set-Cookie, CORS, security and rate-limit
//     headers);
//   - a name the header the edge sends ahead of the trailer already
//     carries (stated): the outbound request's once the route's rewrite
//     has run, the client's response header once the upstream's is in it.
//
// conn is the Connection header of the message the trailer ends, nil when
// its nominated names were taken out before (a client's request).
//
// Nothing here depends on the protocol either side speaks, so an HTTP/1.1
// and an HTTP/2 peer see the same fields.
func trailerForwardable(k string, conn []string, stated ...http.Header) bool {
	if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidTrailerHeader(k) {
		return false
	}
	ck := textproto.CanonicalMIMEHeaderKey(k)
	if hopHeader(ck) {
		return false
	}
	if strings.IndexByte(k, '_') >= 0 {
		// Content_Length is Content-Length to a peer that folds '_'.
		if f := textproto.CanonicalMIMEHeaderKey(strings.ReplaceAll(k, "_", "-")); !httpguts.ValidTrailerHeader(f) || hopHeader(f) {
			return false
		}
	}
	if edgeheader.Of(k) != edgeheader.Plain || headerOnlyTrailer(k) {
		return false
	}
	for _, f := range conn {
		for sf := range strings.SplitSeq(f, ",") {
			if textproto.CanonicalMIMEHeaderKey(textproto.TrimString(sf)) == ck {
				return false
			}
		}
	}
	for _, h := range stated {
		if _, ok := h[ck]; ok {
			return false
		}
	}
	return true
}

func hopHeader(ck string) bool {
	for _, h := range hopHeaders {
		if ck == h {
			return true
		}
	}
	return false
}

// headerOnlyNames are the names, lower case with '_' as '-' (the way a
// CGI-style server or a client library may fold them), that only the
// header carries: the edge or a sidecar states them, or a browser acts on
// them as the edge sent them.
var headerOnlyNames = map[string]bool{
	// The edge's request id and the W3C trace context it decides on
	// (it may start a trace of its own and drop the client's).
	"x-request-id": true, "traceparent": true, "tracestate": true,
	// Session cookies (the OIDC login sets its own) and redirects.
	"set-cookie": true, "set-cookie2": true, "location": true, "refresh": true,
	// Rate limiting (ratelimit: RateLimit-*, Retry-After).
	"retry-after": true,
	// Security headers a route's headers plugin or the HTTPS listener sets.
	"strict-transport-security": true, "content-security-policy": true, "content-security-policy-report-only": true,
	"x-frame-options": true, "x-content-type-options": true, "referrer-policy": true, "permissions-policy": true,
	"cross-origin-opener-policy": true, "cross-origin-embedder-policy": true, "cross-origin-resource-policy": true,
	"clear-site-data": true, "vary": true, "alt-svc": true,
}

// headerOnlyPrefixes start names of headerOnlyNames' kind.
var headerOnlyPrefixes = [...]string{"x-causeway-", "access-control-", "ratelimit", "x-ratelimit-"}

// headerOnlyTrailer reports whether k is one of headerOnlyNames or starts
// with one of headerOnlyPrefixes, case and '_' folded.
func headerOnlyTrailer(k string) bool {
	var buf [64]byte
	if len(k) > len(buf) {
		return headerOnlyPrefix(strings.ReplaceAll(strings.ToLower(k), "_", "-"))
	}
	b := buf[:len(k)]
	for i := 0; i < len(k); i++ {
		b[i] = edgeheader.FoldByte(k[i])
	}
	return headerOnlyNames[string(b)] || headerOnlyPrefix(string(b))
}

func headerOnlyPrefix(folded string) bool {
	for _, p := range headerOnlyPrefixes {
		if strings.HasPrefix(folded, p) {
			return true
		}
	}
	return false
}

// undeclareStatedTrailers takes out of h's Trailer header the names h
// itself carries. net/http's servers and the edge's HTTP/1.1 engine leave
// a declared trailer's field out of the head and write its values after
// the body, so an upstream announcing a name a stage sets in the response
// (a route's headers plugin, CORS) would move that stage's field out of
// the head; the upstream's own value is dropped at the end of the body
// (dropResponseTrailers), since the header carries the name.
func undeclareStatedTrailers(h http.Header) {
	vv, ok := h["Trailer"]
	if !ok {
		return
	}
	var keep []string
	dropped := false
	for _, v := range vv {
		for n := range strings.SplitSeq(v, ",") {
			if n = textproto.TrimString(n); n == "" {
				continue
			}
			if _, stated := h[textproto.CanonicalMIMEHeaderKey(n)]; stated {
				dropped = true
				continue
			}
			keep = append(keep, n)
		}
	}
	switch {
	case !dropped:
	case len(keep) == 0:
		delete(h, "Trailer")
	default:
		h["Trailer"] = []string{strings.Join(keep, ", ")}
	}
}
