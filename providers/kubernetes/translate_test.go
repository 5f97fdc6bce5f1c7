package kubernetes

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/causewayhq/causeway/plugins/respond"
	"github.com/causewayhq/causeway/routes"
)

// The builders below make the objects of a Snapshot the way a user writes
// them: only what the test is about is set.

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func objMeta(ns, name string, age int) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 3, CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Minute))}
}

func ptr[T any](v T) *T { return &v }

func class(name, controller string) *gatewayv1.GatewayClass {
	return &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1}, Spec: gatewayv1.GatewayClassSpec{ControllerName: gatewayv1.GatewayController(controller)}}
}

func httpListener(name string, port int32, host string) gatewayv1.Listener {
	l := gatewayv1.Listener{Name: gatewayv1.SectionName(name), Port: port, Protocol: gatewayv1.HTTPProtocolType}
	if host != "" {
		l.Hostname = ptr(gatewayv1.Hostname(host))
	}
	return l
}

func gw(ns, name string, ls ...gatewayv1.Listener) *gatewayv1.Gateway {
	return &gatewayv1.Gateway{ObjectMeta: objMeta(ns, name, 0), Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: ls}}
}

func parent(ns, name string) gatewayv1.ParentReference {
	p := gatewayv1.ParentReference{Name: gatewayv1.ObjectName(name)}
	if ns != "" {
		p.Namespace = ptr(gatewayv1.Namespace(ns))
	}
	return p
}

func backend(name string, port int32, weight ...int32) gatewayv1.HTTPBackendRef {
	b := gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: ptr(port)}}}
	if len(weight) > 0 {
		b.Weight = &weight[0]
	}
	return b
}

func prefix(p string) gatewayv1.HTTPRouteMatch {
	return gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Type: ptr(gatewayv1.PathMatchPathPrefix), Value: ptr(p)}}
}

func exact(p string) gatewayv1.HTTPRouteMatch {
	return gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Type: ptr(gatewayv1.PathMatchExact), Value: ptr(p)}}
}

type routeOpt func(*gatewayv1.HTTPRoute)

func hostnames(h ...string) routeOpt {
	return func(r *gatewayv1.HTTPRoute) {
		for _, x := range h {
			r.Spec.Hostnames = append(r.Spec.Hostnames, gatewayv1.Hostname(x))
		}
	}
}

func parents(p ...gatewayv1.ParentReference) routeOpt {
	return func(r *gatewayv1.HTTPRoute) { r.Spec.ParentRefs = p }
}

func age(minutes int) routeOpt {
	return func(r *gatewayv1.HTTPRoute) {
		r.CreationTimestamp = metav1.NewTime(epoch.Add(time.Duration(minutes) * time.Minute))
	}
}

func route(ns, name string, rules []gatewayv1.HTTPRouteRule, opts ...routeOpt) *gatewayv1.HTTPRoute {
	r := &gatewayv1.HTTPRoute{ObjectMeta: objMeta(ns, name, 10), Spec: gatewayv1.HTTPRouteSpec{Rules: rules}}
	r.Spec.ParentRefs = []gatewayv1.ParentReference{parent("", "gw")}
	for _, o := range opts {
		o(r)
	}
	return r
}

func svc(ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	if len(ports) == 0 {
		ports = []corev1.ServicePort{{Name: "http", Port: 80}}
	}
	return &corev1.Service{ObjectMeta: objMeta(ns, name, 0), Spec: corev1.ServiceSpec{Ports: ports}}
}

type endpoint struct {
	ip                          string
	ready, serving, terminating bool
}

func slice(ns, svc, name, portName string, port int32, eps ...endpoint) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  objMeta(ns, name, 0),
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr(portName), Port: ptr(port)}},
	}
	es.Labels = map[string]string{discoveryv1.LabelServiceName: svc}
	for _, e := range eps {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(e.ready), Serving: ptr(e.serving), Terminating: ptr(e.terminating)}})
	}
	return es
}

func ready(ip string) endpoint { return endpoint{ip: ip, ready: true, serving: true} }

// world is the usual cluster: our class, Gateway "gw" in "apps" with one
// HTTP listener, and Service "web" with two ready pods.
func world() *Snapshot {
	return &Snapshot{
		GatewayClasses: []*gatewayv1.GatewayClass{class("causeway", routes.KubernetesControllerName)},
		Gateways:       []*gatewayv1.Gateway{gw("apps", "gw", httpListener("http", 80, ""))},
		Services:       []*corev1.Service{svc("apps", "web")},
		EndpointSlices: []*discoveryv1.EndpointSlice{slice("apps", "web", "web-1", "http", 8080, ready("10.244.0.2"), ready("10.244.0.1"))},
	}
}

func rule(matches []gatewayv1.HTTPRouteMatch, backends ...gatewayv1.HTTPBackendRef) gatewayv1.HTTPRouteRule {
	return gatewayv1.HTTPRouteRule{Matches: matches, BackendRefs: backends}
}

func condOf(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

// routeSummary is a route as a line: what it matches and where it goes.
func routeSummary(r routes.Route) string {
	var b strings.Builder
	b.WriteString(r.Match.Host)
	if r.Match.Host == "" {
		b.WriteString("*")
	}
	if r.Match.Path != "" {
		b.WriteString(" =" + r.Match.Path)
	}
	if r.Match.PathPrefix != "" {
		b.WriteString(" ^" + r.Match.PathPrefix)
	}
	if r.Match.PathRegex != "" {
		b.WriteString(" ~" + r.Match.PathRegex)
	}
	for _, m := range r.Match.Methods {
		b.WriteString(" " + m)
	}
	for _, k := range sortedKeys(r.Match.Headers) {
		b.WriteString(" H:" + k + "=" + r.Match.Headers[k])
	}
	for _, k := range sortedKeys(r.Match.Query) {
		b.WriteString(" Q:" + k + "=" + r.Match.Query[k])
	}
	for _, k := range sortedKeys(r.Match.HeadersRegex) {
		b.WriteString(" HR:" + k + "=" + r.Match.HeadersRegex[k])
	}
	for _, k := range sortedKeys(r.Match.QueryRegex) {
		b.WriteString(" QR:" + k + "=" + r.Match.QueryRegex[k])
	}
	b.WriteString(" -> ")
	if r.Upstream != "" {
		b.WriteString(r.Upstream)
	}
	for i, s := range r.Split {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(s.Upstream + "*" + itoa(s.Weight))
	}
	if len(r.Plugins) > 0 {
		b.WriteString(" [" + strings.Join(r.Plugins, " ") + "]")
	}
	if r.Timeout > 0 {
		b.WriteString(" T:" + r.Timeout.D().String())
	}
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	slices.Sort(k)
	return k
}

func itoa(i int) string { return big.NewInt(int64(i)).String() }

func summaries(frag routes.Fragment) []string {
	var out []string
	for _, r := range frag.Routes {
		out = append(out, routeSummary(r))
	}
	return out
}

func TestTranslateRoutes(t *testing.T) {
	tests := []struct {
		name   string
		routes []*gatewayv1.HTTPRoute
		edit   func(*Snapshot)
		want   []string
		// upstreamTimeouts are the timeouts of upstreams of the merged
		// model, by name.
		upstreamTimeouts map[string]time.Duration
	}{
		{
			name:   "no matches is a prefix on /",
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))})},
			want:   []string{"* ^/ -> k8s.apps.web.80"},
		},
		{
			name:   "a prefix matches whole segments",
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{prefix("/api/")}, backend("web", 80))})},
			want:   []string{"* =/api -> k8s.apps.web.80", "* ^/api/ -> k8s.apps.web.80"},
		},
		{
			name:   "exact path, method, headers and query",
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{withConds(exact("/login"), "POST", [][2]string{{"X-Env", "canary"}, {"x-env", "ignored: a later entry of the same name"}}, [][2]string{{"v", "2"}})}, backend("web", 80))})},
			want:   []string{"* =/login POST H:X-Env=canary Q:v=2 -> k8s.apps.web.80"},
		},
		{
			name: "hostnames: each served name becomes a route",
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))},
				hostnames("a.example.com", "*.b.example.com"))},
			want: []string{"*.b.example.com ^/ -> k8s.apps.web.80", "a.example.com ^/ -> k8s.apps.web.80"},
		},
		{
			name: "listener hostname narrows the route's",
			edit: func(s *Snapshot) {
				s.Gateways[0].Spec.Listeners[0].Hostname = ptr(gatewayv1.Hostname("*.example.com"))
			},
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))},
				hostnames("a.example.com", "a.example.net", "*.example.com", "*.x.example.com"))},
			want: []string{"*.example.com ^/ -> k8s.apps.web.80", "*.x.example.com ^/ -> k8s.apps.web.80", "a.example.com ^/ -> k8s.apps.web.80"},
		},
		{
			name: "weighted backends become a split; weight 0 is left out",
			edit: func(s *Snapshot) {
				s.Services = append(s.Services, svc("apps", "canary"), svc("apps", "off"))
				s.EndpointSlices = append(s.EndpointSlices, slice("apps", "canary", "c-1", "http", 8080, ready("10.244.1.1")))
			},
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80, 90), backend("canary", 80, 10), backend("off", 80, 0))})},
			want:   []string{"* ^/ -> k8s.apps.web.80*90,k8s.apps.canary.80*10"},
		},
		{
			name:   "a missing backend answers 500",
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("nope", 80))})},
			want:   []string{"* ^/ -> k8s.unresolved [k8s.apps.r.0.unresolved]"},
		},
		{
			name: "routes are ordered oldest first, then by name",
			routes: []*gatewayv1.HTTPRoute{
				route("apps", "b", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/b")}, backend("web", 80))}, age(5)),
				route("apps", "a", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/a")}, backend("web", 80))}, age(5)),
				route("apps", "old", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/old")}, backend("web", 80))}, age(1)),
			},
			want: []string{"* =/old -> k8s.apps.web.80", "* =/a -> k8s.apps.web.80", "* =/b -> k8s.apps.web.80"},
		},
		{
			name:   "a route of another namespace is not admitted by default",
			routes: []*gatewayv1.HTTPRoute{route("other", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))}, parents(parent("apps", "gw")))},
			want:   nil,
		},
		{
			name: "namespaces From All admits it",
			edit: func(s *Snapshot) {
				s.Gateways[0].Spec.Listeners[0].AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: ptr(gatewayv1.NamespacesFromAll)}}
				s.Services = append(s.Services, svc("other", "web"))
			},
			routes: []*gatewayv1.HTTPRoute{route("other", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))}, parents(parent("apps", "gw")))},
			want:   []string{"* ^/ -> k8s.other.web.80"},
		},
		{
			name: "namespaces From Selector reads the namespace's labels",
			edit: func(s *Snapshot) {
				s.Gateways[0].Spec.Listeners[0].AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{
					From: ptr(gatewayv1.NamespacesFromSelector), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "shop"}}}}
				s.Namespaces = []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "shop"}}}, {ObjectMeta: metav1.ObjectMeta{Name: "blog"}}}
				s.Services = append(s.Services, svc("shop", "web"), svc("blog", "web"))
			},
			routes: []*gatewayv1.HTTPRoute{
				route("shop", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))}, parents(parent("apps", "gw")), hostnames("shop.example")),
				route("blog", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))}, parents(parent("apps", "gw")), hostnames("blog.example")),
			},
			want: []string{"shop.example ^/ -> k8s.shop.web.80"},
		},
		{
			name: "a cross-namespace backend needs a ReferenceGrant",
			edit: func(s *Snapshot) {
				s.Services = append(s.Services, svc("data", "db"), svc("data", "api"))
				s.ReferenceGrants = []*gatewayv1beta1.ReferenceGrant{{ObjectMeta: objMeta("data", "g", 0), Spec: gatewayv1beta1.ReferenceGrantSpec{
					From: []gatewayv1beta1.ReferenceGrantFrom{{Group: groupName, Kind: kindHTTPRoute, Namespace: "apps"}},
					To:   []gatewayv1beta1.ReferenceGrantTo{{Group: "", Kind: kindService, Name: ptr(gatewayv1.ObjectName("api"))}},
				}}}
			},
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{
				rule([]gatewayv1.HTTPRouteMatch{exact("/api")}, withNamespace(backend("api", 80), "data")),
				rule([]gatewayv1.HTTPRouteMatch{exact("/db")}, withNamespace(backend("db", 80), "data")),
			})},
			want: []string{"* =/api -> k8s.data.api.80", "* =/db -> k8s.unresolved [k8s.apps.r.1.unresolved]"},
		},
		{
			name: "filters become plugins in order",
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{{
				Filters: []gatewayv1.HTTPRouteFilter{
					{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "X-From", Value: "edge"}}}},
					{Type: gatewayv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: &gatewayv1.HTTPHeaderFilter{Remove: []string{"Server"}}},
				},
				BackendRefs: []gatewayv1.HTTPBackendRef{backend("web", 80)},
			}})},
			want: []string{"* ^/ -> k8s.apps.web.80 [k8s.apps.r.0.f0 k8s.apps.r.0.f1]"},
		},
		{
			name: "a mirror gives the rule its own copy of the upstream",
			edit: func(s *Snapshot) { s.Services = append(s.Services, svc("apps", "shadow")) },
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{
				{
					Matches:     []gatewayv1.HTTPRouteMatch{exact("/m")},
					Filters:     []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestMirror, RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{BackendRef: backend("shadow", 80).BackendObjectReference, Fraction: &gatewayv1.Fraction{Numerator: 1, Denominator: ptr(int32(4))}}}},
					BackendRefs: []gatewayv1.HTTPBackendRef{backend("web", 80)},
				},
				rule([]gatewayv1.HTTPRouteMatch{exact("/plain")}, backend("web", 80)),
			})},
			want: []string{"* =/m -> k8s.apps.r.0.mirror.0", "* =/plain -> k8s.apps.web.80"},
		},
		{
			name:   "a regular expression matches the whole path (RE2)",
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptr(gatewayv1.PathMatchRegularExpression), Value: ptr("/v[0-9]+/items")}}}, backend("web", 80))})},
			want:   []string{"* ~/v[0-9]+/items -> k8s.apps.web.80"},
		},
		{
			name: "regular expressions on headers and query parameters; the first entry of a name counts",
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{{
				Path: exact("/q").Path,
				Headers: []gatewayv1.HTTPHeaderMatch{
					{Type: ptr(gatewayv1.HeaderMatchRegularExpression), Name: "X-Version", Value: "v[0-9]+"},
					{Name: "x-version", Value: "ignored"},
					{Name: "X-Env", Value: "canary"},
				},
				QueryParams: []gatewayv1.HTTPQueryParamMatch{
					{Type: ptr(gatewayv1.QueryParamMatchRegularExpression), Name: "page", Value: "[0-9]{1,3}"},
					{Name: "page", Value: "ignored"},
				},
			}}, backend("web", 80))})},
			want: []string{"* =/q H:X-Env=canary HR:X-Version=v[0-9]+ QR:page=[0-9]{1,3} -> k8s.apps.web.80"},
		},
		{
			name: "a header or query expression RE2 refuses leaves the rule out",
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{
				rule([]gatewayv1.HTTPRouteMatch{{Path: exact("/h").Path, Headers: []gatewayv1.HTTPHeaderMatch{{Type: ptr(gatewayv1.HeaderMatchRegularExpression), Name: "X-V", Value: "(?=x)"}}}}, backend("web", 80)),
				rule([]gatewayv1.HTTPRouteMatch{{Path: exact("/q").Path, QueryParams: []gatewayv1.HTTPQueryParamMatch{{Type: ptr(gatewayv1.QueryParamMatchRegularExpression), Name: "p", Value: "a{2,9999}"}}}}, backend("web", 80)),
				rule([]gatewayv1.HTTPRouteMatch{exact("/ok")}, backend("web", 80)),
			})},
			want: []string{"* =/ok -> k8s.apps.web.80"},
		},
		{
			name: "timeouts.request bounds the rule's routes",
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{
				withTimeouts(rule([]gatewayv1.HTTPRouteMatch{prefix("/api/")}, backend("web", 80)), "10s", ""),
				rule([]gatewayv1.HTTPRouteMatch{exact("/plain")}, backend("web", 80)),
			})},
			want:             []string{"* =/api -> k8s.apps.web.80 T:10s", "* ^/api/ -> k8s.apps.web.80 T:10s", "* =/plain -> k8s.apps.web.80"},
			upstreamTimeouts: map[string]time.Duration{"k8s.apps.web.80": routes.DefaultUpstreamTimeout},
		},
		{
			name: "timeouts.backendRequest gives the rule its own upstreams",
			edit: func(s *Snapshot) {
				s.Services = append(s.Services, svc("apps", "v2"))
				s.EndpointSlices = append(s.EndpointSlices, slice("apps", "v2", "v2-a", "http", 8080, ready("10.244.2.1")))
			},
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{
				withTimeouts(rule(nil, backend("web", 80, 3), backend("v2", 80, 1)), "10s", "2500ms"),
				rule([]gatewayv1.HTTPRouteMatch{exact("/plain")}, backend("web", 80)),
			})},
			want: []string{"* ^/ -> k8s.apps.r.0.timeout.0*3,k8s.apps.r.0.timeout.1*1 T:10s", "* =/plain -> k8s.apps.web.80"},
			upstreamTimeouts: map[string]time.Duration{
				"k8s.apps.r.0.timeout.0": 2500 * time.Millisecond, "k8s.apps.r.0.timeout.1": 2500 * time.Millisecond,
				"k8s.apps.web.80": routes.DefaultUpstreamTimeout,
			},
		},
		{
			name: "timeouts.backendRequest on a mirrored rule bounds the mirrored copy",
			edit: func(s *Snapshot) { s.Services = append(s.Services, svc("apps", "shadow")) },
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{
				withTimeouts(gatewayv1.HTTPRouteRule{
					Filters:     []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestMirror, RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{BackendRef: backend("shadow", 80).BackendObjectReference, Fraction: &gatewayv1.Fraction{Numerator: 1, Denominator: ptr(int32(4))}}}},
					BackendRefs: []gatewayv1.HTTPBackendRef{backend("web", 80)},
				}, "", "1s"),
			})},
			want:             []string{"* ^/ -> k8s.apps.r.0.mirror.0"},
			upstreamTimeouts: map[string]time.Duration{"k8s.apps.r.0.mirror.0": time.Second, "k8s.apps.web.80": routes.DefaultUpstreamTimeout},
		},
		{
			name:             "zero disables: no route bound, the longest backend bound",
			routes:           []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{withTimeouts(rule(nil, backend("web", 80)), "0s", "0s")})},
			want:             []string{"* ^/ -> k8s.apps.r.0.timeout.0"},
			upstreamTimeouts: map[string]time.Duration{"k8s.apps.r.0.timeout.0": noBackendTimeout},
		},
		{
			name: "a backend bound longer than the route's, or a bad duration, leaves the rule out",
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{
				withTimeouts(rule([]gatewayv1.HTTPRouteMatch{exact("/long")}, backend("web", 80)), "1s", "2s"),
				withTimeouts(rule([]gatewayv1.HTTPRouteMatch{exact("/bad")}, backend("web", 80)), "soon", ""),
				rule([]gatewayv1.HTTPRouteMatch{exact("/ok")}, backend("web", 80)),
			})},
			want: []string{"* =/ok -> k8s.apps.web.80"},
		},
		{
			name: "a redirect without backends answers the redirect",
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{{
				Filters: []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gatewayv1.HTTPRequestRedirectFilter{
					Scheme: ptr("https"), Hostname: ptr(gatewayv1.PreciseHostname("www.example.com")), StatusCode: ptr(301)}}},
			}})},
			want: []string{"* ^/ -> k8s.unresolved [k8s.apps.r.0.f0]"},
		},
		{
			name: "an invalid rule is left out, the others serve",
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{
				rule([]gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptr(gatewayv1.PathMatchRegularExpression), Value: ptr("/v(")}}}, backend("web", 80)),
				rule([]gatewayv1.HTTPRouteMatch{withConds(exact("/h"), "", [][2]string{{"X_Under", "1"}}, nil)}, backend("web", 80)),
				rule([]gatewayv1.HTTPRouteMatch{exact("/ok")}, backend("web", 80)),
			})},
			want: []string{"* =/ok -> k8s.apps.web.80"},
		},
		{
			name: "another controller's class is not ours",
			edit: func(s *Snapshot) {
				s.GatewayClasses[0].Spec.ControllerName = "example.com/other"
			},
			routes: []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))})},
			want:   nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := world()
			if tt.edit != nil {
				tt.edit(s)
			}
			s.HTTPRoutes = tt.routes
			res := Translate(routes.KubernetesProvider{}, s)
			if got := summaries(res.Fragment); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("routes\n got %q\nwant %q", got, tt.want)
			}
			// Every result is one the routes model accepts.
			m := mergeable(t, res.Fragment)
			if u, ok := m.Upstreams["k8s.apps.r.0.mirror.0"]; ok {
				if u.Mirror == nil || u.Mirror.Upstream != "k8s.apps.shadow.80" || u.Mirror.Percent != 25 || len(u.Endpoints) != 2 {
					t.Fatalf("mirrored upstream %+v", u)
				}
				if m.Upstreams["k8s.apps.web.80"].Mirror != nil {
					t.Fatal("the shared upstream is mirrored too")
				}
			}
			for name, want := range tt.upstreamTimeouts {
				if got := m.Upstreams[name].Timeout.D(); got != want {
					t.Errorf("upstream %s: timeout %s, want %s", name, got, want)
				}
			}
		})
	}
}

func withConds(m gatewayv1.HTTPRouteMatch, method string, hdrs, query [][2]string) gatewayv1.HTTPRouteMatch {
	if method != "" {
		m.Method = ptr(gatewayv1.HTTPMethod(method))
	}
	for _, h := range hdrs {
		m.Headers = append(m.Headers, gatewayv1.HTTPHeaderMatch{Name: gatewayv1.HTTPHeaderName(h[0]), Value: h[1]})
	}
	for _, q := range query {
		m.QueryParams = append(m.QueryParams, gatewayv1.HTTPQueryParamMatch{Name: gatewayv1.HTTPHeaderName(q[0]), Value: q[1]})
	}
	return m
}

func withTimeouts(r gatewayv1.HTTPRouteRule, request, backend string) gatewayv1.HTTPRouteRule {
	r.Timeouts = &gatewayv1.HTTPRouteTimeouts{}
	if request != "" {
		r.Timeouts.Request = ptr(gatewayv1.Duration(request))
	}
	if backend != "" {
		r.Timeouts.BackendRequest = ptr(gatewayv1.Duration(backend))
	}
	return r
}

func withNamespace(b gatewayv1.HTTPBackendRef, ns string) gatewayv1.HTTPBackendRef {
	b.Namespace = ptr(gatewayv1.Namespace(ns))
	return b
}

const baseFile = `version: 1
listen: {http: ":0", admin: ""}
providers:
  kubernetes: {}
`

// mergeable checks that frag passes the routes model's validation.
func mergeable(t *testing.T, frag routes.Fragment) *routes.File {
	t.Helper()
	f, err := routes.Parse("routes.yaml", []byte(baseFile))
	if err != nil {
		t.Fatal(err)
	}
	m, err := f.Merge(frag)
	if err != nil {
		t.Fatalf("the fragment is refused by the routes model: %v", err)
	}
	return m
}

func TestTranslateEndpoints(t *testing.T) {
	s := world()
	s.Services = append(s.Services,
		svc("apps", "grpc", corev1.ServicePort{Name: "grpc", Port: 9000, AppProtocol: ptr("kubernetes.io/h2c")}),
		svc("apps", "rolling"),
		&corev1.Service{ObjectMeta: objMeta("apps", "ext", 0), Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "api.example.net", Ports: []corev1.ServicePort{{Port: 443}}}},
		svc("apps", "multi", corev1.ServicePort{Name: "http", Port: 80}, corev1.ServicePort{Name: "admin", Port: 81}),
	)
	notReady := endpoint{ip: "10.244.2.9", ready: false, serving: false}
	terminating := endpoint{ip: "10.244.2.8", ready: false, serving: true, terminating: true}
	s.EndpointSlices = append(s.EndpointSlices,
		slice("apps", "web", "web-2", "http", 8080, ready("10.244.0.3"), notReady, ready("10.244.0.1")), // a second slice; one address twice
		slice("apps", "grpc", "grpc-1", "grpc", 9090, ready("10.244.3.1")),
		slice("apps", "rolling", "rolling-1", "http", 8080, terminating, notReady),
		slice("apps", "multi", "multi-1", "admin", 9001, ready("10.244.4.1")),
		slice("apps", "multi", "multi-2", "http", 9000, ready("10.244.4.1")),
	)
	s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{
		rule([]gatewayv1.HTTPRouteMatch{exact("/web")}, backend("web", 80)),
		rule([]gatewayv1.HTTPRouteMatch{exact("/grpc")}, backend("grpc", 9000)),
		rule([]gatewayv1.HTTPRouteMatch{exact("/rolling")}, backend("rolling", 80)),
		rule([]gatewayv1.HTTPRouteMatch{exact("/ext")}, backend("ext", 443)),
		rule([]gatewayv1.HTTPRouteMatch{exact("/multi")}, backend("multi", 81)),
	})}
	res := Translate(routes.KubernetesProvider{ExternalNameServices: true}, s)
	want := map[string]routes.Upstream{
		"k8s.apps.web.80":     {Endpoints: []string{"10.244.0.1:8080", "10.244.0.2:8080", "10.244.0.3:8080"}},
		"k8s.apps.grpc.9000":  {Endpoints: []string{"10.244.3.1:9090"}, Protocol: "h2c"},
		"k8s.apps.rolling.80": {Endpoints: []string{"10.244.2.8:8080"}},
		"k8s.apps.ext.443":    {DNS: "api.example.net:443"},
		"k8s.apps.multi.81":   {Endpoints: []string{"10.244.4.1:9001"}},
	}
	if !reflect.DeepEqual(res.Fragment.Upstreams, want) {
		t.Fatalf("upstreams\n got %+v\nwant %+v", res.Fragment.Upstreams, want)
	}
	mergeable(t, res.Fragment)
}

func TestTranslateStatus(t *testing.T) {
	s := world()
	s.Gateways[0].Spec.Listeners = append(s.Gateways[0].Spec.Listeners,
		httpListener("dup-a", 8080, "x.example"), httpListener("dup-b", 8080, "x.example"),
		gatewayv1.Listener{Name: "tcp", Port: 9000, Protocol: gatewayv1.TCPProtocolType},
		gatewayv1.Listener{Name: "kinds", Port: 81, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: &gatewayv1.AllowedRoutes{Kinds: []gatewayv1.RouteGroupKind{{Kind: "HTTPRoute"}, {Kind: "TCPRoute"}}}},
		httpListener("named", 82, "named.example"),
	)
	s.Services = append(s.Services, svc("data", "db"))
	s.HTTPRoutes = []*gatewayv1.HTTPRoute{
		route("apps", "ok", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))}, hostnames("ok.example")),
		route("apps", "missing", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/m")}, backend("nope", 80))}),
		route("apps", "kind", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/k")}, gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Kind: ptr(gatewayv1.Kind("Bucket")), Name: "b"}}})}),
		route("apps", "grant", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/g")}, withNamespace(backend("db", 80), "data"))}),
		route("apps", "section", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))}, parents(gatewayv1.ParentReference{Name: "gw", SectionName: ptr(gatewayv1.SectionName("nope"))})),
		route("apps", "host", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))}, parents(gatewayv1.ParentReference{Name: "gw", SectionName: ptr(gatewayv1.SectionName("named"))}), hostnames("other.example")),
		route("apps", "partial", []gatewayv1.HTTPRouteRule{
			rule([]gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptr(gatewayv1.PathMatchRegularExpression), Value: ptr("/r(")}}}, backend("web", 80)),
			rule([]gatewayv1.HTTPRouteMatch{exact("/p")}, backend("web", 80)),
		}),
		route("apps", "foreign", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))}, parents(parent("apps", "not-ours"))),
	}
	res := Translate(routes.KubernetesProvider{}, s)

	if c := condOf(res.GatewayClasses["causeway"].Conditions, "Accepted"); c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != 1 {
		t.Fatalf("class Accepted = %+v", c)
	}
	fs := res.GatewayClasses["causeway"].SupportedFeatures
	if len(fs) == 0 || !slices.IsSortedFunc(fs, func(a, b gatewayv1.SupportedFeature) int { return strings.Compare(string(a.Name), string(b.Name)) }) ||
		!slices.Contains(fs, gatewayv1.SupportedFeature{Name: "HTTPRoute"}) {
		t.Errorf("class supportedFeatures = %v: want the features, sorted by name", fs)
	}
	gs := res.Gateways[types.NamespacedName{Namespace: "apps", Name: "gw"}]
	if c := condOf(gs.Conditions, "Accepted"); c == nil || c.Status != metav1.ConditionTrue || c.Reason != "ListenersNotValid" {
		t.Fatalf("gateway Accepted = %+v", c)
	}
	listener := map[string]gatewayv1.ListenerStatus{}
	for _, l := range gs.Listeners {
		listener[string(l.Name)] = l
	}
	for _, tc := range []struct {
		listener, typ, status, reason string
	}{
		{"http", "Programmed", "True", "Programmed"},
		{"dup-a", "Conflicted", "True", "HostnameConflict"},
		{"dup-b", "Accepted", "False", "HostnameConflict"},
		{"tcp", "Accepted", "False", "UnsupportedProtocol"},
		{"kinds", "ResolvedRefs", "False", "InvalidRouteKinds"},
		{"kinds", "Programmed", "True", "Programmed"},
	} {
		c := condOf(listener[tc.listener].Conditions, tc.typ)
		if c == nil || string(c.Status) != tc.status || c.Reason != tc.reason || c.ObservedGeneration != 3 {
			t.Errorf("listener %s %s = %+v, want %s %s", tc.listener, tc.typ, c, tc.status, tc.reason)
		}
	}
	if k := listener["kinds"].SupportedKinds; len(k) != 1 || k[0].Kind != "HTTPRoute" {
		t.Errorf("kinds listener supportedKinds = %+v", k)
	}
	if k := listener["tcp"].SupportedKinds; k == nil || len(k) != 0 {
		t.Errorf("tcp listener supportedKinds = %#v, want empty (not absent): no route kind of ours attaches to TCP", k)
	}
	// The routes without a sectionName attach to every listener that
	// admits them and shares a hostname, valid or not (the spec counts
	// both): on "http", ok, missing, kind, grant and partial.
	if got := listener["http"].AttachedRoutes; got != 5 {
		t.Errorf("http attachedRoutes = %d, want 5", got)
	}

	for _, tc := range []struct {
		route, typ, status, reason string
	}{
		{"ok", "Accepted", "True", "Accepted"},
		{"ok", "ResolvedRefs", "True", "ResolvedRefs"},
		{"missing", "Accepted", "True", "Accepted"},
		{"missing", "ResolvedRefs", "False", "BackendNotFound"},
		{"kind", "ResolvedRefs", "False", "InvalidKind"},
		{"grant", "ResolvedRefs", "False", "RefNotPermitted"},
		{"section", "Accepted", "False", "NoMatchingParent"},
		{"host", "Accepted", "False", "NoMatchingListenerHostname"},
		{"partial", "Accepted", "True", "Accepted"},
		{"partial", "PartiallyInvalid", "True", "UnsupportedValue"},
	} {
		st, ok := res.HTTPRoutes[types.NamespacedName{Namespace: "apps", Name: tc.route}]
		if !ok || len(st.Parents) != 1 {
			t.Errorf("route %s: status %+v", tc.route, st)
			continue
		}
		p := st.Parents[0]
		if p.ControllerName != routes.KubernetesControllerName {
			t.Errorf("route %s: controllerName %q", tc.route, p.ControllerName)
		}
		c := condOf(p.Conditions, tc.typ)
		if c == nil || string(c.Status) != tc.status || c.Reason != tc.reason || c.ObservedGeneration != 3 {
			t.Errorf("route %s %s = %+v, want %s %s", tc.route, tc.typ, c, tc.status, tc.reason)
		}
	}
	if _, ok := res.HTTPRoutes[types.NamespacedName{Namespace: "apps", Name: "foreign"}]; ok {
		t.Errorf("a route attached to no Gateway of ours got a status")
	}
}

func TestTranslateStatusAddress(t *testing.T) {
	lb := func(ingress ...corev1.LoadBalancerIngress) *corev1.Service {
		s := svc("edge", "causeway")
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Status.LoadBalancer.Ingress = ingress
		return s
	}
	clusterIP := svc("edge", "causeway")
	clusterIP.Spec.ClusterIPs = []string{"10.96.0.10", "fd00::10"}
	headless := svc("edge", "causeway")
	headless.Spec.ClusterIPs = []string{corev1.ClusterIPNone}
	external := svc("edge", "causeway")
	external.Spec.Type = corev1.ServiceTypeExternalName
	external.Spec.ExternalName = "lb.example.net"
	for _, tc := range []struct {
		name       string
		addr       *routes.StatusAddress
		service    *corev1.Service
		spec       bool   // the Gateway asks for spec.addresses
		want       string // "type=value" joined by ","
		programmed string // the Programmed reason
	}{
		{"unset", nil, nil, false, "", "Programmed"},
		{"ip", &routes.StatusAddress{IP: "203.0.113.7"}, nil, false, "IPAddress=203.0.113.7", "Programmed"},
		{"hostname", &routes.StatusAddress{Hostname: "edge.example.com"}, nil, false, "Hostname=edge.example.com", "Programmed"},
		{"load balancer", &routes.StatusAddress{Service: "edge/causeway"}, lb(corev1.LoadBalancerIngress{IP: "198.51.100.1"}, corev1.LoadBalancerIngress{Hostname: "lb.example.net"}, corev1.LoadBalancerIngress{IP: "198.51.100.1"}), false,
			"IPAddress=198.51.100.1,Hostname=lb.example.net", "Programmed"},
		{"load balancer pending", &routes.StatusAddress{Service: "edge/causeway"}, lb(), false, "", "AddressNotAssigned"},
		{"cluster ips", &routes.StatusAddress{Service: "edge/causeway"}, clusterIP, false, "IPAddress=10.96.0.10,IPAddress=fd00::10", "Programmed"},
		{"headless", &routes.StatusAddress{Service: "edge/causeway"}, headless, false, "", "AddressNotAssigned"},
		{"external name", &routes.StatusAddress{Service: "edge/causeway"}, external, false, "Hostname=lb.example.net", "Programmed"},
		{"missing service", &routes.StatusAddress{Service: "edge/causeway"}, nil, false, "", "AddressNotAssigned"},
		{"spec addresses refused still", &routes.StatusAddress{IP: "203.0.113.7"}, nil, true, "IPAddress=203.0.113.7", "AddressNotAssigned"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := world()
			if tc.service != nil {
				s.Services = append(s.Services, tc.service)
			}
			if tc.spec {
				s.Gateways[0].Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Value: "192.0.2.1"}}
			}
			res := Translate(routes.KubernetesProvider{GatewayClass: "causeway", StatusAddress: tc.addr}, s)
			gs := res.Gateways[types.NamespacedName{Namespace: "apps", Name: "gw"}]
			var got []string
			for _, a := range gs.Addresses {
				got = append(got, string(*a.Type)+"="+a.Value)
			}
			if g := strings.Join(got, ","); g != tc.want {
				t.Errorf("addresses = %q, want %q", g, tc.want)
			}
			c := condOf(gs.Conditions, "Programmed")
			if c == nil || c.Reason != tc.programmed || (c.Status == metav1.ConditionTrue) != (tc.programmed == "Programmed") {
				t.Errorf("Programmed = %+v, want reason %s", c, tc.programmed)
			}
			if a := condOf(gs.Conditions, "Accepted"); a == nil || a.Status != metav1.ConditionTrue {
				t.Errorf("Accepted = %+v: a missing address must not unaccept the Gateway", a)
			}
		})
	}
}

func TestTranslateHTTPS(t *testing.T) {
	cert, key := selfSigned(t, "secure.example")
	noName, noNameKey := selfSigned(t, "") // a certificate that names no host
	expired, expiredKey := selfSignedUntil(t, "secure.example", time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC))
	// A Secret near the API server's 1 MiB limit: the pair after a
	// megabyte of PEM blocks that are not certificates.
	huge := append(bytes.Repeat([]byte("-----BEGIN JUNK-----\nAAAA\n-----END JUNK-----\n"), 1<<20/40), cert...)
	tlsListener := func(secretNS string) gatewayv1.Listener {
		ref := gatewayv1.SecretObjectReference{Name: "cert"}
		if secretNS != "" {
			ref.Namespace = ptr(gatewayv1.Namespace(secretNS))
		}
		return gatewayv1.Listener{Name: "https", Port: 443, Protocol: gatewayv1.HTTPSProtocolType, TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{ref}}}
	}
	tlsSecret := func(ns string, typ corev1.SecretType, crt, k []byte) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: objMeta(ns, "cert", 0), Type: typ, Data: map[string][]byte{"tls.crt": crt, "tls.key": k}}
	}
	tests := []struct {
		name     string
		listener gatewayv1.Listener
		secrets  []*corev1.Secret
		reason   string
	}{
		{"missing secret", tlsListener(""), nil, "InvalidCertificateRef"},
		{"not a TLS secret", tlsListener(""), []*corev1.Secret{tlsSecret("apps", corev1.SecretTypeOpaque, cert, key)}, "InvalidCertificateRef"},
		{"a key of another certificate", tlsListener(""), []*corev1.Secret{tlsSecret("apps", corev1.SecretTypeTLS, cert, mustKey(t))}, "InvalidCertificateRef"},
		{"a certificate that names no host", tlsListener(""), []*corev1.Secret{tlsSecret("apps", corev1.SecretTypeTLS, noName, noNameKey)}, "InvalidCertificateRef"},
		{"garbage", tlsListener(""), []*corev1.Secret{tlsSecret("apps", corev1.SecretTypeTLS, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), key)}, "InvalidCertificateRef"},
		{"a huge Secret", tlsListener(""), []*corev1.Secret{tlsSecret("apps", corev1.SecretTypeTLS, huge, append(bytes.Repeat([]byte{'A'}, 1<<20), key...))}, "InvalidCertificateRef"},
		{"a key that is not PEM", tlsListener(""), []*corev1.Secret{tlsSecret("apps", corev1.SecretTypeTLS, cert, []byte("not a key"))}, "InvalidCertificateRef"},
		// Served as it is, as documented: clients refuse it, and its
		// expiry is on the certificate metric.
		{"an expired certificate", tlsListener(""), []*corev1.Secret{tlsSecret("apps", corev1.SecretTypeTLS, expired, expiredKey)}, "ResolvedRefs"},
		{"another namespace without a grant", tlsListener("certs"), []*corev1.Secret{tlsSecret("certs", corev1.SecretTypeTLS, cert, key)}, "RefNotPermitted"},
		{"valid", tlsListener(""), []*corev1.Secret{tlsSecret("apps", corev1.SecretTypeTLS, cert, key)}, "ResolvedRefs"},
	}
	for _, https := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("https=%v/%s", https, tt.name), func(t *testing.T) {
				s := world()
				s.Gateways[0].Spec.Listeners = []gatewayv1.Listener{tt.listener}
				s.Secrets = tt.secrets
				s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))})}
				res := TranslateWith(routes.KubernetesProvider{}, s, TranslateOptions{HTTPS: https})
				ls := res.Gateways[types.NamespacedName{Namespace: "apps", Name: "gw"}].Listeners[0]
				c := condOf(ls.Conditions, "ResolvedRefs")
				if c == nil || (c.Reason != tt.reason && (tt.reason != "ResolvedRefs" || c.Status != metav1.ConditionTrue)) {
					t.Fatalf("ResolvedRefs = %+v, want %s", c, tt.reason)
				}
				// A condition message is at most 32768 bytes in the API.
				if len(c.Message) > 1024 {
					t.Fatalf("a %d-byte condition message", len(c.Message))
				}
				for _, k := range []string{"PRIVATE KEY", string(key), string(noNameKey), string(expiredKey)} {
					if strings.Contains(c.Message, k) {
						t.Fatalf("the condition shows key material: %q", c.Message)
					}
				}
				served := https && tt.reason == "ResolvedRefs"
				p := condOf(ls.Conditions, "Programmed")
				if p == nil || (p.Status == metav1.ConditionTrue) != served {
					t.Fatalf("Programmed = %+v, want served=%v", p, served)
				}
				if !served {
					// Nothing is served through a listener that is not
					// programmed, and no certificate is handed over.
					if len(res.Fragment.Routes) != 0 || len(res.Fragment.Certificates) != 0 {
						t.Fatalf("served through a listener that is not programmed: %q, %d certificates", summaries(res.Fragment), len(res.Fragment.Certificates))
					}
					if https == false && tt.reason == "ResolvedRefs" && (p.Reason != "Pending" || !strings.Contains(p.Message, "listen.https")) {
						t.Fatalf("Programmed = %+v: should say what the edge lacks", p)
					}
					return
				}
				if got := res.Fragment.Certificates; len(got) != 1 || got[0].Source != "Secret apps/cert" || !bytes.Equal(got[0].CertPEM, tt.secrets[0].Data["tls.crt"]) || !bytes.Equal(got[0].KeyPEM, tt.secrets[0].Data["tls.key"]) {
					t.Fatalf("certificates %+v", got)
				}
				if len(res.Fragment.Routes) == 0 {
					t.Fatal("no route served through a programmed HTTPS listener")
				}
				for _, r := range res.Fragment.Routes {
					if !r.Match.TLS {
						t.Fatalf("route %s of an HTTPS-only Gateway is served on plain HTTP too", r.Name)
					}
				}
				// The merged model carries the pair to the edge's tls
				// section, and only there.
				withTLS, err := routes.Parse("routes.yaml", []byte(baseFile+"tls: {}\n"))
				if err != nil {
					t.Fatal(err)
				}
				m, err := withTLS.Merge(res.Fragment)
				if err != nil {
					t.Fatal(err)
				}
				if len(m.TLS.FromProviders) != 1 || len(withTLS.TLS.FromProviders) != 0 {
					t.Fatalf("merged tls %+v; the file's own changed to %+v", m.TLS.FromProviders, withTLS.TLS.FromProviders)
				}
			})
		}
	}
}

// Listener isolation: a name only HTTPS listeners serve is matched only on
// TLS connections; a name an HTTP listener serves is matched on any.
func TestTranslateTLSOnlyRoutes(t *testing.T) {
	cert, key := selfSigned(t, "b.example")
	ref := []gatewayv1.SecretObjectReference{{Name: "cert"}}
	https := func(name, host string) gatewayv1.Listener {
		l := gatewayv1.Listener{Name: gatewayv1.SectionName(name), Port: 443, Protocol: gatewayv1.HTTPSProtocolType, TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: ref}}
		if host != "" {
			l.Hostname = ptr(gatewayv1.Hostname(host))
		}
		return l
	}
	both := []gatewayv1.Hostname{"a.example", "b.example"}
	tests := []struct {
		name      string
		listeners []gatewayv1.Listener
		hostnames []gatewayv1.Hostname // the route's
		want      map[string]bool      // served host -> TLS only
	}{
		{"HTTP a, HTTPS b", []gatewayv1.Listener{httpListener("a", 80, "a.example"), https("b", "b.example")}, both, map[string]bool{"a.example": false, "b.example": true}},
		{"HTTP and HTTPS for any host", []gatewayv1.Listener{httpListener("a", 80, ""), https("b", "")}, nil, map[string]bool{"": false}},
		{"HTTPS for any host, HTTP for a; route for a and b", []gatewayv1.Listener{httpListener("a", 80, "a.example"), https("b", "")}, both, map[string]bool{"a.example": false, "b.example": true}},
		{"HTTPS for any host, HTTP for a; route for any host", []gatewayv1.Listener{httpListener("a", 80, "a.example"), https("b", "")}, nil, map[string]bool{"": true, "a.example": false}},
		// b.example's TLS requests meet its isolation route before any-host
		// routes: the route is served for it by name too, on any
		// connection as its any-host copy is.
		{"HTTP for any host, HTTPS for b", []gatewayv1.Listener{httpListener("a", 80, ""), https("b", "b.example")}, nil, map[string]bool{"": false, "b.example": false}},
		{"HTTPS only", []gatewayv1.Listener{https("b", "")}, nil, map[string]bool{"": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := world()
			s.Gateways[0].Spec.Listeners = tt.listeners
			s.Secrets = []*corev1.Secret{{ObjectMeta: objMeta("apps", "cert", 0), Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": cert, "tls.key": key}}}
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/x")}, backend("web", 80))})}
			s.HTTPRoutes[0].Spec.Hostnames = tt.hostnames
			res := TranslateWith(routes.KubernetesProvider{}, s, TranslateOptions{HTTPS: true})
			got := map[string]bool{}
			for _, r := range res.Fragment.Routes {
				if !strings.HasPrefix(r.Name, routes.KubernetesPrefix+"Isolation.") {
					got[r.Match.Host] = r.Match.TLS
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("served %v, want %v (host -> TLS only)", got, tt.want)
			}
			mergeable(t, res.Fragment)
		})
	}
}

// Two listeners naming one Secret hand it over once.
func TestTranslateHTTPSSharedSecret(t *testing.T) {
	cert, key := selfSigned(t, "secure.example")
	s := world()
	ref := []gatewayv1.SecretObjectReference{{Name: "cert"}}
	s.Gateways[0].Spec.Listeners = []gatewayv1.Listener{
		{Name: "a", Port: 443, Hostname: ptr(gatewayv1.Hostname("a.example")), Protocol: gatewayv1.HTTPSProtocolType, TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: ref}},
		{Name: "b", Port: 443, Hostname: ptr(gatewayv1.Hostname("b.example")), Protocol: gatewayv1.HTTPSProtocolType, TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: ref}},
	}
	s.Secrets = []*corev1.Secret{{ObjectMeta: objMeta("apps", "cert", 0), Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": cert, "tls.key": key}}}
	res := TranslateWith(routes.KubernetesProvider{}, s, TranslateOptions{HTTPS: true})
	if got := res.Fragment.Certificates; len(got) != 1 || !slices.Equal(got[0].Hosts, []string{"a.example", "b.example"}) {
		t.Fatalf("certificates %+v, want the Secret once, for both listeners' hostnames", got)
	}
}

// A listener's certificates are handed over for its hostname only
// (InlineCertificate.Hosts): an older Gateway's Secret naming another
// Gateway's host is not served for it; a listener without a hostname's
// are served by their names.
func TestTranslateHTTPSCertificateHosts(t *testing.T) {
	cert, key := selfSigned(t, "b.example")
	ref := func(name string) []gatewayv1.SecretObjectReference {
		return []gatewayv1.SecretObjectReference{{Name: gatewayv1.ObjectName(name)}}
	}
	secret := func(name string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: objMeta("apps", name, 0), Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": cert, "tls.key": key}}
	}
	s := world()
	s.Gateways[0].Spec.Listeners = []gatewayv1.Listener{
		{Name: "a", Port: 443, Hostname: ptr(gatewayv1.Hostname("a.example")), Protocol: gatewayv1.HTTPSProtocolType, TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: ref("grab")}},
		{Name: "any", Port: 8443, Protocol: gatewayv1.HTTPSProtocolType, TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: ref("grab")}},
	}
	s.Secrets = []*corev1.Secret{secret("grab")}
	res := TranslateWith(routes.KubernetesProvider{}, s, TranslateOptions{HTTPS: true})
	got := res.Fragment.Certificates
	if len(got) != 2 || !slices.Equal(got[0].Hosts, []string{"a.example"}) || got[1].Hosts != nil {
		t.Fatalf("certificates %+v, want the Secret for a.example only, then for its own names", got)
	}
	mergeable(t, res.Fragment)
}

func mustKey(t *testing.T) []byte {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func selfSigned(t *testing.T, host string) (certPEM, keyPEM []byte) {
	return selfSignedUntil(t, host, epoch.Add(24*365*time.Hour))
}

func selfSignedUntil(t *testing.T, host string, notAfter time.Time) (certPEM, keyPEM []byte) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, NotBefore: notAfter.Add(-24 * 365 * time.Hour), NotAfter: notAfter}
	if host != "" {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

// TestTranslateDeterministic checks that the same objects in any order
// give the same Result: an unchanged cluster must never swap.
func TestTranslateDeterministic(t *testing.T) {
	s := world()
	s.Services = append(s.Services, svc("apps", "canary"))
	for i := 0; i < 20; i++ {
		s.HTTPRoutes = append(s.HTTPRoutes, route("apps", "r"+itoa(i), []gatewayv1.HTTPRouteRule{
			rule([]gatewayv1.HTTPRouteMatch{prefix("/p" + itoa(i))}, backend("web", 80, 3), backend("canary", 80, 1)),
		}, age(i%3)))
	}
	want := Translate(routes.KubernetesProvider{}, s)
	for i := 0; i < 50; i++ {
		shuffled := *s
		shuffled.HTTPRoutes = slices.Clone(s.HTTPRoutes)
		mrand.Shuffle(len(shuffled.HTTPRoutes), func(a, b int) {
			shuffled.HTTPRoutes[a], shuffled.HTTPRoutes[b] = shuffled.HTTPRoutes[b], shuffled.HTTPRoutes[a]
		})
		if got := Translate(routes.KubernetesProvider{}, &shuffled); !reflect.DeepEqual(summaries(got.Fragment), summaries(want.Fragment)) {
			t.Fatalf("order changed the result:\n%q\n%q", summaries(got.Fragment), summaries(want.Fragment))
		}
	}
}

func TestNameLength(t *testing.T) {
	long := strings.Repeat("n", 253)
	a, b := name("ns", long, "0"), name("ns", long, "1")
	if len(a) > 128 || a == b || !strings.HasPrefix(a, "k8s.ns.nnn") {
		t.Fatalf("names %q %q", a, b)
	}
}

// The certificate for clients without SNI comes from the Gateway the
// edge is told to serve first (providers.kubernetes.gateways), from its
// listener without a hostname: never from whichever Gateway is oldest,
// which a tenant allowed to create one can arrange.
func TestTranslateDefaultCertificate(t *testing.T) {
	cert, key := selfSigned(t, "any.example")
	https := func(name, host, secret string) gatewayv1.Listener {
		l := gatewayv1.Listener{Name: gatewayv1.SectionName(name), Port: 443, Protocol: gatewayv1.HTTPSProtocolType,
			TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: gatewayv1.ObjectName(secret)}}}}
		if host != "" {
			l.Hostname = ptr(gatewayv1.Hostname(host))
		}
		return l
	}
	snapshot := func() *Snapshot {
		s := world()
		// tenant/gw is the oldest; infra/edge the newest.
		tenant := gw("tenant", "gw", https("any", "", "tls"))
		tenant.CreationTimestamp = metav1.NewTime(epoch.Add(-time.Hour))
		edge := gw("infra", "edge", https("named", "edge.example", "named"), https("any", "", "any"))
		edge.CreationTimestamp = metav1.NewTime(epoch.Add(time.Hour))
		s.Gateways = []*gatewayv1.Gateway{tenant, edge}
		for _, k := range []types.NamespacedName{{Namespace: "tenant", Name: "tls"}, {Namespace: "infra", Name: "named"}, {Namespace: "infra", Name: "any"}} {
			s.Secrets = append(s.Secrets, &corev1.Secret{ObjectMeta: objMeta(k.Namespace, k.Name, 0), Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": cert, "tls.key": key}})
		}
		return s
	}
	tests := []struct {
		name     string
		gateways []string
		want     []string // the Sources of the pairs marked Default
	}{
		{"every Gateway of the class: none", nil, nil},
		{"the first named Gateway's listener without a hostname", []string{"infra/edge", "tenant/gw"}, []string{"Secret infra/any"}},
		{"the order of the list, not the Gateways' age", []string{"tenant/gw", "infra/edge"}, []string{"Secret tenant/tls"}},
		{"a named Gateway that is not first: none", []string{"other/gw", "infra/edge"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := TranslateWith(routes.KubernetesProvider{Gateways: tt.gateways}, snapshot(), TranslateOptions{HTTPS: true})
			var got []string
			for _, c := range res.Fragment.Certificates {
				if c.Default {
					got = append(got, c.Source)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Default pairs %q, want %q (all: %d)", got, tt.want, len(res.Fragment.Certificates))
			}
			mergeable(t, res.Fragment)
		})
	}
}

// A rule whose filter cannot be applied answers its requests 500; left
// out, they went to the route's other rule without the filter (the spec:
// such a filter must not be skipped, and the requests it would have
// processed get an error). A rule whose match cannot be served is still
// left out: it matches nothing.
func TestTranslateRefusedFilterFailsClosed(t *testing.T) {
	extension := gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterExtensionRef,
		ExtensionRef: &gatewayv1.LocalObjectReference{Group: "auth.example.com", Kind: "Check", Name: "staff"}}
	badHeader := gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier,
		RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "Host", Value: "x"}}}}
	tests := []struct {
		name   string
		filter gatewayv1.HTTPRouteFilter
	}{
		{"an ExtensionRef of a kind the edge does not have", extension},
		{"a header modifier the edge refuses", badHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			admin := rule([]gatewayv1.HTTPRouteMatch{prefix("/admin")}, backend("web", 80))
			admin.Filters = []gatewayv1.HTTPRouteFilter{tt.filter}
			s := world()
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80)), admin})}
			res := Translate(routes.KubernetesProvider{}, s)
			var adminRoutes int
			for _, r := range res.Fragment.Routes {
				if !strings.HasPrefix(r.Match.Path+r.Match.PathPrefix, "/admin") {
					continue
				}
				adminRoutes++
				var answer respond.Config
				if len(r.Plugins) != 1 || res.Fragment.Plugins[r.Plugins[0]].Use != "respond" ||
					res.Fragment.Plugins[r.Plugins[0]].Config.Node.Decode(&answer) != nil || answer.Status != 500 {
					t.Fatalf("route %s for /admin: plugins %v, want only a 500 answer", r.Name, r.Plugins)
				}
			}
			if adminRoutes == 0 {
				t.Fatalf("no route for /admin: its requests go to the rule for / without the filter (%q)", summaries(res.Fragment))
			}
			st := res.HTTPRoutes[types.NamespacedName{Namespace: "apps", Name: "r"}].Parents[0]
			pi := condOf(st.Conditions, string(gatewayv1.RouteConditionPartiallyInvalid))
			if pi == nil || pi.Reason != string(gatewayv1.RouteReasonUnsupportedValue) || !strings.Contains(pi.Message, "rule 1") || !strings.Contains(pi.Message, "answered 500") {
				t.Fatalf("PartiallyInvalid = %+v, want it to name rule 1 and say it answers 500", pi)
			}
			mergeable(t, res.Fragment)
		})
	}
}
