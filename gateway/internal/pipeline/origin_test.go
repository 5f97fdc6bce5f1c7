package pipeline

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
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
		{"trusted, first entries", false, "edge", true, "", " HTTPS , http", "App.Example.com:8443, inner", "https://app.example.com:8443"},
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
			if got := Origin(r, tc.trusted, tc.routeHost); got != tc.want {
				t.Fatalf("Origin = %q, want %q", got, tc.want)
			}
		})
	}
}
