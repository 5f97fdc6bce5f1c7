package kubernetes

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/causewayhq/causeway/routes"
)

// Incremental translation. At 10,000 routes, translating every route on
// every snapshot cost about 90 ms of CPU per change, and its garbage more
// in collection. A route's translation reads three kinds of input:
//
//   - its own object (spec, generation, stored status);
//   - what every route may read (sharedInputs): GatewayClasses, Gateways
//     and the listeners judged from them with their certificates'
//     Secrets, Namespaces (allowedRoutes selectors), ReferenceGrants,
//     BackendTLSPolicies and their ConfigMaps, and the Services those
//     policies and status_address name;
//   - the Services it names and their EndpointSlices (serviceDep).
//
// CausewayPolicies are not among them: which policy a rule takes is
// looked up again on every snapshot (emit), on the route as translated
// without policies, so a policy's change, or its check judging it anew
// when the edge's file changed, never needs the routes again. Nor are
// the other routes: a route writes upstreams and plugins under names of
// its own or the Services' (the first writer of a Service's upstream
// keeps it, as replay does, in the same order), and reads back only what
// it wrote itself or its Services' upstreams (backends). Routes that
// reach a mesh Service are translated every time: what they make depends
// on Pods and on which route reached the Service first.
//
// An object stands for its content by identity: the informers replace an
// object on every change and never change one in place, and nothing that
// reads a Snapshot changes it (sliceKey relies on the same).

// routeEntry is what translating one route made: enough to add the same
// to another snapshot's result without translating it again.
type routeEntry struct {
	obj  metav1.Object // the route as translated
	deps []serviceDep  // the Services it read, and their slices

	ok, write bool // a parentRef is ours; the status is ours to write
	parents   []gatewayv1.RouteParentStatus
	attached  []listenerRef // one per (parentRef, listener) attachment
	gws       []int         // its Gateways of ours (gwOrder), in parentRef order
	// routes are the model routes, before any policy, and rules the
	// index of the rule each came from (which names its policy). Where
	// no policy applied, routes are the Result's own (shared: a copy of
	// their own would double the routes' heap).
	routes       []routes.Route
	rules        []int
	routesShared bool
	upstreams    []upstreamWrite
	plugins      []pluginWrite
	// uncacheable: translated again on every snapshot (a mesh backend).
	uncacheable bool
}

// listenerRef is one attachment of a route: its Gateway and listener (by
// index), and whether the route is served through it (a valid listener
// of an accepted Gateway, for a hostname no more specific listener has).
type listenerRef struct {
	gw, ls int
	serves bool
}

// serviceDep is a Service a route read (nil: it did not exist) and the
// EndpointSlices it had, in the snapshot's order.
type serviceDep struct {
	key    types.NamespacedName
	svc    *corev1.Service
	slices []*discoveryv1.EndpointSlice
}

// upstreamWrite is one upstream a route put into the fragment; ifAbsent
// when only a name not taken yet is written (a Service's upstream).
type upstreamWrite struct {
	name     string
	u        routes.Upstream
	ifAbsent bool
}

type pluginWrite struct {
	name string
	p    routes.PluginInst
}

// sharedInputs is what of a snapshot any route's translation may read,
// each object by identity.
type sharedInputs struct {
	set        bool
	classes    []*gatewayv1.GatewayClass
	gateways   []*gatewayv1.Gateway
	grants     []*gatewayv1beta1.ReferenceGrant
	namespaces []*corev1.Namespace
	secrets    []*corev1.Secret
	btls       []*gatewayv1.BackendTLSPolicy
	configMaps []*corev1.ConfigMap
	// services are the Services status_address and the BackendTLSPolicies
	// name (nil where one does not exist), in that order: the Gateways'
	// status and the policies' judgement (meshPolicyProblem) read them.
	services []*corev1.Service
}

// sharedInputs reads t's snapshot's shared inputs. The lists are copied:
// a caller may build its next snapshot in the same arrays.
func (t *translator) sharedInputs() sharedInputs {
	s := t.s
	in := sharedInputs{
		set:        true,
		classes:    slices.Clone(s.GatewayClasses),
		gateways:   slices.Clone(s.Gateways),
		grants:     slices.Clone(s.ReferenceGrants),
		namespaces: slices.Clone(s.Namespaces),
		secrets:    slices.Clone(s.Secrets),
		btls:       slices.Clone(s.BackendTLSPolicies),
		configMaps: slices.Clone(s.ConfigMaps),
	}
	if a := t.cfg.StatusAddress; a != nil && a.Service != "" {
		ns, name, _ := strings.Cut(a.Service, "/")
		in.services = append(in.services, t.services[nn(ns, name)])
	}
	for _, p := range s.BackendTLSPolicies {
		for _, tr := range p.Spec.TargetRefs {
			in.services = append(in.services, t.services[nn(p.Namespace, string(tr.Name))])
		}
	}
	return in
}

func (a sharedInputs) equal(b sharedInputs) bool {
	return a.set && b.set &&
		slices.Equal(a.classes, b.classes) && slices.Equal(a.gateways, b.gateways) &&
		slices.Equal(a.grants, b.grants) && slices.Equal(a.namespaces, b.namespaces) &&
		slices.Equal(a.secrets, b.secrets) && slices.Equal(a.btls, b.btls) &&
		slices.Equal(a.configMaps, b.configMaps) && slices.Equal(a.services, b.services)
}

// reusable is the last snapshot's entry for the route obj, when it was
// made from the same object and the same Services and EndpointSlices
// (the shared inputs are the same, or there is no last entry at all).
func (t *translator) reusable(obj metav1.Object) *routeEntry {
	// Kept by the object itself: a changed route is another object, and
	// a pointer hashes faster than a name.
	e := t.prevRoutes[obj]
	if e == nil {
		return nil
	}
	for _, d := range e.deps {
		if t.services[d.key] != d.svc || !slices.Equal(t.slices[d.key], d.slices) {
			return nil
		}
	}
	return e
}

// replay writes a kept entry's upstreams and plugins into the fragment,
// as translating its route wrote them.
func (t *translator) replay(e *routeEntry) {
	for _, w := range e.upstreams {
		t.writeUpstream(w)
	}
	for _, w := range e.plugins {
		t.res.Fragment.Plugins[w.name] = w.p
	}
}

// emit adds a route's entry to the result: the listeners' attached
// routes, the route's Gateways, and its model routes with the policy
// each rule takes now.
func (t *translator) emit(v routeView, key policyTarget, e *routeEntry) {
	for _, a := range e.attached {
		t.gwOrder[a.gw].listeners[a.ls].status.AttachedRoutes++
	}
	if !e.ok {
		return
	}
	var gws, byGateway []*gatewayState
	if len(e.gws) == 1 {
		// Most routes have one Gateway: one slice for all of them
		// (read only), not one each.
		gws = t.gwOrder[e.gws[0]:][:1:1]
		byGateway = gws
	} else {
		gws = make([]*gatewayState, len(e.gws))
		for i, g := range e.gws {
			gws[i] = t.gwOrder[g]
		}
		// A Gateway's policy: the oldest Gateway's, when the route is
		// attached to several (the edge's routes are per host, not per
		// Gateway). Only those it is served through: a parentRef to an
		// older Gateway whose listeners refuse the route, or accept it
		// only for hostnames a more specific listener has, would otherwise
		// swap the serving Gateway's authenticator for that one's policy.
		byGateway = make([]*gatewayState, 0, len(gws))
		for _, gs := range gws {
			if slices.ContainsFunc(e.attached, func(a listenerRef) bool { return a.gw == gs.idx && a.serves }) {
				byGateway = append(byGateway, gs)
			}
		}
		slices.SortStableFunc(byGateway, func(a, b *gatewayState) int { return a.idx - b.idx })
	}
	t.routeGateways[key] = gws
	start, anyPolicy := len(t.res.Fragment.Routes), false
	rule, pol := -1, (*policyState)(nil)
	for j, route := range e.routes {
		if route.Match.Methods != nil {
			// The model's defaulting writes a route's methods in place
			// (routes.File.Merge upper-cases them) while the generation
			// before, which shares a kept route, may be reading them.
			route.Match.Methods = slices.Clone(route.Match.Methods)
		}
		if e.rules[j] != rule {
			rule = e.rules[j]
			pol = t.policyFor(v.kind, v.obj.GetNamespace(), v.obj.GetName(), v.ruleName(rule), byGateway)
		}
		if pol != nil {
			anyPolicy = true
			pol.built.apply(&route)
			pol.applied = append(pol.applied, len(t.res.Fragment.Routes))
		}
		t.res.Fragment.Routes = append(t.res.Fragment.Routes, route)
	}
	end := len(t.res.Fragment.Routes)
	switch {
	case !anyPolicy && end > start:
		// The Result's routes are the entry's as they are (nothing
		// changes a Result's routes but checkApplied, on routes a policy
		// applied to): keep those, and let the older copy go, once the
		// slice has stopped growing (shareRoutes).
		t.toShare = append(t.toShare, sharedRoutes{e: e, start: start, end: end})
	case anyPolicy && e.routesShared:
		// Not an older Result's, which would then be kept whole.
		e.routes, e.routesShared = slices.Clone(e.routes), false
	}
}

// putUpstream writes an upstream of the route being translated, and
// records it for replay.
func (t *translator) putUpstream(name string, u routes.Upstream, ifAbsent bool) {
	w := upstreamWrite{name: name, u: u, ifAbsent: ifAbsent}
	t.writeUpstream(w)
	if t.rec != nil {
		t.rec.upstreams = append(t.rec.upstreams, w)
	}
}

func (t *translator) writeUpstream(w upstreamWrite) {
	if w.ifAbsent {
		if _, taken := t.res.Fragment.Upstreams[w.name]; taken {
			return
		}
	}
	t.res.Fragment.Upstreams[w.name] = w.u
}

// putPlugin writes a plugin instance of the route being translated, and
// records it for replay.
func (t *translator) putPlugin(name string, p routes.PluginInst) {
	t.res.Fragment.Plugins[name] = p
	if t.rec != nil {
		t.rec.plugins = append(t.rec.plugins, pluginWrite{name: name, p: p})
	}
}

// dependOn records that the route being translated read Service k (svc,
// nil when it does not exist) and so its EndpointSlices.
func (t *translator) dependOn(k types.NamespacedName, svc *corev1.Service) {
	e := t.rec
	if e == nil || slices.ContainsFunc(e.deps, func(d serviceDep) bool { return d.key == k }) {
		return
	}
	e.deps = append(e.deps, serviceDep{key: k, svc: svc, slices: t.slices[k]})
}

// keptSlices is what the next translation may take of what the
// EndpointSlices read: this one's reads, and the earlier ones' of slices
// the snapshot still has (a route reused was not read again, and a
// change to shared inputs translates every route again).
func (t *translator) keptSlices() map[sliceKey]sliceAddrs {
	next := t.sliceSeen
	if len(t.sliceCache) == 0 {
		return next
	}
	live := make(map[*discoveryv1.EndpointSlice]bool, len(t.s.EndpointSlices))
	for _, es := range t.s.EndpointSlices {
		live[es] = true
	}
	if next == nil {
		next = make(map[sliceKey]sliceAddrs, len(t.sliceCache))
	}
	for k, v := range t.sliceCache {
		if _, ok := next[k]; !ok && live[k.es] {
			next[k] = v
		}
	}
	return next
}

// sharedRoutes is a route entry whose model routes are those of the
// Result at [start, end).
type sharedRoutes struct {
	e          *routeEntry
	start, end int
}

// shareRoutes points the entries emit found unchanged by policies at the
// Result's routes, now that the slice is complete: a slice that grew
// later would otherwise keep every array it outgrew alive.
func (t *translator) shareRoutes() {
	for _, s := range t.toShare {
		s.e.routes, s.e.routesShared = t.res.Fragment.Routes[s.start:s.end:s.end], true
	}
	t.toShare = nil
}
