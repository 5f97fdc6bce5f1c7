package kubernetes

import (
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// Object names and hostnames have dots, and model names join their parts
// with dots: two objects of one namespace, or one route's two hostnames,
// must still never make the same model name. A duplicate route name
// refuses the whole model, so one tenant could freeze every other's
// routes at their last good model; a duplicate plugin or upstream name
// silently gives one route another's filter or backend.
func TestTranslateNamesNeverCollide(t *testing.T) {
	headerFilter := func(v string) gatewayv1.HTTPRouteFilter {
		return gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier,
			RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "X-From", Value: v}}}}
	}
	withFilter := func(r gatewayv1.HTTPRouteRule, f gatewayv1.HTTPRouteFilter) gatewayv1.HTTPRouteRule {
		r.Filters = append(r.Filters, f)
		return r
	}
	grpcWith := func(name, host string, f *gatewayv1.HTTPRouteFilter) *gatewayv1.GRPCRoute {
		rl := gatewayv1.GRPCRouteRule{Matches: []gatewayv1.GRPCRouteMatch{method("shop.v1.Cart", "Add")}, BackendRefs: []gatewayv1.GRPCBackendRef{grpcBackend("web", 80)}}
		if f != nil {
			rl.Filters = []gatewayv1.GRPCRouteFilter{{Type: gatewayv1.GRPCRouteFilterRequestHeaderModifier, RequestHeaderModifier: f.RequestHeaderModifier}}
		}
		g := grpcRouteOf("apps", name, rl)
		if host != "" {
			g.Spec.Hostnames = []gatewayv1.Hostname{gatewayv1.Hostname(host)}
		}
		return g
	}
	a := rule([]gatewayv1.HTTPRouteMatch{exact("/a")}, backend("web", 80))
	for _, tc := range []struct {
		name      string
		listeners []gatewayv1.Listener
		http      []*gatewayv1.HTTPRoute
		grpc      []*gatewayv1.GRPCRoute
		plugins   int // plugin instances the fragment must have (0: not checked)
	}{
		{name: "a dotted route name against a dotted hostname",
			http: []*gatewayv1.HTTPRoute{
				route("apps", "r", []gatewayv1.HTTPRouteRule{a}, hostnames("0.x.example.com")),
				route("apps", "r.0", []gatewayv1.HTTPRouteRule{a}, hostnames("x.example.com")),
			}},
		{name: "a wildcard and the name its label reads as",
			http: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{a}, hostnames("*.example.com", "w.example.com"))}},
		{name: "an HTTPRoute named grpc against a GRPCRoute",
			http: []*gatewayv1.HTTPRoute{route("apps", "grpc", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/shop.v1.Cart/Add")}, backend("web", 80))}, hostnames("0.h.example.com"))},
			grpc: []*gatewayv1.GRPCRoute{grpcWith("0", "h.example.com", nil)}},
		{name: "an HTTPRoute's filter against a GRPCRoute's",
			http:    []*gatewayv1.HTTPRoute{route("apps", "grpc.x", []gatewayv1.HTTPRouteRule{withFilter(a, headerFilter("http"))})},
			grpc:    []*gatewayv1.GRPCRoute{grpcWith("x", "", ptr(headerFilter("grpc")))},
			plugins: 2},
		{name: "a listener hostname that reads as no hostname",
			listeners: []gatewayv1.Listener{httpListener("http", 80, ""), httpListener("named", 80, "any")},
			http:      []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{a})}},
		{name: "isolation routes of a wildcard and a name",
			listeners: []gatewayv1.Listener{httpListener("http", 80, ""), httpListener("wild", 80, "*.example.com"), httpListener("w", 80, "w.example.com")},
			http:      []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{a})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := world()
			if tc.listeners != nil {
				s.Gateways = []*gatewayv1.Gateway{gw("apps", "gw", tc.listeners...)}
			}
			s.HTTPRoutes, s.GRPCRoutes = tc.http, tc.grpc
			res := Translate(routes.KubernetesProvider{}, s)
			seen := map[string]routes.Match{}
			for _, r := range res.Fragment.Routes {
				if m, dup := seen[r.Name]; dup {
					t.Errorf("route name %q is made twice: host %q and host %q", r.Name, m.Host, r.Match.Host)
				}
				seen[r.Name] = r.Match
			}
			if tc.plugins > 0 && len(res.Fragment.Plugins) != tc.plugins {
				t.Errorf("%d plugin instances, want %d (one route's filter took another's name)", len(res.Fragment.Plugins), tc.plugins)
			}
			mergeable(t, res.Fragment)
		})
	}
}

// Two routes that match different requests must both be served. A header
// or query value may hold any text, and the routes model tells "matches
// exactly the same requests" by a signature of the match; when a value
// could spell another match's pieces ("1|H:b=2"), an older route of one
// namespace made a newer one of another namespace, matching other
// requests, be left out as its duplicate while its status said Accepted.
func TestTranslateMatchValuesNeverShadow(t *testing.T) {
	headers := func(kv ...string) gatewayv1.HTTPRouteMatch {
		m := exact("/a")
		for i := 0; i < len(kv); i += 2 {
			m.Headers = append(m.Headers, gatewayv1.HTTPHeaderMatch{Name: gatewayv1.HTTPHeaderName(kv[i]), Value: kv[i+1]})
		}
		return m
	}
	query := func(kv ...string) gatewayv1.HTTPRouteMatch {
		m := exact("/a")
		for i := 0; i < len(kv); i += 2 {
			m.QueryParams = append(m.QueryParams, gatewayv1.HTTPQueryParamMatch{Name: gatewayv1.HTTPHeaderName(kv[i]), Value: kv[i+1]})
		}
		return m
	}
	for _, tc := range []struct {
		name           string
		older, younger gatewayv1.HTTPRouteMatch
	}{
		{"a header value spelling a second header", headers("a", "1|H:b=2"), headers("a", "1", "b", "2")},
		{"a header value spelling a query parameter", headers("a", "1|Q:b=2"), func() gatewayv1.HTTPRouteMatch {
			m := headers("a", "1")
			m.QueryParams = query("b", "2").QueryParams
			return m
		}()},
		{"a query value spelling a second parameter", query("a", "1|Q:b=2"), query("a", "1", "b", "2")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := world()
			s.Services = append(s.Services, svc("victim", "web"))
			s.Gateways[0].Spec.Listeners[0].AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: ptr(gatewayv1.NamespacesFromAll)}}
			older := route("mallory", "early", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{tc.older}, backend("web", 80))},
				hostnames("victim.example"), parents(parent("apps", "gw")), age(1))
			younger := route("victim", "shop", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{tc.younger}, backend("web", 80))},
				hostnames("victim.example"), parents(parent("apps", "gw")), age(2))
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{older, younger}
			res := Translate(routes.KubernetesProvider{}, s)
			if len(res.Fragment.Routes) != 2 {
				t.Fatalf("%d model routes, want 2", len(res.Fragment.Routes))
			}
			m := mergeable(t, res.Fragment)
			var served []string
			for _, r := range m.Routes {
				served = append(served, r.Name)
			}
			if len(served) != 2 || len(m.Warnings) != 0 {
				t.Fatalf("the model serves %v with warnings %v; want both routes", served, m.Warnings)
			}
		})
	}
}

// A route takes the policy of the oldest Gateway it is served through,
// and only of one it is served through: a parentRef to an older Gateway
// whose listeners refuse the route (allowedRoutes, sectionName, port), or
// accept it only for hostnames a more specific listener has (listener
// isolation), must not swap the authenticator of the Gateway that serves
// it for that other Gateway's policy.
func TestTranslateGatewayPolicyOnlyWhereAttached(t *testing.T) {
	same, all := gatewayv1.NamespacesFromSame, gatewayv1.NamespacesFromAll
	admit := func(from gatewayv1.FromNamespaces, l gatewayv1.Listener) gatewayv1.Listener {
		l.AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &from}}
		return l
	}
	withRef := func(f func(*gatewayv1.ParentReference)) gatewayv1.ParentReference {
		p := parent("infra", "open")
		f(&p)
		return p
	}
	for _, tc := range []struct {
		name     string
		open     gatewayv1.Listener        // the listener of the older Gateway "open"
		ref      gatewayv1.ParentReference // the tenant's parentRef to it
		accepted metav1.ConditionStatus    // what "open" says of the route
	}{
		{"its listeners do not admit the namespace", admit(same, httpListener("http", 80, "")), parent("infra", "open"), metav1.ConditionFalse},
		{"its sectionName matches no listener", admit(all, httpListener("http", 80, "")),
			withRef(func(p *gatewayv1.ParentReference) { p.SectionName = ptr(gatewayv1.SectionName("nope")) }), metav1.ConditionFalse},
		{"its port matches no listener", admit(all, httpListener("http", 80, "")),
			withRef(func(p *gatewayv1.ParentReference) { p.Port = ptr(gatewayv1.PortNumber(8081)) }), metav1.ConditionFalse},
		{"its listener's hostnames are a narrower listener's", admit(all, httpListener("http", 80, "*.example.com")), parent("infra", "open"), metav1.ConditionTrue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := world()
			open := gw("infra", "open", tc.open)
			guarded := gw("infra", "guarded", admit(all, httpListener("http", 80, "secure.example.com")))
			guarded.CreationTimestamp = metav1.NewTime(epoch.Add(time.Minute)) // younger than "open"
			s.Gateways = []*gatewayv1.Gateway{open, guarded}
			s.Policies = []*CausewayPolicy{
				policy("infra", "open-limit", 0, target(kindGateway, "open"), func(p *CausewayPolicy) {
					p.Spec.RateLimits = []PolicyRateLimit{{Ref: "per-ip"}}
				}),
				policy("infra", "guarded-auth", 0, target(kindGateway, "guarded"), authRef("corp")),
			}
			r := route("apps", "r", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/a")}, backend("web", 80))},
				hostnames("secure.example.com"), parents(tc.ref, parent("infra", "guarded")))
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{r}
			res := TranslateWith(routes.KubernetesProvider{}, s, TranslateOptions{Check: testCheck(t)})
			st := res.HTTPRoutes[nn("apps", "r")]
			if len(st.Parents) != 2 || condOf(st.Parents[0].Conditions, string(gatewayv1.RouteConditionAccepted)).Status != tc.accepted ||
				condOf(st.Parents[1].Conditions, string(gatewayv1.RouteConditionAccepted)).Status != metav1.ConditionTrue {
				t.Fatalf("status %+v; want Accepted %s by open, True by guarded", st.Parents, tc.accepted)
			}
			var got []string
			for _, mr := range res.Fragment.Routes {
				if mr.Match.Host == "secure.example.com" && !strings.HasPrefix(mr.Name, routes.KubernetesPrefix+"Isolation.") {
					got = append(got, policySummary(mr))
				}
			}
			if want := []string{"/a auth=corp"}; !slices.Equal(got, want) {
				t.Fatalf("model routes %q, want %q: the policy of the Gateway that serves the route", got, want)
			}
		})
	}
}

// The Gateway API's hostname schemas bound a name's length (253) but not
// its labels', and the routes model takes only DNS labels of at most 63
// characters: a route whose hostname, URLRewrite hostname or redirect
// hostname has a longer label is left out with its status (the route, or
// the rule, not accepted), never handed to the model, which would refuse
// every namespace's routes with it. A redirect's hostname is only the
// Location's, which the model does not judge.
func TestTranslateLongHostLabels(t *testing.T) {
	long := strings.Repeat("a", 64) + ".example.com"
	rewrite := func(f gatewayv1.HTTPRouteFilter) []gatewayv1.HTTPRouteRule {
		r := rule([]gatewayv1.HTTPRouteMatch{exact("/a")}, backend("web", 80))
		r.Filters = []gatewayv1.HTTPRouteFilter{f}
		return []gatewayv1.HTTPRouteRule{r, rule([]gatewayv1.HTTPRouteMatch{exact("/b")}, backend("web", 80))}
	}
	for _, tc := range []struct {
		name     string
		r        *gatewayv1.HTTPRoute
		accepted metav1.ConditionStatus // of the route
		reason   string                 // Accepted's reason, or PartiallyInvalid's when accepted
	}{
		{"a route hostname", route("apps", "r", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/a")}, backend("web", 80))}, hostnames(long)),
			metav1.ConditionFalse, string(gatewayv1.RouteReasonUnsupportedValue)},
		{"a route hostname beside a good one", route("apps", "r", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/a")}, backend("web", 80))}, hostnames(long, "good.example.com")),
			metav1.ConditionFalse, string(gatewayv1.RouteReasonUnsupportedValue)},
		{"a GRPCRoute hostname", nil, metav1.ConditionFalse, string(gatewayv1.RouteReasonUnsupportedValue)},
		{"a URLRewrite hostname", route("apps", "r", rewrite(gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterURLRewrite,
			URLRewrite: &gatewayv1.HTTPURLRewriteFilter{Hostname: ptr(gatewayv1.PreciseHostname(long))}})),
			metav1.ConditionTrue, string(gatewayv1.RouteReasonUnsupportedValue)},
		{"a redirect hostname", route("apps", "r", rewrite(gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestRedirect,
			RequestRedirect: &gatewayv1.HTTPRequestRedirectFilter{Hostname: ptr(gatewayv1.PreciseHostname(long))}})),
			metav1.ConditionTrue, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := world()
			var st gatewayv1.RouteStatus
			if tc.r != nil {
				s.HTTPRoutes = []*gatewayv1.HTTPRoute{tc.r}
			} else {
				g := grpcRouteOf("apps", "r", gatewayv1.GRPCRouteRule{BackendRefs: []gatewayv1.GRPCBackendRef{grpcBackend("web", 80)}})
				g.Spec.Hostnames = []gatewayv1.Hostname{gatewayv1.Hostname(long)}
				s.GRPCRoutes = []*gatewayv1.GRPCRoute{g}
			}
			res := Translate(routes.KubernetesProvider{}, s)
			if tc.r != nil {
				st = res.HTTPRoutes[nn("apps", "r")].RouteStatus
			} else {
				st = res.GRPCRoutes[nn("apps", "r")].RouteStatus
			}
			if len(st.Parents) != 1 {
				t.Fatalf("status %+v", st)
			}
			acc := condOf(st.Parents[0].Conditions, string(gatewayv1.RouteConditionAccepted))
			if acc.Status != tc.accepted || (tc.accepted == metav1.ConditionFalse && acc.Reason != tc.reason) {
				t.Errorf("Accepted %s %s %q, want %s %s", acc.Status, acc.Reason, acc.Message, tc.accepted, tc.reason)
			}
			if pi := condOf(st.Parents[0].Conditions, string(gatewayv1.RouteConditionPartiallyInvalid)); tc.accepted == metav1.ConditionTrue && tc.reason != "" && (pi == nil || pi.Reason != tc.reason) {
				t.Errorf("PartiallyInvalid %+v, want %s", pi, tc.reason)
			}
			mergeable(t, res.Fragment)
		})
	}
}

// A listener's hostname the routes model cannot take (a label over 63
// characters, which the schema does not bound, or a name the CRD's pattern
// refuses but an older or edited CRD lets through), beside listeners with
// good ones: that listener alone is not accepted (UnsupportedValue) nor
// programmed (Invalid), claims no host, and the model takes the rest, so
// no other listener's or Gateway's routes are frozen with it.
func TestTranslateInvalidListenerHostname(t *testing.T) {
	long := strings.Repeat("a", 64) + ".example.com"
	for _, bad := range []string{
		long,
		"*." + long,
		"Upper.example.com",
		"under_score.example.com",
		"a..example.com",
		"-dash.example.com",
		"*",
		"*.*.example.com",
		"example.com.",
	} {
		t.Run(bad, func(t *testing.T) {
			s := world()
			s.Gateways = []*gatewayv1.Gateway{gw("apps", "gw", httpListener("http", 80, ""), httpListener("named", 80, "good.example.com"), httpListener("bad", 80, bad))}
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/a")}, backend("web", 80))})}
			res := Translate(routes.KubernetesProvider{}, s)
			st := res.Gateways[nn("apps", "gw")]
			if acc := condOf(st.Conditions, string(gatewayv1.GatewayConditionAccepted)); acc.Status != metav1.ConditionTrue || acc.Reason != string(gatewayv1.GatewayReasonListenersNotValid) {
				t.Errorf("Gateway Accepted %s %s, want True ListenersNotValid", acc.Status, acc.Reason)
			}
			for _, l := range st.Listeners {
				acc := condOf(l.Conditions, string(gatewayv1.ListenerConditionAccepted))
				prog := condOf(l.Conditions, string(gatewayv1.ListenerConditionProgrammed))
				want := metav1.ConditionTrue
				if l.Name == "bad" {
					want = metav1.ConditionFalse
				}
				if acc.Status != want || prog.Status != want ||
					(want == metav1.ConditionFalse && (acc.Reason != string(gatewayv1.ListenerReasonUnsupportedValue) || prog.Reason != string(gatewayv1.ListenerReasonInvalid))) {
					t.Errorf("listener %s: Accepted %s %s %q, Programmed %s %s, want %s", l.Name, acc.Status, acc.Reason, acc.Message, prog.Status, prog.Reason, want)
				}
			}
			m := mergeable(t, res.Fragment)
			hosts := map[string]bool{}
			for _, r := range m.Routes {
				hosts[r.Match.Host] = true
			}
			if hosts[bad] || !hosts[""] || !hosts["good.example.com"] {
				t.Fatalf("the model serves hosts %v, want \"\" and good.example.com and not %q", hosts, bad)
			}
		})
	}
}
