package kubernetes

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// BackendTLSPolicy: how the edge calls a Service that terminates TLS
// itself. A policy's targets are Services of its namespace (a sectionName
// is a port's name); the upstream of each backendRef to such a Service
// becomes scheme https with the policy's verification (routes.UpstreamTLS),
// and the CA bundles its ConfigMaps hold travel in the model as ca_pem,
// in memory, never on disk. A Service in the mesh is already called over
// mTLS; there a policy can only narrow which of its pods' identities are
// called (meshBackendTLS).

const (
	kindConfigMap = "ConfigMap"
	// caCertKey is the ConfigMap key that holds the CA bundle.
	caCertKey = "ca.crt"
)

// btlsTarget is one Service port a BackendTLSPolicy can target; section
// is the port's name, or "" for the whole Service.
type btlsTarget struct {
	ns, svc, section string
}

// btlsState is one BackendTLSPolicy as judged.
type btlsState struct {
	obj *gatewayv1.BackendTLSPolicy
	// tls is what the policy's Services' upstreams get, when usable.
	tls    *routes.UpstreamTLS
	usable bool
	// accepted and resolved are the policy's own conditions (its targets
	// may still be conflicted or missing, per ancestor).
	acceptedReason gatewayv1.PolicyConditionReason
	acceptedMsg    string
	resolvedReason gatewayv1.PolicyConditionReason
	resolvedMsg    string
	// lost are the targets another (older) policy holds.
	lost map[btlsTarget]bool
	// ancestors are the Gateways of ours whose routes call the policy's
	// Services, each with whether it reached them only through targets it
	// lost or that do not exist.
	ancestors []btlsAncestor
}

type btlsAncestor struct {
	gs       *gatewayState
	target   btlsTarget
	lost     bool
	notFound bool
}

// backendTLSPolicies judges every BackendTLSPolicy in scope and indexes
// the ones that hold a target, oldest first, so that backend() can apply
// them. It runs before the routes.
func (t *translator) backendTLSPolicies() {
	t.res.BackendTLSPolicies = map[types.NamespacedName]gatewayv1.PolicyStatus{}
	t.btlsByTarget = map[btlsTarget]*btlsState{}
	configMaps := map[types.NamespacedName]*corev1.ConfigMap{}
	for _, cm := range t.s.ConfigMaps {
		configMaps[nn(cm.Namespace, cm.Name)] = cm
	}
	list := slices.Clone(t.s.BackendTLSPolicies)
	byAge(list, func(p *gatewayv1.BackendTLSPolicy) metav1.Object { return p })
	for _, p := range list {
		if !t.inScope(p.Namespace) {
			continue
		}
		ps := t.judgeBackendTLS(p, configMaps)
		ps.lost = map[btlsTarget]bool{}
		for _, tr := range p.Spec.TargetRefs {
			if tr.Group != "" || tr.Kind != kindService {
				continue // only Services: the CRD's own rules make other kinds rare
			}
			k := btlsTarget{ns: p.Namespace, svc: string(tr.Name), section: string(ptrValue(tr.SectionName))}
			if _, taken := t.btlsByTarget[k]; taken {
				ps.lost[k] = true
				continue
			}
			t.btlsByTarget[k] = ps
		}
		t.btlsOrder = append(t.btlsOrder, ps)
	}
}

// judgeBackendTLS checks one policy's validation against what the edge
// supports and resolves its CA references.
func (t *translator) judgeBackendTLS(p *gatewayv1.BackendTLSPolicy, configMaps map[types.NamespacedName]*corev1.ConfigMap) *btlsState {
	ps := &btlsState{obj: p, acceptedReason: gatewayv1.PolicyReasonAccepted, resolvedReason: gatewayv1.BackendTLSPolicyReasonResolvedRefs}
	v := p.Spec.Validation
	invalid := func(format string, args ...any) *btlsState {
		ps.acceptedReason, ps.acceptedMsg = gatewayv1.PolicyReasonInvalid, fmt.Sprintf(format, args...)
		return ps
	}
	var bundle strings.Builder
	var bad []string
	for i, ref := range v.CACertificateRefs {
		field := fmt.Sprintf("spec.validation.caCertificateRefs[%d]", i)
		if ref.Group != "" || ref.Kind != kindConfigMap {
			if ps.resolvedReason == gatewayv1.BackendTLSPolicyReasonResolvedRefs {
				ps.resolvedReason = gatewayv1.BackendTLSPolicyReasonInvalidKind
			}
			bad = append(bad, fmt.Sprintf("%s: kind %s%s is not supported (only core ConfigMap)", field, groupPrefix(string(ref.Group)), ref.Kind))
			continue
		}
		why := ""
		cm := configMaps[nn(p.Namespace, string(ref.Name))]
		switch {
		case cm == nil:
			why = fmt.Sprintf("ConfigMap %s/%s does not exist", p.Namespace, ref.Name)
		case cm.Data[caCertKey] == "":
			why = fmt.Sprintf("ConfigMap %s/%s has no %s", p.Namespace, ref.Name, caCertKey)
		default:
			if _, err := routes.ParseCABundle([]byte(cm.Data[caCertKey])); err != nil {
				why = fmt.Sprintf("ConfigMap %s/%s: %s is not a CA bundle: %v", p.Namespace, ref.Name, caCertKey, err)
			}
		}
		if why != "" {
			if ps.resolvedReason == gatewayv1.BackendTLSPolicyReasonResolvedRefs {
				ps.resolvedReason = gatewayv1.BackendTLSPolicyReasonInvalidCACertificateRef
			}
			bad = append(bad, field+": "+why)
			continue
		}
		pem := cm.Data[caCertKey]
		bundle.WriteString(pem)
		if !strings.HasSuffix(pem, "\n") {
			bundle.WriteByte('\n')
		}
	}
	if len(bad) > 0 {
		ps.resolvedMsg = truncateMessage(strings.Join(bad, "; "))
		if bundle.Len() == 0 {
			ps.acceptedReason, ps.acceptedMsg = gatewayv1.BackendTLSPolicyReasonNoValidCACertificate, "no caCertificateRef is valid: "+ps.resolvedMsg
		}
		// Connections through an invalid reference must fail: the
		// policy's backends answer 503 until every reference resolves,
		// never with fewer roots than the author listed.
		return ps
	}
	if w := v.WellKnownCACertificates; w != nil && *w != "" && *w != gatewayv1.WellKnownCACertificatesSystem {
		return invalid("wellKnownCACertificates %q is not supported (only System)", *w)
	}
	if len(v.CACertificateRefs) == 0 && ptrValue(v.WellKnownCACertificates) == "" {
		return invalid("set caCertificateRefs or wellKnownCACertificates: System")
	}
	for k := range p.Spec.Options {
		return invalid("option %q is not supported: the edge defines no BackendTLSPolicy options", k)
	}
	// The schemas bound a hostname's length but not its labels; the
	// model would refuse a longer label, and every route with it.
	if !dnsLabels(string(v.Hostname)) {
		return invalid("hostname %q has a label longer than 63 characters", v.Hostname)
	}
	ut := &routes.UpstreamTLS{ServerName: string(v.Hostname), CAPEM: bundle.String()}
	for i, san := range v.SubjectAltNames {
		switch san.Type {
		case gatewayv1.HostnameSubjectAltNameType:
			if !dnsLabels(string(san.Hostname)) {
				return invalid("spec.validation.subjectAltNames[%d]: hostname %q has a label longer than 63 characters", i, san.Hostname)
			}
			ut.SubjectAltNames = append(ut.SubjectAltNames, routes.SubjectAltName{Hostname: strings.ToLower(string(san.Hostname))})
		case gatewayv1.URISubjectAltNameType:
			// The schema's pattern takes "spiffe://" (no authority, no
			// path) and escapes that do not decode ("https://%zz"); the
			// model, given one, refused every namespace's routes with it,
			// so a tenant's policy froze the whole cluster's changes.
			if !routes.AbsoluteURI(string(san.URI)) {
				return invalid("spec.validation.subjectAltNames[%d]: uri %q is not an absolute URI (scheme://authority/path, such as spiffe://example.org/ns/a/sa/b)", i, san.URI)
			}
			ut.SubjectAltNames = append(ut.SubjectAltNames, routes.SubjectAltName{URI: string(san.URI)})
		default:
			return invalid("spec.validation.subjectAltNames[%d]: type %q is not supported", i, san.Type)
		}
	}
	if why := t.meshPolicyProblem(p, ut); why != "" {
		return invalid("%s", why)
	}
	ps.tls, ps.usable = ut, true
	return ps
}

func groupPrefix(g string) string {
	if g == "" {
		return ""
	}
	return g + "/"
}

// meshPolicyProblem says why p cannot apply to the mesh Services it
// targets, or "". A mesh Service's pods are called through their
// sidecars, which present their ServiceAccounts' SPIFFE IDs and are
// verified against the mesh's trust bundle; a policy there may only name,
// as URI subjectAltNames, the identities among them that may be called.
func (t *translator) meshPolicyProblem(p *gatewayv1.BackendTLSPolicy, ut *routes.UpstreamTLS) string {
	for _, tr := range p.Spec.TargetRefs {
		svc := t.services[nn(p.Namespace, string(tr.Name))]
		if tr.Group != "" || tr.Kind != kindService || svc == nil || !isMeshService(svc) {
			continue
		}
		if len(ut.SubjectAltNames) == 0 {
			return fmt.Sprintf("Service %s is in the mesh (label %s: \"true\"): its pods' sidecars are verified by their SPIFFE IDs against the mesh trust bundle; list the identities that may answer as URI subjectAltNames (spiffe://TRUST_DOMAIN/ns/NS/sa/SA)", tr.Name, routes.MeshLabel)
		}
		for _, s := range ut.SubjectAltNames {
			if s.URI == "" || !strings.HasPrefix(s.URI, "spiffe://") {
				return fmt.Sprintf("Service %s is in the mesh: only URI subjectAltNames that are SPIFFE IDs apply (found %s)", tr.Name, s.Hostname+s.URI)
			}
		}
	}
	return ""
}

// backendTLSFor is the policy that holds a Service port: the one naming
// the port, else the one naming the whole Service.
func (t *translator) backendTLSFor(svc *corev1.Service, sp *corev1.ServicePort) *btlsState {
	if ps := t.btlsByTarget[btlsTarget{ns: svc.Namespace, svc: svc.Name, section: sp.Name}]; ps != nil && sp.Name != "" {
		return ps
	}
	return t.btlsByTarget[btlsTarget{ns: svc.Namespace, svc: svc.Name}]
}

// applyBackendTLS makes u, a Service port's upstream, call its endpoints
// over TLS as the port's policy says. A policy that cannot be used (an
// invalid CA reference, an unsupported field) leaves the upstream with no
// endpoint: 503, never a plaintext call nor a weaker check.
func (t *translator) applyBackendTLS(svc *corev1.Service, sp *corev1.ServicePort, u *routes.Upstream) {
	ps := t.backendTLSFor(svc, sp)
	if ps == nil {
		return
	}
	if !ps.usable {
		*u = routes.Upstream{}
		return
	}
	tls := *ps.tls
	tls.SubjectAltNames = slices.Clone(tls.SubjectAltNames)
	u.Scheme, u.TLS = "https", &tls
	if u.Protocol == "h2c" {
		// HTTP/2 (gRPC) over TLS is h2, negotiated by ALPN.
		u.Protocol = "h2"
	}
}

// meshBackendTLS narrows a mesh Service's split (one upstream per
// ServiceAccount) to the identities its policy lists; when none is left,
// or the policy cannot be used, the backend answers 503 (the plain name,
// with no endpoint, as meshBackend does for an empty Service).
func (t *translator) meshBackendTLS(svc *corev1.Service, sp *corev1.ServicePort, parts []string, split []routes.SplitTarget) []routes.SplitTarget {
	ps := t.backendTLSFor(svc, sp)
	if ps == nil {
		return split
	}
	var keep []routes.SplitTarget
	for _, st := range split {
		if ps.allowsMeshID(t.res.Fragment.Upstreams[st.Upstream].MeshIdentity) {
			keep = append(keep, st)
		}
	}
	if len(keep) == 0 {
		up := name(append(slices.Clone(parts), "denied")...)
		t.res.Fragment.Upstreams[up] = routes.Upstream{}
		return []routes.SplitTarget{{Upstream: up, Weight: 1}}
	}
	return keep
}

// allowsMeshID reports whether a policy on a mesh Service lets its pods
// of SPIFFE ID id be called: the policy is usable and lists id among its
// URI subjectAltNames (meshPolicyProblem refuses any other kind there).
func (ps *btlsState) allowsMeshID(id string) bool {
	if !ps.usable || id == "" {
		return false
	}
	return slices.ContainsFunc(ps.tls.SubjectAltNames, func(s routes.SubjectAltName) bool { return s.URI == id })
}

// outboundBackendTLS judges a snapshot's BackendTLSPolicies for a
// sidecar's outbound side with the edge's own judgement
// (backendTLSPolicies: conflicts, CA references, meshPolicyProblem), so a
// policy means the same whichever side calls the Service. The sidecar
// writes no status.
func outboundBackendTLS(namespaces []string, s *OutboundSnapshot, services []*corev1.Service) *translator {
	t := &translator{
		cfg:      routes.KubernetesProvider{Namespaces: namespaces},
		s:        &Snapshot{BackendTLSPolicies: s.BackendTLSPolicies, ConfigMaps: s.ConfigMaps},
		services: make(map[types.NamespacedName]*corev1.Service, len(services)),
	}
	for _, svc := range services {
		t.services[nn(svc.Namespace, svc.Name)] = svc
	}
	t.backendTLSPolicies()
	return t
}

// narrowOutbound keeps of a mesh Service's account groups those its
// BackendTLSPolicies let be called, as meshBackendTLS does on the edge.
// The outbound listener picks a Service by Host, never by port, so every
// policy that holds one of its ports (or the whole Service) applies, and
// an account must be listed by each: the stricter reading. denied names
// the policy that left nothing, or "".
func (t *translator) narrowOutbound(svc *corev1.Service, groups []accountGroup) (keep []accountGroup, denied string) {
	var pols []*btlsState
	add := func(ps *btlsState) {
		if ps != nil && !slices.Contains(pols, ps) {
			pols = append(pols, ps)
		}
	}
	add(t.btlsByTarget[btlsTarget{ns: svc.Namespace, svc: svc.Name}])
	for i := range svc.Spec.Ports {
		add(t.backendTLSFor(svc, &svc.Spec.Ports[i]))
	}
	if len(pols) == 0 {
		return groups, ""
	}
	for _, g := range groups {
		if !slices.ContainsFunc(pols, func(ps *btlsState) bool { return !ps.allowsMeshID(g.id) }) {
			keep = append(keep, g)
		}
	}
	if len(keep) == 0 {
		var names []string
		for _, ps := range pols {
			why := "lists none of its pods' identities"
			if !ps.usable {
				why = "cannot be used: " + cmp.Or(ps.acceptedMsg, ps.resolvedMsg)
			}
			names = append(names, fmt.Sprintf("BackendTLSPolicy %s/%s %s", ps.obj.Namespace, ps.obj.Name, why))
		}
		return nil, strings.Join(names, "; ")
	}
	return keep, ""
}

// backendTLSStatuses gives each policy one ancestor per Gateway of ours
// whose attached routes call one of its Services (backendRefs and
// RequestMirror), with Accepted and ResolvedRefs. A policy no route of
// ours reaches has no entry: another implementation's to answer for.
func (t *translator) backendTLSStatuses() {
	if len(t.btlsOrder) == 0 {
		return
	}
	byService := map[types.NamespacedName][]*btlsState{}
	for _, ps := range t.btlsOrder {
		for _, tr := range ps.obj.Spec.TargetRefs {
			k := nn(ps.obj.Namespace, string(tr.Name))
			if tr.Group == "" && tr.Kind == kindService && !slices.Contains(byService[k], ps) {
				byService[k] = append(byService[k], ps)
			}
		}
	}
	reach := func(kind string, obj metav1.Object, refs []gatewayv1.BackendObjectReference) {
		gws := t.routeGateways[routeKey(kind, obj)]
		if len(gws) == 0 {
			return
		}
		for _, ref := range refs {
			if ptrValue(ref.Group) != "" || (ref.Kind != nil && *ref.Kind != kindService) {
				continue
			}
			ns := obj.GetNamespace()
			if ref.Namespace != nil {
				ns = string(*ref.Namespace)
			}
			svc := t.services[nn(ns, string(ref.Name))]
			for _, ps := range byService[nn(ns, string(ref.Name))] {
				// Conflicted where it holds none of its targets on this
				// Service; a Service-wide policy that a port's policy
				// overrides for one port is not in conflict.
				a := btlsAncestor{target: btlsTarget{ns: ns, svc: string(ref.Name)}, lost: true, notFound: svc == nil}
				for _, tr := range ps.obj.Spec.TargetRefs {
					k := btlsTarget{ns: ns, svc: string(tr.Name), section: string(ptrValue(tr.SectionName))}
					if tr.Group != "" || tr.Kind != kindService || k.svc != a.target.svc {
						continue
					}
					if !ps.lost[k] {
						a.target, a.lost = k, false
						break
					}
					a.target = k
				}
				for _, gs := range gws {
					a.gs = gs
					ps.addAncestor(a)
				}
			}
		}
	}
	for _, r := range t.s.HTTPRoutes {
		var refs []gatewayv1.BackendObjectReference
		for _, rule := range r.Spec.Rules {
			for _, b := range rule.BackendRefs {
				refs = append(refs, b.BackendObjectReference)
			}
			refs = appendMirrorRefs(refs, rule.Filters, func(f gatewayv1.HTTPRouteFilter) *gatewayv1.HTTPRequestMirrorFilter { return f.RequestMirror })
		}
		reach(kindHTTPRoute, r, refs)
	}
	for _, r := range t.s.GRPCRoutes {
		var refs []gatewayv1.BackendObjectReference
		for _, rule := range r.Spec.Rules {
			for _, b := range rule.BackendRefs {
				refs = append(refs, b.BackendObjectReference)
			}
			refs = appendMirrorRefs(refs, rule.Filters, func(f gatewayv1.GRPCRouteFilter) *gatewayv1.HTTPRequestMirrorFilter { return f.RequestMirror })
		}
		reach(kindGRPCRoute, r, refs)
	}
	for _, ps := range t.btlsOrder {
		if len(ps.ancestors) == 0 {
			if t.staleAncestors(ps.obj.Namespace, ps.obj.Status.Ancestors) {
				t.res.BackendTLSPolicies[nn(ps.obj.Namespace, ps.obj.Name)] = gatewayv1.PolicyStatus{}
			}
			continue
		}
		gen := ps.obj.Generation
		st := gatewayv1.PolicyStatus{Ancestors: []gatewayv1.PolicyAncestorStatus{}}
		for _, a := range ps.ancestors {
			if len(st.Ancestors) == 16 {
				break // the Gateway API's PolicyStatus holds at most 16
			}
			reason, msg := ps.acceptedReason, ps.acceptedMsg
			switch {
			case a.notFound:
				reason, msg = gatewayv1.PolicyReasonTargetNotFound, fmt.Sprintf("Service %s/%s does not exist", a.target.ns, a.target.svc)
			case a.lost:
				holder := t.btlsByTarget[a.target]
				reason, msg = gatewayv1.PolicyReasonConflicted, fmt.Sprintf("BackendTLSPolicy %s/%s is older (or first by name) and holds Service %s%s", holder.obj.Namespace, holder.obj.Name, a.target.svc, sectionSuffix(a.target.section))
			}
			st.Ancestors = append(st.Ancestors, gatewayv1.PolicyAncestorStatus{
				AncestorRef:    gatewayParentRef(a.gs),
				ControllerName: routes.KubernetesControllerName,
				Conditions: []metav1.Condition{
					condition(string(gatewayv1.PolicyConditionAccepted), reason == gatewayv1.PolicyReasonAccepted, string(reason), truncateMessage(msg), gen),
					condition(string(gatewayv1.BackendTLSPolicyConditionResolvedRefs), ps.resolvedReason == gatewayv1.BackendTLSPolicyReasonResolvedRefs, string(ps.resolvedReason), ps.resolvedMsg, gen),
				},
			})
		}
		t.res.BackendTLSPolicies[nn(ps.obj.Namespace, ps.obj.Name)] = st
	}
}

// addAncestor records a Gateway the policy reaches; reached through a
// target it holds, an ancestor is not conflicted whatever else reaches it.
func (ps *btlsState) addAncestor(a btlsAncestor) {
	for i := range ps.ancestors {
		if ps.ancestors[i].gs == a.gs {
			if ps.ancestors[i].lost && !a.lost {
				ps.ancestors[i] = a
			}
			return
		}
	}
	ps.ancestors = append(ps.ancestors, a)
}

// appendMirrorRefs adds the backends that a rule's RequestMirror filters
// copy requests to: a mirror calls the Service too, so its policy applies.
func appendMirrorRefs[F any](refs []gatewayv1.BackendObjectReference, filters []F, mirror func(F) *gatewayv1.HTTPRequestMirrorFilter) []gatewayv1.BackendObjectReference {
	for _, f := range filters {
		if m := mirror(f); m != nil {
			refs = append(refs, m.BackendRef)
		}
	}
	return refs
}
