package pipeline

import (
	"net/http"
	"strings"

	"github.com/causewayhq/causeway/internal/edgeheader"
	"github.com/causewayhq/causeway/routes"
)

// Request sanitising runs once, when a request enters the edge (or a
// sidecar), before any stage reads a header and before the edge sets one of
// its own: what auth, rate limits, plugins and the upstream see is the same
// cleaned request.

// hopByHopStandard are the hop-by-hop headers net/http/httputil.ReverseProxy
// handles itself on the outbound request (it keeps "TE: trailers" and
// re-adds Connection/Upgrade for protocol upgrades), so a Connection token
// naming one of them stays for it to act on.
var hopByHopStandard = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true,
	"Proxy-Authenticate": true, "Proxy-Authorization": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// DropHopByHop removes the headers the client's Connection header nominates,
// now, before the edge sets X-Request-Id, traceparent, forwarded claims,
// X-Forwarded-* or X-Causeway-Peer-Id. Left to ReverseProxy, the nomination
// would be applied to the outbound request after those were set, and
// "Connection: X-Forwarded-For" would strip the edge's own header. The
// Connection header is cut down to the standard hop-by-hop names
// ReverseProxy still has to see.
//
// An offer to upgrade to HTTP/2 ("h2c", or "h2", which names HTTP/2 over
// TLS and is never a valid Upgrade token, RFC 9113 3.2) is removed with
// its HTTP2-Settings, and the request is served as the HTTP/1.1 request it
// also is, as nginx and Envoy serve it (RFC 9110 7.8: a server may ignore
// an Upgrade). Forwarded, the offer turns the connection to the upstream
// into HTTP/2 that the edge no longer routes or checks (h2c smuggling), or
// sends an ordinary request down the upgrade path, which an h2, h2c or
// https upstream's transport refuses (502). Other upgrades (WebSocket)
// pass, also when listed next to an HTTP/2 token.
func DropHopByHop(h http.Header) {
	if up := h["Upgrade"]; len(up) > 0 {
		if kept, changed := withoutTokens(up, "h2c", "h2"); changed {
			if len(kept) == 0 {
				delete(h, "Upgrade")
			} else {
				h["Upgrade"] = kept
			}
		}
	}
	delete(h, "Http2-Settings")
	conn := h["Connection"]
	if len(conn) == 0 {
		return
	}
	var keep []string
	for _, v := range conn {
		for tok := range strings.SplitSeq(v, ",") {
			tok = http.CanonicalHeaderKey(strings.Trim(tok, " \t"))
			switch {
			case tok == "":
			case hopByHopStandard[tok]:
				if tok == "Upgrade" && len(h["Upgrade"]) == 0 {
					continue // the h2c upgrade is gone: nothing left to upgrade to
				}
				keep = append(keep, tok)
			default:
				delete(h, tok)
			}
		}
	}
	if len(keep) == 0 {
		delete(h, "Connection")
		return
	}
	h["Connection"] = []string{strings.Join(keep, ", ")}
}

// NominatesPresent reports whether h's Connection header nominates a
// header h holds other than the standard hop-by-hop ones: one that
// DropHopByHop would remove. A reader that looks at the request before
// DropHopByHop ran (the listen.http redirect check) must not believe such
// a header, which the request the edge serves no longer has; it cleans a
// copy when this is true, which it rarely is ("Connection: keep-alive"
// nominates nothing present).
func NominatesPresent(h http.Header) bool {
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			tok = http.CanonicalHeaderKey(strings.Trim(tok, " \t"))
			if _, ok := h[tok]; ok && !hopByHopStandard[tok] {
				return true
			}
		}
	}
	return false
}

// DropNominatedTrailers removes from trailer (a request's announced
// trailer names) the names h's Connection header nominates: they are
// hop-by-hop after the body as in the header, and the forwarder, which
// passes announced trailers on, runs after DropHopByHop has cut the
// Connection header down. It must run before DropHopByHop.
func DropNominatedTrailers(h, trailer http.Header) {
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.Trim(tok, " \t"); tok != "" {
				delete(trailer, http.CanonicalHeaderKey(tok))
			}
		}
	}
}

// DropUnderscoreTrailers removes from trailer (a request's announced
// trailer names) the names with "_", as SanitizeHeaders does in the
// header unless server.allow_underscore_headers: a CGI-style service folds
// "_" to "-", so X_Request_Id after the body would stand for the header
// the edge stated.
func DropUnderscoreTrailers(trailer http.Header, srv *routes.Server) {
	if srv.AllowUnderscoreHeaders {
		return
	}
	for name := range trailer {
		if strings.IndexByte(name, '_') >= 0 {
			delete(trailer, name)
		}
	}
}

// withoutTokens returns the comma-separated list values without toks
// (case-insensitive) and whether any was there.
func withoutTokens(values []string, toks ...string) ([]string, bool) {
	found := false
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if isAnyFold(strings.Trim(t, " \t"), toks) {
				found = true
			}
		}
	}
	if !found {
		return values, false
	}
	var kept []string
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.Trim(t, " \t"); t != "" && !isAnyFold(t, toks) {
				kept = append(kept, t)
			}
		}
	}
	if len(kept) == 0 {
		return nil, true
	}
	return []string{strings.Join(kept, ", ")}, true
}

func isAnyFold(s string, toks []string) bool {
	for _, tok := range toks {
		if strings.EqualFold(s, tok) {
			return true
		}
	}
	return false
}

// SanitizeHeaders drops, in one pass over the client's headers: names with
// "_" (unless server.allow_underscore_headers), the URL-override headers,
// the headers only Causeway sets for a service, and, from an untrusted
// peer, every forwarded and client-address header and the mirror mark.
// From a trusted proxy too, a forwarded header spelled with "_"
// (X_Forwarded_For, X_Real_IP) is dropped: a proxy states the hyphenated
// names, so such a spelling is the client's, passed on by a proxy that does
// not know it; and a CGI-style service, which folds "_" to "-", would take
// it for the header the proxy and the edge stated.
func SanitizeHeaders(h http.Header, trusted bool, srv *routes.Server) {
	for name := range h {
		if !srv.AllowUnderscoreHeaders && strings.IndexByte(name, '_') >= 0 {
			delete(h, name)
			continue
		}
		switch edgeheader.Of(name) {
		case edgeheader.URLOverride, edgeheader.Owned:
			delete(h, name)
		case edgeheader.Forwarded:
			if !trusted || strings.IndexByte(name, '_') >= 0 {
				delete(h, name)
			}
		}
	}
}

// standardMethods are RFC 9110's methods and PATCH (RFC 5789).
var standardMethods = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

// MethodCaseMismatch reports a method that is a standard one in the wrong
// case ("post", "Get"). Methods are case-sensitive (RFC 9110 §9.1), so to
// the edge "post" is not POST and a route limited to POST does not match;
// an upstream that upper-cases methods would then run an unauthenticated
// POST.
func MethodCaseMismatch(m string) bool {
	if len(m) < 3 || len(m) > 7 {
		return false
	}
	for _, s := range standardMethods {
		if m == s {
			return false
		}
	}
	for _, s := range standardMethods {
		if strings.EqualFold(m, s) {
			return true
		}
	}
	return false
}

// CheckPath refuses decoded paths that upstreams read differently from the
// edge. A control character (from %00-%1F or %7F) truncates or splits the
// path in C-based servers and log pipelines: always refused. Strict mode
// also refuses what survives one decoding as an escape ("%2e", "%2f",
// "%5c": the client double-encoded it, and an upstream that decodes again
// sees "." or "/"), backslashes (a path separator on Windows and IIS) and
// ";" (Tomcat and Jetty read "/..;/" as "/../").
func CheckPath(p string, strict bool) string {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return "control character in the request path"
		case !strict:
		case c == '\\':
			return "backslash in the request path (server.path_normalization: strict)"
		case c == ';':
			return "';' parameter in the request path (server.path_normalization: strict)"
		case c == '%' && i+2 < len(p):
			switch strings.ToLower(p[i+1 : i+3]) {
			case "2e", "2f", "5c":
				return "double-encoded '.', '/' or '\\' in the request path (server.path_normalization: strict)"
			}
		}
	}
	return ""
}

// NormalizeHost checks a Host (or :authority) and removes one trailing dot
// from its name, so "api.example.com." is routed and forwarded as
// "api.example.com". An empty label ("a..example", ".example",
// "example..") or a port that is not a number up to 65535 is refused: the
// edge and the upstream would otherwise disagree about which host was meant.
// An empty port ("example:") is allowed (RFC 3986 §3.2.3).
func NormalizeHost(host string) (string, bool) {
	if host == "" {
		return "", true // HTTP/1.0 without Host: matched by host-less routes only
	}
	if host[0] == '[' {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return "", false
		}
		rest := host[end+1:]
		if rest != "" && (rest[0] != ':' || !validPortOrEmpty(rest[1:])) {
			return "", false
		}
		return host, true
	}
	name, port := host, ""
	if i := strings.IndexByte(host, ':'); i >= 0 {
		name, port = host[:i], host[i:]
		if !validPortOrEmpty(port[1:]) {
			return "", false
		}
	}
	trimmed := strings.TrimSuffix(name, ".")
	if trimmed == "" || trimmed[0] == '.' || trimmed[len(trimmed)-1] == '.' || strings.Contains(trimmed, "..") {
		return "", false
	}
	if len(trimmed) == len(name) {
		return host, true
	}
	return trimmed + port, true
}

func validPortOrEmpty(p string) bool {
	if len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}

// CheckH2Host refuses an HTTP/2 request whose host header field names
// another authority than its :authority, and removes the field. net/http's
// HTTP/2 server routes on :authority (r.Host) but leaves the client's host
// field in the header map, where a plugin, a header match or an ext_authz
// cache key would judge a host the request was not routed to. RFC 9113
// 8.3.1 forbids clients to send the two different and tells an
// intermediary to compare them after scheme-based normalization (RFC 3986
// 6.2.3: the host's case, an empty or default port); Envoy refuses such a
// request as malformed. With no :authority, net/http already took the
// field as r.Host. It returns the message of the 400, or "".
func CheckH2Host(r *http.Request) string {
	vs, ok := r.Header["Host"]
	if !ok {
		return ""
	}
	delete(r.Header, "Host")
	if len(vs) != 1 {
		return "more than one host header field"
	}
	port := "80"
	if r.TLS != nil {
		port = "443"
	}
	if !sameAuthority(vs[0], r.Host, port) {
		return "the host header field differs from :authority"
	}
	return ""
}

// sameAuthority compares two authorities (host[:port]) after scheme-based
// normalization: the host case-insensitively, an empty port and
// defaultPort the same as none.
func sameAuthority(a, b, defaultPort string) bool {
	a, b = dropPort(a, defaultPort), dropPort(b, defaultPort)
	return strings.EqualFold(a, b)
}

// dropPort removes ":" + defaultPort, or an empty port, from authority.
func dropPort(authority, defaultPort string) string {
	i := strings.LastIndexByte(authority, ':')
	if i < 0 || strings.IndexByte(authority[i:], ']') >= 0 {
		return authority // no port (a bracketed IPv6 address's colons are not one)
	}
	if p := authority[i+1:]; p == "" || p == defaultPort {
		return authority[:i]
	}
	return authority
}
