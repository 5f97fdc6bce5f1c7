package pipeline

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestOrigin(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tls       bool
		host      string
		trusted   bool
		routeHost string
		proto     string
		fwdHost   string
		want      string
	}{
		{"plain", false, "app.internal", false, "", "", "", "http://app.internal"},
		{"tls", true, "app.example.com", false, "", "", "", "https://app.example.com"},
		{"untrusted ignores both", false, "app.internal", false, "", "https", "evil.example", "http://app.internal"},
		{"trusted", false, "edge:8080", true, "", "https", "app.example.com", "https://app.example.com"},
		// The last value is the nearest trusted proxy's; one in front
		// of it may be a client's that the proxy appended to.
		{"trusted, last entries", false, "edge", true, "", "http , HTTPS ", "evil.example, App.Example.com:8443", "https://app.example.com:8443"},
		{"trusted, a client's values in front", false, "edge", true, "", "https, http", "evil.example, app.internal", "http://app.internal"},
		{"trusted, bad proto", true, "app.example.com", true, "", "javascript", "", "https://app.example.com"},
		{"trusted, path in host", false, "app.internal", true, "", "", "evil.example/x", "http://app.internal"},
		{"trusted, userinfo", false, "app.internal", true, "", "", "u@evil.example", "http://app.internal"},
		{"trusted, backslash", false, "app.internal", true, "", "", "evil.example\\x", "http://app.internal"},
		{"route host, served", false, "app.example.com", true, "app.example.com", "https", "APP.example.com.:443", "https://app.example.com.:443"},
		{"route host, not served", false, "app.example.com", true, "app.example.com", "https", "evil.example", "https://app.example.com"},
		{"wildcard, served", false, "a.example.com", true, "*.example.com", "https", "b.c.example.com", "https://b.c.example.com"},
		{"wildcard, bare parent", false, "a.example.com", true, "*.example.com", "", "example.com", "http://a.example.com"},
		{"wildcard, lookalike", false, "a.example.com", true, "*.example.com", "", "evilexample.com", "http://a.example.com"},
		{"wildcard, suffix inside", false, "a.example.com", true, "*.example.com", "", "example.com.evil.example", "http://a.example.com"},
		{"ipv6 route host", false, "[2001:db8::1]", true, "2001:db8::1", "https", "[2001:db8::1]:8443", "https://[2001:db8::1]:8443"},
		// A trusted proxy's value that is no host[:port] is ignored, not
		// pasted into the redirect_uri as a URL that names nothing or
		// another host.
		{"trusted, CRLF", false, "app.internal", true, "", "", "evil.example\r\nSet-Cookie: a=b", "http://app.internal"},
		{"trusted, space", false, "app.internal", true, "", "", "evil.example x", "http://app.internal"},
		{"trusted, scheme-relative", false, "app.internal", true, "", "", "//evil.example", "http://app.internal"},
		{"trusted, port out of range", false, "app.internal", true, "", "", "app.example.com:99999", "http://app.internal"},
		{"trusted, two ports", false, "app.internal", true, "", "", "app.example.com:80:443", "http://app.internal"},
		{"trusted, port only", false, "app.internal", true, "", "", ":443", "http://app.internal"},
		{"trusted, empty label", false, "app.internal", true, "", "", "app..example.com", "http://app.internal"},
		{"trusted, leading dot", false, "app.internal", true, "", "", ".example.com", "http://app.internal"},
		{"trusted, bracket not closed", false, "app.internal", true, "", "", "[2001:db8::1", "http://app.internal"},
		{"trusted, bracket inside a name", false, "app.internal", true, "", "", "evil.example]:80", "http://app.internal"},
		{"trusted, not an address in brackets", false, "app.internal", true, "", "", "[evil.example]", "http://app.internal"},
		{"trusted, port text", false, "app.internal", true, "", "", "app.example.com:8x", "http://app.internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://"+tc.host+"/", nil)
			r.Host = tc.host
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			} else {
				r.TLS = nil
			}
			if tc.proto != "" {
				r.Header.Set("X-Forwarded-Proto", tc.proto)
			}
			if tc.fwdHost != "" {
				r.Header.Set("X-Forwarded-Host", tc.fwdHost)
			}
			r.RemoteAddr = "203.0.113.9:4711"
			if tc.trusted {
				r.RemoteAddr = "10.0.0.1:4711"
			}
			pi := originProxies(t).Resolve(r)
			if got := Origin(r, &pi, tc.routeHost); got != tc.want {
				t.Fatalf("Origin = %q, want %q", got, tc.want)
			}
		})
	}
}

// originProxies trusts 10.0.0.0/8: the peer 10.0.0.1 and the inner hop
// 10.0.0.2 of a chain.
func originProxies(t *testing.T) *TrustedProxies {
	t.Helper()
	tp, err := NewTrustedProxies([]string{"10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

// TestOriginForwarded: a proxy that writes only RFC 7239 Forwarded states
// the client's scheme and host there. From a trusted peer they are read
// with the X- headers' strictness, from the element the client-facing
// trusted proxy wrote; two statements that disagree, or one that cannot be
// read, leave what the edge saw.
func TestOriginForwarded(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tls       bool
		peer      string // RemoteAddr; 10/8 is trusted
		routeHost string
		fwd       []string          // Forwarded lines
		xf        map[string]string // X-Forwarded-* (names as sent)
		want      string
	}{
		{name: "forwarded only", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;host=app.example.com;proto=https`}, want: "https://app.example.com"},
		{name: "quoted host with port", peer: "10.0.0.1:1", fwd: []string{`for="203.0.113.1:4711";host="app.example.com:8443";proto=https`}, want: "https://app.example.com:8443"},
		{name: "parameter names and proto in any case", peer: "10.0.0.1:1", fwd: []string{`For=203.0.113.1;HOST=App.Example.com;Proto=HTTPS`}, want: "https://app.example.com"},
		{name: "ipv6 host", peer: "10.0.0.1:1", fwd: []string{`for="[2001:db8::7]";host="[2001:db8::1]:8443";proto=https`}, want: "https://[2001:db8::1]:8443"},
		{name: "proto only", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;proto=https`}, want: "https://edge.internal"},
		{name: "host only", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;host=app.example.com`}, want: "http://app.example.com"},
		// The client-facing proxy's element, not the nearest proxy's
		// (an inner hop that got plain http from the outer one) nor an
		// element the client wrote to its left.
		{name: "chain: the client-facing hop's element", peer: "10.0.0.1:1", fwd: []string{
			`for=198.51.100.1;host=evil.example;proto=http`,
			`for=203.0.113.1;host=app.example.com;proto=https`,
			`for=10.0.0.2;host=edge.internal;proto=http`,
		}, want: "https://app.example.com"},
		{name: "chain: one line, comma list", peer: "10.0.0.1:1", fwd: []string{
			`for=198.51.100.1;host=evil.example;proto=http, for=203.0.113.1;host=app.example.com;proto=https, for=10.0.0.2;host=edge.internal;proto=http`,
		}, want: "https://app.example.com"},
		{name: "chain: every hop trusted, the left-most", peer: "10.0.0.1:1", fwd: []string{
			`for=10.0.0.3;host=app.example.com;proto=https, for=10.0.0.2;host=edge.internal;proto=http`,
		}, want: "https://app.example.com"},
		{name: "hidden client, the proxy still states the host", peer: "10.0.0.1:1", fwd: []string{`for=_hidden;host=app.example.com;proto=https`}, want: "https://app.example.com"},
		{name: "comma inside quotes", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;host="evil.example,app.example.com";proto=https`}, want: "https://edge.internal"},
		{name: "agrees with X-Forwarded-*", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;host=app.example.com;proto=https`},
			xf: map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.com"}, want: "https://app.example.com"},
		// Disagreement: either may be a client's, passed on by a proxy
		// that writes only the other. Fail safe: what the edge saw.
		{name: "proto disagrees", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;proto=http`},
			xf: map[string]string{"X-Forwarded-Proto": "https"}, want: "http://edge.internal"},
		{name: "proto disagrees, over tls", tls: true, peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;proto=http`},
			xf: map[string]string{"X-Forwarded-Proto": "https"}, want: "https://edge.internal"},
		{name: "host disagrees", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;host=evil.example`},
			xf: map[string]string{"X-Forwarded-Host": "app.example.com"}, want: "http://edge.internal"},
		{name: "x-forwarded-host bad, forwarded good", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;host=app.example.com`},
			xf: map[string]string{"X-Forwarded-Host": "u@evil.example"}, want: "http://edge.internal"},
		{name: "x-forwarded-proto bad, forwarded good", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;proto=https`},
			xf: map[string]string{"X-Forwarded-Proto": "javascript"}, want: "http://edge.internal"},
		{name: "forwarded unreadable, x-forwarded good", peer: "10.0.0.1:1", fwd: []string{`for="203.0.113.1;host=app.example.com`},
			xf: map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.com"}, want: "http://edge.internal"},
		// Hostile values from a trusted proxy: ignored as X-Forwarded-Host's.
		{name: "bad proto", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;proto=javascript`}, want: "http://edge.internal"},
		{name: "proto with a colon", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;proto="https:"`}, want: "http://edge.internal"},
		{name: "CRLF in host", peer: "10.0.0.1:1", fwd: []string{"for=203.0.113.1;host=\"evil.example\r\nSet-Cookie: a=b\""}, want: "http://edge.internal"},
		{name: "userinfo", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;host="u@evil.example"`}, want: "http://edge.internal"},
		{name: "scheme-relative", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;host="//evil.example"`}, want: "http://edge.internal"},
		{name: "port out of range", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;host="app.example.com:65536"`}, want: "http://edge.internal"},
		{name: "two ports", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;host="app.example.com:80:443"`}, want: "http://edge.internal"},
		{name: "path", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;host="evil.example/x"`}, want: "http://edge.internal"},
		{name: "backslash", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;host="evil.example\\x"`}, want: "http://edge.internal"},
		{name: "repeated host", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;host=app.example.com;host=evil.example`}, want: "http://edge.internal"},
		{name: "unterminated quote", peer: "10.0.0.1:1", fwd: []string{`for=203.0.113.1;host="evil.example`}, want: "http://edge.internal"},
		{name: "route host, not served", peer: "10.0.0.1:1", routeHost: "edge.internal", fwd: []string{`for=203.0.113.1;host=evil.example;proto=https`}, want: "https://edge.internal"},
		{name: "wildcard, served", peer: "10.0.0.1:1", routeHost: "*.internal", fwd: []string{`for=203.0.113.1;host=app.internal`}, want: "http://app.internal"},
		// An untrusted client, every spelling: nothing it says is read.
		{name: "untrusted", peer: "203.0.113.9:1", fwd: []string{`for=203.0.113.1;host=evil.example;proto=https`}, want: "http://edge.internal"},
		{name: "untrusted, quoted, upper case", peer: "203.0.113.9:1", fwd: []string{`FOR="203.0.113.1";HOST="evil.example";PROTO="HTTPS"`}, want: "http://edge.internal"},
		{name: "untrusted, repeated lines", peer: "203.0.113.9:1", fwd: []string{`for=10.0.0.1;host=evil.example;proto=https`, `for=10.0.0.2;proto=https`}, want: "http://edge.internal"},
		{name: "untrusted, with X-Forwarded-*", peer: "203.0.113.9:1", fwd: []string{`proto=https;host=evil.example`},
			xf: map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}, want: "http://edge.internal"},
		{name: "untrusted ipv6 peer", peer: "[2001:db8::10]:1", fwd: []string{`for=10.0.0.1;proto=https;host=evil.example`}, want: "http://edge.internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://edge.internal/", nil)
			r.RemoteAddr = tc.peer
			r.TLS = nil
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			r.Header["Forwarded"] = tc.fwd
			for k, v := range tc.xf {
				r.Header[k] = []string{v}
			}
			pi := originProxies(t).Resolve(r)
			if got := Origin(r, &pi, tc.routeHost); got != tc.want {
				t.Fatalf("Origin = %q, want %q", got, tc.want)
			}
		})
	}
}

// FuzzOriginForwarded: whatever a peer sends in Forwarded and
// X-Forwarded-Proto/-Host, the origin is http or https and either the
// Host the edge saw or a plain authority the route serves; from an
// untrusted peer it is always what the edge saw.
func FuzzOriginForwarded(f *testing.F) {
	f.Add(`for=203.0.113.1;host=app.example.com;proto=https`, "", "", true)
	f.Add(`for=198.51.100.1;host=evil.example, for=203.0.113.1;host="a.example.com:8443";proto=https`, "https", "a.example.com:8443", true)
	f.Add(`for=203.0.113.1;host="u@evil.example/x"`, "javascript", "//evil", true)
	f.Add(`host=a.example.com;proto=https`, "https", "a.example.com", false)
	tp, err := NewTrustedProxies([]string{"10.0.0.0/8"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, fwd, xfp, xfh string, trusted bool) {
		r := httptest.NewRequest(http.MethodGet, "http://edge.internal/", nil)
		r.TLS = nil
		r.RemoteAddr = "203.0.113.9:1"
		if trusted {
			r.RemoteAddr = "10.0.0.1:1"
		}
		r.Header["Forwarded"] = []string{fwd}
		r.Header["X-Forwarded-Proto"] = []string{xfp}
		r.Header["X-Forwarded-Host"] = []string{xfh}
		pi := tp.Resolve(r)
		got := Origin(r, &pi, "*.example.com")
		scheme, host, ok := strings.Cut(got, "://")
		if !ok || scheme != "http" && scheme != "https" {
			t.Fatalf("origin %q", got)
		}
		if !trusted && got != "http://edge.internal" {
			t.Fatalf("untrusted: origin %q", got)
		}
		if host != "edge.internal" && (!validAuthority(host) || !hostServed(host, "*.example.com")) {
			t.Fatalf("origin %q: not a served authority", got)
		}
	})
}
