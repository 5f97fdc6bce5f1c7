package kubernetes

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// A route's RequestHeaderModifier may not state a header the edge owns:
// the client's address, the request's ID, the verified client
// certificate, the mesh peer and caller. The rule is refused with
// UnsupportedValue (the model then has no route for it); other headers,
// a removal, and the response side are as the route says.
func TestTranslateRefusesEdgeOwnedRequestHeaders(t *testing.T) {
	for _, tc := range []struct {
		name   string
		filter gatewayv1.HTTPRouteFilter
		refuse bool
	}{
		{"set X-Forwarded-For", reqHeaders("set", "X-Forwarded-For"), true},
		{"add x-forwarded-proto", reqHeaders("add", "x-forwarded-proto"), true},
		{"set Forwarded", reqHeaders("set", "Forwarded"), true},
		{"set X-Real-IP", reqHeaders("set", "X-Real-IP"), true},
		{"set True-Client-IP", reqHeaders("set", "True-Client-IP"), true},
		{"set X-Request-Id", reqHeaders("set", "X-Request-Id"), true},
		{"set traceparent", reqHeaders("set", "traceparent"), true},
		{"set X-Client-Cert-Subject", reqHeaders("set", "X-Client-Cert-Subject"), true},
		{"set X-Causeway-Peer-Id", reqHeaders("set", "X-Causeway-Peer-Id"), true},
		{"add X-Causeway-Caller-Subject", reqHeaders("add", "X-Causeway-Caller-Subject"), true},
		{"set X-Causeway-Mirror", reqHeaders("set", "X-Causeway-Mirror"), true},
		{"set Causeway-Caller", reqHeaders("set", "Causeway-Caller"), true},
		{"set X-Original-URL", reqHeaders("set", "X-Original-URL"), true},
		// CGI-style servers fold "_" into "-": X_Causeway_Peer_Id is the
		// peer ID to them. Refused (names with "_" are refused outright).
		{"set X_Causeway_Peer_Id", reqHeaders("set", "X_Causeway_Peer_Id"), true},
		{"set x_real_ip", reqHeaders("set", "x_real_ip"), true},
		{"set X_Forwarded_For", reqHeaders("set", "X_Forwarded_For"), true},
		{"set X-Tenant", reqHeaders("set", "X-Tenant"), false},
		{"set Authorization", reqHeaders("set", "Authorization"), false},
		{"remove X-Forwarded-For", gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier,
			RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Remove: []string{"X-Forwarded-For"}}}, false},
		{"response X-Request-Id", gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterResponseHeaderModifier,
			ResponseHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "X-Request-Id", Value: "x"}}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := world()
			r := rule([]gatewayv1.HTTPRouteMatch{exact("/a")}, backend("web", 80))
			r.Filters = []gatewayv1.HTTPRouteFilter{tc.filter}
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{r})}
			res := Translate(routes.KubernetesProvider{}, s)
			st := res.HTTPRoutes[nn("apps", "r")]
			acc := condOf(st.Parents[0].Conditions, string(gatewayv1.RouteConditionAccepted))
			if tc.refuse {
				if acc.Status != metav1.ConditionFalse || acc.Reason != string(gatewayv1.RouteReasonUnsupportedValue) {
					t.Fatalf("Accepted %s %s %q; want refused (UnsupportedValue)", acc.Status, acc.Reason, acc.Message)
				}
				// The rule's requests are answered 500 (never sent on
				// with the header, nor to another rule without it).
				for _, r := range res.Fragment.Routes {
					if len(r.Plugins) != 1 || res.Fragment.Plugins[r.Plugins[0]].Use != "respond" {
						t.Fatalf("route %s of the refused rule has plugins %v, want only the 500 answer", r.Name, r.Plugins)
					}
				}
				return
			}
			if acc.Status != metav1.ConditionTrue || len(res.Fragment.Routes) == 0 {
				t.Fatalf("Accepted %s %s %q; want accepted", acc.Status, acc.Reason, acc.Message)
			}
			mergeable(t, res.Fragment)
		})
	}
}

func reqHeaders(op, name string) gatewayv1.HTTPRouteFilter {
	h := &gatewayv1.HTTPHeaderFilter{}
	hh := []gatewayv1.HTTPHeader{{Name: gatewayv1.HTTPHeaderName(name), Value: "forged"}}
	if op == "set" {
		h.Set = hh
	} else {
		h.Add = hh
	}
	return gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: h}
}

// An ExternalName Service names any host, the edge's own admin listener
// and the cloud's metadata address included: it is a backend only where
// providers.kubernetes.external_name_services allows it, and never when
// its name is an address or localhost. A refused one is ResolvedRefs=False
// RefNotPermitted and its rule answers 500.
func TestTranslateExternalNameBackends(t *testing.T) {
	for _, tc := range []struct {
		name    string
		allow   bool
		extName string
		ok      bool
	}{
		{"off by default", false, "api.example.net", false},
		{"off: localhost", false, "localhost", false},
		{"allowed: a DNS name", true, "api.example.net", true},
		{"allowed: localhost", true, "localhost", false},
		{"allowed: localhost.", true, "LOCALHOST.", false},
		{"allowed: a .localhost name", true, "admin.localhost", false},
		{"allowed: loopback address", true, "127.0.0.1", false},
		{"allowed: metadata address", true, "169.254.169.254", false},
		{"allowed: IPv6 address", true, "::1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := world()
			s.Services = append(s.Services, &corev1.Service{ObjectMeta: objMeta("apps", "ext", 0),
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: tc.extName, Ports: []corev1.ServicePort{{Port: 9901}}}})
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/a")}, backend("ext", 9901))})}
			res := Translate(routes.KubernetesProvider{ExternalNameServices: tc.allow}, s)
			rc := condOf(res.HTTPRoutes[nn("apps", "r")].Parents[0].Conditions, string(gatewayv1.RouteConditionResolvedRefs))
			_, served := res.Fragment.Upstreams["k8s.apps.ext.9901"]
			if tc.ok {
				if rc.Status != metav1.ConditionTrue || !served {
					t.Fatalf("ResolvedRefs %s %s %q, upstream %v; want resolved", rc.Status, rc.Reason, rc.Message, served)
				}
				return
			}
			if rc.Status != metav1.ConditionFalse || rc.Reason != string(gatewayv1.RouteReasonRefNotPermitted) || served {
				t.Fatalf("ResolvedRefs %s %s %q, upstream %v; want RefNotPermitted and no upstream", rc.Status, rc.Reason, rc.Message, served)
			}
			for _, u := range res.Fragment.Upstreams {
				if u.DNS != "" {
					t.Fatalf("an upstream resolves %s by DNS", u.DNS)
				}
			}
			mergeable(t, res.Fragment)
		})
	}
}
