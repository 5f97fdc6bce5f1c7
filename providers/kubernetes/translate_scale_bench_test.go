package kubernetes

import (
	"strconv"
	"testing"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// scaleWorldEndpoints is n HTTPRoutes over n/10 Services of perService
// endpoints each: n = 10,000 and perService = 100 is make scale-k8s's
// cluster (10,000 routes, 1,000 Services, 100,000 endpoints).
func scaleWorldEndpoints(n, perService int) *Snapshot {
	s := world()
	s.Services, s.EndpointSlices = nil, nil
	for i := 0; i < n/10; i++ {
		name := "svc" + strconv.Itoa(i)
		s.Services = append(s.Services, svc("apps", name))
		eps := make([]endpoint, 0, perService)
		for j := 0; j < perService; j++ {
			k := i*perService + j
			eps = append(eps, ready("10."+strconv.Itoa(k>>16)+"."+strconv.Itoa(k>>8&255)+"."+strconv.Itoa(k&255)))
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

// BenchmarkTranslate10k100kRouteChange is one route change at the scale
// make scale-k8s runs (10,000 HTTPRoutes, 100,000 endpoints), translated
// by the Translator that translated the snapshot before it
// (go test -run '^$' -bench 10k100k -benchmem ./providers/kubernetes).
func BenchmarkTranslate10k100kRouteChange(b *testing.B) {
	benchRouteChange(b, scaleWorldEndpoints(10000, 100), TranslateOptions{})
}
