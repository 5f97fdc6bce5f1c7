package kubernetes

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// OutboundSnapshot is one consistent view of what a sidecar's outbound
// services are made of: the Services labelled routes.MeshLabel, their
// EndpointSlices, and the Pods those name. TranslateOutbound reads it and
// never changes it.
type OutboundSnapshot struct {
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	Pods           []*corev1.Pod
	// BackendTLSPolicies narrow which of a mesh Service's identities are
	// called, as on the edge; ConfigMaps (slimmed to ca.crt) are what
	// their CA references name.
	BackendTLSPolicies []*gatewayv1.BackendTLSPolicy
	ConfigMaps         []*corev1.ConfigMap
}

// OutboundOptions are the sidecar's settings that the translation needs
// besides its outbound.kubernetes block.
type OutboundOptions struct {
	// TrustDomain names the pods' IDs (identity.trust_domain).
	TrustDomain string
	// LocalNamespace is the sidecar's own namespace: its Services are also
	// called by their bare name, as a pod's DNS search path allows. Empty:
	// no bare names.
	LocalNamespace string
}

// OutboundResult is the outbound routes and upstreams of one snapshot, and
// what was left out of them and why (for the log: a pod left out is one a
// caller will miss).
type OutboundResult struct {
	Fragment routes.Fragment
	LeftOut  []LeftOut
	// Services and Endpoints count what is callable.
	Services, Endpoints int
}

// LeftOut is one endpoint (or Service) that was not made callable.
type LeftOut struct {
	Service types.NamespacedName
	Address string // "" for the whole Service
	Reason  string
}

func (l LeftOut) String() string {
	if l.Address == "" {
		return l.Service.String() + ": " + l.Reason
	}
	return l.Service.String() + " " + l.Address + ": " + l.Reason
}

// TranslateOutbound maps a snapshot onto the sidecar's outbound model. Each
// mesh Service becomes routes for the names a pod calls it by
// (NAME.NAMESPACE, NAME.NAMESPACE.svc, NAME.NAMESPACE.svc.CLUSTER_DOMAIN,
// and NAME in the sidecar's own namespace) and one upstream per
// ServiceAccount among its ready pods, each with that ServiceAccount's
// SPIFFE ID: a pod is only ever dialled expecting its own pod's identity,
// so a pod of another ServiceAccount behind the same Service cannot answer
// for the others. A Service whose pods run under several ServiceAccounts
// splits its requests between their upstreams by their number of
// endpoints. An endpoint whose pod, ServiceAccount or port cannot be
// resolved is left out, never dialled with a guessed identity. A
// BackendTLSPolicy on a mesh Service narrows the accounts called as it
// does on the edge (narrowOutbound); when it leaves none, the Service
// answers 503.
//
// It is pure: the same snapshot gives the same result, so an unchanged
// cluster never swaps a generation.
func TranslateOutbound(cfg routes.OutboundKubernetes, s *OutboundSnapshot, o OutboundOptions) OutboundResult {
	res := OutboundResult{Fragment: routes.Fragment{Upstreams: map[string]routes.Upstream{}}}
	cfg.InboundPort = cmp.Or(cfg.InboundPort, routes.DefaultSidecarInboundPort)
	cfg.ClusterDomain = cmp.Or(cfg.ClusterDomain, routes.DefaultClusterDomain)
	inScope := func(ns string) bool { return len(cfg.Namespaces) == 0 || slices.Contains(cfg.Namespaces, ns) }
	td, tdErr := spiffeid.TrustDomainFromString(o.TrustDomain)

	pods := podsByName(s.Pods)
	slicesOf := map[types.NamespacedName][]*discoveryv1.EndpointSlice{}
	for _, es := range s.EndpointSlices {
		if es == nil {
			continue
		}
		if svc := es.Labels[serviceNameKey]; svc != "" {
			k := nn(es.Namespace, svc)
			slicesOf[k] = append(slicesOf[k], es)
		}
	}
	services := slices.Clone(s.Services)
	services = slices.DeleteFunc(services, func(svc *corev1.Service) bool { return svc == nil })
	sortObjects(services)
	btls := outboundBackendTLS(cfg.Namespaces, s, services)
	for _, svc := range services {
		key := nn(svc.Namespace, svc.Name)
		switch {
		case !inScope(svc.Namespace):
			continue
		case svc.Labels[routes.MeshLabel] != "true":
			continue
		case len(validation.IsDNS1123Label(svc.Name)) > 0 || len(validation.IsDNS1123Label(svc.Namespace)) > 0:
			// The API server admits no other names; one that got in must
			// not make host names that refuse every Service's routes.
			res.LeftOut = append(res.LeftOut, LeftOut{Service: key, Reason: "the name is not a DNS label"})
			continue
		case svc.Spec.Type == corev1.ServiceTypeExternalName:
			res.LeftOut = append(res.LeftOut, LeftOut{Service: key, Reason: "an ExternalName Service has no pods of the mesh"})
			continue
		case tdErr != nil:
			// The sidecar file's validation makes this unreachable; without
			// a trust domain no pod's identity can be named.
			res.LeftOut = append(res.LeftOut, LeftOut{Service: key, Reason: "no trust domain: " + tdErr.Error()})
			continue
		}
		groups, left := meshEndpoints(cfg.InboundPort, td, key, slicesOf[key], pods)
		res.LeftOut = append(res.LeftOut, left...)
		if len(groups) > 0 {
			var denied string
			if groups, denied = btls.narrowOutbound(svc, groups); denied != "" {
				// 503, as on the edge: never called with an identity
				// the policy does not list.
				res.LeftOut = append(res.LeftOut, LeftOut{Service: key, Reason: denied})
			}
		}
		res.Services++
		route := routes.Route{}
		switch len(groups) {
		case 0:
			// Known but with nothing to call: 503, not 404, while a
			// Service scales up or rolls out.
			up := name(svc.Namespace, svc.Name)
			res.Fragment.Upstreams[up] = routes.Upstream{Balance: cfg.Balance, Timeout: cfg.Timeout}
			route.Upstream = up
		default:
			for _, g := range groups {
				up := name(svc.Namespace, svc.Name, g.account)
				res.Fragment.Upstreams[up] = routes.Upstream{Endpoints: g.endpoints, MeshIdentity: g.id, Balance: cfg.Balance, Timeout: cfg.Timeout}
				route.Split = append(route.Split, routes.SplitTarget{Upstream: up, Weight: len(g.endpoints)})
				res.Endpoints += len(g.endpoints)
			}
			if len(route.Split) == 1 {
				route.Upstream, route.Split = route.Split[0].Upstream, nil
			}
		}
		for _, host := range outboundHosts(svc.Namespace, svc.Name, cfg.ClusterDomain, o.LocalNamespace) {
			r := route
			r.Split = slices.Clone(route.Split)
			r.Name = name(host)
			r.Match = routes.Match{Host: host}
			res.Fragment.Routes = append(res.Fragment.Routes, r)
		}
	}
	return res
}

// outboundHosts are the names a pod calls a Service by, most qualified
// last, as cluster DNS answers them.
func outboundHosts(ns, svc, domain, local string) []string {
	hosts := []string{svc + "." + ns, svc + "." + ns + ".svc", svc + "." + ns + ".svc." + domain}
	if ns == local {
		hosts = append([]string{svc}, hosts...)
	}
	return hosts
}

// accountGroup is the endpoints of one Service whose pods run under one
// ServiceAccount, and that account's SPIFFE ID.
type accountGroup struct {
	account, id string
	endpoints   []string
}

// podsByName indexes a snapshot's Pods for meshEndpoints.
func podsByName(list []*corev1.Pod) map[types.NamespacedName]*corev1.Pod {
	pods := make(map[types.NamespacedName]*corev1.Pod, len(list))
	for _, p := range list {
		if p != nil {
			pods[nn(p.Namespace, p.Name)] = p
		}
	}
	return pods
}

// meshEndpoints resolves a mesh Service's endpoints to pods and groups
// them by ServiceAccount, sorted, each endpoint on its pod's sidecar
// inbound port (inboundPort when the pod does not say). Ready endpoints
// serve; when none is ready, those still serving while they terminate
// do, as for the edge's upstreams (endpointUsable). Both the sidecar's
// outbound services and the edge's mesh backends are made of it, so a
// pod is held to the same identity whichever side calls it.
func meshEndpoints(inboundPort int, td spiffeid.TrustDomain, svc types.NamespacedName, list []*discoveryv1.EndpointSlice, pods map[types.NamespacedName]*corev1.Pod) ([]accountGroup, []LeftOut) {
	type resolved struct{ addr, account, id string }
	var ready, serving []resolved
	var left []LeftOut
	leave := func(addr, why string) { left = append(left, LeftOut{Service: svc, Address: addr, Reason: why}) }
	for _, es := range list {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, ep := range es.Endpoints {
			isReady, isServing := endpointUsable(ep.Conditions)
			if !isReady && !isServing {
				continue
			}
			for _, a := range ep.Addresses {
				account, port, why := endpointPod(es.Namespace, a, ep.TargetRef, pods)
				if why != "" {
					leave(a, why)
					continue
				}
				port = cmp.Or(port, inboundPort)
				id, err := spiffeid.FromSegments(td, "ns", es.Namespace, "sa", account)
				if err != nil {
					leave(a, fmt.Sprintf("ServiceAccount %q makes no SPIFFE ID: %v", account, err))
					continue
				}
				r := resolved{endpointAddr(a, int32(port)), account, id.String()}
				if isReady {
					ready = append(ready, r)
				} else {
					serving = append(serving, r)
				}
			}
		}
	}
	use := ready
	if len(use) == 0 {
		use = serving
	}
	// One address of two pods (a stale slice beside a fresh one) could
	// be either: neither identity is trusted for it.
	accounts := map[string]string{}
	conflict := map[string]bool{}
	for _, r := range use {
		if prev, ok := accounts[r.addr]; ok && prev != r.account {
			conflict[r.addr] = true
		}
		accounts[r.addr] = r.account
	}
	byAccount := map[string]*accountGroup{}
	for _, r := range use {
		if conflict[r.addr] {
			continue
		}
		g := byAccount[r.account]
		if g == nil {
			g = &accountGroup{account: r.account, id: r.id}
			byAccount[r.account] = g
		}
		g.endpoints = append(g.endpoints, r.addr)
	}
	for _, addr := range slices.Sorted(maps.Keys(conflict)) {
		leave(addr, "the address is given to pods of different ServiceAccounts")
	}
	groups := make([]accountGroup, 0, len(byAccount))
	for _, account := range slices.Sorted(maps.Keys(byAccount)) {
		g := byAccount[account]
		slices.Sort(g.endpoints)
		g.endpoints = slices.Compact(g.endpoints)
		groups = append(groups, *g)
	}
	return groups, left
}

// endpointPod resolves an endpoint's address to its pod's ServiceAccount
// and the port its sidecar listens on (0: the default). why says why it
// cannot be, and the endpoint is then left out.
func endpointPod(ns, addr string, ref *corev1.ObjectReference, pods map[types.NamespacedName]*corev1.Pod) (account string, port int, why string) {
	if _, err := netip.ParseAddr(addr); err != nil {
		return "", 0, "not an IP address"
	}
	if ref == nil || ref.Kind != "Pod" || (ref.APIVersion != "" && ref.APIVersion != "v1") {
		return "", 0, "no targetRef to a Pod: its identity is unknown"
	}
	if ref.Namespace != "" && ref.Namespace != ns {
		return "", 0, fmt.Sprintf("targetRef names a Pod of namespace %q", ref.Namespace)
	}
	p := pods[nn(ns, ref.Name)]
	switch {
	case p == nil:
		return "", 0, fmt.Sprintf("Pod %q not found", ref.Name)
	case ref.UID != "" && p.UID != ref.UID:
		// The name is a newer pod's (a StatefulSet's recreated pod, maybe
		// under another ServiceAccount); the slice still names the old one.
		return "", 0, fmt.Sprintf("Pod %q is not the one the EndpointSlice names (uid %s, found %s)", ref.Name, ref.UID, p.UID)
	}
	if len(p.Status.PodIPs) > 0 && !slices.ContainsFunc(p.Status.PodIPs, func(ip corev1.PodIP) bool { return sameIP(ip.IP, addr) }) {
		return "", 0, fmt.Sprintf("Pod %q does not have this address", ref.Name)
	}
	if v, ok := p.Annotations[routes.InboundPortAnnotation]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 || n > 65535 {
			return "", 0, fmt.Sprintf("Pod %q: annotation %s %q is not a port", ref.Name, routes.InboundPortAnnotation, v)
		}
		port = n
	}
	// Kubernetes runs a pod without serviceAccountName as "default".
	return cmp.Or(p.Spec.ServiceAccountName, "default"), port, ""
}

func sameIP(a, b string) bool {
	x, err1 := netip.ParseAddr(a)
	y, err2 := netip.ParseAddr(b)
	return err1 == nil && err2 == nil && x == y
}

// endpointUsable reads an EndpointSlice endpoint's conditions as
// kube-proxy does: ready (an unset condition means ready) endpoints take
// traffic; serving ones that are terminating take it only when no ready
// one is left (a rollout's last pods).
func endpointUsable(c discoveryv1.EndpointConditions) (ready, serving bool) {
	if c.Ready == nil || *c.Ready {
		return true, false
	}
	return false, c.Serving != nil && *c.Serving
}
