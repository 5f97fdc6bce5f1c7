package routes

import (
	"maps"
	"slices"
	"strings"
	"sync"
)

// MergeMemo remembers, across merges of one provider's fragments, what
// checking each of its routes found when that route alone decides it:
// that the route is well formed, and its match's signature. A change from
// a cluster of 10,000 HTTPRoutes touches one or a few routes; checking the
// other 20,000 model routes again was a third of building the change.
//
// What depends on the rest of the model is checked on every merge, for
// every route: references to upstreams, authenticators, rate limits and
// plugin instances, duplicate names, duplicate signatures, and the oidc
// redirect paths. A route is taken as known only when it is equal, field
// by field, to the one remembered under its name; a route with an error is
// never remembered as well formed, so a refused model reports every error
// of a full check. What the memo holds is true of the route's content
// alone, so a refused merge may add to it without harm.
//
// The zero value is ready; a MergeMemo is safe for concurrent merges.
type MergeMemo struct {
	mu sync.Mutex
	// routes are the latest fragment's routes, in its order: a provider
	// lists its routes in a stable order, so a route is looked for at its
	// own index first, without hashing its name.
	routes []*knownRoute
	// byName indexes routes, made when first needed.
	byName map[string]*knownRoute
}

// knownRoute is what is known of one route of a fragment. It is never
// changed once a merge has published it: a merge that needs to learn more
// makes a new one.
type knownRoute struct {
	raw    Route  // the route as the fragment gave it, a deep copy
	rawSig string // raw.Match.signature(), before defaults
	// Set while the merged model is validated (checkRoutes), before the
	// memo is published.
	checked bool
	// clean: no check of the route, alone or against the model, found
	// anything.
	clean bool
	// sig is the signature of the defaulted route.
	sig string
	// underscoreFree: no header name in the route has a '_'
	// (checkUnderscoreHeaders has nothing to say of it).
	underscoreFree bool
}

// memoView is one merge's read of a MergeMemo.
type memoView struct {
	mm     *MergeMemo
	routes []*knownRoute
}

func (mm *MergeMemo) view() memoView {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	return memoView{mm: mm, routes: mm.routes}
}

// lookup returns what the memo knows of r, the fragment's route i, or nil.
func (v memoView) lookup(i int, r *Route) *knownRoute {
	var k *knownRoute
	if i < len(v.routes) && v.routes[i].raw.Name == r.Name {
		k = v.routes[i]
	} else {
		k = v.mm.named(v.routes, r.Name)
	}
	if k == nil || !k.checked || !k.raw.Equal(*r) {
		return nil
	}
	return k
}

// named finds the route called name among routes (the memo's list when
// the view was taken).
func (mm *MergeMemo) named(routes []*knownRoute, name string) *knownRoute {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	if len(mm.routes) != len(routes) || (len(routes) > 0 && &mm.routes[0] != &routes[0]) {
		return nil // published meanwhile: a miss costs a check, never a wrong answer
	}
	if mm.byName == nil {
		mm.byName = make(map[string]*knownRoute, len(routes))
		for _, k := range routes {
			mm.byName[k.raw.Name] = k
		}
	}
	return mm.byName[name]
}

// publish replaces what the memo knows with known: the routes of the
// latest fragment, so routes that left are forgotten.
func (mm *MergeMemo) publish(known []*knownRoute) {
	mm.mu.Lock()
	mm.routes, mm.byName = known, nil
	mm.mu.Unlock()
}

// Equal reports whether r and o are the same route, field by field (a nil
// and an empty list or map are the same). TestRouteEqualCoversEveryField
// keeps it in step with the type.
func (r Route) Equal(o Route) bool {
	return r.Name == o.Name && r.Match.Equal(o.Match) &&
		slices.Equal(r.Auth, o.Auth) && maps.Equal(r.RequireClaims, o.RequireClaims) &&
		slices.Equal(r.RateLimit, o.RateLimit) && slices.Equal(r.Plugins, o.Plugins) &&
		r.StripPrefix == o.StripPrefix && r.Upstream == o.Upstream &&
		slices.EqualFunc(r.Split, o.Split, func(a, b SplitTarget) bool {
			return a.Upstream == b.Upstream && a.Weight == b.Weight && maps.Equal(a.Headers, b.Headers)
		}) &&
		r.Timeout == o.Timeout && r.HostRewrite == o.HostRewrite
}

// Equal reports whether m and o are the same match, field by field.
func (m Match) Equal(o Match) bool {
	return m.Host == o.Host && m.Path == o.Path && m.PathPrefix == o.PathPrefix && m.PathRegex == o.PathRegex &&
		slices.Equal(m.Methods, o.Methods) && maps.Equal(m.Headers, o.Headers) && maps.Equal(m.Query, o.Query) &&
		maps.Equal(m.HeadersRegex, o.HeadersRegex) && maps.Equal(m.QueryRegex, o.QueryRegex) && m.TLS == o.TLS && m.Plain == o.Plain
}

// clone is a deep copy of r: the memo's copy must not change when the
// fragment's does (defaulting writes methods in place).
func (r Route) clone() Route {
	c := r
	c.Match.Methods = slices.Clone(r.Match.Methods)
	c.Match.Headers = maps.Clone(r.Match.Headers)
	c.Match.Query = maps.Clone(r.Match.Query)
	c.Match.HeadersRegex = maps.Clone(r.Match.HeadersRegex)
	c.Match.QueryRegex = maps.Clone(r.Match.QueryRegex)
	c.Auth = slices.Clone(r.Auth)
	c.RequireClaims = maps.Clone(r.RequireClaims)
	c.RateLimit = slices.Clone(r.RateLimit)
	c.Plugins = slices.Clone(r.Plugins)
	c.Split = slices.Clone(r.Split)
	for i := range c.Split {
		c.Split[i].Headers = maps.Clone(r.Split[i].Headers)
	}
	return c
}

// underscoreFree reports whether no header name of r has a '_': the names
// checkUnderscoreHeaders looks at.
func (r *Route) underscoreFree() bool {
	for h := range r.Match.Headers {
		if strings.Contains(h, "_") {
			return false
		}
	}
	for h := range r.Match.HeadersRegex {
		if strings.Contains(h, "_") {
			return false
		}
	}
	for _, sp := range r.Split {
		for h := range sp.Headers {
			if strings.Contains(h, "_") {
				return false
			}
		}
	}
	return true
}
