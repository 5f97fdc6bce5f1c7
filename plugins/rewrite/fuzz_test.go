package rewrite

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/plugins/plugintest"
)

// FuzzRewrite: for any request path, a rewritten path that reaches the
// upstream starts with "/" and has no dot segments, and a same-site
// redirect never names another host.
func FuzzRewrite(f *testing.F) {
	for _, s := range []string{"/static/a.css", "/static/..%2f..%2fetc", "/go//evil.example", "/go/%5Cevil", "/go/%2e%2e/x", "/static/./a", "/"} {
		f.Add(s)
	}
	inst, set, err := plugintest.New("rewrite", `rules:
  - { match: '^/static/(.*)$', replace: '/assets/$1' }
  - { match: '^/go/(.*)$', replace: '/$1', redirect: 302 }`)
	if err != nil {
		f.Fatal(err)
	}
	defer set.Close()
	var seen string
	h := inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.URL.Path }))
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.Parse(target)
		if err != nil || !strings.HasPrefix(u.Path, "/") {
			return
		}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.URL = u
		seen = ""
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		switch rec.Code {
		case 200:
			// Paths no rule matches pass untouched (the edge cleans paths
			// before routing); rewritten ones must be clean.
			if strings.HasPrefix(u.Path, "/static/") && (!strings.HasPrefix(seen, "/") || hasDotSegment(seen)) {
				t.Fatalf("%q reached the upstream as %q", target, seen)
			}
		case 302:
			loc := rec.Header().Get("Location")
			l, err := url.Parse(loc)
			if err != nil || l.Host != "" || l.Scheme != "" || strings.HasPrefix(loc, "//") || strings.HasPrefix(loc, "/\\") {
				t.Fatalf("%q redirected to %q", target, loc)
			}
		}
	})
}

// FuzzRedirectOrigin: a redirect that keeps the request's host sends the
// client to that host and no other, on the rule's scheme, whatever the
// Host header and path hold; a host that is not a plain name or address
// gets 400, never a Location.
func FuzzRedirectOrigin(f *testing.F) {
	for _, s := range [][2]string{
		{"shop.example", "/tls/a"}, {"shop.example:8080", "/tls//evil.example"}, {"user@evil.example", "/tls/a"},
		{"[2001:db8::1]:80", "/tls/x"}, {"evil.example/x", "/tls"}, {"a.example#@b.example", "/tls/%2f%2fx"},
		{"a.example\\b.example", "/tls/a"}, {"[::1%25eth0]", "/tls"}, {"", "/tls"},
	} {
		f.Add(s[0], s[1])
	}
	inst, set, err := plugintest.New("rewrite", `rules:
  - { match: '^/tls(.*)$', replace: '$1', redirect: 301, scheme: https }`)
	if err != nil {
		f.Fatal(err)
	}
	defer set.Close()
	h := inst.Wrap(http.NotFoundHandler())
	f.Fuzz(func(t *testing.T, host, target string) {
		u, err := url.Parse(target)
		if err != nil || !strings.HasPrefix(u.Path, "/tls") {
			return
		}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.URL, r.Host = u, host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		loc := rec.Header().Get("Location")
		switch rec.Code {
		case 400:
			if loc != "" {
				t.Fatalf("refused with a Location %q", loc)
			}
		case 301:
			l, err := url.Parse(loc)
			if err != nil || l.Scheme != "https" || l.User != nil || l.RawQuery != u.RawQuery || !strings.HasPrefix(l.Path, "/") || strings.HasPrefix(l.Path, "//") {
				t.Fatalf("host %q path %q redirected to %q", host, target, loc)
			}
			want := host
			if h, _, err := net.SplitHostPort(host); err == nil {
				want = h
			}
			want = strings.TrimSuffix(strings.TrimPrefix(want, "["), "]")
			if l.Hostname() != want || l.Port() != "" {
				t.Fatalf("host %q redirected to another host: %q", host, loc)
			}
		case 404:
			t.Fatalf("a matching path %q reached the next handler", target)
		default:
			t.Fatalf("status %d", rec.Code)
		}
	})
}
