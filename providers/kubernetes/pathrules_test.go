package kubernetes

import (
	"cmp"
	"net/http"
	"net/http/httptest"
	"testing"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/plugins/rewrite"
	"github.com/causewayhq/causeway/routes"
)

// TestPrefixPathModifiers runs what ReplacePrefixMatch and
// ReplaceFullPath translate to on request paths, for rewrites and
// redirects: the conformance suite's cases and the edges of a prefix.
func TestPrefixPathModifiers(t *testing.T) {
	prefix := func(p string) []gatewayv1.HTTPRouteMatch {
		return []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptr(gatewayv1.PathMatchPathPrefix), Value: ptr(p)}}}
	}
	replacePrefix := func(r string) *gatewayv1.HTTPPathModifier {
		return &gatewayv1.HTTPPathModifier{Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr(r)}
	}
	tests := []struct {
		name          string
		match         string
		mod           *gatewayv1.HTTPPathModifier
		path, want    string
		wantLocation  string // for the redirect form; "" means the same as want
		skipRedirects bool
	}{
		{"strip to /", "/strip-prefix", replacePrefix("/"), "/strip-prefix/three", "/three", "", false},
		{"strip to /, the prefix alone", "/strip-prefix", replacePrefix("/"), "/strip-prefix", "/", "", false},
		{"strip to /, trailing slash", "/strip-prefix", replacePrefix("/"), "/strip-prefix/", "/", "", false},
		{"replace", "/prefix/one", replacePrefix("/one"), "/prefix/one/two", "/one/two", "", false},
		{"replace, the prefix alone", "/prefix/one", replacePrefix("/one"), "/prefix/one", "/one", "", false},
		{"replace with a trailing slash", "/prefix", replacePrefix("/new/"), "/prefix/a", "/new/a", "", false},
		{"prefix /", "/", replacePrefix("/x"), "/a/b", "/x/a/b", "", false},
		{"prefix / to /", "/", replacePrefix("/"), "/a", "/a", "", false},
		{"a longer segment is not the prefix", "/strip-prefix", replacePrefix("/"), "/strip-prefixed", "/strip-prefixed", "", true},
		{"full path", "/full", &gatewayv1.HTTPPathModifier{Type: gatewayv1.FullPathHTTPPathModifier, ReplaceFullPath: ptr("/one")}, "/full/deep/x", "/one", "", false},
		{"no path modifier keeps the path", "/keep", nil, "/keep/a", "/keep/a", "", false},
		{"a $ in the replacement is literal", "/p", replacePrefix("/$1"), "/p/a", "/$1/a", "/$1/a", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.mod != nil {
				cfg, rerr := urlRewriteConfig(&gatewayv1.HTTPURLRewriteFilter{Path: tt.mod}, prefix(tt.match), "p")
				if rerr != nil {
					t.Fatalf("rewrite refused: %v", rerr.msg)
				}
				rw, err := rewrite.New(cfg.(rewrite.Config), routes.Raw{})
				if err != nil {
					t.Fatal(err)
				}
				got := ""
				rw.Wrap(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r.URL.Path })).
					ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, tt.path, nil))
				if got != tt.want {
					t.Errorf("rewrite %s -> %q, want %q", tt.path, got, tt.want)
				}
			}
			if tt.skipRedirects {
				return
			}
			// Relative (status only) and absolute (scheme) redirects.
			for _, f := range []gatewayv1.HTTPRequestRedirectFilter{{Path: tt.mod, StatusCode: ptr(308)}, {Path: tt.mod, Scheme: ptr("https")}} {
				cfg, rerr := redirectConfig(&f, prefix(tt.match), "p")
				if rerr != nil {
					t.Fatalf("redirect refused: %v", rerr.msg)
				}
				rw, err := rewrite.New(cfg.(rewrite.Config), routes.Raw{})
				if err != nil {
					t.Fatal(err)
				}
				w := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodGet, tt.path, nil)
				req.Host = "shop.example"
				rw.Wrap(http.NotFoundHandler()).ServeHTTP(w, req)
				want, code := cmp.Or(tt.wantLocation, tt.want), 308
				if f.Scheme != nil {
					want, code = "https://shop.example"+want, 302
				}
				if loc := w.Header().Get("Location"); w.Code != code || loc != want {
					t.Errorf("redirect %s -> %d %q, want %d %q", tt.path, w.Code, loc, code, want)
				}
			}
		})
	}
}
