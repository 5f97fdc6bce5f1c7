package rewrite

import (
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
