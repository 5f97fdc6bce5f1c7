package gateway

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"

	"github.com/causewayhq/causeway/routes"
)

// trustedProxies decides whose X-Forwarded-* and Forwarded headers are
// believed. From any other peer they are dropped and set afresh, so a client
// cannot forge its address or scheme.
type trustedProxies struct {
	prefixes []netip.Prefix
}

func newTrustedProxies(list []string) (*trustedProxies, error) {
	t := &trustedProxies{}
	for _, s := range list {
		p, err := routes.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		t.prefixes = append(t.prefixes, p)
	}
	return t, nil
}

func (t *trustedProxies) trusts(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// peerAddr is the address of the TCP peer of r.
func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		host, _, splitErr := net.SplitHostPort(r.RemoteAddr)
		if splitErr != nil {
			return netip.Addr{}
		}
		a, _ := netip.ParseAddr(host)
		return a.Unmap()
	}
	return ap.Addr().Unmap()
}

// clientIP is the client's address: the peer, or, when the peer is a trusted
// proxy, the right-most address in X-Forwarded-For that is not itself a
// trusted proxy (addresses further left are the client's to invent).
func (t *trustedProxies) clientIP(r *http.Request) string {
	peer := peerAddr(r)
	if !peer.IsValid() {
		return ""
	}
	if len(t.prefixes) == 0 || !t.trusts(peer) {
		return peer.String()
	}
	xff := r.Header.Values("X-Forwarded-For")
	for i := len(xff) - 1; i >= 0; i-- {
		parts := strings.Split(xff[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return peer.String() // a garbled chain is not believed past this point
			}
			if !t.trusts(a) {
				return a.Unmap().String()
			}
			peer = a
		}
	}
	return peer.String()
}

// setForwarded sets X-Forwarded-For/-Proto/-Host and Forwarded on the
// outbound request. httputil.ReverseProxy has already removed the client's
// copies from pr.Out; they are carried over only from a trusted peer.
func (t *trustedProxies) setForwarded(pr *httputil.ProxyRequest) {
	in, out := pr.In, pr.Out
	peer := peerAddr(in)
	peerStr := peer.String()
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	trusted := peer.IsValid() && len(t.prefixes) > 0 && t.trusts(peer)

	xff := peerStr
	xfProto, xfHost := proto, in.Host
	var fwd string
	if trusted {
		if prior := in.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			xff = strings.Join(prior, ", ") + ", " + peerStr
		}
		if v := in.Header.Get("X-Forwarded-Proto"); v != "" {
			xfProto = v
		}
		if v := in.Header.Get("X-Forwarded-Host"); v != "" {
			xfHost = v
		}
		if prior := in.Header.Values("Forwarded"); len(prior) > 0 {
			fwd = strings.Join(prior, ", ") + ", "
		}
	}
	// One backing array for the four values: this runs for every request.
	vals := [4]string{xff, xfProto, xfHost, fwd + forwardedElement(peer, peerStr, in.Host, proto)}
	vs := vals[:]
	out.Header["X-Forwarded-For"] = vs[0:1:1]
	out.Header["X-Forwarded-Proto"] = vs[1:2:2]
	out.Header["X-Forwarded-Host"] = vs[2:3:3]
	out.Header["Forwarded"] = vs[3:4:4]

	// The verified client certificate's subject (north-south mTLS) is the
	// edge's to state; a client-sent copy never passes.
	delete(out.Header, ClientCertSubjectHeader)
	if in.TLS != nil && len(in.TLS.VerifiedChains) > 0 && len(in.TLS.VerifiedChains[0]) > 0 {
		out.Header[ClientCertSubjectHeader] = []string{in.TLS.VerifiedChains[0][0].Subject.String()}
	}
}

// ClientCertSubjectHeader carries the subject of the client certificate the
// edge verified (tls.client_auth) to the upstream.
const ClientCertSubjectHeader = "X-Client-Cert-Subject"

// forwardedElement is one RFC 7239 element: for=...;host=...;proto=...
// (peerStr is peer.String(), already computed by the caller).
func forwardedElement(peer netip.Addr, peerStr, host, proto string) string {
	node := peerStr
	switch {
	case !peer.IsValid():
		node = "unknown"
	case peer.Is6():
		node = `"[` + peerStr + `]"`
	}
	if host == "" {
		return "for=" + node + ";proto=" + proto
	}
	return "for=" + node + ";host=" + quoteForwarded(host) + ";proto=" + proto
}

// quoteForwarded quotes a value that is not an RFC 7230 token.
func quoteForwarded(v string) string {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return `"` + forwardedEscaper.Replace(v) + `"`
		}
	}
	return v
}

// forwardedEscaper is built once: a Replacer compiles its table on first use,
// which cost more than the rest of the Forwarded header when done per request.
var forwardedEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`)
