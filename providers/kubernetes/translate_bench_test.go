package kubernetes

import (
	"encoding/json"
	"slices"
	"strconv"
	"testing"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// scaleWorld is n HTTPRoutes over n/10 Services of 10 endpoints each
// (n = 10,000: 1,000 Services, 10,000 endpoints).
func scaleWorld(n int) *Snapshot { return scaleWorldEndpoints(n, 10) }

// BenchmarkTranslate10k is the mapping's share of one change at 10,000
// routes: the whole snapshot is translated again (go test -bench
// Translate10k ./providers/kubernetes).
func BenchmarkTranslate10k(b *testing.B) {
	s := scaleWorld(10000)
	b.ReportAllocs()
	for b.Loop() {
		Translate(routes.KubernetesProvider{}, s)
	}
}

// BenchmarkMerge10k is the routes model's validation of the same.
func BenchmarkMerge10k(b *testing.B) {
	res := Translate(routes.KubernetesProvider{}, scaleWorld(10000))
	f, err := routes.Parse("routes.yaml", []byte(baseFile))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Merge(res.Fragment); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEndpointsChanged10k is what telling an endpoint-only change
// from any other costs at 10,000 routes: the edge compares the new
// fragment with the live one before updating upstreams in place.
func BenchmarkEndpointsChanged10k(b *testing.B) {
	s := scaleWorld(10000)
	prev := Translate(routes.KubernetesProvider{}, s).Fragment
	// Service svc7's pods replaced by one new pod.
	s.EndpointSlices[7] = slice("apps", "svc7", "svc7-1", "http", 8080, ready("10.245.0.1"))
	next := Translate(routes.KubernetesProvider{}, s).Fragment
	b.ReportAllocs()
	for b.Loop() {
		if changed, ok := routes.EndpointsChanged(prev, next); !ok || len(changed) != 1 {
			b.Fatalf("endpoints only: %t, %d changed", ok, len(changed))
		}
	}
}

// BenchmarkTranslate10kRouteChange is one route change at 10,000 routes
// as the Source sees it: a fresh snapshot where one HTTPRoute gained a
// rule, translated by the same Translator that translated the last one
// (go test -run '^$' -bench Translate10k ./providers/kubernetes).
func BenchmarkTranslate10kRouteChange(b *testing.B) {
	benchRouteChange(b, scaleWorld(10000), TranslateOptions{})
}

// BenchmarkTranslate10kRouteChangePolicy is the same under a
// Gateway-wide CausewayPolicy, checked (as the model would check it) with
// every route it applies to.
func BenchmarkTranslate10kRouteChangePolicy(b *testing.B) {
	s := scaleWorld(10000)
	s.Policies = []*CausewayPolicy{policy("apps", "gw-limits", 1, target(kindGateway, "gw"), func(p *CausewayPolicy) {
		p.Spec.RateLimits = []PolicyRateLimit{{Config: json.RawMessage(`{"key": "client_ip", "limit": 100000, "per": "1s", "burst": 100000}`)}}
	})}
	base, err := routes.ParseWith("edge.yaml", []byte(policyBase), routes.Options{})
	if err != nil {
		b.Fatal(err)
	}
	checks := 0
	benchRouteChange(b, s, TranslateOptions{Check: func(frag routes.Fragment) error {
		checks++
		_, err := base.Merge(frag)
		return err
	}})
	if checks == 0 {
		b.Fatal("the policy was never checked")
	}
}

func benchRouteChange(b *testing.B, s *Snapshot, o TranslateOptions) {
	tr := NewTranslator(routes.KubernetesProvider{}, o)
	tr.Translate(s)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		next := *s
		next.HTTPRoutes = slices.Clone(s.HTTPRoutes)
		r := next.HTTPRoutes[i%len(next.HTTPRoutes)].DeepCopy()
		r.ResourceVersion = strconv.Itoa(i)
		r.Generation++
		r.Spec.Rules = append(r.Spec.Rules, rule([]gatewayv1.HTTPRouteMatch{prefix("/changed" + strconv.Itoa(i))}, backend("svc0", 80)))
		next.HTTPRoutes[i%len(next.HTTPRoutes)] = r
		res := tr.Translate(&next)
		if len(res.Fragment.Routes) <= 20000 {
			b.Fatalf("%d routes", len(res.Fragment.Routes))
		}
		s = &next
	}
}
