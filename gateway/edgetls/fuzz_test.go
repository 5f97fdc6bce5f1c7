package edgetls

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/routes"
)

// FuzzRedirect checks the redirect never becomes an open redirect: whatever
// the Host header and path, the answer is 400, or a 308 to https on the same
// host with the https port, and the path and query unchanged.
func FuzzRedirect(f *testing.F) {
	dir := f.TempDir()
	ca := newCA(f, "fuzz CA")
	c, k := ca.writePair(f, dir, "a", "api.example.com")
	m, err := New(f.Context(), &routes.TLS{MinVersion: "1.2", Certificates: []routes.Certificate{{CertFile: c, KeyFile: k}}}, Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	h := m.HTTPHandler("8443")
	for _, s := range [][2]string{
		{"api.example.com", "/a?b=c"}, {"api.example.com:80", "/"}, {"[::1]:80", "/x"}, {"evil.com@good.com", "/"},
		{"good.com/evil.com", "/"}, {"good.com\\evil.com", "/"}, {"", "/"}, {"a..b", "//evil.com/x"}, {"127.0.0.1", "/%2F%2Fevil"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, host, target string) {
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		req, err := http.NewRequest(http.MethodGet, "http://x"+target, nil)
		if err != nil {
			return // not a request a server would parse either
		}
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusBadRequest:
			return
		case http.StatusPermanentRedirect:
		default:
			t.Fatalf("status %d for host %q", rec.Code, host)
		}
		loc, err := url.Parse(rec.Header().Get("Location"))
		if err != nil {
			t.Fatalf("Location %q does not parse: %v", rec.Header().Get("Location"), err)
		}
		want := hostOnly(host)
		if loc.Scheme != "https" || loc.Port() != "8443" || !strings.EqualFold(loc.Hostname(), want) || loc.User != nil {
			t.Fatalf("host %q redirected to %q (scheme %q, host %q, port %q)", host, loc, loc.Scheme, loc.Hostname(), loc.Port())
		}
		if ip := net.ParseIP(want); ip == nil && strings.ContainsAny(want, "/\\@?#") {
			t.Fatalf("host %q with URL syntax was redirected", host)
		}
		if loc.RequestURI() != req.URL.RequestURI() {
			t.Fatalf("path and query %q became %q", req.URL.RequestURI(), loc.RequestURI())
		}
	})
}
