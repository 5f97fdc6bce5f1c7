package pipeline

import (
	"maps"
	"net"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/gorilla/mux"

	"github.com/causewayhq/causeway/routes"
)

// Router picks the most specific route for a request, independent of the
// order of the routes file. gorilla/mux matches its routes one by one in
// registration order, so a flat router over 1,000 routes costs 1,000 regexp
// checks for a miss. Routes are therefore split first by host (exact hosts in
// a map, wildcard hosts by suffix, then host-less routes) and, within a host,
// by the first path segment when the route's literal path fixes it. Each
// bucket is a small mux.Router whose routes are sorted most specific first.
type Router struct {
	exact     map[string]*hostRoutes
	wildcards []wildcardRoutes // longest suffix first
	any       *hostRoutes      // routes without a host
}

type wildcardRoutes struct {
	suffix string // ".example.com" for "*.example.com"
	routes *hostRoutes
}

// hostRoutes holds the routes of one host, bucketed by first path segment.
type hostRoutes struct {
	bySegment map[string]*mux.Router
	rest      *mux.Router // routes whose first segment is not fixed
}

// RouteEntry is a route ready to be matched: its config and its handler.
type RouteEntry struct {
	Cfg     routes.Route
	Handler http.Handler
}

func NewRouter(entries []RouteEntry) *Router {
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

	rt := &Router{exact: map[string]*hostRoutes{}}
	wild := map[string]*hostRoutes{}
	for _, e := range sorted {
		host := e.Cfg.Match.Host
		var hr *hostRoutes
		switch {
		case host == "":
			if rt.any == nil {
				rt.any = newHostRoutes()
			}
			hr = rt.any
		case strings.HasPrefix(host, "*."):
			suffix := host[1:]
			if hr = wild[suffix]; hr == nil {
				hr = newHostRoutes()
				wild[suffix] = hr
				rt.wildcards = append(rt.wildcards, wildcardRoutes{suffix: suffix, routes: hr})
			}
		default:
			if hr = rt.exact[host]; hr == nil {
				hr = newHostRoutes()
				rt.exact[host] = hr
			}
		}
		hr.add(e)
	}
	sort.SliceStable(rt.wildcards, func(i, j int) bool { return len(rt.wildcards[i].suffix) > len(rt.wildcards[j].suffix) })
	return rt
}

func newHostRoutes() *hostRoutes {
	return &hostRoutes{bySegment: map[string]*mux.Router{}}
}

func (h *hostRoutes) add(e RouteEntry) {
	var mr *mux.Router
	if seg, ok := fixedSegment(e.Cfg.Match); ok {
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

// compileOrNever compiles a validated expression. Validation compiled it
// already; should it fail here, the route never matches rather than
// matching everything.
func compileOrNever(expr string) *regexp.Regexp {
	re, err := routes.CompilePathRegex(expr)
	if err != nil {
		return regexp.MustCompile(`[^\s\S]`)
	}
	return re
}

func newMuxRouter() *mux.Router {
	// Paths are cleaned once by the edge before matching (see CleanPath), so
	// mux's own clean-and-redirect is off.
	return mux.NewRouter().SkipClean(true)
}

// fixedSegment returns the first path segment every request matched by m
// has, when m's literal path determines it: "/api/v1" and "/api/{id}" fix
// "api"; the prefix "/api" does not (it also matches "/apix").
func fixedSegment(m routes.Match) (string, bool) {
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

// regexLiteral is the literal text every path a path_regex matches starts
// with ("/api/v" for "/api/v[0-9]+"): it buckets and orders regex routes
// like prefixes of that text. "" when it is not a path ("/" first).
func regexLiteral(expr string) string {
	if expr == "" {
		return ""
	}
	re, err := routes.CompilePathRegex(expr)
	if err != nil {
		return ""
	}
	lit, _ := re.LiteralPrefix()
	if !strings.HasPrefix(lit, "/") || strings.ContainsRune(lit, '{') {
		return ""
	}
	return lit
}

// literalPrefix is the part of a path template before its first variable.
func literalPrefix(p string) string {
	if i := strings.IndexByte(p, '{'); i >= 0 {
		return p[:i]
	}
	return p
}

// firstSegment returns the first segment of a cleaned request path.
func firstSegment(path string) string {
	if len(path) < 2 {
		return ""
	}
	rest := path[1:]
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[:i]
	}
	return rest
}

// moreSpecific orders routes: longer literal path first; at equal length an
// exact path before a template before a path_regex before a prefix before
// no path; then routes that constrain methods, then those with more header
// and query conditions.
// Hosts are separated before this order applies.
func moreSpecific(a, b routes.Match) bool {
	return moreSpecificLit(a, pathLiteral(a), b, pathLiteral(b))
}

// keyedEntry is a route with its literal path, for sorting.
type keyedEntry struct {
	RouteEntry
	lit string
}

// pathLiteral is the literal text every path m matches starts with.
func pathLiteral(m routes.Match) string {
	return literalPrefix(m.Path + m.PathPrefix + regexLiteral(m.PathRegex))
}

// moreSpecificLit is moreSpecific with the routes' pathLiteral given.
func moreSpecificLit(a routes.Match, litA string, b routes.Match, litB string) bool {
	la, lb := len(litA), len(litB)
	if la != lb {
		return la > lb
	}
	if ka, kb := pathKind(a), pathKind(b); ka != kb {
		return ka > kb
	}
	if ma, mb := len(a.Methods) > 0, len(b.Methods) > 0; ma != mb {
		return ma
	}
	// Header conditions outrank query conditions, as in the Gateway API's
	// precedence: more headers wins first, then more query parameters.
	if ha, hb := len(a.Headers)+len(a.HeadersRegex), len(b.Headers)+len(b.HeadersRegex); ha != hb {
		return ha > hb
	}
	if qa, qb := len(a.Query)+len(a.QueryRegex), len(b.Query)+len(b.QueryRegex); qa != qb {
		return qa > qb
	}
	// A route only for TLS before the same match for any connection: on
	// the https listener it is the one meant (a Gateway's HTTPS listener
	// and its HTTP listener each with a route for the same requests).
	return a.TLS && !b.TLS
}

func pathKind(m routes.Match) int {
	switch {
	case m.Path != "" && !strings.Contains(m.Path, "{"):
		return 4
	case m.Path != "":
		return 3
	case m.PathRegex != "":
		return 2
	case m.PathPrefix != "":
		return 1
	}
	return 0
}

// Match finds the handler for r, whose URL.Path is already clean.
func (rt *Router) Match(r *http.Request) (http.Handler, map[string]string) {
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

func (h *hostRoutes) match(r *http.Request) (http.Handler, map[string]string) {
	if mr := h.bySegment[firstSegment(r.URL.Path)]; mr != nil {
		if handler, vars := muxMatch(mr, r); handler != nil {
			return handler, vars
		}
	}
	if h.rest != nil {
		return muxMatch(h.rest, r)
	}
	return nil, nil
}

func muxMatch(mr *mux.Router, r *http.Request) (http.Handler, map[string]string) {
	var m mux.RouteMatch
	if mr.Match(r, &m) && m.MatchErr == nil {
		return m.Handler, m.Vars
	}
	return nil, nil
}

// requestHost is the request's host, lower-cased, without port or trailing dot.
func requestHost(r *http.Request) string {
	return matchHost(r.Host)
}

// matchHost is host[:port] as the router matches it: lower-cased, without
// port or trailing dot (NormalizeHost is the sanitiser's, which keeps them).
func matchHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}
