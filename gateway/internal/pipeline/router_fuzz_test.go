package pipeline

import (
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/gorilla/mux"

	"github.com/causewayhq/causeway/routes"
)

// routeID is a handler that names the route it belongs to.
type routeID int

func (routeID) ServeHTTP(http.ResponseWriter, *http.Request) {}

// FuzzRouterMatch builds a router from up to three fuzzed routes (plus an
// optional catch-all) and matches a fuzzed request against it. The router
// buckets routes by host and by first path segment for speed; the reference
// here has no buckets: it tries every route on its own, most specific first
// (moreSpecific), exact host before wildcard before host-less. Both must
// pick the same route, so a bucket can never hide a route that matches or
// let a less specific one win.
func FuzzRouterMatch(f *testing.F) {
	f.Add("/api/", "/api", "/api/{id}", uint8(0b01_00_01), uint8(0), false, "/api/v1", "a.example", uint8(0))
	f.Add("/apix", "/api/", "/health", uint8(0b00_01_01), uint8(0b10_01_00), true, "/apix/y", "x.a.example:8080", uint8(1))
	f.Add("/a/{x}/b", "/a/", "/a", uint8(0b01_01_11), uint8(0b11_10_01), false, "/a/1/b", "B.A.EXAMPLE.", uint8(2))
	f.Add("/", "/{x}", "/x{y}", uint8(0b00_00_01), uint8(0), true, "//x/../y/", "[::1]:80", uint8(0))
	f.Add("/a/./b", "/a/../c", "/c", uint8(0b01_01_01), uint8(0), false, "/a/../c/d", "a.example", uint8(0))
	f.Add("~/api/v[0-9]+", "/api/", "/api/v1", uint8(0b00_01_01), uint8(0), true, "/api/v2", "a.example", uint8(0))
	f.Add("~/(a|b)/.*", "~/a/x", "/a/{y}", uint8(0b00_01_01), uint8(0b01), false, "/a/x", "a.example", uint8(0))
	f.Fuzz(func(t *testing.T, p0, p1, p2 string, kinds, hostSel uint8, catchAll bool, reqPath, reqHost string, methodSel uint8) {
		hosts := [4]string{"", "a.example", "*.a.example", "*.example"}
		var entries []RouteEntry
		for i, p := range []string{p0, p1, p2} {
			m := routes.Match{Host: hosts[(hostSel>>(2*i))&3]}
			switch (kinds >> (2 * i)) & 3 {
			case 0:
				m.Path = p
			case 1:
				m.PathPrefix = p
				if re, ok := strings.CutPrefix(p, "~"); ok {
					// A path starting with "~" stands for a path_regex.
					m.PathPrefix, m.PathRegex = "", re
				}
			case 2:
				m.PathPrefix, m.Methods = p, []string{http.MethodGet}
			case 3:
				m.Path, m.Methods = p, []string{http.MethodPost, http.MethodHead}
			}
			if !validFuzzMatch(m) {
				continue // the routes file refuses it
			}
			entries = append(entries, RouteEntry{Cfg: &routes.Route{Name: string(rune('a' + i)), Match: m}, Handler: routeID(i)})
		}
		if catchAll {
			entries = append(entries, RouteEntry{Cfg: &routes.Route{Name: "all", Match: routes.Match{PathPrefix: "/"}}, Handler: routeID(9)})
		}
		for _, a := range entries {
			if moreSpecific(a.Cfg.Match, a.Cfg.Match) {
				t.Fatalf("moreSpecific(%+v, itself) is true", a.Cfg.Match)
			}
			for _, b := range entries {
				if moreSpecific(a.Cfg.Match, b.Cfg.Match) && moreSpecific(b.Cfg.Match, a.Cfg.Match) {
					t.Fatalf("moreSpecific holds both ways for %+v and %+v", a.Cfg.Match, b.Cfg.Match)
				}
			}
		}

		r := &http.Request{
			Method: [3]string{http.MethodGet, http.MethodPost, http.MethodHead}[methodSel%3],
			Host:   reqHost,
			URL:    &url.URL{Path: CleanPath(reqPath)},
			Header: http.Header{},
		}
		rt := NewRouter(entries)
		h, _ := rt.Match(r)

		want := referenceMatch(entries, r)
		var gotID routeID = -1
		if h != nil {
			gotID = h.(routeID)
		}
		if gotID != want {
			t.Fatalf("%s %q on host %q: router picked route %d, reference %d (routes %+v)", r.Method, r.URL.Path, r.Host, gotID, want, entries)
		}
		if h == nil {
			return
		}
		for _, e := range entries {
			if e.Handler.(routeID) != gotID {
				continue
			}
			m := e.Cfg.Match
			switch {
			case m.PathPrefix != "" && !strings.Contains(m.PathPrefix, "{") && !strings.HasPrefix(r.URL.Path, m.PathPrefix):
				t.Fatalf("cleaned path %q matched prefix %q it does not start with", r.URL.Path, m.PathPrefix)
			case m.Path != "" && !strings.Contains(m.Path, "{") && r.URL.Path != m.Path:
				t.Fatalf("cleaned path %q matched exact path %q", r.URL.Path, m.Path)
			}
		}
	})
}

// validFuzzMatch accepts what routes' validation accepts of a path.
func validFuzzMatch(m routes.Match) bool {
	switch {
	case m.Path != "":
		return strings.HasPrefix(m.Path, "/") && mux.NewRouter().Path(m.Path).GetError() == nil
	case m.PathPrefix != "":
		return strings.HasPrefix(m.PathPrefix, "/") && mux.NewRouter().PathPrefix(m.PathPrefix).GetError() == nil
	case m.PathRegex != "":
		_, err := routes.CompilePathRegex(m.PathRegex)
		return err == nil
	}
	return false
}

// referenceMatch is the router without its buckets: every route on its own,
// in order of host class and then of specificity.
func referenceMatch(entries []RouteEntry, r *http.Request) routeID {
	sorted := append([]RouteEntry(nil), entries...)
	sort.SliceStable(sorted, func(i, j int) bool { return moreSpecific(sorted[i].Cfg.Match, sorted[j].Cfg.Match) })
	host := requestHost(r)
	// Host classes in the router's order: the exact host, then wildcards
	// by longest suffix, then routes without a host.
	classOf := func(h string) (int, bool) {
		switch {
		case h == "":
			return 1 << 20, true
		case strings.HasPrefix(h, "*."):
			suffix := h[1:]
			return 1<<10 - len(suffix), len(host) > len(suffix) && strings.HasSuffix(host, suffix)
		default:
			return 0, h == host
		}
	}
	best, bestClass := routeID(-1), -1
	for _, e := range sorted {
		class, ok := classOf(e.Cfg.Match.Host)
		if !ok || (best >= 0 && class >= bestClass) {
			continue
		}
		mr := mux.NewRouter().SkipClean(true)
		route := mr.NewRoute().Handler(e.Handler)
		switch m := e.Cfg.Match; {
		case m.Path != "":
			route.Path(m.Path)
		case m.PathRegex != "":
			re, _ := routes.CompilePathRegex(m.PathRegex)
			route.MatcherFunc(func(r *http.Request, _ *mux.RouteMatch) bool { return re.MatchString(r.URL.Path) })
		default:
			route.PathPrefix(m.PathPrefix)
		}
		if len(e.Cfg.Match.Methods) > 0 {
			route.Methods(e.Cfg.Match.Methods...)
		}
		var rm mux.RouteMatch
		if mr.Match(r, &rm) && rm.MatchErr == nil {
			best, bestClass = e.Handler.(routeID), class
		}
	}
	return best
}
