package pipeline

import (
	"cmp"
	"maps"
	"math"
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
// order of the routes file. Routes are sorted most specific first
// (moreSpecific) and each gets its rank in that order; a request is
// answered by the matching route of lowest rank in the first host class that
// has one (the exact host, then wildcard hosts by longest suffix, then routes
// without a host).
//
// Within a host, literal paths are looked up rather than tried one by one,
// and need no regular expression: exact paths in a map by path, literal
// prefixes in a map by prefix probed at each prefix length the host has.
// Compiling a regular expression per route (gorilla/mux does, even for a
// literal path) was most of the cost of building a router of 10,000
// Gateway API routes, and a new router is built on every change. Only path
// templates, path_regex and query conditions, which are rare, still use mux
// or regexp.
type Router struct {
	exact     map[string]*hostRoutes
	wildcards []wildcardRoutes // longest suffix first
	any       *hostRoutes      // routes without a host
}

type wildcardRoutes struct {
	suffix string // ".example.com" for "*.example.com"
	routes *hostRoutes
}

// hostRoutes holds the routes of one host class. Every list is in rank
// order, so the first route of a list that matches is that list's best.
type hostRoutes struct {
	exact     map[string][]*routeMatcher // literal exact paths
	prefixes  map[string][]*routeMatcher // literal path prefixes
	prefixLen []int                      // the lengths of prefixes' keys, longest first
	other     []*routeMatcher            // templates, path_regex, no path
}

// routeMatcher is one route's conditions other than the host, with the path
// left out when its list already implies it.
type routeMatcher struct {
	rank    int
	handler http.Handler
	methods []string     // upper case; empty: any
	headers []headerCond // mux's Headers: present, and equal to one value unless value is ""
	// mux holds what keeps gorilla/mux's own semantics (a path template
	// with its variables, query conditions); nil when there is none.
	mux      *mux.Route
	pathRe   *regexp.Regexp
	matchers []func(*http.Request) bool // headers_regex, query_regex
	tls      bool
	plain    bool
}

type headerCond struct {
	name  string // canonical
	value string
}

// RouteEntry is a route ready to be matched: its config and its handler.
// Cfg points at the model's route rather than holding a copy: the router
// reads only its match, and only while NewRouter runs, and copying 20,000
// routes of about 300 bytes into the entries and again into the sorted
// order was a quarter of a generation's build at that scale.
type RouteEntry struct {
	Cfg     *routes.Route
	Handler http.Handler
}

func NewRouter(entries []RouteEntry) *Router {
	// Each route's literal path is worked out once, not at every
	// comparison: a path_regex's is compiled to find it.
	// The order is sorted on a small key per route (specificity), not on
	// the entries: comparing and moving whole routes was a quarter of
	// building the router of 20,000 routes.
	order := make([]specificity, len(entries))
	lits := make([]string, len(entries))
	for i, e := range entries {
		lits[i] = pathLiteral(e.Cfg.Match)
		order[i] = specificityOf(e.Cfg.Match, lits[i], i)
	}
	slices.SortStableFunc(order, func(a, b specificity) int { return cmp.Compare(b.key, a.key) })
	keyed := make([]keyedEntry, len(entries))
	for rank, o := range order {
		keyed[rank] = keyedEntry{entries[o.i], lits[o.i]}
	}

	rt := &Router{exact: map[string]*hostRoutes{}}
	wild := map[string]*hostRoutes{}
	// One mux router makes the few routes that need mux; its own matching
	// is never used.
	var templates *mux.Router
	for rank, k := range keyed {
		e := k.RouteEntry
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
		if templates == nil && needsMux(e.Cfg.Match) {
			templates = newMuxRouter()
		}
		hr.add(rank, e, templates)
	}
	sort.SliceStable(rt.wildcards, func(i, j int) bool { return len(rt.wildcards[i].suffix) > len(rt.wildcards[j].suffix) })
	for _, hr := range rt.exact {
		hr.finish()
	}
	for _, w := range rt.wildcards {
		w.routes.finish()
	}
	if rt.any != nil {
		rt.any.finish()
	}
	return rt
}

func newHostRoutes() *hostRoutes {
	return &hostRoutes{exact: map[string][]*routeMatcher{}, prefixes: map[string][]*routeMatcher{}}
}

// isLiteral reports whether p is a path without template variables: mux
// would match it as the string itself.
func isLiteral(p string) bool {
	return !strings.ContainsAny(p, "{}")
}

// needsMux reports whether m has a condition matched by mux.
func needsMux(m routes.Match) bool {
	switch {
	case m.Path != "":
		if !isLiteral(m.Path) {
			return true
		}
	case m.PathPrefix != "":
		if !isLiteral(m.PathPrefix) {
			return true
		}
	}
	return len(m.Query) > 0
}

// add appends e, of the given rank, to the list its path puts it in. Routes
// come in rank order, so every list stays in rank order.
func (h *hostRoutes) add(rank int, e RouteEntry, templates *mux.Router) {
	m := e.Cfg.Match
	rm := &routeMatcher{rank: rank, handler: e.Handler, tls: m.TLS, plain: m.Plain}
	var muxRoute *mux.Route
	muxed := func() *mux.Route {
		if muxRoute == nil {
			muxRoute = templates.NewRoute()
		}
		return muxRoute
	}
	switch {
	case m.Path != "" && isLiteral(m.Path):
		h.exact[m.Path] = append(h.exact[m.Path], rm)
	case m.PathPrefix != "" && isLiteral(m.PathPrefix):
		h.prefixes[m.PathPrefix] = append(h.prefixes[m.PathPrefix], rm)
	default:
		switch {
		case m.Path != "":
			muxed().Path(m.Path)
		case m.PathPrefix != "":
			muxed().PathPrefix(m.PathPrefix)
		case m.PathRegex != "":
			rm.pathRe = compileOrNever(m.PathRegex)
		}
		h.other = append(h.other, rm)
	}
	for _, meth := range m.Methods {
		rm.methods = append(rm.methods, strings.ToUpper(meth)) // as mux's Methods
	}
	for _, k := range sortedKeys(m.Headers) {
		rm.headers = append(rm.headers, headerCond{name: http.CanonicalHeaderKey(k), value: m.Headers[k]})
	}
	for _, k := range sortedKeys(m.Query) {
		// mux's Queries: a template of its own ("{v}" in the value is a
		// variable), read with mux's own query parsing.
		muxed().Queries(k, m.Query[k])
	}
	rm.mux = muxRoute
	for _, k := range sortedKeys(m.HeadersRegex) {
		re := compileOrNever(m.HeadersRegex[k])
		name := http.CanonicalHeaderKey(k)
		rm.matchers = append(rm.matchers, func(r *http.Request) bool {
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
	for _, k := range sortedKeys(m.QueryRegex) {
		re := compileOrNever(m.QueryRegex[k])
		rm.matchers = append(rm.matchers, func(r *http.Request) bool {
			vs, ok := r.URL.Query()[k]
			return ok && len(vs) > 0 && re.MatchString(vs[0])
		})
	}
}

// finish records the prefix lengths to probe, longest first: a longer
// literal outranks a shorter one, so the search usually ends at the first
// hit.
func (h *hostRoutes) finish() {
	for p := range h.prefixes {
		if !slices.Contains(h.prefixLen, len(p)) {
			h.prefixLen = append(h.prefixLen, len(p))
		}
	}
	slices.SortFunc(h.prefixLen, func(a, b int) int { return b - a })
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

// specificity is moreSpecificLit's order as one number per route, greater
// for more specific: the criteria, most significant first, each in the
// bits below the one before. i is the route's place in the input.
type specificity struct {
	key uint64
	i   int
}

func specificityOf(m routes.Match, lit string, i int) specificity {
	b2u := func(b bool) uint64 {
		if b {
			return 1
		}
		return 0
	}
	// Field widths: literal length 24 bits, path kind 3, methods 1,
	// header and query conditions 16 each, tls or plain 1. Longer paths and more
	// conditions than fit are clamped: no routes file or cluster comes
	// near them (a request line is bounded far below 16 MiB).
	clamp := func(n int, bits uint) uint64 { return uint64(min(n, 1<<bits-1)) }
	k := clamp(len(lit), 24)
	k = k<<3 | uint64(pathKind(m))
	k = k<<1 | b2u(len(m.Methods) > 0)
	k = k<<16 | clamp(len(m.Headers)+len(m.HeadersRegex), 16)
	k = k<<16 | clamp(len(m.Query)+len(m.QueryRegex), 16)
	k = k<<1 | b2u(m.TLS || m.Plain)
	return specificity{key: k, i: i}
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
	// A route only for TLS (or only for plain connections) before the
	// same match for any connection: on that listener it is the one meant
	// (a Gateway's HTTPS listener and its HTTP listener each with a route
	// for the same requests). A TLS route and a plain one never meet.
	return (a.TLS || a.Plain) && !b.TLS && !b.Plain
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

// match returns the matching route of lowest rank. Each list is searched
// only for a route that would outrank the best found so far.
func (h *hostRoutes) match(r *http.Request) (http.Handler, map[string]string) {
	path := r.URL.Path
	best := found{rank: math.MaxInt}
	if list := h.exact[path]; list != nil {
		best.first(list, r)
	}
	for _, n := range h.prefixLen {
		if n > len(path) {
			continue
		}
		if list := h.prefixes[path[:n]]; list != nil {
			best.first(list, r)
		}
	}
	best.first(h.other, r)
	return best.handler, best.vars
}

// found is the best route found so far.
type found struct {
	rank    int
	handler http.Handler
	vars    map[string]string
}

// first replaces f with the first route of list that matches r, if it
// outranks f.
func (f *found) first(list []*routeMatcher, r *http.Request) {
	for _, rm := range list {
		if rm.rank >= f.rank {
			return
		}
		if vars, ok := rm.match(r); ok {
			*f = found{rank: rm.rank, handler: rm.handler, vars: vars}
			return
		}
	}
}

// match reports whether r meets every condition of rm but its host, and
// its literal path (the list rm is in implies that). The cheap conditions
// go first; the outcome does not depend on the order.
func (rm *routeMatcher) match(r *http.Request) (map[string]string, bool) {
	if rm.tls && r.TLS == nil {
		// The connection, not mux's Schemes, which would believe an
		// absolute-form request line ("GET https://...") on plain HTTP.
		return nil, false
	}
	if rm.plain && r.TLS != nil {
		return nil, false
	}
	if len(rm.methods) > 0 && !slices.Contains(rm.methods, r.Method) {
		return nil, false
	}
	for _, hc := range rm.headers {
		// As mux's Headers: a nil value list is an absent header.
		vs := r.Header[hc.name]
		if vs == nil || (hc.value != "" && !slices.Contains(vs, hc.value)) {
			return nil, false
		}
	}
	if rm.pathRe != nil && !rm.pathRe.MatchString(r.URL.Path) {
		return nil, false
	}
	for _, m := range rm.matchers {
		if !m(r) {
			return nil, false
		}
	}
	if rm.mux != nil {
		var m mux.RouteMatch
		if !rm.mux.Match(r, &m) {
			return nil, false
		}
		return m.Vars, true
	}
	return nil, true
}

// requestHost is the request's host, lower-cased, without port or trailing dot.
func requestHost(r *http.Request) string {
	return matchHost(r.Host)
}

// matchHost is host[:port] as the router matches it: lower-cased, without
// port or trailing dot (NormalizeHost is the sanitiser's, which keeps them).
func matchHost(host string) string {
	// Without a colon SplitHostPort can only fail, and its error is an
	// allocation per request for the common Host without a port.
	split := false
	if strings.IndexByte(host, ':') >= 0 {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host, split = h, true
		}
	}
	if !split && strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
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

// sortedKeys is slices.Sorted(maps.Keys(m)) without the iterator's
// allocation when m is empty, as it is for most routes.
func sortedKeys[V any](m map[string]V) []string {
	if len(m) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}
