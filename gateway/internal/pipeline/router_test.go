package pipeline

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/routes"
)

// named is a handler that only says which route it is.
type named string

func (n named) ServeHTTP(http.ResponseWriter, *http.Request) {}

func TestRoutePrecedence(t *testing.T) {
	t.Parallel()
	defs := []routes.Route{
		{Name: "catch-all", Match: routes.Match{PathPrefix: "/"}},
		{Name: "api", Match: routes.Match{PathPrefix: "/api"}},
		{Name: "api-v1", Match: routes.Match{PathPrefix: "/api/v1"}},
		{Name: "api-v1-users-exact", Match: routes.Match{Path: "/api/v1/users"}},
		{Name: "api-v1-user-id", Match: routes.Match{Path: "/api/v1/users/{id}"}},
		{Name: "api-v1-user-new", Match: routes.Match{Path: "/api/v1/users/new"}},
		{Name: "api-v1-post", Match: routes.Match{PathPrefix: "/api/v1", Methods: []string{"POST"}}},
		{Name: "api-v1-canary", Match: routes.Match{PathPrefix: "/api/v1", Headers: map[string]string{"X-Canary": "true"}}},
		{Name: "host-any-path", Match: routes.Match{Host: "shop.example.com"}},
		{Name: "host-api", Match: routes.Match{Host: "shop.example.com", PathPrefix: "/api"}},
		{Name: "wild", Match: routes.Match{Host: "*.example.com", PathPrefix: "/"}},
		{Name: "wild-deep", Match: routes.Match{Host: "*.eu.example.com", PathPrefix: "/"}},
		{Name: "query", Match: routes.Match{Path: "/search", Query: map[string]string{"debug": "1"}}},
		{Name: "search", Match: routes.Match{Path: "/search"}},
		// A header condition outranks any number of query conditions.
		{Name: "report-query", Match: routes.Match{Path: "/report", Query: map[string]string{"a": "1", "b": "2"}}},
		{Name: "report-header", Match: routes.Match{Path: "/report", Headers: map[string]string{"X-V": "1"}}},
		{Name: "health", Match: routes.Match{Path: "/health"}},
		{Name: "healthz-prefix", Match: routes.Match{PathPrefix: "/health"}},
	}
	tests := []struct {
		method, host, path string
		header             map[string]string
		want               string
	}{
		{"GET", "x.test", "/", nil, "catch-all"},
		{"GET", "x.test", "/apix", nil, "api"}, // a prefix is a string prefix, as in gorilla/mux
		{"GET", "x.test", "/api/v2", nil, "api"},
		{"GET", "x.test", "/api/v1/orders", nil, "api-v1"},
		{"GET", "x.test", "/api/v1/users", nil, "api-v1-users-exact"},
		{"GET", "x.test", "/api/v1/users/42", nil, "api-v1-user-id"},
		{"GET", "x.test", "/api/v1/users/new", nil, "api-v1-user-new"},
		{"POST", "x.test", "/api/v1/orders", nil, "api-v1-post"},
		{"GET", "x.test", "/api/v1/orders", map[string]string{"X-Canary": "true"}, "api-v1-canary"},
		{"GET", "shop.example.com", "/api/x", nil, "host-api"},
		{"GET", "SHOP.example.com:8443", "/other", nil, "host-any-path"},
		{"GET", "blog.example.com", "/api", nil, "wild"},
		{"GET", "a.eu.example.com", "/", nil, "wild-deep"},
		{"GET", "example.com", "/", nil, "catch-all"}, // *.example.com needs a label before the suffix
		{"GET", "x.test", "/search?debug=1", nil, "query"},
		{"GET", "x.test", "/search?debug=0", nil, "search"},
		{"GET", "x.test", "/report?a=1&b=2", map[string]string{"X-V": "1"}, "report-header"},
		{"GET", "x.test", "/report?a=1&b=2", nil, "report-query"},
		{"GET", "x.test", "/health", nil, "health"},
		{"GET", "x.test", "/healthcheck", nil, "healthz-prefix"},
	}
	// Precedence must not depend on file order: try several shuffles.
	for shuffle := range 5 {
		rt := shuffledRouter(defs, uint64(shuffle))
		for _, tt := range tests {
			t.Run(fmt.Sprintf("shuffle%d/%s %s%s", shuffle, tt.method, tt.host, tt.path), func(t *testing.T) {
				r := httptest.NewRequest(tt.method, "http://"+tt.host+tt.path, nil)
				for k, v := range tt.header {
					r.Header.Set(k, v)
				}
				h, _ := rt.Match(r)
				if h == nil {
					t.Fatalf("no match, want %s", tt.want)
				}
				if got := string(h.(named)); got != tt.want {
					t.Fatalf("matched %s, want %s", got, tt.want)
				}
			})
		}
	}
}

func TestRouteVarsAndNoMatch(t *testing.T) {
	t.Parallel()
	rt := NewRouter([]RouteEntry{{Cfg: &routes.Route{Name: "o", Match: routes.Match{Path: "/orders/{id}", Methods: []string{"GET"}}}, Handler: named("o")}})
	h, vars := rt.Match(httptest.NewRequest(http.MethodGet, "/orders/7", nil))
	if h == nil || vars["id"] != "7" {
		t.Fatalf("vars %v", vars)
	}
	if h, _ := rt.Match(httptest.NewRequest(http.MethodPost, "/orders/7", nil)); h != nil {
		t.Fatal("method mismatch matched")
	}
	if h, _ := rt.Match(httptest.NewRequest(http.MethodGet, "/orders/7/x", nil)); h != nil {
		t.Fatal("longer path matched an exact template")
	}
}

// TestRouterKeepsNoRouteConfig: entries point at the model's routes, so a
// router must take what it matches on while it is built and keep no pointer
// into them; a later change to those routes (the model of another
// generation is a new slice, but nothing should rely on that alone) must
// not change what a built router matches.
func TestRouterKeepsNoRouteConfig(t *testing.T) {
	t.Parallel()
	matches := []routes.Match{
		{Host: "a.example", Path: "/exact", Methods: []string{"GET"}},
		{Host: "a.example", PathPrefix: "/pre/", Headers: map[string]string{"X-K": "v"}},
		{Path: "/orders/{id}"},
		{PathRegex: "^/re/[0-9]+$", Query: map[string]string{"q": "1"}},
		{Host: "*.w.example", PathPrefix: "/w/"},
		{Host: "d.example", Path: "/hr", HeadersRegex: map[string]string{"X-R": "a.*"}},
	}
	reqs := []*http.Request{
		httptest.NewRequest(http.MethodGet, "http://a.example/exact", nil),
		httptest.NewRequest(http.MethodGet, "http://a.example/pre/x", nil),
		httptest.NewRequest(http.MethodGet, "http://b.example/orders/7", nil),
		httptest.NewRequest(http.MethodGet, "http://b.example/re/12?q=1", nil),
		httptest.NewRequest(http.MethodGet, "http://c.w.example/w/x", nil),
		httptest.NewRequest(http.MethodGet, "http://d.example/hr", nil),
	}
	reqs[1].Header.Set("X-K", "v")
	reqs[5].Header.Set("X-R", "abc")
	model := make([]routes.Route, len(matches))
	entries := make([]RouteEntry, len(matches))
	for i, m := range matches {
		model[i] = routes.Route{Name: fmt.Sprint("r", i), Match: m}
		entries[i] = RouteEntry{Cfg: &model[i], Handler: named(model[i].Name)}
	}
	rt := NewRouter(entries)
	for i := range model {
		for j := range model[i].Match.Methods {
			model[i].Match.Methods[j] = http.MethodPost
		}
		model[i].Match = routes.Match{Host: "other.example", Path: "/moved"}
		clear(matches[i].Headers)
		clear(matches[i].HeadersRegex)
		clear(matches[i].Query)
	}
	for i, r := range reqs {
		h, _ := rt.Match(r)
		if want := named(fmt.Sprint("r", i)); h != want {
			t.Errorf("%s %s: matched %v after the routes changed, want %v", r.Host, r.URL.Path, h, want)
		}
	}
	if h, _ := rt.Match(httptest.NewRequest(http.MethodGet, "http://other.example/moved", nil)); h != nil {
		t.Errorf("the changed match was taken up: %v", h)
	}
}

func TestCleanPath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":             "/",
		"/":            "/",
		"/a/b":         "/a/b",
		"/a//b":        "/a/b",
		"/a/./b/":      "/a/b/",
		"/a/../../b":   "/b",
		"/admin/..":    "/",
		"/a/..b":       "/a/..b",
		"/.well-known": "/.well-known",
	} {
		if got := CleanPath(in); got != want {
			t.Errorf("CleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// match.tls and match.plain: a route only for TLS (or only for plain)
// connections wins over the same match for any connection when the request
// came that way, and is never reached on the other kind of connection,
// whatever scheme the request line claims, however specific it is: a
// request then falls back to what else matches (a shorter path, a
// wildcard host), as if the route were not there.
func TestRouteConnectionKind(t *testing.T) {
	t.Parallel()
	route := func(name, host, prefix string, tls, plain bool) RouteEntry {
		return RouteEntry{Cfg: &routes.Route{Name: name, Match: routes.Match{Host: host, PathPrefix: prefix, TLS: tls, Plain: plain}}, Handler: named(name)}
	}
	anyR := route("any", "shop.example", "/", false, false)
	tlsR := route("tls", "shop.example", "/", true, false)
	plainR := route("plain", "shop.example", "/", false, true)
	plainAdmin := route("plain-admin", "shop.example", "/admin", false, true)
	wild := route("wild", "*.example", "/", false, false)
	tests := []struct {
		name    string
		entries []RouteEntry
		target  string
		overTLS bool
		want    string // "" for no match
	}{
		{"TLS request, any and TLS routes", []RouteEntry{anyR, tlsR}, "/x", true, "tls"},
		{"plain request, any and TLS routes", []RouteEntry{anyR, tlsR}, "/x", false, "any"},
		{"TLS request, TLS-only route", []RouteEntry{tlsR}, "/x", true, "tls"},
		{"plain request, TLS-only route", []RouteEntry{tlsR}, "/x", false, ""},
		{"plain request claiming https in the request line", []RouteEntry{tlsR}, "https://shop.example/x", false, ""},
		{"plain request, any and plain routes", []RouteEntry{anyR, plainR}, "/x", false, "plain"},
		{"TLS request, any and plain routes", []RouteEntry{anyR, plainR}, "/x", true, "any"},
		{"plain request, plain-only route", []RouteEntry{plainR}, "/x", false, "plain"},
		{"TLS request, plain-only route", []RouteEntry{plainR}, "/x", true, ""},
		{"TLS request, TLS and plain routes", []RouteEntry{tlsR, plainR}, "/x", true, "tls"},
		{"plain request, TLS and plain routes", []RouteEntry{tlsR, plainR}, "/x", false, "plain"},
		{"TLS request, longer plain path, shorter TLS one", []RouteEntry{tlsR, plainAdmin}, "/admin/x", true, "tls"},
		{"plain request, longer plain path, shorter TLS one", []RouteEntry{tlsR, plainAdmin}, "/admin/x", false, "plain-admin"},
		{"TLS request, plain exact host, wildcard host", []RouteEntry{plainR, wild}, "/x", true, "wild"},
		{"plain request, plain exact host, wildcard host", []RouteEntry{plainR, wild}, "/x", false, "plain"},
	}
	for _, tt := range tests {
		for _, reversed := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/reversed=%v", tt.name, reversed), func(t *testing.T) {
				entries := slices.Clone(tt.entries)
				if reversed {
					slices.Reverse(entries)
				}
				rt := NewRouter(entries)
				target := "http://shop.example" + tt.target
				if strings.HasPrefix(tt.target, "https://") {
					target = tt.target
				}
				r := httptest.NewRequest(http.MethodGet, target, nil)
				r.TLS = nil // httptest sets it for an https target; this one came in plain
				if tt.overTLS {
					r.TLS = &tls.ConnectionState{HandshakeComplete: true}
				}
				h, _ := rt.Match(r)
				got := ""
				if h != nil {
					got = string(h.(named))
				}
				if got != tt.want {
					t.Fatalf("matched %q, want %q", got, tt.want)
				}
			})
		}
	}
}

// match.path_regex: the whole cleaned path must match; regex routes are
// bucketed and ordered by their literal text like prefixes of it, after
// exact paths and templates of the same length, before prefixes.
func TestRouteRegex(t *testing.T) {
	t.Parallel()
	defs := []routes.Route{
		{Name: "versioned", Match: routes.Match{PathRegex: `/api/v[0-9]+/items`}},
		{Name: "api-prefix", Match: routes.Match{PathPrefix: "/api/"}},
		{Name: "exact", Match: routes.Match{Path: "/api/v1/items"}},
		{Name: "alternation", Match: routes.Match{PathRegex: `/(cats|dogs)/[a-z]+`}},
		{Name: "anchored", Match: routes.Match{PathRegex: `^/a.c$`}},
	}
	tests := []struct{ path, want string }{
		{"/api/v1/items", "exact"},
		{"/api/v2/items", "versioned"},
		{"/api/v2/items/x", "api-prefix"}, // the whole path must match
		{"/api/vx/items", "api-prefix"},
		{"/cats/tom", "alternation"},
		{"/cats/Tom", ""},
		{"/x/cats/tom", ""},
		{"/abc", "anchored"},
		{"/abcd", ""},
	}
	for shuffle := range 3 {
		rt := shuffledRouter(defs, uint64(shuffle))
		for _, tt := range tests {
			h, _ := rt.Match(httptest.NewRequest(http.MethodGet, "http://x.test"+tt.path, nil))
			got := ""
			if h != nil {
				got = string(h.(named))
			}
			if got != tt.want {
				t.Fatalf("shuffle %d: %s matched %q, want %q", shuffle, tt.path, got, tt.want)
			}
		}
	}
}

// shuffledRouter builds a router from defs in an order the seed shuffles:
// precedence must not depend on file order. Each route's handler is its
// name.
func shuffledRouter(defs []routes.Route, seed uint64) *Router {
	order := append([]routes.Route(nil), defs...)
	rng := rand.New(rand.NewPCG(seed, 7))
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	entries := make([]RouteEntry, len(order))
	for i, d := range order {
		entries[i] = RouteEntry{Cfg: &d, Handler: named(d.Name)}
	}
	return NewRouter(entries)
}

// match.headers_regex and match.query_regex: the header's values joined by
// "," (as Envoy joins them) or the parameter's first value must match
// whole; a route with more header and query conditions, regex or exact,
// wins over one with fewer.
func TestRouteHeaderAndQueryRegex(t *testing.T) {
	t.Parallel()
	defs := []routes.Route{
		{Name: "any", Match: routes.Match{PathPrefix: "/"}},
		{Name: "version", Match: routes.Match{PathPrefix: "/", HeadersRegex: map[string]string{"x-version": `v[0-9]+`}}},
		{Name: "version-and-env", Match: routes.Match{PathPrefix: "/", HeadersRegex: map[string]string{"X-Version": `v[0-9]+`}, Headers: map[string]string{"X-Env": "canary"}}},
		{Name: "page", Match: routes.Match{PathPrefix: "/", QueryRegex: map[string]string{"page": `[0-9]{1,3}`}}},
	}
	tests := []struct {
		name    string
		headers [][2]string
		query   string
		want    string
	}{
		{"no conditions", nil, "", "any"},
		{"regex header", [][2]string{{"X-Version", "v2"}}, "", "version"},
		{"must match whole", [][2]string{{"X-Version", "v2-beta"}}, "", "any"},
		{"values joined by comma", [][2]string{{"X-Version", "v2"}, {"X-Version", "v3"}}, "", "any"},
		{"regex and exact", [][2]string{{"X-Version", "v7"}, {"X-Env", "canary"}}, "", "version-and-env"},
		{"exact must match too", [][2]string{{"X-Version", "v7"}, {"X-Env", "prod"}}, "", "version"},
		{"query first value", nil, "page=12&page=x", "page"},
		{"query first value decides", nil, "page=x&page=12", "any"},
		{"query whole value", nil, "page=1234", "any"},
		{"empty query value", nil, "page=", "any"},
	}
	for shuffle := range 3 {
		rt := shuffledRouter(defs, uint64(shuffle))
		for _, tt := range tests {
			r := httptest.NewRequest(http.MethodGet, "http://x.test/p?"+tt.query, nil)
			for _, h := range tt.headers {
				r.Header.Add(h[0], h[1])
			}
			h, _ := rt.Match(r)
			got := ""
			if h != nil {
				got = string(h.(named))
			}
			if got != tt.want {
				t.Fatalf("shuffle %d, %s: matched %q, want %q", shuffle, tt.name, got, tt.want)
			}
		}
	}
}
