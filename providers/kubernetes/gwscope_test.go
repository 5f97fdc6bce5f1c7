package kubernetes

import (
	"cmp"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// TestTranslateGatewayFilter: an edge limited to some Gateways
// (providers.kubernetes.gateways) serves those and the routes attached to
// them, and says nothing of the others.
func TestTranslateGatewayFilter(t *testing.T) {
	// Gateways a and b in "infra" admit routes from every namespace;
	// "both" is attached to a and b, "only-b" to b alone, "stale" to b
	// alone but still carries the entry an edge of a wrote before its
	// parentRef to a was removed.
	snap := func() *Snapshot {
		s := world()
		all := func(g *gatewayv1.Gateway) *gatewayv1.Gateway {
			from := gatewayv1.NamespacesFromAll
			g.Spec.Listeners[0].AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &from}}
			return g
		}
		s.Gateways = []*gatewayv1.Gateway{all(gw("infra", "a", httpListener("http", 80, ""))), all(gw("infra", "b", httpListener("http", 80, "")))}
		both := route("apps", "both", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{prefix("/both")}, backend("web", 80))},
			parents(parent("infra", "a"), parent("infra", "b")))
		onlyB := route("apps", "only-b", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{prefix("/only-b")}, backend("web", 80))},
			parents(parent("infra", "b")))
		stale := route("apps", "stale", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{prefix("/stale")}, backend("web", 80))},
			parents(parent("infra", "b")))
		stale.Status.Parents = []gatewayv1.RouteParentStatus{{ParentRef: parent("infra", "a"), ControllerName: routes.KubernetesControllerName}}
		s.HTTPRoutes = []*gatewayv1.HTTPRoute{both, onlyB, stale}
		return s
	}
	tests := []struct {
		name     string
		gateways []string
		// served are the path prefixes in the fragment; gws the
		// Gateways with a status; parents each route's parentRefs (by
		// Gateway name) with an entry of ours; absent routes get none.
		served  []string
		gws     []string
		parents map[string][]string
	}{
		{"every Gateway", nil, []string{"/both", "/only-b", "/stale"}, []string{"a", "b"},
			map[string][]string{"both": {"a", "b"}, "only-b": {"b"}, "stale": {"b"}}},
		{"a only", []string{"infra/a"}, []string{"/both"}, []string{"a"},
			map[string][]string{"both": {"a"}, "stale": {}}},
		{"b only", []string{"infra/b"}, []string{"/both", "/only-b", "/stale"}, []string{"b"},
			map[string][]string{"both": {"b"}, "only-b": {"b"}, "stale": {"b"}}},
		{"a Gateway that does not exist", []string{"infra/c"}, nil, nil, map[string][]string{}},
		{"the same name in another namespace", []string{"apps/a"}, nil, nil, map[string][]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Translate(routes.KubernetesProvider{Gateways: tt.gateways}, snap())
			var served []string
			for _, r := range res.Fragment.Routes {
				// A prefix is two routes: the path itself, and below it.
				p := strings.TrimSuffix(cmp.Or(r.Match.Path, r.Match.PathPrefix), "/")
				if !slices.Contains(served, p) {
					served = append(served, p)
				}
			}
			slices.Sort(served)
			if !slices.Equal(served, tt.served) {
				t.Errorf("served %v, want %v", served, tt.served)
			}
			var gws []string
			for k := range res.Gateways {
				gws = append(gws, k.Name)
			}
			slices.Sort(gws)
			if !slices.Equal(gws, tt.gws) {
				t.Errorf("Gateway statuses %v, want %v", gws, tt.gws)
			}
			if len(res.HTTPRoutes) != len(tt.parents) {
				t.Errorf("route statuses %v, want %v", res.HTTPRoutes, tt.parents)
			}
			for name, want := range tt.parents {
				st, ok := res.HTTPRoutes[types.NamespacedName{Namespace: "apps", Name: name}]
				if !ok {
					t.Errorf("route %s: no status", name)
					continue
				}
				got := []string{}
				for _, p := range st.Parents {
					got = append(got, string(p.ParentRef.Name))
					if c := condOf(p.Conditions, string(gatewayv1.RouteConditionAccepted)); c == nil || c.Status != metav1.ConditionTrue {
						t.Errorf("route %s parent %s: Accepted %+v", name, p.ParentRef.Name, c)
					}
				}
				if !slices.Equal(got, want) {
					t.Errorf("route %s: parents %v, want %v", name, got, want)
				}
			}
		})
	}
}

// TestPolicyStatusOwnership: an edge limited to some Gateways brings only
// the ancestors naming its Gateways (and missing targets, which every edge
// judges alike) to what it wants, and keeps the rest in place.
func TestPolicyStatusOwnership(t *testing.T) {
	gwRef := func(name string) gatewayv1.ParentReference {
		g, k, ns := gatewayv1.Group(gatewayv1.GroupName), gatewayv1.Kind("Gateway"), gatewayv1.Namespace("infra")
		return gatewayv1.ParentReference{Group: &g, Kind: &k, Namespace: &ns, Name: gatewayv1.ObjectName(name)}
	}
	routeRef := func(name string) gatewayv1.ParentReference {
		g, k, ns := gatewayv1.Group(gatewayv1.GroupName), gatewayv1.Kind("HTTPRoute"), gatewayv1.Namespace("apps")
		return gatewayv1.ParentReference{Group: &g, Kind: &k, Namespace: &ns, Name: gatewayv1.ObjectName(name)}
	}
	anc := func(ref gatewayv1.ParentReference) gatewayv1.PolicyAncestorStatus {
		return gatewayv1.PolicyAncestorStatus{AncestorRef: ref, ControllerName: ours,
			Conditions: []metav1.Condition{cond("Accepted", "True", "Accepted", 1, t0)}}
	}
	names := func(as []gatewayv1.PolicyAncestorStatus) []string {
		out := []string{}
		for _, a := range as {
			out = append(out, string(*a.AncestorRef.Kind)+"/"+string(a.AncestorRef.Name))
		}
		return out
	}
	tests := []struct {
		name         string
		gateways     []string
		stored, want []gatewayv1.PolicyAncestorStatus
		next         []string
	}{
		{"another edge's ancestor kept in place", []string{"infra/b"},
			[]gatewayv1.PolicyAncestorStatus{anc(gwRef("a")), anc(gwRef("b"))},
			[]gatewayv1.PolicyAncestorStatus{anc(gwRef("b"))},
			[]string{"Gateway/a", "Gateway/b"}},
		{"own ancestor not wanted any more goes", []string{"infra/b"},
			[]gatewayv1.PolicyAncestorStatus{anc(gwRef("b")), anc(gwRef("a"))},
			nil,
			[]string{"Gateway/a"}},
		{"a missing target is every edge's", []string{"infra/b"},
			[]gatewayv1.PolicyAncestorStatus{anc(routeRef("gone")), anc(gwRef("a"))},
			[]gatewayv1.PolicyAncestorStatus{anc(gwRef("b"))},
			[]string{"Gateway/a", "Gateway/b"}},
		{"the whole class owns every ancestor", nil,
			[]gatewayv1.PolicyAncestorStatus{anc(gwRef("a")), anc(gwRef("b"))},
			[]gatewayv1.PolicyAncestorStatus{anc(gwRef("b"))},
			[]string{"Gateway/b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := routes.KubernetesProvider{Gateways: tt.gateways}
			got := policyStatus(gatewayv1.PolicyStatus{Ancestors: tt.stored}, gatewayv1.PolicyStatus{Ancestors: tt.want}, t1,
				func(ref gatewayv1.ParentReference) bool { return ownsRef(cfg, "apps", ref) })
			if n := names(got.Ancestors); !slices.Equal(n, tt.next) {
				t.Fatalf("ancestors %v, want %v", n, tt.next)
			}
		})
	}
}
