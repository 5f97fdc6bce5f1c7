package pipeline

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestForwardedSchemeSentUpstream: the X-Forwarded-Proto the upstream
// receives is the scheme the edge believes, the one Origin (the OIDC
// redirect_uri) and the listen.http redirect read, and X-Forwarded-Port
// defaults to that scheme's port. Before, a trusted proxy that wrote only
// Forwarded proto=https got an upstream X-Forwarded-Proto of "http" (the
// edge's own hop) next to a Forwarded element saying https, and port 80;
// and of X-Forwarded-Proto the first value was read, so behind a proxy
// that appends its own value the client's value chose the scheme.
func TestForwardedSchemeSentUpstream(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tls       bool
		peer      string              // RemoteAddr; 10/8 is trusted
		hdr       map[string][]string // the request's forwarding headers
		wantProto string              // X-Forwarded-Proto and Origin's scheme
		wantPort  string
	}{
		{name: "no statement", peer: "10.0.0.1:1", wantProto: "http", wantPort: "80"},
		{name: "no statement, tls", tls: true, peer: "10.0.0.1:1", wantProto: "https", wantPort: "443"},
		{name: "forwarded proto=https only", peer: "10.0.0.1:1",
			hdr: map[string][]string{"Forwarded": {"for=203.0.113.1;proto=https"}}, wantProto: "https", wantPort: "443"},
		{name: "forwarded proto quoted, upper case", peer: "10.0.0.1:1",
			hdr: map[string][]string{"Forwarded": {`for="203.0.113.1:4711";proto="HTTPS"`}}, wantProto: "https", wantPort: "443"},
		{name: "forwarded proto=http over tls", tls: true, peer: "10.0.0.1:1",
			hdr: map[string][]string{"Forwarded": {"for=203.0.113.1;proto=http"}}, wantProto: "http", wantPort: "80"},
		{name: "forwarded chain: the client-facing hop's proto", peer: "10.0.0.1:1",
			hdr: map[string][]string{"Forwarded": {"for=198.51.100.1;proto=http, for=203.0.113.1;proto=https, for=10.0.0.2;proto=http"}}, wantProto: "https", wantPort: "443"},
		{name: "forwarded and x-forwarded-proto agree", peer: "10.0.0.1:1",
			hdr: map[string][]string{"Forwarded": {"for=203.0.113.1;proto=https"}, "X-Forwarded-Proto": {"https"}}, wantProto: "https", wantPort: "443"},
		{name: "forwarded and x-forwarded-proto disagree", peer: "10.0.0.1:1",
			hdr: map[string][]string{"Forwarded": {"for=203.0.113.1;proto=https"}, "X-Forwarded-Proto": {"http"}}, wantProto: "http", wantPort: "80"},
		{name: "disagree over tls", tls: true, peer: "10.0.0.1:1",
			hdr: map[string][]string{"Forwarded": {"for=203.0.113.1;proto=http"}, "X-Forwarded-Proto": {"https"}}, wantProto: "https", wantPort: "443"},
		// The proxy appends its value after the client's: the last
		// value is the proxy's.
		{name: "appended in one line", peer: "10.0.0.1:1",
			hdr: map[string][]string{"X-Forwarded-Proto": {"https, http"}}, wantProto: "http", wantPort: "80"},
		{name: "appended as a second line", peer: "10.0.0.1:1",
			hdr: map[string][]string{"X-Forwarded-Proto": {"https", "http"}}, wantProto: "http", wantPort: "80"},
		{name: "appended https after a client's http", peer: "10.0.0.1:1",
			hdr: map[string][]string{"X-Forwarded-Proto": {"http", " HTTPS "}}, wantProto: "https", wantPort: "443"},
		{name: "empty entries after the last value", peer: "10.0.0.1:1",
			hdr: map[string][]string{"X-Forwarded-Proto": {"http, https, ,", " "}}, wantProto: "https", wantPort: "443"},
		{name: "last value not a scheme", peer: "10.0.0.1:1",
			hdr: map[string][]string{"X-Forwarded-Proto": {"https, javascript"}}, wantProto: "http", wantPort: "80"},
		{name: "not a scheme", tls: true, peer: "10.0.0.1:1",
			hdr: map[string][]string{"X-Forwarded-Proto": {"wss"}}, wantProto: "https", wantPort: "443"},
		{name: "proxy's port passes", peer: "10.0.0.1:1",
			hdr: map[string][]string{"Forwarded": {"for=203.0.113.1;proto=https"}, "X-Forwarded-Port": {"8443"}}, wantProto: "https", wantPort: "8443"},
		// From an untrusted peer nothing counts. (SanitizeHeaders has
		// removed these before; here they are still present.)
		{name: "untrusted", peer: "203.0.113.9:1",
			hdr: map[string][]string{"Forwarded": {"for=203.0.113.1;proto=https"}, "X-Forwarded-Proto": {"https"}}, wantProto: "http", wantPort: "80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := httptest.NewRequest(http.MethodGet, "http://edge.internal/", nil)
			in.RemoteAddr = tc.peer
			in.TLS = nil
			if tc.tls {
				in.TLS = &tls.ConnectionState{}
			}
			for k, v := range tc.hdr {
				in.Header[k] = v
			}
			pi := originProxies(t).Resolve(in)
			out := in.Clone(in.Context())
			SetForwardedOn(in, out, &pi)
			if got := out.Header["X-Forwarded-Proto"]; len(got) != 1 || got[0] != tc.wantProto {
				t.Errorf("upstream's X-Forwarded-Proto %q, want %q", got, tc.wantProto)
			}
			if got := out.Header.Get("X-Forwarded-Port"); got != tc.wantPort {
				t.Errorf("upstream's X-Forwarded-Port %q, want %q", got, tc.wantPort)
			}
			if got, want := Origin(in, &pi, ""), tc.wantProto+"://edge.internal"; got != want {
				t.Errorf("Origin %q, want %q", got, want)
			}
		})
	}
}

// TestNominatesPresent: the listen.http redirect check cleans a copy of
// the request only when its Connection header nominates a header it has
// (other than the standard hop-by-hop ones).
func TestNominatesPresent(t *testing.T) {
	for _, tc := range []struct {
		name string
		hdr  http.Header
		want bool
	}{
		{"none", http.Header{"X-Forwarded-Proto": {"https"}}, false},
		{"keep-alive", http.Header{"Connection": {"keep-alive"}, "X-Forwarded-Proto": {"https"}}, false},
		{"upgrade", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, false},
		{"nominated, absent", http.Header{"Connection": {"X-Other"}, "X-Forwarded-Proto": {"https"}}, false},
		{"nominated", http.Header{"Connection": {"x-forwarded-proto"}, "X-Forwarded-Proto": {"https"}}, true},
		{"nominated in a list, second line", http.Header{"Connection": {"keep-alive", " close ,\tFORWARDED "}, "Forwarded": {"proto=https"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NominatesPresent(tc.hdr); got != tc.want {
				t.Fatalf("NominatesPresent = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestForwardedHostSentUpstream: X-Forwarded-Host and X-Forwarded-Port
// reach the upstream as the edge believes them, not as the trusted proxy
// passed them on. Before, the first line went on as written: behind a
// proxy that appends (a second line, a list) an upstream reading the
// first value got the client's host and port while the edge's own
// OIDC callback used the proxy's; a host stated only in Forwarded got
// the upstream the internal Host, and a default port from the Host's
// port rather than the host the client addressed.
func TestForwardedHostSentUpstream(t *testing.T) {
	for _, tc := range []struct {
		name     string
		peer     string // RemoteAddr; 10/8 is trusted
		hdr      map[string][]string
		wantHost string
		wantPort string
	}{
		{name: "no statement", peer: "10.0.0.1:1", wantHost: "edge.internal:8080", wantPort: "8080"},
		{name: "proxy's host", peer: "10.0.0.1:1",
			hdr: map[string][]string{"X-Forwarded-Host": {"app.example.com"}}, wantHost: "app.example.com", wantPort: "80"},
		{name: "appended as a second line", peer: "10.0.0.1:1",
			hdr: map[string][]string{"X-Forwarded-Host": {"evil.example", "app.example.com"}}, wantHost: "app.example.com", wantPort: "80"},
		{name: "appended in a list, with a port, upper case", peer: "10.0.0.1:1",
			hdr: map[string][]string{"X-Forwarded-Host": {"evil.example:6666, App.Example.com:8443"}}, wantHost: "app.example.com:8443", wantPort: "8443"},
		{name: "forwarded host and proto only", peer: "10.0.0.1:1",
			hdr: map[string][]string{"Forwarded": {"for=203.0.113.1;host=app.example.com;proto=https"}}, wantHost: "app.example.com", wantPort: "443"},
		{name: "forwarded, ipv6 host with a port", peer: "10.0.0.1:1",
			hdr: map[string][]string{"Forwarded": {`for="[2001:db8::7]:1";host="[2001:db8::1]:8443";proto=https`}}, wantHost: "[2001:db8::1]:8443", wantPort: "8443"},
		{name: "not an authority", peer: "10.0.0.1:1",
			hdr: map[string][]string{"X-Forwarded-Host": {"u@evil.example"}}, wantHost: "edge.internal:8080", wantPort: "8080"},
		{name: "disagrees with forwarded", peer: "10.0.0.1:1",
			hdr: map[string][]string{"X-Forwarded-Host": {"app.example.com"}, "Forwarded": {"for=203.0.113.1;host=evil.example"}}, wantHost: "edge.internal:8080", wantPort: "8080"},
		{name: "proxy's port appended as a second line", peer: "10.0.0.1:1",
			hdr: map[string][]string{"X-Forwarded-Proto": {"https"}, "X-Forwarded-Port": {"6666", "443"}}, wantHost: "edge.internal:8080", wantPort: "443"},
		{name: "last port not a port", peer: "10.0.0.1:1",
			hdr: map[string][]string{"X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"app.example.com"}, "X-Forwarded-Port": {"443, 6666x"}}, wantHost: "app.example.com", wantPort: "443"},
		{name: "port out of range", peer: "10.0.0.1:1",
			hdr: map[string][]string{"X-Forwarded-Port": {"99999"}}, wantHost: "edge.internal:8080", wantPort: "8080"},
		{name: "untrusted", peer: "203.0.113.9:1",
			hdr: map[string][]string{"X-Forwarded-Host": {"evil.example"}, "X-Forwarded-Port": {"6666"}, "Forwarded": {"host=evil.example"}}, wantHost: "edge.internal:8080", wantPort: "8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := httptest.NewRequest(http.MethodGet, "http://edge.internal:8080/", nil)
			in.RemoteAddr = tc.peer
			in.TLS = nil
			for k, v := range tc.hdr {
				in.Header[k] = v
			}
			pi := originProxies(t).Resolve(in)
			out := in.Clone(in.Context())
			SetForwardedOn(in, out, &pi)
			if got := out.Header["X-Forwarded-Host"]; len(got) != 1 || got[0] != tc.wantHost {
				t.Errorf("upstream's X-Forwarded-Host %q, want %q", got, tc.wantHost)
			}
			if got := out.Header["X-Forwarded-Port"]; len(got) != 1 || got[0] != tc.wantPort {
				t.Errorf("upstream's X-Forwarded-Port %q, want %q", got, tc.wantPort)
			}
			if o := Origin(in, &pi, ""); !strings.HasSuffix(o, "://"+tc.wantHost) {
				t.Errorf("Origin %q, upstream's host %q", o, tc.wantHost)
			}
		})
	}
}
