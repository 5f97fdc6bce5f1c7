package kubernetes

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testutil"
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

// FuzzTranslateBackendTLSPolicy feeds BackendTLSPolicy specs on the
// Service a route calls: a tenant writes them in its own namespace, and
// the schema's patterns are looser than the model (a URI
// subjectAltName "spiffe://" once refused every route of the cluster).
// Whatever the policy says, the fragment is one the model accepts, and
// the backend is called over TLS or not at all, never in plaintext.
func FuzzTranslateBackendTLSPolicy(f *testing.F) {
	for _, seed := range []string{
		`{"targetRefs":[{"kind":"Service","name":"web"}],"validation":{"hostname":"web.example","wellKnownCACertificates":"System"}}`,
		`{"targetRefs":[{"kind":"Service","name":"web","sectionName":"http"}],"validation":{"hostname":"web.example","caCertificateRefs":[{"kind":"ConfigMap","name":"ca"}]}}`,
		`{"targetRefs":[{"kind":"Service","name":"web"}],"validation":{"hostname":"web.example","wellKnownCACertificates":"System","subjectAltNames":[{"type":"URI","uri":"spiffe://"}]}}`,
		`{"targetRefs":[{"kind":"Service","name":"web"}],"validation":{"hostname":"web.example","wellKnownCACertificates":"System","subjectAltNames":[{"type":"URI","uri":"https://%zz/"},{"type":"Hostname","hostname":"*.A.example"}]}}`,
		`{"targetRefs":[{"kind":"Service","name":"web"}],"validation":{"hostname":"WEB..example","wellKnownCACertificates":"Other","subjectAltNames":[{"type":"Hostname","hostname":""},{"type":"URI","uri":""}]},"options":{"a":"b"}}`,
	} {
		f.Add([]byte(seed))
	}
	ca := testutil.NewCA(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var spec gatewayv1.BackendTLSPolicySpec
		if json.Unmarshal(data, &spec) != nil {
			return
		}
		s := world()
		s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))})}
		p := btlsPolicy("apps", "p", 1, "web", "", "")
		p.Spec = spec
		s.BackendTLSPolicies = []*gatewayv1.BackendTLSPolicy{p}
		s.ConfigMaps = []*corev1.ConfigMap{caMap("apps", "ca", map[string]string{caCertKey: string(ca.PEM())})}
		res := Translate(routes.KubernetesProvider{}, s)
		base, err := routes.Parse("routes.yaml", []byte(baseFile))
		if err != nil {
			t.Fatal(err)
		}
		m, err := base.Merge(res.Fragment)
		if err != nil {
			t.Fatalf("the routes model refuses the fragment of %s: %v", data, err)
		}
		if st, ok := res.BackendTLSPolicies[nn("apps", "p")]; ok && len(st.Ancestors) > 0 && st.Ancestors[0].Conditions[0].Status != metav1.ConditionTrue {
			for n, u := range m.Upstreams {
				if n != unresolvedUpstream && u.TLS == nil && len(u.Endpoints) > 0 {
					t.Fatalf("a refused policy left upstream %s callable in plaintext: %s", n, data)
				}
			}
		}
	})
}

// FuzzTranslatePolicy feeds CausewayPolicy specs without the CRD's schema
// and CEL rules (an older CRD, or none) and checks what the edge depends
// on: the fragment is one the routes model accepts whatever the policy
// says (a bad policy is refused alone, never the whole model), and a
// route a policy claims is never served with nothing of the policy on
// it: it carries the policy's stages, or answers 500.
func FuzzTranslatePolicy(f *testing.F) {
	for _, seed := range []string{
		`{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r"}],"authenticators":[{"ref":"corp"}]}`,
		`{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"admin"}],"authenticators":[{"config":{"api_key":{"header":"X-Key"}},"secrets":{"apiKeys":{"name":"keys"}}}],"requireClaims":{"a":"b"}}`,
		`{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"Gateway","name":"gw"}],"rateLimits":[{"config":{"key":"client_ip","limit":5,"per":"1m"}},{"ref":"per-ip"}]}`,
		`{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r"}],"plugins":[{"use":"headers","config":{"request":{"set":{"Host":"x"}}}},{"ref":"cors"}]}`,
		`{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r"}],"authenticators":[{"config":{"jwt":{"hmac_secret_env":"X","algorithms":["HS256"]}}}]}`,
		`{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r"}],"authenticators":[{"config":{"api_key":{},"basic":{}}},{"ref":"k8s.x"}],"rateLimits":[{"config":[]}]}`,
		`{"targetRefs":[],"plugins":[{"use":"","config":null}]}`,
		`{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r"}],"authenticators":[{"config":{"oidc":{"issuer":"https://i.example","client_id":"c"}},"secrets":{"clientSecret":{"name":"keys","key":"alice"},"sessionKeys":{"name":"keys","key":"alice"}}}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var spec CausewayPolicySpec
		if json.Unmarshal(data, &spec) != nil {
			return
		}
		s := world()
		s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{
			namedRule("admin", []gatewayv1.HTTPRouteMatch{exact("/admin")}, backend("web", 80)),
			namedRule("shop", []gatewayv1.HTTPRouteMatch{exact("/shop")}, backend("web", 80)),
		})}
		s.Secrets = []*corev1.Secret{opaque("apps", "keys", map[string]string{"alice": aliceKey})}
		p := policy("apps", "p", 0, nil)
		p.Spec = spec
		s.Policies = []*CausewayPolicy{p}
		base, err := routes.ParseWith("edge.yaml", []byte(policyBase), routes.Options{})
		if err != nil {
			t.Fatal(err)
		}
		check := func(frag routes.Fragment) error { _, err := base.Merge(frag); return err }
		res := TranslateWith(routes.KubernetesProvider{}, s, TranslateOptions{Check: check})
		if _, err := base.Merge(res.Fragment); err != nil {
			t.Fatalf("the routes model refuses the fragment of %s: %v", data, err)
		}
		st, judged := res.Policies[nn("apps", "p")]
		accepted := judged && len(st.Ancestors) > 0 && st.Ancestors[0].Conditions[0].Status == metav1.ConditionTrue
		for _, r := range res.Fragment.Routes {
			bare := len(r.Auth) == 0 && len(r.RateLimit) == 0 && len(r.Plugins) == 0
			if accepted && bare && len(spec.TargetRefs) == 1 && spec.TargetRefs[0].Kind == kindHTTPRoute && spec.TargetRefs[0].SectionName == nil &&
				string(spec.TargetRefs[0].Group) == groupName && spec.TargetRefs[0].Name == "r" {
				t.Fatalf("an accepted policy on the route left %s without its stages: %s", r.Name, data)
			}
		}
	})
}
