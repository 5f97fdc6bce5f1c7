package kubernetes

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/gateway/edgetls"
	"github.com/causewayhq/causeway/routes"
)

// The API group of the Gateway API, and the kinds this provider serves.
const (
	groupName      = gatewayv1.GroupName
	kindGateway    = "Gateway"
	kindHTTPRoute  = "HTTPRoute"
	kindGRPCRoute  = "GRPCRoute"
	kindService    = "Service"
	kindSecret     = "Secret"
	serviceNameKey = discoveryv1.LabelServiceName
)

// Translate maps one Snapshot onto the routes model and computes the status
// every object of ours should have. It is pure: the same snapshot always
// gives the same Result (names, order and all), so an unchanged cluster
// never swaps a generation, and the mapping is tested without an API
// server.
//
// What is not valid is left out, never guessed at, and said in the
// object's status: a route whose backend is missing answers 500 for that
// backend's share (as the Gateway API requires) while the rest of the
// model serves on.
func Translate(cfg routes.KubernetesProvider, s *Snapshot) Result {
	return TranslateWith(cfg, s, TranslateOptions{})
}

// TranslateOptions say what the edge that will serve the result has.
type TranslateOptions struct {
	// HTTPS: the edge has an https listener (listen.https and a tls
	// section), so HTTPS listeners' certificates are served there;
	// without it they are not programmed.
	HTTPS bool
	// Check judges what each CausewayPolicy adds before the model takes
	// it (see CheckPolicy); nil checks only the policy's own form.
	Check CheckPolicy
	// MeshTrustDomain is the edge's mesh.trust_domain; empty: the edge
	// has no mesh section, and backends in the mesh are refused.
	MeshTrustDomain string
}

// TranslateWith is Translate for an edge described by o.
func TranslateWith(cfg routes.KubernetesProvider, s *Snapshot, o TranslateOptions) Result {
	return NewTranslator(cfg, o).Translate(s)
}

// Translator translates the snapshots of one source in turn, keeping
// what one translation learns that makes the next cheaper; its result is
// always the one TranslateWith gives for the same snapshot. It is not
// safe for concurrent use: the Source translates one snapshot at a time,
// on the Watcher's goroutine. The Results it returns share what did not
// change with the ones before (model routes, route statuses, upstreams'
// endpoint lists), so neither it nor anyone else may change a Result in
// place beyond replacing its maps' entries (see Source.Run).
type Translator struct {
	cfg  routes.KubernetesProvider
	opts TranslateOptions
	// routes is how many model routes the last snapshot made: the next
	// one makes about as many, and growing the slice 20,000 routes long
	// by doubling copied it a dozen times.
	routes int
	// upstreams and plugins: how many the last fragment had, likewise.
	upstreams, plugins int
	// slices is what the translations read of each EndpointSlice that
	// the last snapshot still had.
	slices map[sliceKey]sliceAddrs
	// shared is what of the last snapshot every route's translation may
	// read (sharedInputs), and kept what each route's translation made
	// (routeEntry): an entry is reused while shared is unchanged, its
	// route is the same object, and so is every Service and EndpointSlice
	// it read. Only the last snapshot's routes are kept.
	shared sharedInputs
	kept   map[metav1.Object]*routeEntry
	// reused and translated count the last snapshot's routes by how
	// they were made (the tests check that reuse happens).
	reused, translated int
}

// NewTranslator returns a Translator for an edge described by o.
func NewTranslator(cfg routes.KubernetesProvider, o TranslateOptions) *Translator {
	if cfg.GatewayClass == "" {
		cfg.GatewayClass = routes.DefaultGatewayClass
	}
	return &Translator{cfg: cfg, opts: o}
}

// Translate maps s onto the routes model (see TranslateWith).
func (tr *Translator) Translate(s *Snapshot) Result {
	t := newTranslator(tr.cfg, s)
	t.opts = tr.opts
	// A little room over the last count, so one route more does not copy
	// them all again.
	t.res.Fragment.Routes = make([]routes.Route, 0, tr.routes+tr.routes/16)
	t.sliceCache = tr.slices
	// The maps routes write into, as large as the last snapshot's.
	t.res.Fragment.Upstreams = make(map[string]routes.Upstream, tr.upstreams)
	t.res.Fragment.Plugins = make(map[string]routes.PluginInst, tr.plugins)
	shared := t.sharedInputs()
	if shared.equal(tr.shared) {
		t.prevRoutes = tr.kept
	}
	t.nextRoutes = make(map[metav1.Object]*routeEntry, len(tr.kept))
	t.toShare = make([]sharedRoutes, 0, len(tr.kept))
	res := t.run()
	tr.routes, tr.slices = len(res.Fragment.Routes), t.keptSlices()
	tr.upstreams, tr.plugins = len(res.Fragment.Upstreams), len(res.Fragment.Plugins)
	tr.shared, tr.kept = shared, t.nextRoutes
	tr.reused, tr.translated = t.reused, t.translated
	return res
}

// run translates t's snapshot.
func (t *translator) run() Result {
	t.classes()
	t.gateways()
	t.policies()
	t.backendTLSPolicies()
	t.httpRoutes()
	t.grpcRoutes()
	t.isolationRoutes()
	t.shareRoutes()
	t.checkApplied()
	t.policyStatuses()
	t.backendTLSStatuses()
	t.finish()
	t.origins()
	if len(t.res.Fragment.Routes) == 0 {
		t.res.Fragment.Routes = nil // as before: no routes is a nil slice
	}
	return t.res
}

type translator struct {
	cfg  routes.KubernetesProvider
	opts TranslateOptions
	s    *Snapshot
	res  Result
	// sliceCache is what the last translations read of each EndpointSlice
	// (sliceAddrs); sliceSeen is what this one read.
	sliceCache, sliceSeen map[sliceKey]sliceAddrs
	// prevRoutes are the last translation's route entries when they may
	// be reused (nil otherwise); nextRoutes are this one's, for the next.
	prevRoutes, nextRoutes map[metav1.Object]*routeEntry
	reused, translated     int // routes, by how they were made
	// toShare are the entries to point at this Result's routes.
	toShare []sharedRoutes
	// rec is the entry of the route being translated, which records what
	// it reads and writes; nil outside a route.
	rec *routeEntry
	// svcUps is the upstream each Service port's name stands for in this
	// translation, made once (backend).
	svcUps map[string]routes.Upstream
	// checkEveryRoute checks each policy with every route it applies to,
	// not each shape of them once: what the tests compare with.
	checkEveryRoute bool
	// certAt is where each Secret's pair is in the fragment's
	// certificates (addCertificates), however many listeners name it.
	certAt map[certUse]int

	ours       bool // the class is ours and accepted
	services   map[types.NamespacedName]*corev1.Service
	slices     map[types.NamespacedName][]*discoveryv1.EndpointSlice // by Service
	secrets    map[types.NamespacedName]*corev1.Secret
	namespaces map[string]*corev1.Namespace
	gws        map[types.NamespacedName]*gatewayState
	gwOrder    []*gatewayState
	// claims are the served Gateways' listeners by protocol, made on
	// first use after gateways (isolation.go).
	claims map[gatewayv1.ProtocolType][]*listenerState
	// fences are the hosts of the isolation routes (isolation.go).
	fences map[string]bool

	// Policies: the valid ones by target, every judged one in age order,
	// and what their status needs to know of the cluster.
	policyByTarget  map[policyTarget]*policyState
	policyOrder     []*policyState
	gwsAny          map[types.NamespacedName]bool // every Gateway, ours or not
	httpRouteByName map[types.NamespacedName]*gatewayv1.HTTPRoute
	grpcRouteByName map[types.NamespacedName]*gatewayv1.GRPCRoute
	routeGateways   map[policyTarget][]*gatewayState // a route's Gateways of ours

	// Mesh backends: the Pods by name (indexed on first use), and each
	// mesh Service's endpoints by ServiceAccount once resolved.
	pods map[types.NamespacedName]*corev1.Pod
	mesh map[types.NamespacedName][]accountGroup

	// BackendTLSPolicies: the one holding each Service port, and every
	// judged one in age order (backendtls.go).
	btlsByTarget map[btlsTarget]*btlsState
	btlsOrder    []*btlsState
}

// gatewayState is one Gateway of our class, with its listeners as judged.
type gatewayState struct {
	obj *gatewayv1.Gateway
	// idx is its place in gwOrder: what a kept route entry names it by.
	idx       int
	listeners []*listenerState
	status    gatewayv1.GatewayStatus
}

type listenerState struct {
	spec gatewayv1.Listener
	// valid listeners carry traffic; routes still attach to invalid ones
	// (the spec counts them in attachedRoutes) but nothing is served.
	valid  bool
	kinds  []gatewayv1.RouteGroupKind
	status *gatewayv1.ListenerStatus
	idx    int // its place in the Gateway's listeners
}

func newTranslator(cfg routes.KubernetesProvider, s *Snapshot) *translator {
	t := &translator{
		cfg: cfg, s: s,
		res: Result{
			Fragment: routes.Fragment{
				Upstreams:      map[string]routes.Upstream{},
				Plugins:        map[string]routes.PluginInst{},
				Authenticators: map[string]routes.Authenticator{},
				RateLimits:     map[string]routes.RateLimit{},
			},
			GatewayClasses: map[string]gatewayv1.GatewayClassStatus{},
			Gateways:       map[types.NamespacedName]gatewayv1.GatewayStatus{},
			HTTPRoutes:     make(map[types.NamespacedName]gatewayv1.HTTPRouteStatus, len(s.HTTPRoutes)),
			GRPCRoutes:     make(map[types.NamespacedName]gatewayv1.GRPCRouteStatus, len(s.GRPCRoutes)),
			Policies:       map[types.NamespacedName]gatewayv1.PolicyStatus{},
		},
		policyByTarget: map[policyTarget]*policyState{},
		gwsAny:         map[types.NamespacedName]bool{},
		// Sized up front: at 10,000 routes, growing them was a tenth of
		// a translation that reuses every route.
		httpRouteByName: make(map[types.NamespacedName]*gatewayv1.HTTPRoute, len(s.HTTPRoutes)),
		grpcRouteByName: make(map[types.NamespacedName]*gatewayv1.GRPCRoute, len(s.GRPCRoutes)),
		routeGateways:   make(map[policyTarget][]*gatewayState, len(s.HTTPRoutes)+len(s.GRPCRoutes)),
		services:        make(map[types.NamespacedName]*corev1.Service, len(s.Services)),
		slices:          make(map[types.NamespacedName][]*discoveryv1.EndpointSlice, len(s.Services)),
		secrets:         map[types.NamespacedName]*corev1.Secret{},
		namespaces:      map[string]*corev1.Namespace{},
		gws:             map[types.NamespacedName]*gatewayState{},
		mesh:            map[types.NamespacedName][]accountGroup{},
		svcUps:          map[string]routes.Upstream{},
		nextRoutes:      map[metav1.Object]*routeEntry{},
	}
	for _, o := range s.Services {
		t.services[nn(o.Namespace, o.Name)] = o
	}
	for _, o := range s.EndpointSlices {
		if svc := o.Labels[serviceNameKey]; svc != "" {
			k := nn(o.Namespace, svc)
			t.slices[k] = append(t.slices[k], o)
		}
	}
	for _, o := range s.Secrets {
		t.secrets[nn(o.Namespace, o.Name)] = o
	}
	for _, o := range s.Gateways {
		t.gwsAny[nn(o.Namespace, o.Name)] = true
	}
	for _, o := range s.HTTPRoutes {
		t.httpRouteByName[nn(o.Namespace, o.Name)] = o
	}
	for _, o := range s.GRPCRoutes {
		t.grpcRouteByName[nn(o.Namespace, o.Name)] = o
	}
	for _, o := range s.Namespaces {
		t.namespaces[o.Name] = o
	}
	return t
}

func nn(ns, name string) types.NamespacedName { return types.NamespacedName{Namespace: ns, Name: name} }

// inScope reports whether objects of namespace ns are the provider's.
func (t *translator) inScope(ns string) bool {
	return len(t.cfg.Namespaces) == 0 || slices.Contains(t.cfg.Namespaces, ns)
}

func condition(typ string, ok bool, reason, msg string, gen int64) metav1.Condition {
	st := metav1.ConditionFalse
	if ok {
		st = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: st, Reason: reason, Message: msg, ObservedGeneration: gen}
}

// classes judges every GatewayClass that names our controller, and
// serves the configured one. Every edge writes the same status for a
// class, whichever class it serves, so edges of different classes never
// undo each other's status, and a class that no edge serves yet still
// says it is accepted: its Gateways are served by the edges that name it
// in providers.kubernetes.gateway_class. Another controller's class,
// even of our class's name, is not ours to touch: its Gateways are
// ignored and its status left alone.
func (t *translator) classes() {
	for _, gc := range t.s.GatewayClasses {
		if string(gc.Spec.ControllerName) != routes.KubernetesControllerName {
			continue
		}
		msg := "Accepted by " + routes.KubernetesControllerName
		var st gatewayv1.GatewayClassStatus
		st.Conditions = []metav1.Condition{condition(string(gatewayv1.GatewayClassConditionStatusAccepted), true, string(gatewayv1.GatewayClassReasonAccepted), msg, gc.Generation)}
		ok := true
		if gc.Spec.ParametersRef != nil {
			st.Conditions[0] = condition(string(gatewayv1.GatewayClassConditionStatusAccepted), false, string(gatewayv1.GatewayClassReasonInvalidParameters),
				"parametersRef is not supported: Causeway is configured by its routes file and CausewayPolicy objects", gc.Generation)
			ok = false
		}
		if ok {
			st.SupportedFeatures = classFeatures()
		}
		t.res.GatewayClasses[gc.Name] = st
		if gc.Name == t.cfg.GatewayClass {
			t.ours = ok
		}
	}
}

// gateways judges the listeners of every Gateway of our class that this
// edge serves (providers.kubernetes.gateways): another edge's Gateway is
// as foreign as another class's, and so are the routes attached only to
// it.
func (t *translator) gateways() {
	if !t.ours {
		return
	}
	list := slices.Clone(t.s.Gateways)
	byAge(list, func(g *gatewayv1.Gateway) metav1.Object { return g })
	for _, g := range list {
		if string(g.Spec.GatewayClassName) != t.cfg.GatewayClass || !t.inScope(g.Namespace) || !t.cfg.ServesGateway(g.Namespace, g.Name) {
			continue
		}
		gs := &gatewayState{obj: g, idx: len(t.gwOrder)}
		t.gws[nn(g.Namespace, g.Name)] = gs
		t.gwOrder = append(t.gwOrder, gs)
		t.listeners(gs)
	}
}

// listenerKey is what must differ between two listeners of one Gateway
// (the spec's "distinct" rule for HTTP and HTTPS: port and hostname).
func listenerKey(l gatewayv1.Listener) string {
	h := ""
	if l.Hostname != nil {
		h = string(*l.Hostname)
	}
	return strconv.Itoa(int(l.Port)) + "|" + h
}

func (t *translator) listeners(gs *gatewayState) {
	g := gs.obj
	gen := g.Generation
	protoAt := map[int32]gatewayv1.ProtocolType{}
	protoConflict := map[int32]bool{}
	keys := map[string]int{}
	for _, l := range g.Spec.Listeners {
		if p, ok := protoAt[l.Port]; ok && p != l.Protocol {
			protoConflict[l.Port] = true
		}
		protoAt[l.Port] = l.Protocol
		keys[listenerKey(l)]++
	}
	var invalid []string
	for _, l := range g.Spec.Listeners {
		ls := &listenerState{spec: l, valid: true, status: &gatewayv1.ListenerStatus{Name: l.Name}, idx: len(gs.listeners)}
		gs.listeners = append(gs.listeners, ls)
		accepted := condition(string(gatewayv1.ListenerConditionAccepted), true, string(gatewayv1.ListenerReasonAccepted), "", gen)
		resolved := condition(string(gatewayv1.ListenerConditionResolvedRefs), true, string(gatewayv1.ListenerReasonResolvedRefs), "", gen)
		conflicted := condition(string(gatewayv1.ListenerConditionConflicted), false, string(gatewayv1.ListenerReasonNoConflicts), "", gen)
		switch l.Protocol {
		case gatewayv1.HTTPProtocolType, gatewayv1.HTTPSProtocolType:
		default:
			accepted = condition(string(gatewayv1.ListenerConditionAccepted), false, string(gatewayv1.ListenerReasonUnsupportedProtocol),
				fmt.Sprintf("protocol %s is not supported: use HTTP or HTTPS", l.Protocol), gen)
			ls.valid = false
		}
		switch h := listenerHost(l); {
		case !dnsLabels(h):
			// The schema bounds the name, not its labels; the routes model
			// takes DNS labels only, and would refuse every Gateway's
			// routes with this one's.
			accepted = condition(string(gatewayv1.ListenerConditionAccepted), false, string(gatewayv1.ListenerReasonUnsupportedValue),
				fmt.Sprintf("hostname %q has a label longer than 63 characters", h), gen)
			ls.valid = false
		case !listenerHostValid(h):
			// The CRD's pattern refuses these; a CRD without it (an older
			// or edited one) lets them through, and the model, given one
			// as a route's host, would refuse every Gateway's routes.
			accepted = condition(string(gatewayv1.ListenerConditionAccepted), false, string(gatewayv1.ListenerReasonUnsupportedValue),
				fmt.Sprintf("hostname %q is not a DNS name (lower case, a wildcard only as *.)", h), gen)
			ls.valid = false
		}
		switch {
		case protoConflict[l.Port]:
			conflicted = condition(string(gatewayv1.ListenerConditionConflicted), true, string(gatewayv1.ListenerReasonProtocolConflict),
				fmt.Sprintf("another listener on port %d has a different protocol", l.Port), gen)
			ls.valid = false
		case keys[listenerKey(l)] > 1:
			conflicted = condition(string(gatewayv1.ListenerConditionConflicted), true, string(gatewayv1.ListenerReasonHostnameConflict),
				fmt.Sprintf("another listener on port %d has the same hostname", l.Port), gen)
			ls.valid = false
		}
		ls.kinds, resolved = t.routeKinds(l, resolved, gen)
		if l.Protocol != gatewayv1.HTTPProtocolType && l.Protocol != gatewayv1.HTTPSProtocolType {
			// No route kind of ours can attach to a protocol we do not
			// serve; the spec wants the list empty, not absent.
			ls.kinds = []gatewayv1.RouteGroupKind{}
		}
		if len(ls.kinds) == 0 {
			ls.valid = false
		}
		pending := false
		if l.Protocol == gatewayv1.HTTPSProtocolType {
			certs, c, ok := t.listenerTLS(g, l, gen)
			switch {
			case !ok:
				resolved = c
				ls.valid = false
			case !t.opts.HTTPS:
				// The certificates resolve, but the edge has no https
				// listener to serve them on: say so rather than claim a
				// listener that is not there.
				pending = true
				ls.valid = false
			case ls.valid:
				t.addCertificates(certs, listenerHost(l), t.defaultGateway(g))
			}
		}
		if accepted.Status == metav1.ConditionTrue && conflicted.Status == metav1.ConditionTrue {
			accepted = condition(string(gatewayv1.ListenerConditionAccepted), false, conflicted.Reason, conflicted.Message, gen)
		}
		programmed := condition(string(gatewayv1.ListenerConditionProgrammed), ls.valid, string(gatewayv1.ListenerReasonProgrammed), "", gen)
		switch {
		case pending:
			programmed.Reason = string(gatewayv1.ListenerReasonPending)
			programmed.Message = "the edge has no https listener: set listen.https and a tls section in its routes file"
			invalid = append(invalid, string(l.Name))
		case !ls.valid:
			programmed.Reason = string(gatewayv1.ListenerReasonInvalid)
			invalid = append(invalid, string(l.Name))
		}
		ls.status.SupportedKinds = ls.kinds
		ls.status.Conditions = []metav1.Condition{accepted, resolved, conflicted, programmed}
	}
	gs.status.Conditions = []metav1.Condition{
		condition(string(gatewayv1.GatewayConditionAccepted), true, string(gatewayv1.GatewayReasonAccepted), "", gen),
		condition(string(gatewayv1.GatewayConditionProgrammed), true, string(gatewayv1.GatewayReasonProgrammed), "", gen),
	}
	switch {
	case len(invalid) == len(g.Spec.Listeners):
		msg := "no listener is valid: " + strings.Join(invalid, ", ")
		gs.status.Conditions[0] = condition(string(gatewayv1.GatewayConditionAccepted), false, string(gatewayv1.GatewayReasonListenersNotValid), msg, gen)
		gs.status.Conditions[1] = condition(string(gatewayv1.GatewayConditionProgrammed), false, string(gatewayv1.GatewayReasonInvalid), msg, gen)
	case len(invalid) > 0:
		// Accepted with the valid listeners; the reason says some are not.
		gs.status.Conditions[0].Reason = string(gatewayv1.GatewayReasonListenersNotValid)
		gs.status.Conditions[0].Message = "listeners not valid: " + strings.Join(invalid, ", ")
	}
	addrs, why := t.statusAddresses()
	gs.status.Addresses = addrs
	switch {
	case len(g.Spec.Addresses) > 0:
		gs.status.Conditions[1] = condition(string(gatewayv1.GatewayConditionProgrammed), false, string(gatewayv1.GatewayReasonAddressNotAssigned),
			"spec.addresses is not supported: the edge's Service decides its address", gen)
	case why != "" && gs.status.Conditions[1].Status == metav1.ConditionTrue:
		gs.status.Conditions[1] = condition(string(gatewayv1.GatewayConditionProgrammed), false, string(gatewayv1.GatewayReasonAddressNotAssigned), why, gen)
	}
}

// statusAddresses is what providers.kubernetes.status_address names, as
// Gateway status addresses; why says what is missing when it names a
// Service that has no address (yet), which leaves the Gateway not
// Programmed, as the spec asks of a Gateway without its address.
func (t *translator) statusAddresses() (addrs []gatewayv1.GatewayStatusAddress, why string) {
	a := t.cfg.StatusAddress
	ip, host := gatewayv1.IPAddressType, gatewayv1.HostnameAddressType
	switch {
	case a == nil:
		return nil, ""
	case a.IP != "":
		return []gatewayv1.GatewayStatusAddress{{Type: &ip, Value: a.IP}}, ""
	case a.Hostname != "":
		return []gatewayv1.GatewayStatusAddress{{Type: &host, Value: a.Hostname}}, ""
	}
	ns, name, _ := strings.Cut(a.Service, "/")
	svc := t.services[nn(ns, name)]
	if svc == nil {
		return nil, fmt.Sprintf("Service %s (providers.kubernetes.status_address) does not exist", a.Service)
	}
	add := func(typ *gatewayv1.AddressType, v string) {
		if v != "" && !slices.ContainsFunc(addrs, func(x gatewayv1.GatewayStatusAddress) bool { return x.Value == v }) {
			addrs = append(addrs, gatewayv1.GatewayStatusAddress{Type: typ, Value: v})
		}
	}
	switch svc.Spec.Type {
	case corev1.ServiceTypeLoadBalancer:
		for _, in := range svc.Status.LoadBalancer.Ingress {
			add(&ip, in.IP)
			add(&host, in.Hostname)
		}
	case corev1.ServiceTypeExternalName:
		add(&host, svc.Spec.ExternalName)
	default:
		for _, c := range svc.Spec.ClusterIPs {
			if c != corev1.ClusterIPNone {
				add(&ip, c)
			}
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Sprintf("Service %s (providers.kubernetes.status_address) has no address yet", a.Service)
	}
	return addrs, ""
}

// routeKinds returns the route kinds a listener accepts, with the
// ResolvedRefs condition saying which requested kinds it cannot.
func (t *translator) routeKinds(l gatewayv1.Listener, resolved metav1.Condition, gen int64) ([]gatewayv1.RouteGroupKind, metav1.Condition) {
	g := gatewayv1.Group(groupName)
	all := []gatewayv1.RouteGroupKind{{Group: &g, Kind: kindHTTPRoute}, {Group: &g, Kind: kindGRPCRoute}}
	if l.AllowedRoutes == nil || len(l.AllowedRoutes.Kinds) == 0 {
		return all, resolved
	}
	var kinds []gatewayv1.RouteGroupKind
	var bad []string
	for _, k := range l.AllowedRoutes.Kinds {
		grp := groupName
		if k.Group != nil {
			grp = string(*k.Group)
		}
		if grp == groupName && (k.Kind == kindHTTPRoute || k.Kind == kindGRPCRoute) {
			kinds = append(kinds, gatewayv1.RouteGroupKind{Group: &g, Kind: k.Kind})
			continue
		}
		bad = append(bad, grp+"/"+string(k.Kind))
	}
	if len(bad) > 0 {
		resolved = condition(string(gatewayv1.ListenerConditionResolvedRefs), false, string(gatewayv1.ListenerReasonInvalidRouteKinds),
			"route kinds not supported: "+strings.Join(bad, ", "), gen)
	}
	return kinds, resolved
}

// listenerTLS checks an HTTPS listener's certificates: a kubernetes.io/tls
// Secret, in the Gateway's namespace or granted by a ReferenceGrant.
func (t *translator) listenerTLS(g *gatewayv1.Gateway, l gatewayv1.Listener, gen int64) ([]types.NamespacedName, metav1.Condition, bool) {
	bad := func(reason gatewayv1.ListenerConditionReason, msg string) ([]types.NamespacedName, metav1.Condition, bool) {
		return nil, condition(string(gatewayv1.ListenerConditionResolvedRefs), false, string(reason), msg, gen), false
	}
	var certs []types.NamespacedName
	if l.TLS == nil || len(l.TLS.CertificateRefs) == 0 {
		return bad(gatewayv1.ListenerReasonInvalidCertificateRef, "an HTTPS listener needs tls.certificateRefs")
	}
	if l.TLS.Mode != nil && *l.TLS.Mode != gatewayv1.TLSModeTerminate {
		return bad(gatewayv1.ListenerReasonInvalidCertificateRef, "only tls.mode Terminate is supported")
	}
	for _, ref := range l.TLS.CertificateRefs {
		grp, kind := "", kindSecret
		if ref.Group != nil {
			grp = string(*ref.Group)
		}
		if ref.Kind != nil {
			kind = string(*ref.Kind)
		}
		if grp != "" || kind != kindSecret {
			return bad(gatewayv1.ListenerReasonInvalidCertificateRef, fmt.Sprintf("certificateRefs: %s/%s is not a Secret", grp, kind))
		}
		ns := g.Namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		if ns != g.Namespace && !t.granted(kindGateway, g.Namespace, "", kindSecret, ns, string(ref.Name)) {
			return bad(gatewayv1.ListenerReasonRefNotPermitted, fmt.Sprintf("Secret %s/%s is in another namespace and no ReferenceGrant there allows it", ns, ref.Name))
		}
		sec := t.secrets[nn(ns, string(ref.Name))]
		if sec == nil {
			return bad(gatewayv1.ListenerReasonInvalidCertificateRef, fmt.Sprintf("Secret %s/%s does not exist (or is not of type kubernetes.io/tls)", ns, ref.Name))
		}
		if sec.Type != corev1.SecretTypeTLS || len(sec.Data[corev1.TLSCertKey]) == 0 || len(sec.Data[corev1.TLSPrivateKeyKey]) == 0 {
			return bad(gatewayv1.ListenerReasonInvalidCertificateRef, fmt.Sprintf("Secret %s/%s is not a kubernetes.io/tls Secret with tls.crt and tls.key", ns, ref.Name))
		}
		if err := checkKeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]); err != nil {
			return bad(gatewayv1.ListenerReasonInvalidCertificateRef, fmt.Sprintf("Secret %s/%s: %v", ns, ref.Name, err))
		}
		certs = append(certs, nn(ns, string(ref.Name)))
	}
	return certs, metav1.Condition{}, true
}

// certUse is a Secret as the listeners with a hostname serve it (scoped)
// or as those without one do.
type certUse struct {
	secret types.NamespacedName
	scoped bool
}

// addCertificates puts the Secrets' pairs into the fragment in the order
// Gateways and listeners name them (the oldest Gateway first): once for
// the listeners without a hostname, served by the names the certificate
// carries, and once for those with one, served only for the names their
// hostnames match (InlineCertificate.Hosts), as the Gateway API means.
// Served by its own names, one Gateway's Secret naming another Gateway's
// host would win that host's handshakes.
//
// The pairs of a listener without a hostname on the default Gateway
// (defaultGateway) are marked Default: the edge serves the first of them
// to clients that send no server name, when its file has no certificate.
func (t *translator) addCertificates(secrets []types.NamespacedName, host string, dflt bool) {
	if t.certAt == nil {
		t.certAt = map[certUse]int{}
	}
	dflt = dflt && host == ""
	for _, k := range secrets {
		use := certUse{k, host != ""}
		if i, ok := t.certAt[use]; ok {
			c := &t.res.Fragment.Certificates[i]
			if use.scoped && !slices.Contains(c.Hosts, host) {
				c.Hosts = append(c.Hosts, host)
			}
			c.Default = c.Default || dflt
			continue
		}
		t.certAt[use] = len(t.res.Fragment.Certificates)
		sec := t.secrets[k]
		c := routes.InlineCertificate{Source: "Secret " + k.String(), CertPEM: sec.Data[corev1.TLSCertKey], KeyPEM: sec.Data[corev1.TLSPrivateKeyKey], Default: dflt}
		if use.scoped {
			c.Hosts = []string{host}
		}
		t.res.Fragment.Certificates = append(t.res.Fragment.Certificates, c)
	}
}

// defaultGateway reports whether g is the Gateway whose certificate is
// served to clients that send no server name: the first one the edge's
// providers.kubernetes.gateways names. An edge that serves every Gateway
// of its class has none: which Gateway is oldest, or first by name, is
// for whoever may create one to decide, and a tenant's Secret must not
// become what every client without SNI is shown.
func (t *translator) defaultGateway(g *gatewayv1.Gateway) bool {
	return len(t.cfg.Gateways) > 0 && t.cfg.Gateways[0] == g.Namespace+"/"+g.Name
}

// granted reports whether a ReferenceGrant in toNS lets fromKind objects of
// fromNS refer to the toKind object named name.
func (t *translator) granted(fromKind, fromNS, toGroup, toKind, toNS, name string) bool {
	for _, rg := range t.s.ReferenceGrants {
		if rg.Namespace != toNS {
			continue
		}
		from := slices.ContainsFunc(rg.Spec.From, func(f gatewayv1.ReferenceGrantFrom) bool {
			return string(f.Group) == groupName && string(f.Kind) == fromKind && string(f.Namespace) == fromNS
		})
		to := slices.ContainsFunc(rg.Spec.To, func(to gatewayv1.ReferenceGrantTo) bool {
			return string(to.Group) == toGroup && string(to.Kind) == toKind && (to.Name == nil || string(*to.Name) == name)
		})
		if from && to {
			return true
		}
	}
	return false
}

// allows reports whether listener l of g admits a route of kind in ns.
func (t *translator) allows(g *gatewayv1.Gateway, ls *listenerState, kind, ns string) bool {
	if !slices.ContainsFunc(ls.kinds, func(k gatewayv1.RouteGroupKind) bool { return string(k.Kind) == kind }) {
		return false
	}
	from := gatewayv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	if ar := ls.spec.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		if ar.Namespaces.From != nil {
			from = *ar.Namespaces.From
		}
		sel = ar.Namespaces.Selector
	}
	switch from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSame:
		return ns == g.Namespace
	case gatewayv1.NamespacesFromSelector:
		if sel == nil {
			return false
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return false
		}
		n := t.namespaces[ns]
		return n != nil && s.Matches(labels.Set(n.Labels))
	}
	return false
}

// finish writes the gateways' status, with the routes each listener has.
func (t *translator) finish() {
	for _, gs := range t.gwOrder {
		for _, ls := range gs.listeners {
			gs.status.Listeners = append(gs.status.Listeners, *ls.status)
		}
		t.res.Gateways[nn(gs.obj.Namespace, gs.obj.Name)] = gs.status
	}
}

// origins records the object each status of the Result was derived from
// (Result.Origins).
func (t *translator) origins() {
	r := &t.res
	r.Origins = make(map[ObjectKey]Origin, len(r.GatewayClasses)+len(r.Gateways)+len(r.HTTPRoutes)+
		len(r.GRPCRoutes)+len(r.Policies)+len(r.BackendTLSPolicies))
	for _, o := range t.s.GatewayClasses {
		if _, ok := r.GatewayClasses[o.Name]; ok {
			r.Origins[ObjectKey{Kind: originGatewayClass, Name: o.Name}] = originOf(o)
		}
	}
	addOrigins(r.Origins, originGateway, t.s.Gateways, r.Gateways)
	addOrigins(r.Origins, originHTTPRoute, t.s.HTTPRoutes, r.HTTPRoutes)
	addOrigins(r.Origins, originGRPCRoute, t.s.GRPCRoutes, r.GRPCRoutes)
	addOrigins(r.Origins, originPolicy, t.s.Policies, r.Policies)
	addOrigins(r.Origins, originBackendTLSPolicy, t.s.BackendTLSPolicies, r.BackendTLSPolicies)
}

// addOrigins records, for each of objs that has a status in statuses,
// the object it was translated from.
func addOrigins[T metav1.Object, S any](origins map[ObjectKey]Origin, kind string, objs []T, statuses map[types.NamespacedName]S) {
	for _, o := range objs {
		if _, ok := statuses[nn(o.GetNamespace(), o.GetName())]; ok {
			origins[ObjectKey{Kind: kind, Namespace: o.GetNamespace(), Name: o.GetName()}] = originOf(o)
		}
	}
}

// byAge orders objects as the Gateway API's tie-break does: oldest
// first, then by namespace/name.
func byAge[T any](list []T, meta func(T) metav1.Object) {
	slices.SortStableFunc(list, func(a, b T) int {
		ma, mb := meta(a), meta(b)
		ta, tb := ma.GetCreationTimestamp(), mb.GetCreationTimestamp()
		if !ta.Equal(&tb) {
			if ta.Before(&tb) {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(ma.GetNamespace(), mb.GetNamespace()); c != 0 {
			return c
		}
		return cmp.Compare(ma.GetName(), mb.GetName())
	})
}

// name builds a model name from parts: KubernetesPrefix, then the parts
// joined by '.'. Route, upstream and plugin names are at most 128
// characters, and Kubernetes names can be longer, so a long name keeps its
// beginning and gains a hash of the whole: still unique, still readable.
func name(parts ...string) string {
	s := routes.KubernetesPrefix + strings.Join(parts, ".")
	const limit = 128
	if len(s) <= limit {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	h := hex.EncodeToString(sum[:6])
	return s[:limit-len(h)-1] + "-" + h
}

// checkKeyPair reports whether a Secret's certificate and key parse and
// belong together.
func checkKeyPair(cert, key []byte) error {
	// The edge's own check, so a pair it would refuse is reported on the
	// listener rather than refusing the whole model.
	return edgetls.CheckPair(cert, key)
}

// endpointAddr joins an EndpointSlice address and port.
func endpointAddr(ip string, port int32) string {
	return net.JoinHostPort(ip, strconv.Itoa(int(port)))
}
