package routes

import (
	"strings"
	"testing"
)

// sidecarK8sBase is a sidecar whose outbound services come from the
// cluster; each case changes one line of it.
const sidecarK8sBase = `version: 1
identity: { cert_file: c.pem, key_file: k.pem, bundle_file: b.pem, trust_domain: example.org }
outbound:
  kubernetes:
    namespaces: [shop]
`

func TestSidecarKubernetesDefaults(t *testing.T) {
	s, err := ParseSidecar("s.yaml", []byte(sidecarK8sBase))
	if err != nil {
		t.Fatal(err)
	}
	k := s.Outbound.Kubernetes
	if k.InboundPort != DefaultSidecarInboundPort || k.ClusterDomain != DefaultClusterDomain || k.Balance != DefaultBalance || k.Timeout.D() != DefaultUpstreamTimeout || k.Kubeconfig != "" {
		t.Fatalf("defaults: %+v", k)
	}
	if len(s.Outbound.Services) != 0 {
		t.Fatalf("services: %+v", s.Outbound.Services)
	}
}

func TestSidecarKubernetesErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string
	}{
		{"the trust domain is required", strings.Replace(sidecarK8sBase, ", trust_domain: example.org", "", 1), []string{
			"s.yaml:5:5: outbound.kubernetes: needs identity.trust_domain: a pod's ID is spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT",
		}},
		{"bad and repeated namespaces", strings.Replace(sidecarK8sBase, "[shop]", "[shop, Shop, shop]", 1), []string{
			`s.yaml:5:24: outbound.kubernetes.namespaces[1]: "Shop" is not a namespace name (lower-case letters, digits and '-', at most 63)`,
			`s.yaml:5:30: outbound.kubernetes.namespaces[2]: namespace "shop" is listed twice`,
		}},
		{"port out of range", sidecarK8sBase + "    inbound_port: 70000\n", []string{
			"s.yaml:6:19: outbound.kubernetes.inbound_port: must be a port, 1 to 65535 (found 70000)",
		}},
		{"negative port", sidecarK8sBase + "    inbound_port: -1\n", []string{
			"s.yaml:6:19: outbound.kubernetes.inbound_port: must be a port, 1 to 65535 (found -1)",
		}},
		{"bad cluster domain", sidecarK8sBase + "    cluster_domain: \"Cluster..local\"\n", []string{
			`s.yaml:6:21: outbound.kubernetes.cluster_domain: "Cluster..local" is not a DNS domain (lower-case letters, digits, '-' and '.')`,
		}},
		{"unknown balancer", sidecarK8sBase + "    balance: random\n", []string{
			`s.yaml:6:14: outbound.kubernetes.balance: unknown balancer "random" (one of round_robin, weighted, least_request, p2c_ewma, ring_hash)`,
		}},
		{"unknown key", sidecarK8sBase + "    inbound_prot: 1\n", []string{
			`s.yaml:6:5: outbound.kubernetes.inbound_prot: unknown key (did you mean "inbound_port"?)`,
		}},
		{"a file service may not take the provider's prefix", sidecarK8sBase + "  services:\n    k8s.pay: {endpoints: [\"127.0.0.1:1\"], identity: \"spiffe://example.org/ns/shop/sa/pay\"}\n", []string{
			`s.yaml:7:14: outbound.services.k8s.pay: "k8s.pay": names beginning with "k8s." are the Kubernetes provider's`,
		}},
		{"neither services nor kubernetes", strings.Replace(sidecarK8sBase, "  kubernetes:\n    namespaces: [shop]\n", "  listen: \"127.0.0.1:15001\"\n", 1), []string{
			"s.yaml:4:3: outbound.services: list the services the local service calls (or take them from the cluster: outbound.kubernetes)",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSidecar("s.yaml", []byte(tc.file))
			if err == nil {
				t.Fatal("accepted")
			}
			got := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in:\n%s", w, got)
				}
			}
			if n := strings.Count(got, "\n") + 1; n != len(tc.want) {
				t.Errorf("%d errors, want %d:\n%s", n, len(tc.want), got)
			}
		})
	}
}

func TestSidecarKubernetesFileServicesStay(t *testing.T) {
	// A file service's name may be one the cluster also gives (the file's
	// wins at run time); only the provider's prefix is refused.
	s, err := ParseSidecar("s.yaml", []byte(sidecarK8sBase+"  services:\n    payments.shop: {endpoints: [\"127.0.0.1:1\"], identity: \"spiffe://example.org/ns/shop/sa/pay\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Outbound.Services["payments.shop"]; !ok {
		t.Fatalf("services: %+v", s.Outbound.Services)
	}
}
