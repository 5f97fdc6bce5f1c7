package pipeline

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"slices"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/internal/edgeheader"
	"github.com/causewayhq/causeway/routes"
)

func TestNormalizeHost(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"", "", true},
		{"a.example", "a.example", true},
		{"a.example.", "a.example", true},
		{"A.Example.:8443", "A.Example:8443", true},
		{"a.example:", "a.example:", true},
		{"localhost", "localhost", true},
		{"192.0.2.1:80", "192.0.2.1:80", true},
		{"[2001:db8::1]", "[2001:db8::1]", true},
		{"[2001:db8::1]:443", "[2001:db8::1]:443", true},
		{"a.example..", "", false},
		{"a..example", "", false},
		{".a.example", "", false},
		{".", "", false},
		{"..", "", false},
		{":80", "", false},
		{"a.example:443:80", "", false},
		{"a.example:65536", "", false},
		{"a.example:123456", "", false},
		{"a.example:8x", "", false},
		{"a.example:-1", "", false},
		{"[2001:db8::1", "", false},
		{"[2001:db8::1]x", "", false},
		{"[2001:db8::1]:80:80", "", false},
	} {
		got, ok := NormalizeHost(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("NormalizeHost(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestCheckPath(t *testing.T) {
	for _, tc := range []struct {
		path             string
		refused, strictR bool
	}{
		{"/a/b", false, false},
		{"/a\x00b", true, true},
		{"/a\nb", true, true},
		{"/a\x7fb", true, true},
		{"/a\tb", true, true},
		{"/a%2eb", false, true},
		{"/a%2Fb", false, true},
		{"/a%5cb", false, true},
		{"/a%25b", false, false},
		{"/a%", false, false},
		{"/a%2", false, false},
		{"/a\\b", false, true},
		{"/a;b", false, true},
		{"/ü", false, false},
	} {
		if got := CheckPath(tc.path, false) != ""; got != tc.refused {
			t.Errorf("CheckPath(%q, default) refused=%v", tc.path, got)
		}
		if got := CheckPath(tc.path, true) != ""; got != tc.strictR {
			t.Errorf("CheckPath(%q, strict) refused=%v", tc.path, got)
		}
	}
}

func TestMethodCaseMismatch(t *testing.T) {
	for m, want := range map[string]bool{
		"GET": false, "POST": false, "PATCH": false, "PROPFIND": false, "purge": false, "M-SEARCH": false,
		"get": true, "Get": true, "post": true, "dElEtE": true, "connect": true, "Options": true, "trace": true, "head": true,
	} {
		if got := MethodCaseMismatch(m); got != want {
			t.Errorf("MethodCaseMismatch(%q) = %v", m, got)
		}
	}
}

func TestDropHopByHop(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   http.Header
		want http.Header
	}{
		{"nominated headers go, Connection keeps the standard ones",
			http.Header{"Connection": {"keep-alive, X-Secret", "x-other"}, "X-Secret": {"1"}, "X-Other": {"2"}, "Keep-Alive": {"timeout=5"}, "X-Kept": {"3"}},
			http.Header{"Connection": {"Keep-Alive"}, "Keep-Alive": {"timeout=5"}, "X-Kept": {"3"}}},
		{"close only",
			http.Header{"Connection": {"close"}},
			http.Header{}},
		{"h2c upgrade removed with its settings",
			http.Header{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}, "Http2-Settings": {"AAA"}},
			http.Header{}},
		{"h2c next to websocket",
			http.Header{"Connection": {"upgrade"}, "Upgrade": {"websocket, H2C"}},
			http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}},
		{"h2 offer removed (HTTP/2 over TLS is never an Upgrade)",
			http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2"}},
			http.Header{}},
		{"h2 and h2c offered together",
			http.Header{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {"H2, h2c"}, "Http2-Settings": {"AAA"}},
			http.Header{}},
		{"h2 next to websocket",
			http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2", "websocket"}},
			http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}},
		{"websocket untouched",
			http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}},
			http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}},
		{"TE stays for ReverseProxy's trailers check",
			http.Header{"Connection": {"TE"}, "Te": {"trailers"}},
			http.Header{"Connection": {"Te"}, "Te": {"trailers"}}},
		{"settings without Connection still dropped",
			http.Header{"Http2-Settings": {"AAA"}, "Upgrade": {"h2c"}},
			http.Header{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			DropHopByHop(tc.in)
			if !headersEqual(tc.in, tc.want) {
				t.Errorf("got %v, want %v", tc.in, tc.want)
			}
		})
	}
}

// The names a client's Connection header nominates leave its announced
// trailers too, before DropHopByHop cuts Connection down.
func TestDropNominatedTrailers(t *testing.T) {
	for _, tc := range []struct {
		name            string
		header, trailer http.Header
		wantTrailer     http.Header
	}{
		{"nominated names go, case folded",
			http.Header{"Connection": {"keep-alive, x-secret", " X-Other "}},
			http.Header{"X-Secret": nil, "X-Other": nil, "X-Check": nil},
			http.Header{"X-Check": nil}},
		{"no Connection: all stay",
			http.Header{},
			http.Header{"X-Check": nil},
			http.Header{"X-Check": nil}},
		{"empty tokens",
			http.Header{"Connection": {", ,"}},
			http.Header{"X-Check": nil},
			http.Header{"X-Check": nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			DropNominatedTrailers(tc.header, tc.trailer)
			if !headersEqual(tc.trailer, tc.wantTrailer) {
				t.Errorf("got %v, want %v", tc.trailer, tc.wantTrailer)
			}
		})
	}
}

func headersEqual(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func TestSanitizeHeaders(t *testing.T) {
	in := func() http.Header {
		return http.Header{
			"X-Forwarded-Prefix": {"/p"}, "X_forwarded_ssl": {"on"}, "X-Real-Ip": {"1"}, "Cf-Connecting-Ip": {"1"},
			"X-Original-Url": {"/admin"}, "X_original_url": {"/admin"}, "X-Envoy-Original-Path": {"/admin"},
			"X_user_id": {"u"}, "X-User-Id": {"u"}, "Accept": {"*/*"},
			"X-Forwarded-" + strings.Repeat("Long", 10): {"x"}, strings.Repeat("Y", 40): {"kept"},
			"X-Causeway-Peer-Id": {"spiffe://example.org/admin"}, "X-Causeway-Caller-Subject": {"admin"},
			"X-Causeway-Caller-" + strings.Repeat("Long", 10): {"x"}, "X-Causeway-Mirror": {"1"},
		}
	}
	for _, tc := range []struct {
		name       string
		trusted    bool
		underscore bool
		want       []string
	}{
		{"untrusted, underscores dropped", false, false, []string{"X-User-Id", "Accept", strings.Repeat("Y", 40)}},
		{"untrusted, underscores allowed: folded names still caught", false, true, []string{"X_user_id", "X-User-Id", "Accept", strings.Repeat("Y", 40)}},
		{"trusted: forwarded and the mirror mark kept, overrides and Causeway's own never", true, false, []string{"X-Forwarded-Prefix", "X-Real-Ip", "Cf-Connecting-Ip", "X-Forwarded-" + strings.Repeat("Long", 10), "X-Causeway-Mirror", "X-User-Id", "Accept", strings.Repeat("Y", 40)}},
		// Before the fix X_forwarded_ssl passed: a client's spelling that a
		// CGI-style service reads as X-Forwarded-Ssl.
		{"trusted, underscores allowed: the underscore spelling of a forwarded header never", true, true, []string{"X-Forwarded-Prefix", "X-Real-Ip", "Cf-Connecting-Ip", "X-Forwarded-" + strings.Repeat("Long", 10), "X-Causeway-Mirror", "X_user_id", "X-User-Id", "Accept", strings.Repeat("Y", 40)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := in()
			SanitizeHeaders(h, tc.trusted, &routes.Server{AllowUnderscoreHeaders: tc.underscore})
			var got []string
			for k := range h {
				got = append(got, k)
			}
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("kept %q, want %q", got, want)
			}
		})
	}
}

// FuzzForwardedHeaders runs a request with arbitrary headers through the
// entry pass and the outbound rewrite, from an untrusted and from a trusted
// peer, and checks what an upstream would receive: the edge's own
// X-Forwarded-For/-Proto/-Host/-Port, Forwarded and X-Real-IP exactly once;
// from an untrusted peer nothing of the client's forwarded or client-address
// headers; never a URL override, an h2c upgrade or a header the client
// nominated as hop-by-hop.
func FuzzForwardedHeaders(f *testing.F) {
	f.Add("X-Forwarded-Port", "6666", "Connection", "X-Forwarded-For, x-request-id", "203.0.113.9, 10.0.0.2", "a.example.:80", "192.0.2.1:1")
	f.Add("x_forwarded_prefix", "/evil", "Upgrade", "h2c", "garbage", "[2001:db8::1]:8443", "10.0.0.1:1")
	f.Add("X-Original-URL", "/admin", "Connection", "upgrade, http2-settings", ",,", "", "[::ffff:10.0.0.1]:1")
	f.Add("X-Causeway-Caller-Subject", "admin", "X-Causeway-Mirror", "1", "", "a", "192.0.2.1:1")
	tp, err := NewTrustedProxies([]string{"10.0.0.0/8", "2001:db8::/32"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name, value, name2, value2, xff, host, remote string) {
		r := httptest.NewRequest(http.MethodGet, "http://x/", nil)
		r.RemoteAddr = remote
		r.Host = host
		if name = http.CanonicalHeaderKey(name); name != "" {
			r.Header[name] = []string{value}
		}
		if name2 = http.CanonicalHeaderKey(name2); name2 != "" {
			r.Header[name2] = append(r.Header[name2], value2)
		}
		r.Header["X-Forwarded-For"] = []string{xff}
		nominated := map[string]bool{}
		for _, v := range r.Header["Connection"] {
			for tok := range strings.SplitSeq(v, ",") {
				if tok = http.CanonicalHeaderKey(strings.Trim(tok, " \t")); tok != "" && !hopByHopStandard[tok] {
					nominated[tok] = true
				}
			}
		}
		DropHopByHop(r.Header)
		pi := tp.Resolve(r)
		SanitizeHeaders(r.Header, pi.Trusted, &routes.Server{AllowUnderscoreHeaders: true})
		for k := range nominated {
			if _, ok := r.Header[k]; ok {
				t.Fatalf("nominated %q kept", k)
			}
		}
		for k := range r.Header {
			c := edgeheader.Of(k)
			if c == edgeheader.URLOverride || c == edgeheader.Owned || (!pi.Trusted && c == edgeheader.Forwarded) {
				t.Fatalf("%q kept (trusted=%v)", k, pi.Trusted)
			}
		}
		for _, v := range r.Header["Upgrade"] {
			for tok := range strings.SplitSeq(v, ",") {
				if tok = strings.Trim(tok, " \t"); strings.EqualFold(tok, "h2c") || strings.EqualFold(tok, "h2") {
					t.Fatalf("HTTP/2 upgrade kept: %q", r.Header["Upgrade"])
				}
			}
		}
		for _, v := range r.Header["Connection"] {
			for tok := range strings.SplitSeq(v, ",") {
				if !hopByHopStandard[strings.Trim(tok, " ")] {
					t.Fatalf("Connection still nominates %q", tok)
				}
			}
		}
		out := r.Clone(r.Context())
		SetForwarded(&httputil.ProxyRequest{In: r, Out: out}, &pi)
		for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "Forwarded"} {
			want := 1
			if k == "X-Forwarded-For" && !pi.Trusted && pi.PeerStr == "" {
				// A peer without an address (not ip:port) adds no entry,
				// and the client's own never passes.
				want = 0
			}
			if len(out.Header[k]) != want {
				t.Fatalf("%s: %q (peer %q)", k, out.Header[k], pi.PeerStr)
			}
		}
		if !pi.Trusted && out.Header.Get("X-Forwarded-For") != pi.PeerStr {
			t.Fatalf("untrusted X-Forwarded-For %q, peer %q", out.Header.Get("X-Forwarded-For"), pi.PeerStr)
		}
		if got := out.Header.Get("X-Real-Ip"); got != pi.ClientStr {
			t.Fatalf("X-Real-IP %q, resolved %q", got, pi.ClientStr)
		}
		if !pi.Trusted && pi.ClientStr != "" && pi.ClientStr != pi.PeerStr {
			t.Fatalf("untrusted peer %q resolved to %q", pi.PeerStr, pi.ClientStr)
		}
	})
}

// FuzzCleanPath checks the path the edge routes and forwards: it starts
// with "/", holds no empty, "." or ".." segment, keeps a trailing slash,
// and cleaning it again changes nothing; the request-line checks never
// panic and strict refuses at least what default refuses.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/", "", "a", "/a/../b/", "//a//b", "/a/./b/.", "/..", "/a%2e%2e/b", "/a\\..\\b", "/a;b/..;/c", "/\x00"} {
		f.Add(s, "a.example.")
	}
	f.Fuzz(func(t *testing.T, p, host string) {
		c := CleanPath(p)
		if c == "" || c[0] != '/' {
			t.Fatalf("CleanPath(%q) = %q", p, c)
		}
		if again := CleanPath(c); again != c {
			t.Fatalf("cleanPath not idempotent: %q -> %q -> %q", p, c, again)
		}
		segs := strings.Split(strings.TrimSuffix(c[1:], "/"), "/")
		for i, s := range segs {
			if s == "." || s == ".." || (s == "" && (i != 0 || len(segs) != 1)) {
				t.Fatalf("CleanPath(%q) = %q keeps segment %q", p, c, s)
			}
		}
		if len(p) > 1 && strings.HasSuffix(p, "/") && c != "/" && !strings.HasSuffix(c, "/") {
			t.Fatalf("CleanPath(%q) = %q lost the trailing slash", p, c)
		}
		if CheckPath(p, false) != "" && CheckPath(p, true) == "" {
			t.Fatalf("strict accepts %q that default refuses", p)
		}
		if h, ok := NormalizeHost(host); ok {
			if again, ok2 := NormalizeHost(h); !ok2 || again != h {
				t.Fatalf("NormalizeHost(%q) = %q, then %q %v", host, h, again, ok2)
			}
			if strings.Contains(h, "..") && h[0] != '[' {
				t.Fatalf("NormalizeHost(%q) accepted %q", host, h)
			}
		}
	})
}

// A request from a listener without addresses (a unix socket) gets no
// X-Forwarded-For entry rather than "invalid IP", and Forwarded says
// for=unknown (RFC 7239 §6.3).
func TestForwardedWithoutPeerAddress(t *testing.T) {
	trust, err := NewTrustedProxies(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, remote := range []string{"", "@", "/run/causeway.sock"} {
		t.Run(remote, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://api.example.com/x", nil)
			r.RemoteAddr = remote
			r.Header.Set("X-Forwarded-For", "203.0.113.9") // from nobody trusted
			pi := trust.Resolve(r)
			SanitizeHeaders(r.Header, pi.Trusted, &routes.Server{})
			out := r.Clone(r.Context())
			SetForwarded(&httputil.ProxyRequest{In: r, Out: out}, &pi)
			if v, ok := out.Header["X-Forwarded-For"]; ok {
				t.Fatalf("X-Forwarded-For %q for a peer without an address", v)
			}
			if got := out.Header.Get("Forwarded"); got != "for=unknown;host=api.example.com;proto=http" {
				t.Fatalf("Forwarded %q", got)
			}
			if v, ok := out.Header["X-Real-Ip"]; ok {
				t.Fatalf("X-Real-IP %q", v)
			}
		})
	}
}

// CheckH2Host compares the host field with :authority after scheme-based
// normalization (RFC 9113 8.3.1, RFC 3986 6.2.3) and always takes the
// field off the header map, so nothing after it reads a host the request
// was not routed on.
func TestCheckH2Host(t *testing.T) {
	cases := []struct {
		name      string
		authority string
		tls       bool
		hosts     []string // nil: no field
		refused   bool
	}{
		{"no field", "api.example.com", true, nil, false},
		{"same", "api.example.com", true, []string{"api.example.com"}, false},
		{"case differs", "api.example.com", true, []string{"API.example.COM"}, false},
		{"default https port", "api.example.com", true, []string{"api.example.com:443"}, false},
		{"default port on the authority", "api.example.com:443", true, []string{"api.example.com"}, false},
		{"empty port", "api.example.com", true, []string{"api.example.com:"}, false},
		{"default http port", "api.example.com:80", false, []string{"api.example.com"}, false},
		{"443 is not http's default", "api.example.com", false, []string{"api.example.com:443"}, true},
		{"same IPv6 literal and port", "[::1]:8443", true, []string{"[::1]:8443"}, false},
		{"IPv6 literal, default port", "[::1]", true, []string{"[::1]:443"}, false},
		{"IPv6 literal differs", "[::1]", true, []string{"[::2]"}, true},
		{"other host", "api.example.com", true, []string{"evil.example.com"}, true},
		{"other port", "api.example.com:8443", true, []string{"api.example.com:9443"}, true},
		{"port only on one side", "api.example.com:8443", true, []string{"api.example.com"}, true},
		{"empty field", "api.example.com", true, []string{""}, true},
		{"two fields", "api.example.com", true, []string{"api.example.com", "api.example.com"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &http.Request{ProtoMajor: 2, Host: tc.authority, Header: http.Header{}}
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			if tc.hosts != nil {
				r.Header["Host"] = tc.hosts
			}
			msg := CheckH2Host(r)
			if (msg != "") != tc.refused {
				t.Fatalf("CheckH2Host = %q, want refused %v", msg, tc.refused)
			}
			if _, ok := r.Header["Host"]; ok {
				t.Fatalf("the host field is still in the header map")
			}
			if r.Host != tc.authority {
				t.Fatalf("r.Host = %q, want %q unchanged", r.Host, tc.authority)
			}
		})
	}
}
