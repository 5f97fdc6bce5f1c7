package gateway

import (
	"log/slog"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/causewayhq/causeway/providers/kubernetes"
	"github.com/causewayhq/causeway/routes"
)

// A name both the sidecar file and the cluster give is the file's; the
// Service's other names stay the cluster's.
func TestOutboundMergeFileWins(t *testing.T) {
	cfg, err := routes.ParseSidecar("s.yaml", []byte(`version: 1
identity: {cert_file: c.pem, key_file: k.pem, bundle_file: b.pem, trust_domain: example.org}
outbound:
  kubernetes: {}
  services:
    pay: {endpoints: ["127.0.0.1:1"], identity: "spiffe://example.org/ns/legacy/sa/pay"}
    Pay.Shop.Svc: {endpoints: ["127.0.0.1:2"], identity: "spiffe://example.org/ns/legacy/sa/pay"}
`))
	if err != nil {
		t.Fatal(err)
	}
	ready := true
	snap := &kubernetes.OutboundSnapshot{
		Services: []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "pay", Labels: map[string]string{routes.MeshLabel: "true"}}}},
		EndpointSlices: []*discoveryv1.EndpointSlice{{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "pay-a", Labels: map[string]string{discoveryv1.LabelServiceName: "pay"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "pay-1"}}},
		}},
		Pods: []*corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "pay-1"}, Spec: corev1.PodSpec{ServiceAccountName: "payments"}}},
	}
	res := kubernetes.TranslateOutbound(*cfg.Outbound.Kubernetes, snap, kubernetes.OutboundOptions{TrustDomain: "example.org", LocalNamespace: "shop"})

	ob := &outboundSources{s: &Sidecar{server: &server[*sidecarGen]{log: slog.New(slog.DiscardHandler)}}}
	ob.run.frag = res.Fragment
	f := &routes.File{Version: 1, Mesh: &routes.Mesh{TrustDomain: "example.org", CertFile: "c", KeyFile: "k", BundleFile: "b"}, Upstreams: map[string]routes.Upstream{}}
	for name, svc := range cfg.Outbound.Services {
		f.Upstreams[name] = routes.Upstream{Endpoints: svc.Endpoints, MeshIdentity: svc.Identity}
		f.Routes = append(f.Routes, routes.Route{Name: name, Match: routes.Match{Host: name}, Upstream: name})
	}
	if err := f.Normalize(); err != nil {
		t.Fatal(err)
	}
	m, err := ob.merge(cfg, f)
	if err != nil {
		t.Fatal(err)
	}
	byHost := map[string][]string{}
	for _, r := range m.Routes {
		byHost[r.Match.Host] = append(byHost[r.Match.Host], r.Upstream)
	}
	k8s := "spiffe://example.org/ns/shop/sa/payments"
	for host, want := range map[string]string{
		"pay":                        "spiffe://example.org/ns/legacy/sa/pay",
		"pay.shop.svc":               "spiffe://example.org/ns/legacy/sa/pay", // the file's Pay.Shop.Svc: hosts match without case
		"pay.shop":                   k8s,
		"pay.shop.svc.cluster.local": k8s,
	} {
		ups := byHost[host]
		if len(ups) != 1 || m.Upstreams[ups[0]].MeshIdentity != want {
			t.Errorf("%s: upstreams %v, want one of identity %s", host, ups, want)
		}
	}
}
