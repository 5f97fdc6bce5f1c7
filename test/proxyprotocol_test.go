package test

import (
	"fmt"
	"strings"
	"testing"
)

// TestProxyProtocolIsNotSpoken: the edge does not speak the PROXY protocol,
// so PROXY bytes a client sends first are a malformed request: 400 and the
// connection closed, nothing forwarded, and the address in them never
// taken for the client (an allow list naming only that address lets
// nothing through). Also with the peer in trusted_proxies, whose
// X-Forwarded-For the edge believes: PROXY is not a forwarding header.
// The TLS listener sees no ClientHello and serves nothing.
func TestProxyProtocolIsNotSpoken(t *testing.T) {
	up := newHeaderUpstream(t)
	certFile, keyFile, _ := serverCert(t, t.TempDir(), "api.example.com")
	e := startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
trusted_proxies: [127.0.0.0/8]
tls:
  certificates: [{cert_file: %q, key_file: %q}]
  redirect_http: false
plugins:
  only-spoofed: {use: ip_filter, config: {allow: [6.6.6.6/32, "2001:db8::66/128"]}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: open, match: {path_prefix: /open}, upstream: u}
  - {name: filtered, match: {path_prefix: /filtered}, plugins: [only-spoofed], upstream: u}
`, certFile, keyFile, up.addr()))
	v2 := "\r\n\r\n\x00\r\nQUIT\n" + "\x21\x11\x00\x0c" + "\x06\x06\x06\x06" + "\x7f\x00\x00\x01" + "\x11\x5c\x00\x50"
	for _, tc := range []struct{ name, preface string }{
		{"v1 TCP4", "PROXY TCP4 6.6.6.6 127.0.0.1 4444 80\r\n"},
		{"v1 TCP6", "PROXY TCP6 2001:db8::66 ::1 4444 80\r\n"},
		{"v1 UNKNOWN", "PROXY UNKNOWN\r\n"},
		{"v1 lower case", "proxy TCP4 6.6.6.6 127.0.0.1 4444 80\r\n"},
		{"v2 binary", v2},
	} {
		for _, path := range []string{"/open", "/filtered"} {
			t.Run(tc.name+path, func(t *testing.T) {
				id := "pp-" + tc.name + path
				req := "GET " + path + " HTTP/1.1\r\nHost: api.example.com\r\nX-Test-Id: " + id + "\r\n\r\n"
				got := raw(t, e.Addr("http"), tc.preface+req)
				if !strings.HasPrefix(got, "HTTP/1.1 400 ") {
					t.Errorf("plain listener answered %q, want 400", firstLine(got))
				}
				if n := strings.Count(got, "HTTP/1.1 "); n > 1 {
					t.Errorf("the request after the PROXY line was served too (%d responses)", n)
				}
				if got := raw(t, e.Addr("https"), tc.preface+req); strings.Contains(got, "HTTP/1.1 200") {
					t.Errorf("TLS listener served it: %q", firstLine(got))
				}
				if _, reached := up.got(id); reached {
					t.Errorf("the request reached the upstream")
				}
			})
		}
	}
	// The same listener still serves a well-formed request, and the allow
	// list is live: the peer is not 6.6.6.6.
	for path, want := range map[string]string{"/open": "HTTP/1.1 200 ", "/filtered": "HTTP/1.1 403 "} {
		got := raw(t, e.Addr("http"), "GET "+path+" HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(got, want) {
			t.Errorf("%s: %q, want %q", path, firstLine(got), want)
		}
	}
}
