package pipeline

import (
	"crypto/tls"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/routes"
)

// The router looks literal paths up in maps instead of matching every route
// with gorilla/mux. These tests compare it with the mux router it replaced
// (router_ref_test.go) on random route sets and requests: both must pick the
// same route and give the same path variables, so precedence is exactly
// what it was.

// diffPaths are the routes' paths: literal ones sharing prefixes with each
// other and with the requests, templates, and ones that are not valid.
var diffPaths = []string{
	"/", "/a", "/a/", "/ab", "/a/b", "/a/b/", "/api", "/api/", "/api/v1", "/api/v1/",
	"/x", "/x/a", "/a/{id}", "/a/{id}/", "/{s}/a", "/a{x}", "/{s}", "/api/{v:v[0-9]+}",
	"/a/{id}/b", "a", "/a/{", "/a/}",
}

// diffRegexes are path_regex values, valid or not.
var diffRegexes = []string{"/a/[0-9]+", "/(a|ab)/.*", "/api/v[0-9]+", "/a.*", "/x/(", ".*"}

// diffRequestPaths are request paths: cleaned, as the router sees them.
var diffRequestPaths = []string{
	"/", "/a", "/a/", "/ab", "/abc", "/a/b", "/a/b/", "/a/b/c", "/a/1", "/a/1/", "/a/1/b", "/a/x",
	"/api", "/api/", "/api/v1", "/api/v1/", "/api/v2", "/api/v12/x", "/x", "/x/a", "/x/a/b", "/b/a", "/zz",
}

var diffHosts = []string{"", "", "a.example", "b.a.example", "*.a.example", "*.example"}

var diffRequestHosts = []string{"a.example", "b.a.example", "c.b.a.example", "x.example", "A.Example:8080", "other.test", "[::1]:80"}

// randomMatch is a route's match drawn from the vocabularies above.
func randomMatch(rng *rand.Rand) routes.Match {
	m := routes.Match{Host: diffHosts[rng.IntN(len(diffHosts))]}
	switch rng.IntN(8) {
	case 0, 1, 2:
		m.Path = diffPaths[rng.IntN(len(diffPaths))]
	case 3, 4, 5:
		m.PathPrefix = diffPaths[rng.IntN(len(diffPaths))]
	case 6:
		m.PathRegex = diffRegexes[rng.IntN(len(diffRegexes))]
	}
	switch rng.IntN(4) {
	case 1:
		m.Methods = []string{http.MethodGet}
	case 2:
		m.Methods = []string{http.MethodPost, http.MethodHead}
	}
	if rng.IntN(3) == 0 {
		m.Headers = map[string]string{}
		for range 1 + rng.IntN(2) {
			m.Headers[[]string{"X-A", "x-a", "X-B"}[rng.IntN(3)]] = []string{"1", "", "2"}[rng.IntN(3)]
		}
	}
	if rng.IntN(4) == 0 {
		m.Query = map[string]string{[]string{"q", "r"}[rng.IntN(2)]: []string{"1", "", "{v}", "{v:[0-9]+}", "a b"}[rng.IntN(5)]}
	}
	if rng.IntN(8) == 0 {
		m.HeadersRegex = map[string]string{"X-A": []string{"[0-9]", "1,2", "("}[rng.IntN(3)]}
	}
	if rng.IntN(8) == 0 {
		m.QueryRegex = map[string]string{"q": []string{"1|2", "[a-z]+"}[rng.IntN(2)]}
	}
	m.TLS = rng.IntN(5) == 0
	return m
}

// randomRequest is a request drawn from the vocabularies above.
func randomRequest(rng *rand.Rand) *http.Request {
	r := &http.Request{
		Method: []string{http.MethodGet, http.MethodPost, http.MethodHead, http.MethodPut}[rng.IntN(4)],
		Host:   diffRequestHosts[rng.IntN(len(diffRequestHosts))],
		URL: &url.URL{
			Path:     diffRequestPaths[rng.IntN(len(diffRequestPaths))],
			RawQuery: []string{"", "q=1", "q=2", "q=", "q=1&q=2", "r=a+b", "q=abc;r=1", "q", "Q=1"}[rng.IntN(9)],
		},
		Header: http.Header{},
	}
	for _, name := range []string{"X-A", "X-B"} {
		switch rng.IntN(4) {
		case 1:
			r.Header[name] = []string{"1"}
		case 2:
			r.Header[name] = []string{"2", "1"}
		case 3:
			r.Header[name] = []string{""}
		}
	}
	if rng.IntN(2) == 0 {
		r.TLS = &tls.ConnectionState{}
	}
	return r
}

// randomEntries is n routes; routeID i is the i-th, so equal matches keep
// their input order as a tie-break, as in the routes file.
func randomEntries(rng *rand.Rand, n int) []RouteEntry {
	entries := make([]RouteEntry, n)
	for i := range entries {
		entries[i] = RouteEntry{Cfg: &routes.Route{Name: fmt.Sprint("r", i), Match: randomMatch(rng)}, Handler: routeID(i)}
	}
	return entries
}

// compareRouters checks that the router and the reference agree on every
// request.
func compareRouters(t *testing.T, entries []RouteEntry, requests []*http.Request) {
	t.Helper()
	rt, ref := NewRouter(entries), newRefRouter(entries)
	for _, r := range requests {
		h, vars := rt.Match(r)
		wantH, wantVars := ref.Match(r)
		if h != wantH || !maps.Equal(vars, wantVars) {
			var routesText strings.Builder
			for _, e := range entries {
				fmt.Fprintf(&routesText, "\n  %d: %+v", e.Handler, e.Cfg.Match)
			}
			t.Fatalf("%s %s?%s host %q header %v tls %t: router %v %v, reference %v %v; routes:%s",
				r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.Header, r.TLS != nil, h, vars, wantH, wantVars, routesText.String())
		}
	}
}

func TestRouterMatchesReference(t *testing.T) {
	tests := []struct {
		name           string
		sets, routes   int
		requestsPerSet int
		seedA, seedB   uint64
	}{
		{name: "few routes, many collisions", sets: 3000, routes: 4, requestsPerSet: 40, seedA: 1, seedB: 2},
		{name: "a dozen routes", sets: 1000, routes: 12, requestsPerSet: 60, seedA: 3, seedB: 4},
		{name: "hundreds of routes", sets: 20, routes: 300, requestsPerSet: 500, seedA: 5, seedB: 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(tt.seedA, tt.seedB))
			for range tt.sets {
				entries := randomEntries(rng, 1+rng.IntN(tt.routes))
				requests := make([]*http.Request, tt.requestsPerSet)
				for i := range requests {
					requests[i] = randomRequest(rng)
				}
				compareRouters(t, entries, requests)
			}
		})
	}
}

// FuzzRouterMatchesReference is TestRouterMatchesReference with the seed
// of the route set and of the requests fuzzed.
func FuzzRouterMatchesReference(f *testing.F) {
	f.Add(uint64(1), uint64(2), uint8(4))
	f.Add(uint64(7), uint64(0), uint8(40))
	f.Fuzz(func(t *testing.T, a, b uint64, n uint8) {
		rng := rand.New(rand.NewPCG(a, b))
		entries := randomEntries(rng, 1+int(n)%64)
		requests := make([]*http.Request, 64)
		for i := range requests {
			requests[i] = randomRequest(rng)
		}
		compareRouters(t, entries, requests)
	})
}

// The router sorts on specificityOf's key: for every pair of random
// matches, the key orders them exactly as moreSpecificLit does, ties
// included (so the stable sort keeps the file's order where it did).
func TestSpecificityKeyIsMoreSpecific(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for range 200_000 {
		a, b := randomMatch(rng), randomMatch(rng)
		la, lb := pathLiteral(a), pathLiteral(b)
		ka, kb := specificityOf(a, la, 0).key, specificityOf(b, lb, 1).key
		if got, want := ka > kb, moreSpecificLit(a, la, b, lb); got != want {
			t.Fatalf("%+v before %+v: key says %v, moreSpecificLit %v", a, b, got, want)
		}
		if got, want := kb > ka, moreSpecificLit(b, lb, a, la); got != want {
			t.Fatalf("%+v before %+v: key says %v, moreSpecificLit %v", b, a, got, want)
		}
	}
}
