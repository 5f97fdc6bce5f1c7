package kubernetes

import (
	"encoding/json"
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

func grpcRouteOf(ns, name string, rules ...gatewayv1.GRPCRouteRule) *gatewayv1.GRPCRoute {
	return &gatewayv1.GRPCRoute{ObjectMeta: objMeta(ns, name, 10), Spec: gatewayv1.GRPCRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{parent("", "gw")}},
		Rules:           rules,
	}}
}

func grpcBackend(name string, port int32) gatewayv1.GRPCBackendRef {
	return gatewayv1.GRPCBackendRef{BackendRef: backend(name, port).BackendRef}
}

func method(svc, meth string) gatewayv1.GRPCRouteMatch {
	m := &gatewayv1.GRPCMethodMatch{}
	if svc != "" {
		m.Service = ptr(svc)
	}
	if meth != "" {
		m.Method = ptr(meth)
	}
	return gatewayv1.GRPCRouteMatch{Method: m}
}

func TestTranslateGRPC(t *testing.T) {
	tests := []struct {
		name  string
		rules []gatewayv1.GRPCRouteRule
		want  []string
	}{
		{"no matches: every call", []gatewayv1.GRPCRouteRule{{BackendRefs: []gatewayv1.GRPCBackendRef{grpcBackend("web", 80)}}},
			[]string{"* ^/ POST -> k8s.apps.web.80.grpc"}},
		{"service and method", []gatewayv1.GRPCRouteRule{{Matches: []gatewayv1.GRPCRouteMatch{method("shop.v1.Cart", "Add")}, BackendRefs: []gatewayv1.GRPCBackendRef{grpcBackend("web", 80)}}},
			[]string{"* =/shop.v1.Cart/Add POST -> k8s.apps.web.80.grpc"}},
		{"a whole service", []gatewayv1.GRPCRouteRule{{Matches: []gatewayv1.GRPCRouteMatch{method("shop.v1.Cart", "")}, BackendRefs: []gatewayv1.GRPCBackendRef{grpcBackend("web", 80)}}},
			[]string{"* ^/shop.v1.Cart/ POST -> k8s.apps.web.80.grpc"}},
		{"a method of any service", []gatewayv1.GRPCRouteRule{{Matches: []gatewayv1.GRPCRouteMatch{method("", "Check")}, BackendRefs: []gatewayv1.GRPCBackendRef{grpcBackend("web", 80)}}},
			[]string{"* =/{service}/Check POST -> k8s.apps.web.80.grpc"}},
		{"a missing backend answers with a gRPC status", []gatewayv1.GRPCRouteRule{{BackendRefs: []gatewayv1.GRPCBackendRef{grpcBackend("nope", 80)}}},
			[]string{"* ^/ POST -> k8s.unresolved [k8s.apps.grpc.r.0.unresolved]"}},
		{"a mirror copies calls over h2c", []gatewayv1.GRPCRouteRule{{
			Filters:     []gatewayv1.GRPCRouteFilter{{Type: gatewayv1.GRPCRouteFilterRequestMirror, RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{BackendRef: backend("shadow", 80).BackendObjectReference}}},
			BackendRefs: []gatewayv1.GRPCBackendRef{grpcBackend("web", 80)},
		}}, []string{"* ^/ POST -> k8s.apps.grpc.r.0.mirror.0"}},
		{"two mirrors are left out", []gatewayv1.GRPCRouteRule{
			{Filters: []gatewayv1.GRPCRouteFilter{
				{Type: gatewayv1.GRPCRouteFilterRequestMirror, RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{BackendRef: backend("web", 80).BackendObjectReference}},
				{Type: gatewayv1.GRPCRouteFilterRequestMirror, RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{BackendRef: backend("web", 80).BackendObjectReference}},
			}, BackendRefs: []gatewayv1.GRPCBackendRef{grpcBackend("web", 80)}},
			{Matches: []gatewayv1.GRPCRouteMatch{method("ok.Svc", "Do")}, BackendRefs: []gatewayv1.GRPCBackendRef{grpcBackend("web", 80)}},
		}, []string{"* =/ok.Svc/Do POST -> k8s.apps.web.80.grpc"}},
		{"a regex method matches service and method whole; a missing part is any name", []gatewayv1.GRPCRouteRule{
			{Matches: []gatewayv1.GRPCRouteMatch{{Method: &gatewayv1.GRPCMethodMatch{Type: ptr(gatewayv1.GRPCMethodMatchRegularExpression), Service: ptr("a.*")}}}, BackendRefs: []gatewayv1.GRPCBackendRef{grpcBackend("web", 80)}},
			{Matches: []gatewayv1.GRPCRouteMatch{method("ok.Svc", "Do")}, BackendRefs: []gatewayv1.GRPCBackendRef{grpcBackend("web", 80)}},
		}, []string{"* ~/(?:a.*)/(?:[^/]+) POST -> k8s.apps.web.80.grpc", "* =/ok.Svc/Do POST -> k8s.apps.web.80.grpc"}},
		{"a regex that RE2 refuses leaves the rule out; regex headers", []gatewayv1.GRPCRouteRule{
			{Matches: []gatewayv1.GRPCRouteMatch{{Method: &gatewayv1.GRPCMethodMatch{Type: ptr(gatewayv1.GRPCMethodMatchRegularExpression), Method: ptr("(?!x)")}}}, BackendRefs: []gatewayv1.GRPCBackendRef{grpcBackend("web", 80)}},
			{Matches: []gatewayv1.GRPCRouteMatch{{Method: &gatewayv1.GRPCMethodMatch{Service: ptr("ok.Svc")}, Headers: []gatewayv1.GRPCHeaderMatch{{Type: ptr(gatewayv1.GRPCHeaderMatchRegularExpression), Name: "x-tenant", Value: "t[0-9]+"}}}}, BackendRefs: []gatewayv1.GRPCBackendRef{grpcBackend("web", 80)}},
		}, []string{"* ^/ok.Svc/ POST HR:x-tenant=t[0-9]+ -> k8s.apps.web.80.grpc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := world()
			s.Services = append(s.Services, svc("apps", "shadow"))
			// An HTTPRoute of the same name and Service, to show the two
			// never share names or the HTTP/1.1 upstream.
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/http")}, backend("web", 80))})}
			s.GRPCRoutes = []*gatewayv1.GRPCRoute{grpcRouteOf("apps", "r", tt.rules...)}
			res := Translate(routes.KubernetesProvider{}, s)
			got := summaries(res.Fragment)
			if len(got) == 0 || got[0] != "* =/http -> k8s.apps.web.80" || !reflect.DeepEqual(got[1:], tt.want) {
				t.Fatalf("routes\n got %q\nwant the HTTPRoute's, then %q", got, tt.want)
			}
			if u, ok := res.Fragment.Upstreams["k8s.apps.web.80.grpc"]; ok && u.Protocol != "h2c" {
				t.Fatalf("gRPC upstream protocol %q", u.Protocol)
			}
			if res.Fragment.Upstreams["k8s.apps.web.80"].Protocol != "" {
				t.Fatal("the HTTPRoute's upstream became h2c")
			}
			m := mergeable(t, res.Fragment)
			if u, ok := m.Upstreams["k8s.apps.grpc.r.0.mirror.0"]; ok && (u.Protocol != "h2c" || u.Mirror == nil || u.Mirror.Upstream != "k8s.apps.shadow.80.grpc" || m.Upstreams["k8s.apps.shadow.80.grpc"].Protocol != "h2c") {
				t.Fatalf("mirrored gRPC upstream %+v", u)
			}
			st := res.GRPCRoutes[types.NamespacedName{Namespace: "apps", Name: "r"}]
			if len(st.Parents) != 1 || condOf(st.Parents[0].Conditions, "Accepted").Status != metav1.ConditionTrue {
				t.Fatalf("status %+v", st)
			}
		})
	}
}

// FuzzTranslateGRPC: any GRPCRoute spec gives a fragment the routes model
// accepts, as FuzzTranslate checks for HTTPRoutes.
func FuzzTranslateGRPC(f *testing.F) {
	for _, seed := range []string{
		`{"parentRefs":[{"name":"gw"}],"rules":[{"backendRefs":[{"name":"web","port":80}]}]}`,
		`{"parentRefs":[{"name":"gw"}],"hostnames":["*.x"],"rules":[{"matches":[{"method":{"service":"a/b","method":"{c}"},"headers":[{"name":"x_y","value":"1"}]}],"backendRefs":[{"name":"nope","port":1}]}]}`,
		`{"parentRefs":[{"name":"gw"}],"rules":[{"matches":[{"method":{"method":"M"}},{"method":{}}],"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"web","port":80}}},{"type":"ResponseHeaderModifier","responseHeaderModifier":{"set":[{"name":"Content-Length","value":"1"}]}}],"backendRefs":[{"name":"web","port":80}]}]}`,
		`{"parentRefs":[{"name":"gw"}],"hostnames":["g.example"],"rules":[{"matches":[{"method":{"type":"Exact","service":"shop.v1.Cart","method":"Add"},"headers":[{"name":"x-a","value":"1"}]}],"backendRefs":[{"name":"web","port":80}]}]}`,
		`{"parentRefs":[{"name":"gw"}],"rules":[{"matches":[{"method":{"type":"RegularExpression","service":"a)|(b","method":"{x}"}}],"backendRefs":[{"name":"web","port":80}]}]}`,
		`{"parentRefs":[{"name":"gw"}],"rules":[{"matches":[{"method":{"type":"Exact","service":"{service}","method":"/"}}],"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"add":[{"name":"grpc-timeout","value":"1S"}]}}]}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var spec gatewayv1.GRPCRouteSpec
		if json.Unmarshal(data, &spec) != nil {
			return
		}
		s := world()
		r := grpcRouteOf("apps", "r")
		r.Spec = spec
		s.GRPCRoutes = []*gatewayv1.GRPCRoute{r}
		res := Translate(routes.KubernetesProvider{}, s)
		base, err := routes.Parse("routes.yaml", []byte(baseFile))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := base.Merge(res.Fragment); err != nil {
			t.Fatalf("the routes model refuses the fragment of %s: %v", data, err)
		}
	})
}
