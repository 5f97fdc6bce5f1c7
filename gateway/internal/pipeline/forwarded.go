package pipeline

import (
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"

	"github.com/causewayhq/causeway/internal/clientip"
	"github.com/causewayhq/causeway/routes"
)

// TrustedProxies decides whose X-Forwarded-* and Forwarded headers are
// believed. From any other peer they are dropped and set afresh, so a client
// cannot forge its address or scheme.
type TrustedProxies struct {
	res *clientip.Resolver
}

func NewTrustedProxies(list []string) (*TrustedProxies, error) {
	prefixes := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := routes.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		prefixes = append(prefixes, p)
	}
	return &TrustedProxies{res: clientip.New(prefixes)}, nil
}

// Peer is what the edge decides about a request's sender, once, as the
// request enters: every later reader (rate limits, plugins, the access log,
// X-Real-IP) takes it from here.
//
// The fields are ordered with the three bools last: a Peer sits in every
// request's state, whose size class TestReqStateSizeClass guards, and
// bools between the wider fields would each take 8 bytes of padding.
type Peer struct {
	Peer    netip.Addr // the TCP peer
	PeerStr string
	// Client is the resolved client address; ClientOK is false when a
	// trusted hop's X-Forwarded-For entry was not an address (Client is
	// then the last hop that was).
	Client    netip.Addr
	ClientStr string
	// res is the resolver that decided Trusted, for the readers of the
	// trusted peer's other statements (ForwardedScheme).
	res *clientip.Resolver

	Trusted  bool // the peer is a trusted proxy
	ClientOK bool
	// ClientFromForwarded: the trusted peer's Forwarded header named the
	// client and its X-Forwarded-For (if any) did not, so the
	// X-Forwarded-For sent on is built from Forwarded's "for" nodes.
	ClientFromForwarded bool
}

// Resolve decides the peer and the client of r.
func (t *TrustedProxies) Resolve(r *http.Request) Peer {
	var pi Peer
	pi.Peer, _ = clientip.ParseAddr(r.RemoteAddr)
	if pi.Peer.IsValid() { // not for a listener without addresses
		pi.PeerStr = addrString(pi.Peer, r.RemoteAddr)
	}
	pi.Trusted = t.res.Trusts(pi.Peer)
	pi.res = t.res
	if !pi.Trusted {
		pi.Client, pi.ClientOK, pi.ClientStr = pi.Peer, pi.Peer.IsValid(), pi.PeerStr
		if !pi.Client.IsValid() {
			pi.ClientStr = ""
		}
		return pi
	}
	var src clientip.Source
	pi.Client, pi.ClientOK, src = t.res.ResolveSource(pi.Peer, r.Header["X-Forwarded-For"], r.Header["Forwarded"])
	pi.ClientFromForwarded = pi.ClientOK && src == clientip.FromForwarded
	if pi.Client == pi.Peer {
		pi.ClientStr = pi.PeerStr
	} else {
		pi.ClientStr = pi.Client.String()
	}
	return pi
}

// addrString is a.String(), for a parsed from remoteAddr: an IPv4
// address is the host part of remoteAddr ("1.2.3.4:5678") without a new
// string when that part is exactly its text. netip.ParseAddr takes only
// the canonical dotted-decimal form of IPv4 (no leading zeros), so a part
// that parses back to a is that text. IPv6 has several spellings: always
// formatted.
func addrString(a netip.Addr, remoteAddr string) string {
	if a.Is4() {
		if i := strings.LastIndexByte(remoteAddr, ':'); i > 0 && remoteAddr[0] != '[' {
			if b, err := netip.ParseAddr(remoteAddr[:i]); err == nil && b == a {
				return remoteAddr[:i]
			}
		}
	}
	return a.String()
}

// SetForwarded sets X-Forwarded-For/-Proto/-Host/-Port, Forwarded and
// X-Real-IP on the outbound request. The client's own copies were dropped
// as the request entered (from an untrusted peer) or are carried over and
// extended here (from a trusted proxy).
func SetForwarded(pr *httputil.ProxyRequest, pi *Peer) { SetForwardedOn(pr.In, pr.Out, pi) }

// SetForwardedOn is SetForwarded for the edge's own forwarder, which has
// the inbound and outbound requests but no httputil.ProxyRequest.
func SetForwardedOn(in, out *http.Request, pi *Peer) {
	SetForwardedInto(in, out, pi, new([6]string))
}

// SetForwardedInto is SetForwardedOn with the array that holds the six
// values, so that a caller with per-request state allocates it there. The
// header's slices point into vals: it must belong to this request alone.
func SetForwardedInto(in, out *http.Request, pi *Peer, vals *[6]string) {
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	xff := pi.PeerStr
	xfProto, xfHost, xfPort := proto, in.Host, ""
	var fwd string
	var extend bool // fwd holds a trusted proxy's elements, even empty ones
	if pi.Trusted {
		if pi.ClientFromForwarded {
			// An upstream reading X-Forwarded-For finds the client the
			// edge found, not a chain the client wrote past a proxy that
			// speaks only Forwarded.
			xff = xffFromForwarded(in.Header["Forwarded"], pi.PeerStr)
		} else if prior := in.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			xff = strings.Join(prior, ", ") + ", " + pi.PeerStr
		}
		// The scheme the edge believes (the one Origin and the
		// listen.http redirect read), so X-Forwarded-Proto and the
		// client-facing element of the Forwarded passed on never name
		// different schemes: a proxy that writes only Forwarded states
		// proto=https there, and the edge's own "http" here would be a
		// second, contradicting statement. Without a Forwarded header
		// this reads X-Forwarded-Proto's last value and nothing more.
		fh := pi.forwardedHop(in) // parsed once, for the scheme and the host
		if v := schemeStated(in.Header, fh); v != "" {
			xfProto = v
		}
		// The host and port likewise: the host the edge believes (Origin's
		// reading, without a route's host), and the last X-Forwarded-Port
		// when it is a port. Passed on as written, the first line or a
		// list would hand an upstream that reads the first value the
		// client's value, in front of the one the proxy appended.
		if v := hostStated(in.Header, fh, ""); v != "" {
			xfHost = v
		}
		if vs := in.Header["X-Forwarded-Port"]; len(vs) > 0 {
			if v := lastValue(vs); validPort(v) {
				xfPort = v
			}
		}
		// A value that is not RFC 7239 syntax is replaced, not extended:
		// after an open quote (a client's, passed on by a proxy that
		// writes only X-Forwarded-For) the edge's element would be read
		// as part of the quoted string.
		if prior := in.Header.Values("Forwarded"); len(prior) > 0 && clientip.ForwardedValid(prior) {
			fwd, extend = strings.Join(prior, ", "), true
		}
	}
	if xfPort == "" {
		// The port of the host believed above, else the default port of
		// the scheme believed: behind a proxy that ends TLS, 443, not the
		// 80 of the edge's own hop.
		xfPort = forwardedPort(xfHost, xfProto)
	}
	// One backing array for the values: this runs for every request.
	*vals = [6]string{xff, xfProto, xfHost, xfPort, forwardedElement(fwd, extend, pi.Peer, pi.PeerStr, in.Host, proto), pi.ClientStr}
	vs := vals[:]
	out.Header["X-Forwarded-For"] = vs[0:1:1]
	out.Header["X-Forwarded-Proto"] = vs[1:2:2]
	out.Header["X-Forwarded-Host"] = vs[2:3:3]
	out.Header["X-Forwarded-Port"] = vs[3:4:4]
	out.Header["Forwarded"] = vs[4:5:5]
	if pi.ClientStr != "" {
		out.Header["X-Real-Ip"] = vs[5:6:6]
	} else {
		delete(out.Header, "X-Real-Ip")
	}
	if xff == "" {
		// A peer without an address (a non-TCP listener) adds no entry:
		// not "invalid IP", which an upstream would take for a client.
		delete(out.Header, "X-Forwarded-For")
	}

	// The verified client certificate's subject (north-south mTLS) is the
	// edge's to state; a client-sent copy never passes.
	delete(out.Header, ClientCertSubjectHeader)
	if in.TLS != nil && len(in.TLS.VerifiedChains) > 0 && len(in.TLS.VerifiedChains[0]) > 0 {
		out.Header[ClientCertSubjectHeader] = []string{in.TLS.VerifiedChains[0][0].Subject.String()}
	}
}

// xffFromForwarded is the X-Forwarded-For chain of a Forwarded header's
// "for" nodes, the peer last: addresses without port or brackets, other
// nodes ("unknown", "_hidden") as written, an element without "for" as
// "unknown".
func xffFromForwarded(fwd []string, peerStr string) string {
	nodes, ok := clientip.ForwardedFor(fwd)
	if !ok {
		return peerStr // not reached: the client was resolved from it
	}
	var b strings.Builder
	for _, n := range nodes {
		switch {
		case n.Addr.IsValid():
			b.WriteString(n.Addr.String())
		case n.Name != "":
			b.WriteString(n.Name)
		default:
			b.WriteString("unknown")
		}
		b.WriteString(", ")
	}
	b.WriteString(peerStr)
	return b.String()
}

// forwardedPort is the port the client addressed: the Host's port, else the
// scheme's default (as Traefik sets X-Forwarded-Port). The listener's own
// port would be wrong behind a port mapping (a Service's 443 to the edge's
// 8443), where upstreams build their redirects from this header.
func forwardedPort(host, proto string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") && i+1 < len(host) {
		return host[i+1:]
	}
	if proto == "https" {
		return "443"
	}
	return "80"
}

// ClientCertSubjectHeader carries the subject of the client certificate the
// edge verified (tls.client_auth) to the upstream.
const ClientCertSubjectHeader = "X-Client-Cert-Subject"

// forwardedElement is one RFC 7239 element, for=...;host=...;proto=...,
// after prior and ", " when extend is set (a trusted proxy's Forwarded,
// which a sidecar extends on every request). peerStr is peer.String(),
// already computed by the caller.
func forwardedElement(prior string, extend bool, peer netip.Addr, peerStr, host, proto string) string {
	sep := ""
	if extend {
		sep = ", "
	}
	node := peerStr
	switch {
	case !peer.IsValid():
		node = "unknown"
	case peer.Is6():
		node = `"[` + peerStr + `]"`
	}
	if host == "" {
		return prior + sep + "for=" + node + ";proto=" + proto
	}
	// Built in one allocation, the prior elements included: a Host with a
	// port (most of them) is quoted, which as a quoted copy and a
	// concatenation cost two, and a third to join the prior elements.
	if !needsQuote(host) {
		return prior + sep + "for=" + node + ";host=" + host + ";proto=" + proto
	}
	var b strings.Builder
	b.Grow(len(prior) + len(sep) + len("for=;host=\"\";proto=") + len(node) + len(host) + strings.Count(host, `\`) + strings.Count(host, `"`) + len(proto))
	b.WriteString(prior)
	b.WriteString(sep)
	b.WriteString("for=")
	b.WriteString(node)
	b.WriteString(`;host="`)
	for i := 0; i < len(host); i++ {
		if c := host[i]; c == '\\' || c == '"' {
			b.WriteByte('\\')
		}
		b.WriteByte(host[i])
	}
	b.WriteString(`";proto=`)
	b.WriteString(proto)
	return b.String()
}

// needsQuote reports whether v is not an RFC 7230 token, which the
// Forwarded header carries quoted.
func needsQuote(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && strings.IndexByte("!#$%&'*+-.^_`|~", c) < 0 {
			return true
		}
	}
	return false
}

// Origin is the scheme and host the client addressed: from a trusted
// proxy, what it states (ForwardedScheme, ForwardedHost); otherwise, and
// where it states nothing usable, the connection's TLS state and the Host
// header. A value that is not a plain scheme or host is ignored rather
// than passed on into a URL the edge sends (a redirect_uri).
//
// routeHost is the matched route's host ("" for a route on any host,
// "*.example.com" for a wildcard). The router already held the Host header
// to it; a forwarded host outside it is ignored too, so even a trusted
// proxy that passes on a client's X-Forwarded-Host or Forwarded cannot
// point a callback at a host the route does not serve.
func Origin(r *http.Request, pi *Peer, routeHost string) string {
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if !pi.Trusted {
		return scheme + "://" + host
	}
	fh := pi.forwardedHop(r) // parsed once for both
	if v := schemeStated(r.Header, fh); v != "" {
		scheme = v
	}
	if v := hostStated(r.Header, fh, routeHost); v != "" {
		host = v
	}
	return scheme + "://" + host
}

// ForwardedScheme is the scheme a trusted peer says the client used:
// "http" or "https", or "" when the peer is not trusted or states none
// the edge can believe. It reads X-Forwarded-Proto (the last value, the
// one the nearest trusted proxy added: lastValue) and the proto= of RFC
// 7239 Forwarded (of the
// element the client-facing trusted proxy wrote, clientip.ForwardedHop).
// A proxy that writes one of them passes on whatever the client wrote in
// the other, so neither wins: when both are present they must name the
// same scheme, and a value that is neither http nor https, or a Forwarded
// header that is not RFC 7239 syntax, counts as a disagreement. On any
// disagreement the answer is "": the caller uses what the edge itself saw.
func (pi *Peer) ForwardedScheme(r *http.Request) string {
	if !pi.Trusted {
		return ""
	}
	return schemeStated(r.Header, pi.forwardedHop(r))
}

// schemeStated is ForwardedScheme for a trusted peer whose Forwarded
// element fh was read once for the scheme and the host.
func schemeStated(h http.Header, fh stated) string {
	xf, xfOK := "", true
	if vs := h["X-Forwarded-Proto"]; len(vs) > 0 {
		xf = lastValue(vs)
		xfOK = xf == "" || xf == "http" || xf == "https"
	}
	fw, fwdOK := "", fh.ok
	if fh.present && fh.ok && fh.hop.Proto != "" {
		fw = strings.ToLower(fh.hop.Proto)
		fwdOK = fw == "http" || fw == "https"
	}
	return agree(xf, xfOK, fw, fwdOK)
}

// ForwardedHost is the host[:port] a trusted peer says the client
// addressed, read from X-Forwarded-Host and Forwarded's host= as
// ForwardedScheme reads the scheme; each must be a plain authority
// (validAuthority) that routeHost serves. "" when there is none to
// believe.
func (pi *Peer) ForwardedHost(r *http.Request, routeHost string) string {
	if !pi.Trusted {
		return ""
	}
	return hostStated(r.Header, pi.forwardedHop(r), routeHost)
}

// hostStated is ForwardedHost for a trusted peer whose Forwarded element
// fh was read once.
func hostStated(h http.Header, fh stated, routeHost string) string {
	xf, xfOK := "", true
	if vs := h["X-Forwarded-Host"]; len(vs) > 0 {
		xf = lastValue(vs)
		xfOK = xf == "" || validAuthority(xf) && hostServed(xf, routeHost)
	}
	fw, fwdOK := "", fh.ok
	if fh.present && fh.ok && fh.hop.Host != "" {
		fw = strings.ToLower(fh.hop.Host)
		fwdOK = validAuthority(fw) && hostServed(fw, routeHost)
	}
	return agree(xf, xfOK, fw, fwdOK)
}

// stated is what forwardedHop found: the Forwarded element the
// client-facing trusted proxy wrote (hop); present: the request has a
// non-blank Forwarded header; ok: it is RFC 7239 syntax (true when not
// present).
type stated struct {
	hop         clientip.Node
	present, ok bool
}

// forwardedHop reads the Forwarded element the client-facing trusted
// proxy wrote (stated). It parses the whole header: a caller that reads
// both the scheme and the host calls it once.
func (pi *Peer) forwardedHop(r *http.Request) stated {
	fwd := r.Header["Forwarded"]
	present := false
	for _, v := range fwd {
		if strings.Trim(v, " \t,") != "" {
			present = true
			break
		}
	}
	if !present {
		return stated{ok: true}
	}
	hop, ok := pi.res.ForwardedHop(pi.Peer, fwd)
	return stated{hop: hop, present: true, ok: ok}
}

// agree is the value two sources state: either alone when the other
// states nothing, both when they are equal, "" when either is unusable
// (ok false) or they differ.
func agree(a string, aOK bool, b string, bOK bool) string {
	switch {
	case !aOK || !bOK:
		return ""
	case a == "":
		return b
	case b == "", a == b:
		return a
	}
	return ""
}

// hostServed reports whether authority (host[:port]) is one routeHost
// matches, as the router matches the Host header.
func hostServed(authority, routeHost string) bool {
	if routeHost == "" {
		return true
	}
	host := matchHost(authority)
	routeHost = strings.ToLower(routeHost)
	if suffix, ok := strings.CutPrefix(routeHost, "*"); ok {
		return len(host) > len(suffix) && strings.HasSuffix(host, suffix)
	}
	return host == routeHost
}

// lastValue is the last non-empty element of a comma-separated header
// (all its lines, in order), lower-cased and trimmed of spaces and tabs:
// the value the nearest trusted proxy added. A proxy that appends its
// own X-Forwarded-Proto or -Host (HAProxy's add-header, a second line)
// leaves the client's value in front of it; the first value would let the
// client choose the scheme and host, as the left-most X-Forwarded-For
// entry would let it choose its address. Behind a chain whose inner
// proxy also appends, this is the inner proxy's value (the scheme of its
// own hop): such a proxy should pass the header on unchanged, as Envoy
// and Traefik do for their trusted hops, or write Forwarded, whose
// elements say which hop wrote them.
func lastValue(vs []string) string {
	for i := len(vs) - 1; i >= 0; i-- {
		v := vs[i]
		for {
			j := strings.LastIndexByte(v, ',')
			if e := strings.Trim(v[j+1:], " \t"); e != "" {
				return strings.ToLower(e)
			}
			if j < 0 {
				break
			}
			v = v[:j]
		}
	}
	return ""
}

// validPort reports whether p is a port number: 1-5 digits, 1 to 65535.
func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n >= 1 && n <= 65535
}

// validAuthority accepts host[:port] as a URL's authority: a DNS name
// (labels of letters, digits and '-', one trailing dot allowed), an IPv4
// address, or an IPv6 address in brackets, then an optional port of 1-5
// digits up to 65535. Nothing that would change a URL's meaning ('/',
// '@', '?', '#', '\\', spaces, CR, LF) passes, nor a value that names no
// host or more than one reading of one ("a..example", ":443",
// "a.example:80:443", "[2001:db8::1", "[evil.example]", "a.example]:80").
func validAuthority(s string) bool {
	if len(s) > 261 || s == "" {
		return false
	}
	host, port := s, ""
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		a, err := netip.ParseAddr(s[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return false
		}
		host, port = "", s[end+1:]
	} else if i := strings.IndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i:]
	}
	if port != "" {
		p := port[1:]
		if port[0] != ':' || p == "" || len(p) > 5 {
			return false
		}
		n := 0
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
			n = n*10 + int(p[i]-'0')
		}
		if n > 65535 {
			return false
		}
	}
	if s[0] == '[' {
		return true
	}
	host = strings.TrimSuffix(host, ".")
	if host == "" {
		return false
	}
	for label := range strings.SplitSeq(host, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; ('a' > c || c > 'z') && ('0' > c || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}
