package kubernetes

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
)

func btlsPolicy(ns, name string, age int, svc, section, host string, cas ...string) *gatewayv1.BackendTLSPolicy {
	p := &gatewayv1.BackendTLSPolicy{ObjectMeta: objMeta(ns, name, age)}
	tr := gatewayv1.LocalPolicyTargetReferenceWithSectionName{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Kind: kindService, Name: gatewayv1.ObjectName(svc)}}
	if section != "" {
		tr.SectionName = ptr(gatewayv1.SectionName(section))
	}
	p.Spec.TargetRefs = []gatewayv1.LocalPolicyTargetReferenceWithSectionName{tr}
	p.Spec.Validation.Hostname = gatewayv1.PreciseHostname(host)
	for _, c := range cas {
		p.Spec.Validation.CACertificateRefs = append(p.Spec.Validation.CACertificateRefs, gatewayv1.LocalObjectReference{Kind: kindConfigMap, Name: gatewayv1.ObjectName(c)})
	}
	return p
}

func caMap(ns, name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: objMeta(ns, name, 0), Data: data}
}

// btlsView is the upstream of the route to web, and each policy's
// conditions at its first ancestor: "Accepted/Reason ResolvedRefs/Reason".
func btlsView(t *testing.T, res Result) (routes.Upstream, map[string]string) {
	t.Helper()
	m := mergeable(t, res.Fragment)
	var up routes.Upstream
	for _, r := range m.Routes {
		if strings.HasPrefix(r.Name, routes.KubernetesPrefix+"apps.r.") {
			up = m.Upstreams[r.Upstream]
		}
	}
	conds := map[string]string{}
	for k, st := range res.BackendTLSPolicies {
		if len(st.Ancestors) == 0 {
			continue
		}
		a := st.Ancestors[0]
		if a.AncestorRef.Name != "gw" {
			t.Fatalf("%s: ancestor %v, want Gateway gw", k, a.AncestorRef)
		}
		var parts []string
		for _, c := range a.Conditions {
			if c.ObservedGeneration != 3 {
				t.Fatalf("%s: condition %s observedGeneration %d", k, c.Type, c.ObservedGeneration)
			}
			parts = append(parts, c.Type+"/"+string(c.Status)+"/"+c.Reason)
		}
		conds[k.Name] = strings.Join(parts, " ")
	}
	return up, conds
}

func TestTranslateBackendTLSPolicy(t *testing.T) {
	ca := testutil.NewCA(t)
	good := map[string]string{caCertKey: string(ca.PEM())}
	const ok = "Accepted/True/Accepted ResolvedRefs/True/ResolvedRefs"
	webTLS := func(p ...corev1.ServicePort) *corev1.Service {
		if len(p) == 0 {
			p = []corev1.ServicePort{{Name: "https", Port: 443}}
		}
		return svc("apps", "web", p...)
	}
	tests := []struct {
		name     string
		svc      *corev1.Service
		policies []*gatewayv1.BackendTLSPolicy
		cms      []*corev1.ConfigMap
		// wantTLS: the upstream's tls (server name and SAN count), or ""
		// for plain HTTP, or "503" for an upstream with no endpoint.
		wantTLS   string
		wantConds map[string]string
	}{
		{name: "no policy: plain HTTP", wantTLS: ""},
		{name: "whole Service, ConfigMap CA", policies: []*gatewayv1.BackendTLSPolicy{btlsPolicy("apps", "p", 1, "web", "", "web.example.com", "ca")},
			cms: []*corev1.ConfigMap{caMap("apps", "ca", good)}, wantTLS: "web.example.com/0", wantConds: map[string]string{"p": ok}},
		{name: "section is the port's name", policies: []*gatewayv1.BackendTLSPolicy{btlsPolicy("apps", "p", 1, "web", "https", "web.example.com", "ca")},
			cms: []*corev1.ConfigMap{caMap("apps", "ca", good)}, wantTLS: "web.example.com/0", wantConds: map[string]string{"p": ok}},
		{name: "section of another port: not this backend's", policies: []*gatewayv1.BackendTLSPolicy{btlsPolicy("apps", "p", 1, "web", "admin", "web.example.com", "ca")},
			svc: webTLS(corev1.ServicePort{Name: "https", Port: 443}, corev1.ServicePort{Name: "admin", Port: 9443}),
			cms: []*corev1.ConfigMap{caMap("apps", "ca", good)}, wantTLS: "", wantConds: map[string]string{"p": ok}},
		{name: "a port's policy wins over the Service's", policies: []*gatewayv1.BackendTLSPolicy{
			btlsPolicy("apps", "whole", 1, "web", "", "whole.example.com", "ca"), btlsPolicy("apps", "port", 2, "web", "https", "port.example.com", "ca")},
			cms: []*corev1.ConfigMap{caMap("apps", "ca", good)}, wantTLS: "port.example.com/0", wantConds: map[string]string{"whole": ok, "port": ok}},
		{name: "two policies on one target: the older wins", policies: []*gatewayv1.BackendTLSPolicy{
			btlsPolicy("apps", "newer", 2, "web", "", "newer.example.com", "ca"), btlsPolicy("apps", "older", 1, "web", "", "older.example.com", "ca")},
			cms: []*corev1.ConfigMap{caMap("apps", "ca", good)}, wantTLS: "older.example.com/0",
			wantConds: map[string]string{"older": ok, "newer": "Accepted/False/Conflicted ResolvedRefs/True/ResolvedRefs"}},
		{name: "same age: first by name wins", policies: []*gatewayv1.BackendTLSPolicy{
			btlsPolicy("apps", "b", 1, "web", "https", "b.example.com", "ca"), btlsPolicy("apps", "a", 1, "web", "https", "a.example.com", "ca")},
			cms: []*corev1.ConfigMap{caMap("apps", "ca", good)}, wantTLS: "a.example.com/0",
			wantConds: map[string]string{"a": ok, "b": "Accepted/False/Conflicted ResolvedRefs/True/ResolvedRefs"}},
		{name: "missing ConfigMap: 503, NoValidCACertificate", policies: []*gatewayv1.BackendTLSPolicy{btlsPolicy("apps", "p", 1, "web", "", "web.example.com", "gone")},
			wantTLS: "503", wantConds: map[string]string{"p": "Accepted/False/NoValidCACertificate ResolvedRefs/False/InvalidCACertificateRef"}},
		{name: "ConfigMap without ca.crt", policies: []*gatewayv1.BackendTLSPolicy{btlsPolicy("apps", "p", 1, "web", "", "web.example.com", "ca")},
			cms:     []*corev1.ConfigMap{caMap("apps", "ca", map[string]string{"tls.crt": string(ca.PEM())})},
			wantTLS: "503", wantConds: map[string]string{"p": "Accepted/False/NoValidCACertificate ResolvedRefs/False/InvalidCACertificateRef"}},
		{name: "ConfigMap with garbage PEM", policies: []*gatewayv1.BackendTLSPolicy{btlsPolicy("apps", "p", 1, "web", "", "web.example.com", "ca")},
			cms:     []*corev1.ConfigMap{caMap("apps", "ca", map[string]string{caCertKey: "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"})},
			wantTLS: "503", wantConds: map[string]string{"p": "Accepted/False/NoValidCACertificate ResolvedRefs/False/InvalidCACertificateRef"}},
		{name: "one good, one bad reference: still refused", policies: []*gatewayv1.BackendTLSPolicy{btlsPolicy("apps", "p", 1, "web", "", "web.example.com", "ca", "gone")},
			cms: []*corev1.ConfigMap{caMap("apps", "ca", good)}, wantTLS: "503", wantConds: map[string]string{"p": "Accepted/True/Accepted ResolvedRefs/False/InvalidCACertificateRef"}},
		{name: "a Secret is not a supported kind", policies: func() []*gatewayv1.BackendTLSPolicy {
			p := btlsPolicy("apps", "p", 1, "web", "", "web.example.com")
			p.Spec.Validation.CACertificateRefs = []gatewayv1.LocalObjectReference{{Kind: "Secret", Name: "ca"}}
			return []*gatewayv1.BackendTLSPolicy{p}
		}(), wantTLS: "503", wantConds: map[string]string{"p": "Accepted/False/NoValidCACertificate ResolvedRefs/False/InvalidKind"}},
		{name: "system roots and SANs", policies: func() []*gatewayv1.BackendTLSPolicy {
			p := btlsPolicy("apps", "p", 1, "web", "", "web.example.com")
			p.Spec.Validation.WellKnownCACertificates = ptr(gatewayv1.WellKnownCACertificatesSystem)
			p.Spec.Validation.SubjectAltNames = []gatewayv1.SubjectAltName{{Type: gatewayv1.HostnameSubjectAltNameType, Hostname: "web.internal"}, {Type: gatewayv1.URISubjectAltNameType, URI: "spiffe://example.org/web"}}
			return []*gatewayv1.BackendTLSPolicy{p}
		}(), wantTLS: "web.example.com/2", wantConds: map[string]string{"p": ok}},
		// The schema bounds a hostname's length, not its labels'; the
		// routes model, given one, refused every namespace's routes.
		{name: "a hostname label over 63 characters", policies: []*gatewayv1.BackendTLSPolicy{btlsPolicy("apps", "p", 1, "web", "", strings.Repeat("a", 64)+".example.com", "ca")},
			cms: []*corev1.ConfigMap{caMap("apps", "ca", good)}, wantTLS: "503", wantConds: map[string]string{"p": "Accepted/False/Invalid ResolvedRefs/True/ResolvedRefs"}},
		{name: "a subjectAltName label over 63 characters", policies: func() []*gatewayv1.BackendTLSPolicy {
			p := btlsPolicy("apps", "p", 1, "web", "", "web.example.com", "ca")
			p.Spec.Validation.SubjectAltNames = []gatewayv1.SubjectAltName{{Type: gatewayv1.HostnameSubjectAltNameType, Hostname: gatewayv1.Hostname(strings.Repeat("a", 64) + ".internal")}}
			return []*gatewayv1.BackendTLSPolicy{p}
		}(), cms: []*corev1.ConfigMap{caMap("apps", "ca", good)}, wantTLS: "503", wantConds: map[string]string{"p": "Accepted/False/Invalid ResolvedRefs/True/ResolvedRefs"}},
		// The schema's pattern takes a scheme and "//" with nothing after
		// it; the model, given one, refused every namespace's routes.
		{name: "a URI subjectAltName with nothing after its scheme", policies: func() []*gatewayv1.BackendTLSPolicy {
			p := btlsPolicy("apps", "p", 1, "web", "", "web.example.com", "ca")
			p.Spec.Validation.SubjectAltNames = []gatewayv1.SubjectAltName{{Type: gatewayv1.URISubjectAltNameType, URI: "spiffe://"}}
			return []*gatewayv1.BackendTLSPolicy{p}
		}(), cms: []*corev1.ConfigMap{caMap("apps", "ca", good)}, wantTLS: "503", wantConds: map[string]string{"p": "Accepted/False/Invalid ResolvedRefs/True/ResolvedRefs"}},
		{name: "a URI subjectAltName whose escape does not decode", policies: func() []*gatewayv1.BackendTLSPolicy {
			p := btlsPolicy("apps", "p", 1, "web", "", "web.example.com", "ca")
			p.Spec.Validation.SubjectAltNames = []gatewayv1.SubjectAltName{{Type: gatewayv1.URISubjectAltNameType, URI: "https://%zz/web"}}
			return []*gatewayv1.BackendTLSPolicy{p}
		}(), cms: []*corev1.ConfigMap{caMap("apps", "ca", good)}, wantTLS: "503", wantConds: map[string]string{"p": "Accepted/False/Invalid ResolvedRefs/True/ResolvedRefs"}},
		{name: "an option the edge does not define", policies: func() []*gatewayv1.BackendTLSPolicy {
			p := btlsPolicy("apps", "p", 1, "web", "", "web.example.com", "ca")
			p.Spec.Options = map[gatewayv1.AnnotationKey]gatewayv1.AnnotationValue{"example.com/min-tls": "1.3"}
			return []*gatewayv1.BackendTLSPolicy{p}
		}(), cms: []*corev1.ConfigMap{caMap("apps", "ca", good)}, wantTLS: "503", wantConds: map[string]string{"p": "Accepted/False/Invalid ResolvedRefs/True/ResolvedRefs"}},
		{name: "policy on a missing Service that the route names", svc: svc("apps", "other"),
			policies: []*gatewayv1.BackendTLSPolicy{btlsPolicy("apps", "p", 1, "web", "", "web.example.com", "ca")}, cms: []*corev1.ConfigMap{caMap("apps", "ca", good)},
			wantTLS: "none", wantConds: map[string]string{"p": "Accepted/False/TargetNotFound ResolvedRefs/True/ResolvedRefs"}},
		{name: "policy on a Service no route of ours calls: no status", policies: []*gatewayv1.BackendTLSPolicy{btlsPolicy("apps", "p", 1, "elsewhere", "", "web.example.com", "ca")},
			cms: []*corev1.ConfigMap{caMap("apps", "ca", good)}, wantTLS: "", wantConds: map[string]string{}},
		{name: "another namespace's ConfigMap is not read", policies: []*gatewayv1.BackendTLSPolicy{btlsPolicy("apps", "p", 1, "web", "", "web.example.com", "ca")},
			cms: []*corev1.ConfigMap{caMap("other", "ca", good)}, wantTLS: "503", wantConds: map[string]string{"p": "Accepted/False/NoValidCACertificate ResolvedRefs/False/InvalidCACertificateRef"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := world()
			s.Services = []*corev1.Service{webTLS()}
			if tt.svc != nil {
				s.Services = []*corev1.Service{tt.svc}
			}
			s.EndpointSlices = append(s.EndpointSlices, slice("apps", "web", "web-2", "https", 8443, ready("10.244.0.3")))
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 443))})}
			s.BackendTLSPolicies, s.ConfigMaps = tt.policies, tt.cms
			res := Translate(routes.KubernetesProvider{}, s)
			up, conds := btlsView(t, res)
			got := ""
			switch {
			case tt.wantTLS == "none":
				got = "none" // the backend is not resolved at all
				if up.Scheme == "https" || len(up.Endpoints) > 0 {
					t.Fatalf("upstream %+v", up)
				}
			case up.TLS != nil:
				if up.Scheme != "https" || len(up.Endpoints) == 0 {
					t.Fatalf("upstream %+v", up)
				}
				got = up.TLS.ServerName + "/" + itoa(len(up.TLS.SubjectAltNames))
			case len(up.Endpoints) == 0:
				got = "503"
			}
			if got != tt.wantTLS {
				t.Fatalf("upstream TLS %q, want %q (%+v)", got, tt.wantTLS, up)
			}
			if tt.wantConds == nil {
				tt.wantConds = map[string]string{}
			}
			for k, v := range tt.wantConds {
				if conds[k] != v {
					t.Errorf("policy %s: %q, want %q", k, conds[k], v)
				}
			}
			for k := range conds {
				if _, ok := tt.wantConds[k]; !ok {
					t.Errorf("policy %s has a status: %q", k, conds[k])
				}
			}
		})
	}
}

// A mesh Service's policy narrows which of its pods' identities are
// called; anything but SPIFFE IDs is refused.
func TestTranslateBackendTLSPolicyMesh(t *testing.T) {
	yes := ptr(true)
	ep := func(ip, pod string) meshEP { return meshEP{ip: ip, pod: pod, ready: yes} }
	snap := func(p *gatewayv1.BackendTLSPolicy) *Snapshot {
		s := meshWorld([]*corev1.Pod{meshPod("apps", "pay-a", "pay"), meshPod("apps", "pay-b", "pay-v2")},
			meshSlice("apps", "pay", "pay-1", ep("10.1.0.1", "pay-a"), ep("10.1.0.2", "pay-b")))
		s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("pay", 80))})}
		s.BackendTLSPolicies = []*gatewayv1.BackendTLSPolicy{p}
		s.ConfigMaps = []*corev1.ConfigMap{caMap("apps", "ca", map[string]string{caCertKey: string(testutil.NewCA(t).PEM())})}
		return s
	}
	withSANs := func(sans ...gatewayv1.SubjectAltName) *gatewayv1.BackendTLSPolicy {
		p := btlsPolicy("apps", "p", 1, "pay", "", "pay.apps.svc", "ca")
		p.Spec.Validation.SubjectAltNames = sans
		return p
	}
	uri := func(u string) gatewayv1.SubjectAltName {
		return gatewayv1.SubjectAltName{Type: gatewayv1.URISubjectAltNameType, URI: gatewayv1.AbsoluteURI(u)}
	}
	for _, tt := range []struct {
		name   string
		policy *gatewayv1.BackendTLSPolicy
		want   []string
		reason string
	}{
		{"one account of two", withSANs(uri(id("apps", "pay-v2"))), []string{"k8s.apps.pay.80.sa.pay-v2 " + id("apps", "pay-v2") + " 10.1.0.2:15443"}, "Accepted"},
		{"both accounts", withSANs(uri(id("apps", "pay")), uri(id("apps", "pay-v2"))), []string{
			"k8s.apps.pay.80.sa.pay " + id("apps", "pay") + " 10.1.0.1:15443", "k8s.apps.pay.80.sa.pay-v2 " + id("apps", "pay-v2") + " 10.1.0.2:15443"}, "Accepted"},
		{"an identity no pod has: 503", withSANs(uri(id("apps", "admin"))), []string{"k8s.apps.pay.80.denied"}, "Accepted"},
		{"no SANs: refused, 503", withSANs(), []string{"k8s.apps.pay.80.denied"}, "Invalid"},
		{"a hostname SAN: refused, 503", withSANs(gatewayv1.SubjectAltName{Type: gatewayv1.HostnameSubjectAltNameType, Hostname: "pay.apps.svc"}), []string{"k8s.apps.pay.80.denied"}, "Invalid"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := TranslateWith(routes.KubernetesProvider{}, snap(tt.policy), TranslateOptions{MeshTrustDomain: testTD})
			f, err := routes.Parse("routes.yaml", []byte(meshFile))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Merge(res.Fragment); err != nil {
				t.Fatalf("refused by the model: %v", err)
			}
			if got := upstreamView(res.Fragment); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("upstreams:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			st := res.BackendTLSPolicies[types.NamespacedName{Namespace: "apps", Name: "p"}]
			if len(st.Ancestors) != 1 || st.Ancestors[0].Conditions[0].Reason != tt.reason {
				t.Fatalf("status %+v, want Accepted reason %s", st, tt.reason)
			}
		})
	}
}

// TestTranslateOutboundBackendTLSPolicy: a sidecar's outbound side reads a
// BackendTLSPolicy on a mesh Service as the edge does
// (TestTranslateBackendTLSPolicyMesh): it narrows the accounts called,
// and a policy that lists none of them, or cannot be used, leaves the
// Service with nothing to call (503). Policies on any of the Service's
// ports apply, since the outbound listener never sees the port.
func TestTranslateOutboundBackendTLSPolicy(t *testing.T) {
	yes := ptr(true)
	ep := func(ip, pod string) meshEP { return meshEP{ip: ip, pod: pod, ready: yes} }
	uri := func(u string) gatewayv1.SubjectAltName {
		return gatewayv1.SubjectAltName{Type: gatewayv1.URISubjectAltNameType, URI: gatewayv1.AbsoluteURI(u)}
	}
	withSANs := func(name, section string, age int, sans ...gatewayv1.SubjectAltName) *gatewayv1.BackendTLSPolicy {
		p := btlsPolicy("apps", name, age, "pay", section, "pay.apps.svc", "ca")
		p.Spec.Validation.SubjectAltNames = sans
		return p
	}
	pay := "pay " + id("apps", "pay") + " 10.1.0.1:15443"
	v2 := "pay-v2 " + id("apps", "pay-v2") + " 10.1.0.2:15443"
	for _, tt := range []struct {
		name     string
		policies []*gatewayv1.BackendTLSPolicy
		noCA     bool
		want     []string // "account identity endpoints" of the route to pay.apps
		leftOut  string
	}{
		{name: "no policy: both accounts", want: []string{pay, v2}},
		{name: "one account of two", policies: []*gatewayv1.BackendTLSPolicy{withSANs("p", "", 1, uri(id("apps", "pay-v2")))}, want: []string{v2}},
		{name: "both accounts", policies: []*gatewayv1.BackendTLSPolicy{withSANs("p", "", 1, uri(id("apps", "pay")), uri(id("apps", "pay-v2")))}, want: []string{pay, v2}},
		{name: "an identity no pod has: 503", policies: []*gatewayv1.BackendTLSPolicy{withSANs("p", "", 1, uri(id("apps", "admin")))}, want: []string{""}, leftOut: "lists none of its pods' identities"},
		{name: "no SANs: refused, 503", policies: []*gatewayv1.BackendTLSPolicy{withSANs("p", "", 1)}, want: []string{""}, leftOut: "cannot be used"},
		{name: "a hostname SAN: refused, 503", policies: []*gatewayv1.BackendTLSPolicy{withSANs("p", "", 1, gatewayv1.SubjectAltName{Type: gatewayv1.HostnameSubjectAltNameType, Hostname: "pay.apps.svc"})}, want: []string{""}, leftOut: "cannot be used"},
		{name: "a CA reference that does not resolve: 503", noCA: true, policies: []*gatewayv1.BackendTLSPolicy{withSANs("p", "", 1, uri(id("apps", "pay")))}, want: []string{""}, leftOut: "cannot be used"},
		{name: "a port's policy applies to the whole Service", policies: []*gatewayv1.BackendTLSPolicy{withSANs("p", "http", 1, uri(id("apps", "pay")))}, want: []string{pay}},
		{name: "policies on two ports: an account must be in both", policies: []*gatewayv1.BackendTLSPolicy{
			withSANs("p", "http", 1, uri(id("apps", "pay")), uri(id("apps", "pay-v2"))), withSANs("q", "admin", 2, uri(id("apps", "pay-v2")))}, want: []string{v2}},
		{name: "the older of two conflicting policies wins", policies: []*gatewayv1.BackendTLSPolicy{
			withSANs("new", "", 2, uri(id("apps", "pay"))), withSANs("old", "", 1, uri(id("apps", "pay-v2")))}, want: []string{v2}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			svc := meshSvc("apps", "pay")
			svc.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80}, {Name: "admin", Port: 81}}
			s := &OutboundSnapshot{
				Services:           []*corev1.Service{svc},
				EndpointSlices:     []*discoveryv1.EndpointSlice{meshSlice("apps", "pay", "pay-1", ep("10.1.0.1", "pay-a"), ep("10.1.0.2", "pay-b"))},
				Pods:               []*corev1.Pod{meshPod("apps", "pay-a", "pay"), meshPod("apps", "pay-b", "pay-v2")},
				BackendTLSPolicies: tt.policies,
			}
			if !tt.noCA {
				s.ConfigMaps = []*corev1.ConfigMap{caMap("apps", "ca", map[string]string{caCertKey: string(testutil.NewCA(t).PEM())})}
			}
			res := TranslateOutbound(routes.OutboundKubernetes{}, s, OutboundOptions{TrustDomain: testTD})
			var got []string
			for _, r := range res.Fragment.Routes {
				if r.Match.Host != "pay.apps" {
					continue
				}
				targets := []string{r.Upstream}
				if len(r.Split) > 0 {
					targets = nil
					for _, sp := range r.Split {
						targets = append(targets, sp.Upstream)
					}
				}
				for _, up := range targets {
					u := res.Fragment.Upstreams[up]
					v := strings.TrimSpace(strings.TrimPrefix(up, "k8s.apps.pay.") + " " + u.MeshIdentity + " " + strings.Join(u.Endpoints, ","))
					if len(u.Endpoints) == 0 {
						v = "" // nothing to call: 503
					}
					got = append(got, v)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("targets:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			var left []string
			for _, l := range res.LeftOut {
				left = append(left, l.String())
			}
			if all := strings.Join(left, "\n"); (tt.leftOut == "") != (all == "") || !strings.Contains(all, tt.leftOut) {
				t.Fatalf("left out %q, want %q", all, tt.leftOut)
			}
		})
	}
}

// TestMirrorToMeshServiceOfSeveralAccounts: a RequestMirror is one
// upstream with one mesh identity, so a mirror to a mesh Service whose
// pods run under two ServiceAccounts is refused (the rule is left out);
// a BackendTLSPolicy that narrows the Service to one account makes it one
// upstream, and the mirror is taken, held to that account's ID.
func TestMirrorToMeshServiceOfSeveralAccounts(t *testing.T) {
	yes := ptr(true)
	ep := func(ip, pod string) meshEP { return meshEP{ip: ip, pod: pod, ready: yes} }
	for _, tt := range []struct {
		name   string
		policy []string // the SPIFFE IDs a BackendTLSPolicy lists; nil: none
		want   string   // the mirror's upstream and identity; "": refused
	}{
		{name: "two accounts, no policy: refused"},
		{name: "a policy listing both: still two, refused", policy: []string{id("apps", "pay"), id("apps", "pay-v2")}},
		{name: "a policy narrowing to one account: mirrored", policy: []string{id("apps", "pay-v2")}, want: "k8s.apps.pay.80.sa.pay-v2 " + id("apps", "pay-v2") + " 10.1.0.2:15443"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := meshWorld([]*corev1.Pod{meshPod("apps", "pay-a", "pay"), meshPod("apps", "pay-b", "pay-v2")},
				meshSlice("apps", "pay", "pay-1", ep("10.1.0.1", "pay-a"), ep("10.1.0.2", "pay-b")))
			r := rule(nil, backend("web", 80))
			r.Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestMirror, RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{
				BackendRef: gatewayv1.BackendObjectReference{Name: "pay", Port: ptr(gatewayv1.PortNumber(80))}}}}
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{r})}
			if tt.policy != nil {
				p := btlsPolicy("apps", "p", 1, "pay", "", "pay.apps.svc")
				p.Spec.Validation.WellKnownCACertificates = ptr(gatewayv1.WellKnownCACertificatesSystem)
				for _, u := range tt.policy {
					p.Spec.Validation.SubjectAltNames = append(p.Spec.Validation.SubjectAltNames, gatewayv1.SubjectAltName{Type: gatewayv1.URISubjectAltNameType, URI: gatewayv1.AbsoluteURI(u)})
				}
				s.BackendTLSPolicies = []*gatewayv1.BackendTLSPolicy{p}
			}
			res := TranslateWith(routes.KubernetesProvider{}, s, TranslateOptions{MeshTrustDomain: testTD})
			got := ""
			for _, u := range res.Fragment.Upstreams {
				if u.Mirror != nil {
					m := res.Fragment.Upstreams[u.Mirror.Upstream]
					got = u.Mirror.Upstream + " " + m.MeshIdentity + " " + strings.Join(m.Endpoints, ",")
				}
			}
			if got != tt.want {
				t.Fatalf("mirror %q, want %q", got, tt.want)
			}
			if tt.want != "" {
				f, err := routes.Parse("routes.yaml", []byte(meshFile))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.Merge(res.Fragment); err != nil {
					t.Fatalf("refused by the model: %v", err)
				}
			}
		})
	}
}
