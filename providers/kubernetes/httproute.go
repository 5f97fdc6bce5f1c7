package kubernetes

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"go.yaml.in/yaml/v3"

	"github.com/causewayhq/causeway/plugins/headers"
	"github.com/causewayhq/causeway/plugins/respond"
	"github.com/causewayhq/causeway/plugins/rewrite"
	"github.com/causewayhq/causeway/routes"
)

// unresolvedUpstream is the upstream of rules that have no valid backend:
// it has no endpoints, and such rules answer before reaching it.
var unresolvedUpstream = routes.KubernetesPrefix + "unresolved"

// attachment is one (parentRef, listener) pair a route is accepted on.
type attachment struct {
	gw    *gatewayState
	ls    *listenerState
	hosts []string // the route's hostnames as served on this listener ("" = any)
}

// httpRoutes attaches HTTPRoutes to our listeners and translates the
// rules of those accepted somewhere. Oldest routes come first: where two
// routes match exactly the same requests, the older wins, as the spec's
// tie-break says (routes.File.Merge keeps the first of equal matches).
func (t *translator) httpRoutes() {
	if !t.ours {
		return
	}
	list := slices.Clone(t.s.HTTPRoutes)
	byAge(list, func(r *gatewayv1.HTTPRoute) metav1.Object { return r })
	for _, r := range list {
		if !t.inScope(r.Namespace) {
			continue
		}
		t.httpRoute(r)
	}
}

func (t *translator) httpRoute(r *gatewayv1.HTTPRoute) {
	parents, ok := t.route(routeView{
		kind: kindHTTPRoute, obj: r, parentRefs: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames, rules: len(r.Spec.Rules),
		rule: func(i int, base []string) (translatedRule, *ruleError) {
			return t.httpRule(r.Namespace, base, r.Spec.Rules[i])
		},
		ruleName: func(i int) *gatewayv1.SectionName { return r.Spec.Rules[i].Name },
	}, r.Status.Parents)
	if ok {
		t.res.HTTPRoutes[nn(r.Namespace, r.Name)] = gatewayv1.HTTPRouteStatus{RouteStatus: gatewayv1.RouteStatus{Parents: parents}}
	}
}

// staleParents reports whether a route attached to no Gateway of this
// edge still carries a status entry this edge wrote (its parentRef to one
// of the edge's Gateways was removed): the route then gets an empty status
// of ours, which takes that entry out and keeps every other edge's. Only
// an edge limited to some Gateways can tell its entries from those of
// other edges of the controller; an edge serving the whole class leaves
// them, as it always has.
func (t *translator) staleParents(ns string, stored []gatewayv1.RouteParentStatus) bool {
	if len(t.cfg.Gateways) == 0 {
		return false
	}
	return slices.ContainsFunc(stored, func(p gatewayv1.RouteParentStatus) bool {
		return p.ControllerName == routes.KubernetesControllerName && ownsRef(t.cfg, ns, p.ParentRef)
	})
}

// routeView is what attachment and rule translation need of a route of
// any kind (HTTPRoute, GRPCRoute).
type routeView struct {
	kind       string
	obj        metav1.Object
	parentRefs []gatewayv1.ParentReference
	hostnames  []gatewayv1.Hostname
	rules      int
	// rule translates rule i; base names what it adds to the model.
	rule func(i int, base []string) (translatedRule, *ruleError)
	// ruleName is rule i's name, which a policy's sectionName names.
	ruleName func(i int) *gatewayv1.SectionName
}

// route attaches a route to our listeners and translates its rules when
// it is accepted somewhere (attach), or takes what the last snapshot's
// translation of it made when nothing it read has changed since
// (reusable), and adds the outcome to the result (emit). It returns the
// status of each parentRef of ours, and whether the route's status is
// ours to write (false when no parentRef is ours and none of ours is
// stale in stored, the route's current status).
func (t *translator) route(v routeView, stored []gatewayv1.RouteParentStatus) (parents []gatewayv1.RouteParentStatus, write bool) {
	key := routeKey(v.kind, v.obj)
	e := t.reusable(v.obj)
	if e != nil {
		t.reused++
		t.replay(e)
	} else {
		t.translated++
		e = &routeEntry{obj: v.obj}
		t.rec = e
		t.attach(v, e)
		e.write = e.ok || t.staleParents(v.obj.GetNamespace(), stored)
		t.rec = nil
	}
	if !e.uncacheable {
		t.nextRoutes[v.obj] = e
	}
	t.emit(v, key, e)
	return e.parents, e.write
}

// attach attaches a route to our listeners and translates its rules when
// it is accepted somewhere, into e: the status of each parentRef of ours
// (e.ok is false when none is ours: the status is not ours to write),
// the listeners it is attached to, and the model routes of its rules,
// without policies (emit applies them). What it adds to the fragment's
// upstreams and plugins it adds at once, and e records it for replay.
func (t *translator) attach(v routeView, e *routeEntry) {
	gen := v.obj.GetGeneration()
	var attached []attachment
	for _, ref := range v.parentRefs {
		gs, ok := t.parentGateway(v.obj.GetNamespace(), ref)
		if !ok {
			continue // not ours: its status is another controller's
		}
		if !slices.Contains(e.gws, gs.idx) {
			e.gws = append(e.gws, gs.idx)
		}
		ps := gatewayv1.RouteParentStatus{ParentRef: ref, ControllerName: routes.KubernetesControllerName}
		atts, reason, msg := t.listenersFor(gs, v, ref)
		if len(atts) == 0 {
			ps.Conditions = []metav1.Condition{condition(string(gatewayv1.RouteConditionAccepted), false, reason, msg, gen)}
		} else {
			ps.Conditions = []metav1.Condition{condition(string(gatewayv1.RouteConditionAccepted), true, string(gatewayv1.RouteReasonAccepted), "", gen)}
			attached = append(attached, atts...)
			for _, a := range atts {
				e.attached = append(e.attached, listenerRef{gw: a.gw.idx, ls: a.ls.idx,
					serves: len(a.hosts) > 0 && a.ls.valid && a.gw.status.Conditions[0].Status == metav1.ConditionTrue})
			}
		}
		e.parents = append(e.parents, ps)
	}
	if len(e.parents) == 0 {
		return
	}
	e.ok = true
	tr := t.rules(v, servedHosts(attached, t.fenced, t.tlsClaimed), e)
	for i := range e.parents {
		c := &e.parents[i].Conditions
		*c = append(*c, tr.resolved)
		if (*c)[0].Status == metav1.ConditionTrue && tr.invalidRules > 0 {
			if tr.invalidRules == v.rules {
				(*c)[0] = condition(string(gatewayv1.RouteConditionAccepted), false, tr.invalidReason, tr.invalidMsg, gen)
			} else {
				*c = append(*c, condition(string(gatewayv1.RouteConditionPartiallyInvalid), true, tr.invalidReason, tr.invalidMsg, gen))
			}
		}
	}
}

// parentGateway finds the Gateway of ours a parentRef names.
func (t *translator) parentGateway(routeNS string, ref gatewayv1.ParentReference) (*gatewayState, bool) {
	if ref.Group != nil && string(*ref.Group) != groupName {
		return nil, false
	}
	if ref.Kind != nil && string(*ref.Kind) != kindGateway {
		return nil, false
	}
	ns := routeNS
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	gs := t.gws[nn(ns, string(ref.Name))]
	return gs, gs != nil
}

// listenersFor returns the listeners of gs that ref selects and that admit
// the route, with the hostnames it is served with on each; when there are
// none, the reason and message of the Accepted=False condition.
func (t *translator) listenersFor(gs *gatewayState, v routeView, ref gatewayv1.ParentReference) ([]attachment, string, string) {
	for _, h := range v.hostnames {
		if !dnsLabels(string(h)) {
			return nil, string(gatewayv1.RouteReasonUnsupportedValue), fmt.Sprintf("hostname %q has a label longer than 63 characters", h)
		}
		if !routes.HostName(string(h)) {
			// The CRD's pattern refuses these; a CRD without it (an
			// older or edited one) would let the name reach the model,
			// which would refuse every route with it.
			return nil, string(gatewayv1.RouteReasonUnsupportedValue), fmt.Sprintf("hostname %q is not a DNS name (lower case, a wildcard only as *.)", h)
		}
	}
	var selected []*listenerState
	for _, ls := range gs.listeners {
		if ref.SectionName != nil && *ref.SectionName != ls.spec.Name {
			continue
		}
		if ref.Port != nil && *ref.Port != ls.spec.Port {
			continue
		}
		selected = append(selected, ls)
	}
	if len(selected) == 0 {
		return nil, string(gatewayv1.RouteReasonNoMatchingParent), "no listener of the Gateway matches the parentRef's sectionName and port"
	}
	var allowed []*listenerState
	for _, ls := range selected {
		if t.allows(gs.obj, ls, v.kind, v.obj.GetNamespace()) {
			allowed = append(allowed, ls)
		}
	}
	if len(allowed) == 0 {
		return nil, string(gatewayv1.RouteReasonNotAllowedByListeners), "the listeners' allowedRoutes do not admit this route's kind or namespace"
	}
	var atts []attachment
	for _, ls := range allowed {
		var lh string
		if ls.spec.Hostname != nil {
			lh = string(*ls.spec.Hostname)
		}
		hosts := intersectHosts(lh, v.hostnames)
		if len(hosts) == 0 {
			continue
		}
		// Accepted on the listener all the same (the spec judges
		// attachment by the hostnames' intersection alone), but not
		// served for the hosts a more specific listener has.
		hosts = slices.DeleteFunc(hosts, func(h string) bool { return t.isolated(ls, h) })
		atts = append(atts, attachment{gw: gs, ls: ls, hosts: hosts})
	}
	if len(atts) == 0 {
		return nil, string(gatewayv1.RouteReasonNoMatchingListenerHostname), "none of the route's hostnames matches a listener's hostname"
	}
	return atts, "", ""
}

// intersectHosts is the set of hostnames a route with hostnames rh is
// served with on a listener with hostname lh ("" for either: any host).
// The more specific of two matching names is kept.
func intersectHosts(lh string, rh []gatewayv1.Hostname) []string {
	if len(rh) == 0 {
		return []string{lh}
	}
	var out []string
	for _, h := range rh {
		r := string(h)
		switch {
		case lh == "" || lh == r:
			out = append(out, r)
		case hostCovers(lh, r):
			out = append(out, r)
		case hostCovers(r, lh):
			out = append(out, lh)
		}
	}
	return out
}

// dnsLabels reports whether every label of hostname h (a name or a
// wildcard) is at most 63 characters, as DNS and the routes model have
// them. The Gateway API's hostname schemas bound only the whole name, so
// the API server takes a longer label, and the model, given one, refused
// every namespace's routes with it.
func dnsLabels(h string) bool {
	for l := range strings.SplitSeq(strings.TrimPrefix(h, "*."), ".") {
		if len(l) > 63 {
			return false
		}
	}
	return true
}

// hostCovers reports whether the wildcard w ("*.example.com") matches h,
// a name or a narrower wildcard: one or more labels before the suffix.
func hostCovers(w, h string) bool {
	if !strings.HasPrefix(w, "*.") {
		return false
	}
	suffix := w[1:] // ".example.com"
	return len(h) > len(suffix) && strings.HasSuffix(h, suffix) && h[:len(h)-len(suffix)] != "*"
}

// servedHost is a hostname a route is served for, and whether only over
// TLS or only over plain connections. When every listener that gives it
// the name is HTTPS, a plain HTTP request for it must not reach the route.
// When every listener that gives it the name is HTTP, a TLS request for it
// must not reach the route either where an HTTPS listener has the name
// (tlsClaimed): over TLS that listener's routes alone answer for it. With
// no HTTPS listener for the name, a route of an HTTP listener is served
// over TLS too, which exposes nothing.
type servedHost struct {
	host      string
	tlsOnly   bool
	plainOnly bool
}

// servedHosts is servedHostNames with, for each name, whether only HTTPS
// listeners serve it, or only HTTP ones where an HTTPS listener claims it.
func servedHosts(atts []attachment, fenced, tlsClaimed func(string) bool) []servedHost {
	plain := map[string]bool{}  // a name some HTTP listener gives
	secure := map[string]bool{} // a name some HTTPS listener gives
	for _, a := range atts {
		if a.ls.valid && a.gw.status.Conditions[0].Status == metav1.ConditionTrue {
			given := plain
			if a.ls.spec.Protocol == gatewayv1.HTTPSProtocolType {
				given = secure
			}
			for _, h := range a.hosts {
				given[h] = true
			}
		}
	}
	names := servedHostNames(atts, fenced)
	out := make([]servedHost, 0, len(names))
	for _, h := range names {
		// A name any listener of a protocol serves as "any host" is that
		// protocol's too.
		tlsOnly := !plain[h] && !plain[""]
		plainOnly := !tlsOnly && !secure[h] && !secure[""] && tlsClaimed(h)
		out = append(out, servedHost{host: h, tlsOnly: tlsOnly, plainOnly: plainOnly})
	}
	return out
}

// servedHostNames is the union of the hostnames of every attachment that can
// carry traffic, sorted, without repeats. fenced says which names the
// any-host routes would not answer (isolationRoutes).
func servedHostNames(atts []attachment, fenced func(string) bool) []string {
	var hosts []string
	for _, a := range atts {
		if a.ls.valid && a.gw.status.Conditions[0].Status == metav1.ConditionTrue {
			hosts = append(hosts, a.hosts...)
		}
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	// Any host covers every other: serving both would only add routes
	// that the any-host ones already match. Not when the any-host listeners
	// are all HTTPS and a named one is plain: the named one's routes must
	// then also serve plain HTTP.
	// Nor for a name whose requests a listener's catch-all keeps from
	// falling back to any-host routes: the route answers it by name.
	if len(hosts) > 0 && hosts[0] == "" && !namedPlainOnly(atts) {
		return slices.DeleteFunc(hosts, func(h string) bool { return h != "" && !fenced(h) })
	}
	return hosts
}

// rulesResult is what translating a route's rules found.
type rulesResult struct {
	resolved      metav1.Condition
	invalidRules  int
	invalidReason string
	invalidMsg    string
}

// namedPlainOnly reports whether a named host is served by an HTTP listener
// while the any-host attachments are all HTTPS.
func namedPlainOnly(atts []attachment) bool {
	anyPlain, namedPlain := false, false
	for _, a := range atts {
		if !a.ls.valid || a.gw.status.Conditions[0].Status != metav1.ConditionTrue || a.ls.spec.Protocol == gatewayv1.HTTPSProtocolType {
			continue
		}
		for _, h := range a.hosts {
			if h == "" {
				anyPlain = true
			} else {
				namedPlain = true
			}
		}
	}
	return namedPlain && !anyPlain
}

// rules adds the upstreams and plugins of a route's rules to the
// fragment, and their model routes, once per served hostname, to e.
func (t *translator) rules(v routeView, hosts []servedHost, e *routeEntry) rulesResult {
	gen := v.obj.GetGeneration()
	res := rulesResult{resolved: condition(string(gatewayv1.RouteConditionResolvedRefs), true, string(gatewayv1.RouteReasonResolvedRefs), "", gen)}
	for i := 0; i < v.rules; i++ {
		base := []string{v.obj.GetNamespace(), namePart(v.obj.GetName()), strconv.Itoa(i)}
		if v.kind == kindGRPCRoute {
			// Its own names: an HTTPRoute of the same name may exist (and
			// one named "grpc" has a shorter base, its parts being dot-free).
			base = []string{v.obj.GetNamespace(), "grpc", namePart(v.obj.GetName()), strconv.Itoa(i)}
		}
		rr, err := v.rule(i, base)
		if err != nil {
			res.invalidRules++
			msg := fmt.Sprintf("rule %d: %s", i, err.msg)
			if rr.refused {
				msg += "; the requests it matches are answered 500"
			}
			if res.invalidReason == "" {
				res.invalidReason, res.invalidMsg = err.reason, msg
			}
			if !rr.refused {
				continue
			}
			rr = t.refuseRule(base, rr.matches)
		}
		if rr.unresolved != nil && res.resolved.Status == metav1.ConditionTrue {
			res.resolved = condition(string(gatewayv1.RouteConditionResolvedRefs), false, rr.unresolved.reason, fmt.Sprintf("rule %d: %s", i, rr.unresolved.msg), gen)
		}
		for _, sh := range hosts {
			host := sh.host
			for j, m := range rr.matches {
				for k, path := range m.paths {
					route := routes.Route{
						Name:     name(append(base, strconv.Itoa(j), hostLabel(host), strconv.Itoa(k))...),
						Match:    m.match,
						Plugins:  rr.plugins,
						Upstream: rr.upstream,
						Split:    rr.split,
						Timeout:  routes.Duration(rr.timeout),

						HostRewrite: rr.hostRewrite,
					}
					route.Match.Host = host
					route.Match.TLS = sh.tlsOnly
					route.Match.Plain = sh.plainOnly
					route.Match.Path, route.Match.PathPrefix, route.Match.PathRegex = path.exact, path.prefix, path.regex
					e.routes = append(e.routes, route)
					e.rules = append(e.rules, i)
				}
			}
		}
	}
	return res
}

// refuseRule is a rule whose filter cannot be served (translatedRule.
// refused): its matches, answered 500 by the respond plugin.
func (t *translator) refuseRule(base []string, matches []translatedMatch) translatedRule {
	tr := translatedRule{matches: matches, upstream: unresolvedUpstream}
	t.putUpstream(unresolvedUpstream, routes.Upstream{}, false)
	pname := name(append(base, "refused")...)
	if raw, err := rawConfig(pname, respond.Config{Status: 500, Error: "a filter of the route cannot be applied"}); err == nil {
		t.putPlugin(pname, routes.PluginInst{Use: "respond", Config: raw})
		tr.plugins = []string{pname}
	}
	return tr
}

// hostLabel puts a hostname into a route name as one dot-free part
// (namePart), different for every hostname: an exact name begins with a
// letter or digit, a wildcard ("*" would not be allowed) with "_w_", and
// no hostname is "_any". "w.example.com" and "*.example.com", or a
// listener named "any" and none, once made one route name twice, which
// refused the whole model.
func hostLabel(h string) string {
	switch {
	case h == "":
		return "_any"
	case strings.HasPrefix(h, "*."):
		return "_w_" + namePart(h[2:])
	}
	return namePart(h)
}

// namePart makes a Kubernetes object name or a hostname one part of a
// model name: its dots become '_', which neither ever has. Model names
// join their parts with '.', and an object's name may have dots, so
// without it two routes of one namespace ("r" for host "0.x.example.com"
// and "r.0" for "x.example.com") made the same route name: the model,
// every namespace's routes with it, was refused while both existed. With
// every part dot-free, names of one shape differ where their objects do,
// and the shapes differ in length or in a fixed part.
func namePart(s string) string { return strings.ReplaceAll(s, ".", "_") }

// ruleError says why a rule is left out.
type ruleError struct{ reason, msg string }

func unsupported(format string, args ...any) *ruleError {
	return &ruleError{reason: string(gatewayv1.RouteReasonUnsupportedValue), msg: fmt.Sprintf(format, args...)}
}

// translatedRule is one rule in the routes model's terms.
type translatedRule struct {
	matches    []translatedMatch
	plugins    []string
	upstream   string
	split      []routes.SplitTarget
	unresolved *ruleError // the first backend that could not be resolved
	redirects  bool       // a RequestRedirect answers before any backend
	// hostRewrite is URLRewrite's hostname: the Host the backend receives.
	hostRewrite string
	mirror      *routes.Mirror
	// refused: a filter of the rule cannot be served, and its matches
	// translated. The rule then answers its requests 500 (refuseRule)
	// rather than being left out: left out, its requests would go to
	// whichever other rule matches them, without the filter (an
	// authorizing ExtensionRef skipped, a header the backend relies on
	// not set), where the spec says a filter that cannot be applied
	// must not be skipped and those requests get an error.
	refused bool
	// timeout is timeouts.request, the route's bound (0: none);
	// backendTimeout is timeouts.backendRequest, the bound of each attempt
	// until the response headers (0: unset).
	timeout, backendTimeout time.Duration
}

// noBackendTimeout is what "0s" in timeouts.backendRequest becomes: the
// spec says zero disables the timeout, or else means the longest
// possible, and an upstream's timeout of 0 would be the default instead.
const noBackendTimeout = 24 * time.Hour

// ruleTimeouts reads an HTTPRoute rule's timeouts (GEP-2257 durations).
func ruleTimeouts(to *gatewayv1.HTTPRouteTimeouts, tr *translatedRule) *ruleError {
	if to == nil {
		return nil
	}
	parse := func(field string, v *gatewayv1.Duration) (time.Duration, *ruleError) {
		if v == nil {
			return 0, nil
		}
		d, err := time.ParseDuration(string(*v))
		if err != nil || d < 0 {
			return 0, unsupported("timeouts.%s %q is not a duration", field, *v)
		}
		return d, nil
	}
	var err *ruleError
	if tr.timeout, err = parse("request", to.Request); err != nil {
		return err
	}
	if tr.backendTimeout, err = parse("backendRequest", to.BackendRequest); err != nil {
		return err
	}
	if to.BackendRequest != nil && tr.backendTimeout == 0 {
		tr.backendTimeout = noBackendTimeout
	}
	// The API server's CEL rule refuses this too; a cluster without the
	// rule (an older CRD) must not get a backend bound the route's cuts.
	if tr.timeout > 0 && tr.backendTimeout > tr.timeout {
		return unsupported("timeouts.backendRequest %s is longer than timeouts.request %s", tr.backendTimeout, tr.timeout)
	}
	return nil
}

type translatedMatch struct {
	match routes.Match
	paths []pathMatch
}

// pathMatch is one of Path, PathPrefix or PathRegex.
type pathMatch struct{ exact, prefix, regex string }

func (t *translator) httpRule(ns string, base []string, rule gatewayv1.HTTPRouteRule) (translatedRule, *ruleError) {
	var tr translatedRule
	matches := rule.Matches
	if len(matches) == 0 {
		prefix := gatewayv1.PathMatchPathPrefix
		slash := "/"
		matches = []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: &prefix, Value: &slash}}}
	}
	for _, m := range matches {
		tm, err := translateMatch(m)
		if err != nil {
			return tr, err
		}
		tr.matches = append(tr.matches, tm)
	}
	if rerr := t.filters(ns, kindHTTPRoute, base, rule.Filters, matches, &tr); rerr != nil {
		tr.refused = true
		return tr, rerr
	}
	if rerr := ruleTimeouts(rule.Timeouts, &tr); rerr != nil {
		return tr, rerr
	}
	refs := backendRefs(rule.BackendRefs, func(b gatewayv1.HTTPBackendRef) gatewayv1.BackendRef { return b.BackendRef })
	t.backends(ns, kindHTTPRoute, base, refs, &tr)
	return tr, nil
}

// translateMatch maps one HTTPRouteMatch. A Gateway API path prefix
// matches whole segments ("/foo" matches "/foo" and "/foo/bar", never
// "/foobar"), where the routes model's prefix is a string prefix, so it
// becomes two matches: the path itself, and the path followed by "/".
func translateMatch(m gatewayv1.HTTPRouteMatch) (translatedMatch, *ruleError) {
	var tm translatedMatch
	typ, value := gatewayv1.PathMatchPathPrefix, "/"
	if m.Path != nil {
		if m.Path.Type != nil {
			typ = *m.Path.Type
		}
		if m.Path.Value != nil {
			value = *m.Path.Value
		}
	}
	if typ != gatewayv1.PathMatchRegularExpression && (!strings.HasPrefix(value, "/") || strings.ContainsAny(value, "{}")) {
		return tm, unsupported("path %q: a path starts with '/' and has no braces", value)
	}
	switch typ {
	case gatewayv1.PathMatchRegularExpression:
		// RE2, matched against the whole cleaned path (the spec leaves the
		// dialect to the implementation; Envoy's is RE2 too).
		if _, err := routes.CompilePathRegex(value); err != nil {
			return tm, unsupported("path regular expression %q: %v", value, err)
		}
		tm.paths = []pathMatch{{regex: value}}
	case gatewayv1.PathMatchExact:
		tm.paths = []pathMatch{{exact: value}}
	case gatewayv1.PathMatchPathPrefix:
		p := strings.TrimRight(value, "/")
		if p == "" {
			tm.paths = []pathMatch{{prefix: "/"}}
		} else {
			tm.paths = []pathMatch{{exact: p}, {prefix: p + "/"}}
		}
	default:
		return tm, unsupported("path match type %s is not supported (Exact, PathPrefix and RegularExpression are)", typ)
	}
	seen := map[string]bool{}
	for _, h := range m.Headers {
		if err := tm.addHeader(seen, string(h.Name), h.Value, h.Type != nil && *h.Type == gatewayv1.HeaderMatchRegularExpression); err != nil {
			return tm, err
		}
	}
	seenQ := map[string]bool{}
	for _, q := range m.QueryParams {
		regex := q.Type != nil && *q.Type == gatewayv1.QueryParamMatchRegularExpression
		if q.Name == "" {
			// The CRD's minLength refuses it; without that schema the
			// model would refuse every route with this one.
			return tm, unsupported("a query parameter match needs a name")
		}
		if seenQ[string(q.Name)] {
			continue // only the first entry of a name counts
		}
		seenQ[string(q.Name)] = true
		if regex {
			if _, err := routes.CompilePathRegex(q.Value); err != nil {
				return tm, unsupported("query parameter %q: regular expression %q: %v", q.Name, q.Value, err)
			}
			if tm.match.QueryRegex == nil {
				tm.match.QueryRegex = map[string]string{}
			}
			tm.match.QueryRegex[string(q.Name)] = q.Value
			continue
		}
		if strings.ContainsAny(string(q.Name)+q.Value, "{}") {
			return tm, unsupported("query parameter %q: braces are not supported", q.Name)
		}
		if tm.match.Query == nil {
			tm.match.Query = map[string]string{}
		}
		tm.match.Query[string(q.Name)] = q.Value
	}
	if m.Method != nil {
		switch meth := string(*m.Method); meth {
		case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH":
			tm.match.Methods = []string{meth}
		default:
			return tm, unsupported("method %q is not supported", meth)
		}
	}
	return tm, nil
}

// addHeader adds an Exact (or RegularExpression) header match. Only the
// first entry of a name counts, as the spec says for HTTPRoute and
// GRPCRoute alike; seen holds the lower-cased names so far.
func (tm *translatedMatch) addHeader(seen map[string]bool, name, value string, regex bool) *ruleError {
	if err := checkHeaderName(name); err != nil {
		return err
	}
	k := strings.ToLower(name)
	if seen[k] {
		return nil
	}
	seen[k] = true
	if regex {
		if _, err := routes.CompilePathRegex(value); err != nil {
			return unsupported("header %q: regular expression %q: %v", name, value, err)
		}
		if tm.match.HeadersRegex == nil {
			tm.match.HeadersRegex = map[string]string{}
		}
		tm.match.HeadersRegex[name] = value
		return nil
	}
	if tm.match.Headers == nil {
		tm.match.Headers = map[string]string{}
	}
	tm.match.Headers[name] = value
	return nil
}

// backendRefs are the BackendRefs of a rule's HTTPBackendRefs or
// GRPCBackendRefs (their per-backend filters are not supported).
func backendRefs[T any](refs []T, ref func(T) gatewayv1.BackendRef) []gatewayv1.BackendRef {
	out := make([]gatewayv1.BackendRef, len(refs))
	for i, r := range refs {
		out[i] = ref(r)
	}
	return out
}

var headerNameRe = regexp.MustCompile("^[!#$%&'*+.^`|~0-9A-Za-z-]+$")

// checkHeaderName refuses names the edge would never see: a '_' makes the
// edge drop the header as it arrives (unless the file allows them).
func checkHeaderName(n string) *ruleError {
	if !headerNameRe.MatchString(n) {
		return unsupported("header %q: names with '_' or other characters outside an HTTP token are not supported", n)
	}
	return nil
}

// checkSetHeader checks a header a route's filter sets or adds: a token,
// and on the request side none the edge owns (edgeOwnedHeader).
func checkSetHeader(side, n string) *ruleError {
	if err := checkHeaderName(n); err != nil {
		return err
	}
	if side == "request" && edgeOwnedHeader(n) {
		return unsupported("header %q: the edge sets it for the upstream (or drops every client's copy), and a route may not state it", n)
	}
	return nil
}

// edgeOwnedHeader reports whether a request header is one upstreams
// believe because the edge states it: the client's address (X-Forwarded-*,
// Forwarded, X-Real-IP and the other client-IP names), the request's ID
// and trace, the verified client certificate, the mesh peer and caller
// (X-Causeway-*, the caller token), and the URL-override headers the edge
// drops so that no upstream serves a path other than the one routed.
// Clients' copies are dropped as requests enter; a route's filter runs
// after that, so without this check any namespace's route could hand a
// Service (its own, or one another namespace granted it) a forged peer
// identity or client address.
//
// It is the routes file's rule (routes.EdgeStatedHeader), so a route
// from the Gateway API and one from the file refuse the same names, in
// every spelling ('_' as '-').
func edgeOwnedHeader(n string) bool { return routes.EdgeStatedHeader(n) }

// filters maps the rule's filters onto plugin instances, in order.
func (t *translator) filters(ns, kind string, base []string, filters []gatewayv1.HTTPRouteFilter, matches []gatewayv1.HTTPRouteMatch, tr *translatedRule) *ruleError {
	var redirect, rewriteSeen bool
	for i, f := range filters {
		pname := name(append(base, "f"+strconv.Itoa(i))...)
		var (
			use string
			cfg any
			err *ruleError
		)
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			use = "headers"
			cfg, err = headerConfig("request", f.RequestHeaderModifier, pname)
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			use = "headers"
			cfg, err = headerConfig("response", f.ResponseHeaderModifier, pname)
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			redirect = true
			use = "rewrite"
			cfg, err = redirectConfig(f.RequestRedirect, matches, pname)
		case gatewayv1.HTTPRouteFilterRequestMirror:
			if tr.mirror != nil {
				return unsupported("only one RequestMirror per rule is supported")
			}
			m, err := t.mirror(ns, kind, f.RequestMirror)
			if err != nil {
				return err
			}
			tr.mirror = m
			continue
		case gatewayv1.HTTPRouteFilterURLRewrite:
			rewriteSeen = true
			use = "rewrite"
			if f.URLRewrite != nil && f.URLRewrite.Hostname != nil {
				tr.hostRewrite = string(*f.URLRewrite.Hostname)
				if !dnsLabels(tr.hostRewrite) {
					return unsupported("URLRewrite hostname %q has a label longer than 63 characters", tr.hostRewrite)
				}
			}
			cfg, err = urlRewriteConfig(f.URLRewrite, matches, pname)
			if err == nil && cfg == nil {
				continue
			}
		default:
			return unsupported("filter %s is not supported", f.Type)
		}
		if err != nil {
			return err
		}
		raw, rerr := rawConfig(pname, cfg)
		if rerr != nil {
			return unsupported("filter %s: %v", f.Type, rerr)
		}
		t.putPlugin(pname, routes.PluginInst{Use: use, Config: raw})
		tr.plugins = append(tr.plugins, pname)
	}
	tr.redirects = redirect
	if redirect && rewriteSeen {
		return &ruleError{reason: string(gatewayv1.RouteReasonIncompatibleFilters), msg: "RequestRedirect and URLRewrite cannot be combined"}
	}
	return nil
}

// headerConfig builds the headers plugin's config for one modifier and
// checks it with the plugin's own rules, so a refusal is the rule's, not
// the whole model's.
func headerConfig(side string, m *gatewayv1.HTTPHeaderFilter, pname string) (any, *ruleError) {
	if m == nil {
		return nil, unsupported("the %s header modifier is empty", side)
	}
	ops := headers.Ops{}
	for _, h := range m.Set {
		if err := checkSetHeader(side, string(h.Name)); err != nil {
			return nil, err
		}
		if ops.Set == nil {
			ops.Set = map[string]string{}
		}
		ops.Set[string(h.Name)] = h.Value
	}
	for _, h := range m.Add {
		if err := checkSetHeader(side, string(h.Name)); err != nil {
			return nil, err
		}
		if ops.Add == nil {
			ops.Add = map[string]string{}
		}
		ops.Add[string(h.Name)] = h.Value
	}
	ops.Remove = slices.Clone(m.Remove)
	cfg := headers.Config{}
	if side == "request" {
		cfg.Request = ops
	} else {
		cfg.Response = ops
	}
	raw, err := rawConfig(pname, cfg)
	if err != nil {
		return nil, unsupported("%v", err)
	}
	if _, err := headers.New(cfg, raw); err != nil {
		return nil, unsupported("%v", err)
	}
	return cfg, nil
}

// prefixOf is the path prefix all of a rule's matches share, for
// ReplacePrefixMatch (which the spec allows only with one PathPrefix).
func prefixOf(matches []gatewayv1.HTTPRouteMatch) (string, *ruleError) {
	if len(matches) != 1 || matches[0].Path == nil || matches[0].Path.Type == nil || *matches[0].Path.Type != gatewayv1.PathMatchPathPrefix || matches[0].Path.Value == nil {
		return "", unsupported("ReplacePrefixMatch needs exactly one PathPrefix match")
	}
	return strings.TrimRight(*matches[0].Path.Value, "/"), nil
}

// pathRules are the rewrite plugin's rules for a path modifier: the full
// path replaced, or the matched prefix replaced by another.
func pathRules(pm *gatewayv1.HTTPPathModifier, matches []gatewayv1.HTTPRouteMatch, target func(path string) string, status int) ([]rewrite.Rule, *ruleError) {
	lit := func(s string) string { return strings.ReplaceAll(s, "$", "$$") }
	if pm == nil {
		// The path as it is; "/" written out so that the replacement is a
		// path (see the prefix case below).
		return []rewrite.Rule{{Match: `^/(.*)$`, Replace: target("/$1"), Redirect: status}}, nil
	}
	switch pm.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		if pm.ReplaceFullPath == nil {
			return nil, unsupported("ReplaceFullPath is empty")
		}
		return []rewrite.Rule{{Match: `^.*$`, Replace: target(lit(*pm.ReplaceFullPath)), Redirect: status}}, nil
	case gatewayv1.PrefixMatchHTTPPathModifier:
		if pm.ReplacePrefixMatch == nil {
			return nil, unsupported("ReplacePrefixMatch is empty")
		}
		p, err := prefixOf(matches)
		if err != nil {
			return nil, err
		}
		repl := strings.TrimRight(*pm.ReplacePrefixMatch, "/")
		whole := repl
		if whole == "" {
			whole = "/"
		}
		q := regexp.QuoteMeta(p)
		// The "/" after the prefix is written out, not captured, so the
		// replacement starts with "/" even when it is "/" itself (a
		// replaced prefix of "" would leave "$1", which is no path).
		if p == "" {
			// Prefix "/": every path; the replacement goes before it.
			return []rewrite.Rule{{Match: `^/(.*)$`, Replace: target(lit(repl) + "/$1"), Redirect: status}}, nil
		}
		return []rewrite.Rule{
			{Match: `^` + q + `$`, Replace: target(lit(whole)), Redirect: status},
			{Match: `^` + q + `/(.*)$`, Replace: target(lit(repl) + "/$1"), Redirect: status},
		}, nil
	}
	return nil, unsupported("path modifier type %s is not supported", pm.Type)
}

// urlRewriteConfig maps URLRewrite's path onto the rewrite plugin (its
// hostname is the route's host_rewrite, set by the caller). A filter with
// only a hostname needs no plugin: nil, nil.
func urlRewriteConfig(f *gatewayv1.HTTPURLRewriteFilter, matches []gatewayv1.HTTPRouteMatch, pname string) (any, *ruleError) {
	if f == nil || (f.Path == nil && f.Hostname == nil) {
		return nil, unsupported("URLRewrite sets neither hostname nor path")
	}
	if f.Path == nil {
		return nil, nil
	}
	rules, err := pathRules(f.Path, matches, func(p string) string { return p }, 0)
	if err != nil {
		return nil, err
	}
	return checkRewrite(rewrite.Config{Rules: rules}, pname)
}

// redirectConfig maps RequestRedirect onto the rewrite plugin's redirect.
// The Location is absolute when the scheme, host or port change, and
// relative (the request's own scheme and host) otherwise, which every
// client resolves against the request's URL (RFC 9110 10.2.2).
func redirectConfig(f *gatewayv1.HTTPRequestRedirectFilter, matches []gatewayv1.HTTPRouteMatch, pname string) (any, *ruleError) {
	if f == nil {
		return nil, unsupported("RequestRedirect is empty")
	}
	status := 302
	if f.StatusCode != nil {
		status = *f.StatusCode
	}
	switch status {
	case 301, 302, 303, 307, 308:
	default:
		return nil, unsupported("redirect status %d is not supported", status)
	}
	var scheme string
	if f.Scheme != nil {
		scheme = *f.Scheme
		if scheme != "http" && scheme != "https" {
			return nil, unsupported("redirect scheme %q is not supported", scheme)
		}
	}
	host := ""
	if f.Hostname != nil {
		host = string(*f.Hostname)
	}
	port := 0
	if f.Port != nil {
		port = int(*f.Port)
	}
	rules, err := pathRules(f.Path, matches, func(p string) string { return p }, status)
	if err != nil {
		return nil, err
	}
	// What the filter leaves unset comes from the request: its scheme,
	// its host, and the port it reached the edge on (the scheme's own
	// when the scheme changes), as the spec derives them.
	for i := range rules {
		rules[i].Scheme, rules[i].Host, rules[i].Port = scheme, host, port
	}
	return checkRewrite(rewrite.Config{Rules: rules}, pname)
}

func checkRewrite(cfg rewrite.Config, pname string) (any, *ruleError) {
	raw, err := rawConfig(pname, cfg)
	if err != nil {
		return nil, unsupported("%v", err)
	}
	if _, err := rewrite.New(cfg, raw); err != nil {
		return nil, unsupported("%v", err)
	}
	return cfg, nil
}

// rawConfig encodes a plugin's config as the YAML node the routes file
// would hold. It is never expanded for ${VAR}: that happens only to the
// file's own text, so a route's author cannot read the edge's environment.
func rawConfig(pname string, cfg any) (routes.Raw, error) {
	var n yaml.Node
	if err := n.Encode(cfg); err != nil {
		return routes.Raw{}, err
	}
	return routes.Raw{Node: &n, Path: "plugins." + pname + ".config"}, nil
}

// backends resolves the rule's backendRefs into an upstream or a split.
// A rule with no valid backend answers 500 in the edge's error format, as
// the spec requires (a redirect still answers: it never reaches a
// backend). Invalid backends among valid ones are left out of the split,
// which then shares their weight among the valid ones: the spec asks for
// 500 on their share, which a split of upstreams cannot express; the
// route's ResolvedRefs condition says which backend is missing.
func (t *translator) backends(ns, kind string, base []string, refs []gatewayv1.BackendRef, tr *translatedRule) {
	var ws []weighted
	for _, b := range refs {
		ups, err := t.backend(ns, kind, b.BackendObjectReference)
		if err != nil {
			if tr.unresolved == nil {
				tr.unresolved = err
			}
			continue
		}
		w := 1
		if b.Weight != nil {
			w = int(*b.Weight)
		}
		if w > 0 {
			ws = append(ws, weighted{weight: w, targets: ups})
		}
	}
	split := weighBackends(ws)
	// The value of an upstream the split names: the rule's own copy, or
	// the Service port's, as backend made it. Not the fragment's entry of
	// that name: another route may have written one of the same name,
	// and what one route makes must not depend on the others.
	var own map[string]routes.Upstream
	value := func(n string) routes.Upstream {
		if u, ok := own[n]; ok {
			return u
		}
		if u, ok := t.svcUps[n]; ok {
			return u
		}
		return t.res.Fragment.Upstreams[n]
	}
	if tr.mirror != nil {
		// A mirror belongs to an upstream in the routes model, so the
		// rule gets its own copy of each backend's upstream with the
		// mirror set; other rules of the same Service are not mirrored.
		for i := range split {
			if split[i].Upstream == tr.mirror.Upstream {
				continue // mirroring a backend to itself: the model has no such loop
			}
			mirrored := name(append(base, "mirror", strconv.Itoa(i))...)
			u := value(split[i].Upstream)
			u.Mirror = tr.mirror
			t.putUpstream(mirrored, u, false)
			if own == nil {
				own = map[string]routes.Upstream{}
			}
			own[mirrored] = u
			split[i].Upstream = mirrored
		}
	}
	if tr.backendTimeout > 0 {
		// The bound of each attempt is the upstream's timeout, so the rule
		// gets its own copy of each backend's upstream (its mirrored copy
		// when it has one); other rules of the same Service keep theirs.
		for i := range split {
			copied := split[i].Upstream
			if tr.mirror == nil || copied == tr.mirror.Upstream {
				copied = name(append(base, "timeout", strconv.Itoa(i))...)
			}
			u := value(split[i].Upstream)
			u.Timeout = routes.Duration(tr.backendTimeout)
			t.putUpstream(copied, u, false)
			split[i].Upstream = copied
		}
	}
	switch {
	case len(split) == 1:
		tr.upstream = split[0].Upstream
	case len(split) > 1:
		tr.split = split
	default:
		// Nothing to send to. The route still needs an upstream; this one
		// has no endpoints and is never reached.
		tr.upstream = unresolvedUpstream
		t.putUpstream(unresolvedUpstream, routes.Upstream{}, false)
		if !tr.redirects {
			pname := name(append(base, "unresolved")...)
			msg := "no backend of this route can be reached"
			if tr.unresolved != nil {
				msg = "the route's backend is not valid"
			}
			raw, err := rawConfig(pname, respond.Config{Status: 500, Error: msg})
			if err == nil {
				t.putPlugin(pname, routes.PluginInst{Use: "respond", Config: raw})
				tr.plugins = append(tr.plugins, pname)
			}
		}
	}
}

// mirror resolves a RequestMirror filter: its backend's upstream and the
// share of requests copied to it.
func (t *translator) mirror(ns, kind string, f *gatewayv1.HTTPRequestMirrorFilter) (*routes.Mirror, *ruleError) {
	if f == nil {
		return nil, unsupported("RequestMirror is empty")
	}
	ups, err := t.backend(ns, kind, f.BackendRef)
	if err != nil {
		return nil, err
	}
	if len(ups) != 1 {
		// A mirror is one upstream in the routes model, held to one exact
		// identity; accepting the set would let one account's pod answer
		// for another's address, which the backendRef split never does.
		return nil, unsupported("RequestMirror to Service %s: its mesh pods run under %d ServiceAccounts; a mirror needs one (a BackendTLSPolicy listing one account's SPIFFE ID narrows it)", f.BackendRef.Name, len(ups))
	}
	up := ups[0].Upstream
	percent := 100
	switch {
	case f.Percent != nil:
		percent = int(*f.Percent)
	case f.Fraction != nil:
		den := int32(100)
		if f.Fraction.Denominator != nil {
			den = *f.Fraction.Denominator
		}
		if den <= 0 || f.Fraction.Numerator < 0 || f.Fraction.Numerator > den {
			return nil, unsupported("RequestMirror fraction %d/%d is not a share", f.Fraction.Numerator, den)
		}
		percent = int(int64(f.Fraction.Numerator) * 100 / int64(den))
	}
	if percent <= 0 {
		return nil, nil // the routes model reads 0 as its default, 100
	}
	return &routes.Mirror{Upstream: up, Percent: percent}, nil
}

// backend resolves one backendRef to its upstreams and their shares: one
// upstream, or for a mesh Service one per ServiceAccount of its pods
// (meshBackend).
func (t *translator) backend(routeNS, routeKind string, ref gatewayv1.BackendObjectReference) ([]routes.SplitTarget, *ruleError) {
	grp, kind := "", kindService
	if ref.Group != nil {
		grp = string(*ref.Group)
	}
	if ref.Kind != nil {
		kind = string(*ref.Kind)
	}
	if grp != "" || kind != kindService {
		return nil, &ruleError{reason: string(gatewayv1.RouteReasonInvalidKind), msg: fmt.Sprintf("backend %s/%s %s: only Services are supported", grp, kind, ref.Name)}
	}
	ns := routeNS
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	if ns != routeNS && !t.granted(routeKind, routeNS, "", kindService, ns, string(ref.Name)) {
		return nil, &ruleError{reason: string(gatewayv1.RouteReasonRefNotPermitted), msg: fmt.Sprintf("Service %s/%s is in another namespace and no ReferenceGrant there allows it", ns, ref.Name)}
	}
	notFound := func(format string, args ...any) ([]routes.SplitTarget, *ruleError) {
		return nil, &ruleError{reason: string(gatewayv1.RouteReasonBackendNotFound), msg: fmt.Sprintf(format, args...)}
	}
	svc := t.services[nn(ns, string(ref.Name))]
	t.dependOn(nn(ns, string(ref.Name)), svc)
	if svc == nil {
		return notFound("Service %s/%s does not exist", ns, ref.Name)
	}
	if ref.Port == nil {
		return notFound("Service %s/%s: backendRef needs a port", ns, ref.Name)
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == *ref.Port && (svc.Spec.Ports[i].Protocol == "" || svc.Spec.Ports[i].Protocol == corev1.ProtocolTCP) {
			sp = &svc.Spec.Ports[i]
		}
	}
	if sp == nil {
		return notFound("Service %s/%s has no TCP port %d", ns, ref.Name, *ref.Port)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		if why := t.externalNameRefused(svc.Spec.ExternalName); why != "" {
			return nil, &ruleError{reason: string(gatewayv1.RouteReasonRefNotPermitted), msg: fmt.Sprintf("Service %s/%s is of type ExternalName: %s", ns, ref.Name, why)}
		}
	}
	parts := []string{ns, string(ref.Name), strconv.Itoa(int(sp.Port))}
	if routeKind == kindGRPCRoute {
		// gRPC needs HTTP/2 whatever the port's appProtocol says, and an
		// HTTPRoute may use the same port as HTTP/1.1: an upstream of its
		// own.
		parts = append(parts, "grpc")
	}
	if isMeshService(svc) {
		if t.rec != nil {
			// What a mesh backend makes depends on which route reached
			// the Service first (the endpoints left out are reported
			// once) and on Pods: such routes are translated every time.
			t.rec.uncacheable = true
		}
		split, err := t.meshBackend(svc, parts)
		if err == nil {
			split = t.meshBackendTLS(svc, sp, parts, split)
		}
		return split, err
	}
	up := name(parts...)
	u, done := t.svcUps[up]
	if !done {
		u = t.serviceUpstream(svc, sp)
		if routeKind == kindGRPCRoute && u.Protocol == "" {
			u.Protocol = "h2c"
		}
		t.applyBackendTLS(svc, sp, &u)
		t.svcUps[up] = u
	}
	// Only when the name is new: the first writer of a name keeps it, as
	// it always has.
	t.putUpstream(up, u, true)
	return []routes.SplitTarget{{Upstream: up, Weight: 1}}, nil
}

// externalNameRefused says why an ExternalName Service may not be a
// backend ("" when it may). An ExternalName is any host the edge can
// reach: a route of any namespace would make the edge call its own
// admin listener (localhost), the node or the cloud's metadata address
// (169.254.169.254), which EndpointSlices may not name. The API server
// takes an IP address as an ExternalName, so those are refused even when
// providers.kubernetes.external_name_services allows the rest.
func (t *translator) externalNameRefused(host string) string {
	if !t.cfg.ExternalNameServices {
		return "ExternalName backends are off (providers.kubernetes.external_name_services)"
	}
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") || net.ParseIP(h) != nil {
		return fmt.Sprintf("the name %q is an address or localhost, which a backend may not be", host)
	}
	return ""
}

// serviceUpstream makes the upstream of one Service port: the addresses
// of its EndpointSlices, not its ClusterIP, so that balancing, health
// checks and outlier detection see every pod. Ready endpoints serve; when
// none is ready, those still serving while they terminate do
// (endpointUsable). An ExternalName Service resolves its
// name by DNS.
func (t *translator) serviceUpstream(svc *corev1.Service, sp *corev1.ServicePort) routes.Upstream {
	u := routes.Upstream{Protocol: protocolOf(sp.AppProtocol)}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		u.DNS = endpointAddr(svc.Spec.ExternalName, sp.Port)
		return u
	}
	var ready, serving []string
	for _, es := range t.slices[nn(svc.Namespace, svc.Name)] {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		sa := t.sliceAddrs(es, sp.Name)
		if sa.port == 0 {
			continue
		}
		if u.Protocol == "" {
			u.Protocol = protocolOf(sa.app)
		}
		// Appended into slices of this translation's own: the cached
		// ones are shared with the next, and the list is sorted below.
		ready = append(ready, sa.ready...)
		serving = append(serving, sa.serving...)
	}
	eps := ready
	if len(eps) == 0 {
		eps = serving
	}
	slices.Sort(eps)
	u.Endpoints = slices.Compact(eps)
	return u
}

// sliceKey is one EndpointSlice as the informer cached it, and the name
// of the Service port read from it. The informer replaces an object on
// every change and never changes one in place (nor does anything that
// reads a Snapshot), so the pointer stands for the slice's content.
type sliceKey struct {
	es   *discoveryv1.EndpointSlice
	port string
}

// sliceAddrs is what serviceUpstream reads of one EndpointSlice for one
// Service port: the port's number (0: the slice does not have it) and
// appProtocol, and the ready and the serving-while-terminating addresses.
type sliceAddrs struct {
	port           int32
	app            *string
	ready, serving []string
}

// sliceAddrs reads es for the Service port named port, or takes what the
// last translation read of the same slice: at 100,000 endpoints, joining
// every address with its port again was a third of translating a change.
func (t *translator) sliceAddrs(es *discoveryv1.EndpointSlice, port string) sliceAddrs {
	k := sliceKey{es, port}
	if sa, ok := t.sliceSeen[k]; ok {
		return sa
	}
	sa, ok := t.sliceCache[k]
	if !ok {
		for _, p := range es.Ports {
			if p.Port != nil && ptrValue(p.Name) == port {
				sa.port, sa.app = *p.Port, p.AppProtocol
			}
		}
		if sa.port != 0 {
			for _, ep := range es.Endpoints {
				isReady, isServing := endpointUsable(ep.Conditions)
				for _, a := range ep.Addresses {
					addr := endpointAddr(a, sa.port)
					switch {
					case isReady:
						sa.ready = append(sa.ready, addr)
					case isServing:
						sa.serving = append(sa.serving, addr)
					}
				}
			}
		}
	}
	if t.sliceSeen == nil {
		t.sliceSeen = map[sliceKey]sliceAddrs{}
	}
	t.sliceSeen[k] = sa
	return sa
}

// protocolOf maps a port's appProtocol to the upstream protocol: h2c for
// HTTP/2 without TLS (and gRPC, which needs HTTP/2), else HTTP/1.1.
func protocolOf(app *string) string {
	switch ptrValue(app) {
	case "kubernetes.io/h2c", "h2c", "grpc":
		return "h2c"
	}
	return ""
}

func ptrValue[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
