package routes

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// EndpointsChanged compares two fragments of one source. When they differ
// in nothing but their upstreams' endpoints (pods that came, went or
// changed readiness: by far the most frequent change in a cluster), it
// returns the new endpoints of the upstreams that changed, and true: the
// model is otherwise the same, so its routes, validation and handlers need
// not be built again. Any other difference, or an upstream that does not
// list its endpoints (dns, endpoints_file), gives false.
func EndpointsChanged(prev, next Fragment) (map[string][]string, bool) {
	if len(prev.Upstreams) != len(next.Upstreams) || len(prev.Routes) != len(next.Routes) {
		return nil, false
	}
	changed := map[string][]string{}
	for name, n := range next.Upstreams {
		p, ok := prev.Upstreams[name]
		if !ok {
			return nil, false
		}
		if slices.Equal(p.Endpoints, n.Endpoints) {
			if !reflect.DeepEqual(p, n) {
				return nil, false
			}
			continue
		}
		if p.DNS != "" || p.DNSSRV != "" || p.EndpointsFile != "" {
			return nil, false
		}
		eps := n.Endpoints
		p.Endpoints, n.Endpoints = nil, nil
		if !reflect.DeepEqual(p, n) {
			return nil, false
		}
		changed[name] = eps
	}
	// The routes last: comparing them is most of the cost.
	if !reflect.DeepEqual(prev.Plugins, next.Plugins) || !reflect.DeepEqual(prev.Authenticators, next.Authenticators) ||
		!reflect.DeepEqual(prev.RateLimits, next.RateLimits) || !reflect.DeepEqual(prev.Certificates, next.Certificates) ||
		!reflect.DeepEqual(prev.Routes, next.Routes) {
		return nil, false
	}
	return changed, true
}

// CheckEndpoints checks the endpoints of the provider's upstream name as
// validating the merged model would: each host:port, none twice, and none
// at all only for a provider's upstream.
func CheckEndpoints(name string, eps []string) error {
	if len(eps) == 0 && !strings.HasPrefix(name, KubernetesPrefix) {
		return fmt.Errorf("upstreams.%s: needs endpoints or dns", name)
	}
	seen := make(map[string]bool, len(eps))
	for i, ep := range eps {
		ep = strings.TrimSpace(ep)
		if err := checkEndpoint(ep); err != nil {
			return fmt.Errorf("upstreams.%s.endpoints[%d]: %w", name, i, err)
		}
		if seen[ep] {
			return fmt.Errorf("upstreams.%s.endpoints[%d]: endpoint %q is listed twice", name, i, RedactValue(ep))
		}
		seen[ep] = true
	}
	return nil
}
