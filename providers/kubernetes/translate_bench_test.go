package kubernetes

import (
	"strconv"
	"testing"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// scaleWorld is n HTTPRoutes over n/10 Services of 10 endpoints each
// (n = 10,000: 1,000 Services, 10,000 endpoints).
func scaleWorld(n int) *Snapshot {
	s := world()
	s.Services, s.EndpointSlices = nil, nil
	for i := 0; i < n/10; i++ {
		name := "svc" + strconv.Itoa(i)
		s.Services = append(s.Services, svc("apps", name))
		var eps []endpoint
		for j := 0; j < 10; j++ {
			eps = append(eps, ready("10.244."+strconv.Itoa(i/25)+"."+strconv.Itoa((i%25)*10+j)))
		}
		s.EndpointSlices = append(s.EndpointSlices, slice("apps", name, name+"-1", "http", 8080, eps...))
	}
	for i := 0; i < n; i++ {
		s.HTTPRoutes = append(s.HTTPRoutes, route("apps", "r"+strconv.Itoa(i), []gatewayv1.HTTPRouteRule{
			rule([]gatewayv1.HTTPRouteMatch{prefix("/p" + strconv.Itoa(i))}, backend("svc"+strconv.Itoa(i%(n/10)), 80)),
		}, hostnames("h"+strconv.Itoa(i%100)+".example")))
	}
	return s
}

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
