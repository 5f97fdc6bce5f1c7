package kubernetes

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"

	"github.com/causewayhq/causeway/routes"
)

// reasonNoMeshIdentity is ResolvedRefs=False for a backend in the mesh
// when the edge has no identity to call it with (an implementation's own
// reason, as the Gateway API allows).
const reasonNoMeshIdentity = "NoMeshIdentity"

// isMeshService reports whether a Service opted into the mesh: its pods
// are then reached only through their sidecars, never on the app port.
func isMeshService(svc *corev1.Service) bool { return svc.Labels[routes.MeshLabel] == "true" }

// meshBackend resolves a backendRef to a mesh Service as a sidecar's
// outbound side would (meshEndpoints): each ready pod on its sidecar's
// inbound port, over mTLS, expecting its own ServiceAccount's ID in the
// edge's trust domain. parts name the upstream a plain backend of this
// port would have; each account's upstream adds "sa" and the account,
// weighted by its number of endpoints. A Service with no usable endpoint
// keeps the plain name with no endpoints, so it answers 503 as an empty
// Service does. Without the edge's own identity the backend is refused
// rather than called in plaintext on the app port.
func (t *translator) meshBackend(svc *corev1.Service, parts []string) ([]routes.SplitTarget, *ruleError) {
	key := nn(svc.Namespace, svc.Name)
	td, err := spiffeid.TrustDomainFromString(t.opts.MeshTrustDomain)
	if t.opts.MeshTrustDomain == "" || err != nil {
		return nil, &ruleError{reason: reasonNoMeshIdentity, msg: fmt.Sprintf(
			"Service %s is in the mesh (label %s: \"true\"); set a mesh section (the edge's own identity) in the edge's routes file to call it over mTLS: it is never called in plaintext", key, routes.MeshLabel)}
	}
	groups, done := t.mesh[key]
	if !done {
		// Resolved once per Service, however many rules name it, so each
		// endpoint left out is reported once.
		if t.pods == nil {
			t.pods = podsByName(t.s.Pods)
		}
		var left []LeftOut
		groups, left = meshEndpoints(cmp.Or(t.cfg.InboundPort, routes.DefaultSidecarInboundPort), td, key, t.slices[key], t.pods)
		t.mesh[key] = groups
		t.res.LeftOut = append(t.res.LeftOut, left...)
	}
	if len(groups) == 0 {
		up := name(parts...)
		if _, ok := t.res.Fragment.Upstreams[up]; !ok {
			t.res.Fragment.Upstreams[up] = routes.Upstream{}
		}
		return []routes.SplitTarget{{Upstream: up, Weight: 1}}, nil
	}
	split := make([]routes.SplitTarget, 0, len(groups))
	for _, g := range groups {
		up := name(append(slices.Clone(parts), "sa", g.account)...)
		if _, ok := t.res.Fragment.Upstreams[up]; !ok {
			// The hop is to the peer's sidecar, whatever the app speaks:
			// the mesh transport carries gRPC over HTTP/2 by itself.
			t.res.Fragment.Upstreams[up] = routes.Upstream{Endpoints: g.endpoints, MeshIdentity: g.id}
		}
		split = append(split, routes.SplitTarget{Upstream: up, Weight: len(g.endpoints)})
	}
	return split, nil
}

// weighBackends joins each backendRef's weight with the share of each of
// its upstreams (a mesh Service's accounts, by endpoints) into one split:
// every backend keeps its weight against the others, and within it each
// upstream keeps its share. Weights are made whole over the least common
// multiple of the backends' totals, so a rule without mesh backends keeps
// its backendRefs' weights as they are.
func weighBackends(refs []weighted) []routes.SplitTarget {
	l := 1
	for _, r := range refs {
		l = lcm(l, total(r.targets))
		if l > maxScale {
			l = maxScale // rounded below, never zero: no upstream is dropped
			break
		}
	}
	var out []routes.SplitTarget
	for _, r := range refs {
		n := total(r.targets)
		for _, s := range r.targets {
			w := max(1, int((int64(r.weight)*int64(s.Weight)*int64(l)+int64(n)/2)/int64(n)))
			out = append(out, routes.SplitTarget{Upstream: s.Upstream, Weight: w})
		}
	}
	return out
}

// maxScale bounds the multiple weights are made whole over: Gateway API
// weights go up to 1,000,000 and this keeps every product far from
// overflowing.
const maxScale = 1 << 16

// weighted is one backendRef's weight and its upstreams' shares.
type weighted struct {
	weight  int
	targets []routes.SplitTarget
}

func total(ts []routes.SplitTarget) int {
	n := 0
	for _, t := range ts {
		n += t.Weight
	}
	return max(n, 1)
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func lcm(a, b int) int { return a / gcd(a, b) * b }
