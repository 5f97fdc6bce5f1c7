package pipeline

// The router as it was before literal paths were looked up instead of
// matched by gorilla/mux: one mux.Router per host and first path segment,
// every route compiled to a regular expression. It is kept here, unchanged
// but for its names, as the reference the differential test compares the
// router with (router_diff_test.go).

import (
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/gorilla/mux"

	"github.com/causewayhq/causeway/routes"
)

type refRouter struct {
	exact     map[string]*refHostRoutes
	wildcards []refWildcardRoutes // longest suffix first
	any       *refHostRoutes      // routes without a host
}

type refWildcardRoutes struct {
	suffix string // ".example.com" for "*.example.com"
	routes *refHostRoutes
}

// refHostRoutes holds the routes of one host, bucketed by first path segment.
type refHostRoutes struct {
	bySegment map[string]*mux.Router
	rest      *mux.Router // routes whose first segment is not fixed
}

func newRefRouter(entries []RouteEntry) *refRouter {
	// Most specific first: mux takes the first match within a bucket, and the
	// buckets are tried most specific first.
	// Each route's literal path is worked out once, not at every
	// comparison: a path_regex's is compiled to find it.
	keyed := make([]keyedEntry, len(entries))
	for i, e := range entries {
		keyed[i] = keyedEntry{e, pathLiteral(e.Cfg.Match)}
	}
	sort.SliceStable(keyed, func(i, j int) bool {
		return moreSpecificLit(keyed[i].Cfg.Match, keyed[i].lit, keyed[j].Cfg.Match, keyed[j].lit)
	})
	sorted := make([]RouteEntry, len(keyed))
	for i, k := range keyed {
		sorted[i] = k.RouteEntry
	}

	rt := &refRouter{exact: map[string]*refHostRoutes{}}
	wild := map[string]*refHostRoutes{}
	for _, e := range sorted {
		host := e.Cfg.Match.Host
		var hr *refHostRoutes
		switch {
		case host == "":
			if rt.any == nil {
				rt.any = newRefHostRoutes()
			}
			hr = rt.any
		case strings.HasPrefix(host, "*."):
			suffix := host[1:]
			if hr = wild[suffix]; hr == nil {
				hr = newRefHostRoutes()
				wild[suffix] = hr
				rt.wildcards = append(rt.wildcards, refWildcardRoutes{suffix: suffix, routes: hr})
			}
		default:
			if hr = rt.exact[host]; hr == nil {
				hr = newRefHostRoutes()
				rt.exact[host] = hr
			}
		}
		hr.add(e)
	}
	sort.SliceStable(rt.wildcards, func(i, j int) bool { return len(rt.wildcards[i].suffix) > len(rt.wildcards[j].suffix) })
	return rt
}

func newRefHostRoutes() *refHostRoutes {
	return &refHostRoutes{bySegment: map[string]*mux.Router{}}
}

func (h *refHostRoutes) add(e RouteEntry) {
	var mr *mux.Router
	if seg, ok := refFixedSegment(e.Cfg.Match); ok {
		if mr = h.bySegment[seg]; mr == nil {
			mr = newMuxRouter()
			h.bySegment[seg] = mr
		}
	} else {
		if h.rest == nil {
			h.rest = newMuxRouter()
		}
		mr = h.rest
	}
	m := e.Cfg.Match
	r := mr.NewRoute().Handler(e.Handler)
	switch {
	case m.Path != "":
		r.Path(m.Path)
	case m.PathPrefix != "":
		r.PathPrefix(m.PathPrefix)
	case m.PathRegex != "":
		re := compileOrNever(m.PathRegex)
		r.MatcherFunc(func(r *http.Request, _ *mux.RouteMatch) bool { return re.MatchString(r.URL.Path) })
	}
	if len(m.Methods) > 0 {
		r.Methods(m.Methods...)
	}
	for _, k := range slices.Sorted(maps.Keys(m.Headers)) {
		r.Headers(k, m.Headers[k])
	}
	for _, k := range slices.Sorted(maps.Keys(m.Query)) {
		r.Queries(k, m.Query[k])
	}
	for _, k := range slices.Sorted(maps.Keys(m.HeadersRegex)) {
		re := compileOrNever(m.HeadersRegex[k])
		name := http.CanonicalHeaderKey(k)
		r.MatcherFunc(func(r *http.Request, _ *mux.RouteMatch) bool {
			switch vs := r.Header[name]; len(vs) {
			case 0:
				return false
			case 1: // the usual case: no join, no allocation
				return re.MatchString(vs[0])
			default:
				return re.MatchString(strings.Join(vs, ","))
			}
		})
	}
	for _, k := range slices.Sorted(maps.Keys(m.QueryRegex)) {
		re := compileOrNever(m.QueryRegex[k])
		r.MatcherFunc(func(r *http.Request, _ *mux.RouteMatch) bool {
			vs, ok := r.URL.Query()[k]
			return ok && len(vs) > 0 && re.MatchString(vs[0])
		})
	}
	if m.TLS {
		// The connection, not mux's Schemes, which would believe an
		// absolute-form request line ("GET https://...") on plain HTTP.
		r.MatcherFunc(func(r *http.Request, _ *mux.RouteMatch) bool { return r.TLS != nil })
	}
}

// refFixedSegment returns the first path segment every request matched by m
// has, when m's literal path determines it: "/api/v1" and "/api/{id}" fix
// "api"; the prefix "/api" does not (it also matches "/apix").
func refFixedSegment(m routes.Match) (string, bool) {
	p := m.Path
	if p == "" {
		p = m.PathPrefix
	}
	if p == "" {
		p = regexLiteral(m.PathRegex) // a prefix every match has
	}
	if len(p) < 2 {
		return "", false
	}
	lit := literalPrefix(p)
	rest := lit[1:]
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[:i], i > 0
	}
	// No slash after the first segment: fixed only for an exact path with no
	// variable ("/health" matches only "/health").
	if m.Path != "" && lit == p {
		return rest, true
	}
	return "", false
}

// refFirstSegment returns the first segment of a cleaned request path.
func refFirstSegment(path string) string {
	if len(path) < 2 {
		return ""
	}
	rest := path[1:]
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[:i]
	}
	return rest
}

// Match finds the handler for r, whose URL.Path is already clean.
func (rt *refRouter) Match(r *http.Request) (http.Handler, map[string]string) {
	host := requestHost(r)
	if hr := rt.exact[host]; hr != nil {
		if h, vars := hr.match(r); h != nil {
			return h, vars
		}
	}
	for _, w := range rt.wildcards {
		// "*.example.com" matches one or more labels before the suffix.
		if len(host) > len(w.suffix) && strings.HasSuffix(host, w.suffix) {
			if h, vars := w.routes.match(r); h != nil {
				return h, vars
			}
		}
	}
	if rt.any != nil {
		return rt.any.match(r)
	}
	return nil, nil
}

func (h *refHostRoutes) match(r *http.Request) (http.Handler, map[string]string) {
	if mr := h.bySegment[refFirstSegment(r.URL.Path)]; mr != nil {
		if handler, vars := refMuxMatch(mr, r); handler != nil {
			return handler, vars
		}
	}
	if h.rest != nil {
		return refMuxMatch(h.rest, r)
	}
	return nil, nil
}

func refMuxMatch(mr *mux.Router, r *http.Request) (http.Handler, map[string]string) {
	var m mux.RouteMatch
	if mr.Match(r, &m) && m.MatchErr == nil {
		return m.Handler, m.Vars
	}
	return nil, nil
}
