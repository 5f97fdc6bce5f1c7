package kubernetes

import (
	"encoding/json"
	"testing"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// FuzzTranslate feeds HTTPRoute specs that a user could write (the API
// server's schema checks are not assumed: an older CRD, or none of its
// CEL rules) and checks the one property the edge depends on: whatever the
// routes, the fragment is one the routes model accepts. A fragment the
// model refuses would refuse every route of the cluster at once.
func FuzzTranslate(f *testing.F) {
	for _, seed := range []string{
		`{"parentRefs":[{"name":"gw"}],"rules":[{"backendRefs":[{"name":"web","port":80}]}]}`,
		`{"parentRefs":[{"name":"gw"}],"hostnames":["a.example","*.b.example"],"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/api/"},"headers":[{"name":"X-A","value":"1"}],"queryParams":[{"name":"q","value":"{x}"}],"method":"POST"}],"backendRefs":[{"name":"web","port":80,"weight":0}]}]}`,
		`{"parentRefs":[{"name":"gw"}],"rules":[{"matches":[{"path":{"type":"Exact","value":"/a{b}"}}],"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"set":[{"name":"Host","value":"x"}],"remove":["Content-Length"]}}]}]}`,
		`{"parentRefs":[{"name":"gw"}],"rules":[{"filters":[{"type":"RequestRedirect","requestRedirect":{"scheme":"https","port":8443,"statusCode":399,"path":{"type":"ReplacePrefixMatch","replacePrefixMatch":"/$1"}}}]}]}`,
		`{"parentRefs":[{"name":"gw"}],"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/x"}}],"filters":[{"type":"URLRewrite","urlRewrite":{"path":{"type":"ReplacePrefixMatch","replacePrefixMatch":"/.."}}}],"backendRefs":[{"name":"web","port":80}]}]}`,
		`{"parentRefs":[{"name":"gw"}],"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"web","port":80},"percent":-5}}],"backendRefs":[{"name":"web","port":80},{"name":"web","port":80}]}]}`,
		`{"parentRefs":[{"name":"gw","sectionName":"http"}],"hostnames":["*"],"rules":[{"matches":[{"path":{"value":""}},{"headers":[{"name":"a_b","value":"\r\n"}]}]}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var spec gatewayv1.HTTPRouteSpec
		if json.Unmarshal(data, &spec) != nil {
			return
		}
		s := world()
		r := route("apps", "r", nil)
		r.Spec = spec
		s.HTTPRoutes = []*gatewayv1.HTTPRoute{r, route("apps", "ok", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))}, hostnames("ok.example"))}
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
