package kubernetes

import (
	"cmp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/causewayhq/causeway/routes"
)

// FuzzTranslateOutbound feeds the values the outbound translation parses
// or builds names from (object names, a ServiceAccount, the port
// annotation, an address, the cluster domain) and checks what a sidecar
// depends on: the fragment is one the routes model accepts (a refused one
// would take every Service of the cluster away at once), and every
// endpoint is dialled expecting exactly its own pod's ServiceAccount ID.
func FuzzTranslateOutbound(f *testing.F) {
	f.Add("pay", "shop", "payments", "15443", "10.1.0.1", "cluster.local")
	f.Add("a", "b", "", "", "fd00::1", "x")
	f.Add("Pay", "shop", "a/b", "0", "10.1.0.1", "")
	f.Add("pay", "shop", "..", " 8080 ", "::ffff:10.1.0.1", "corp.internal")
	f.Add(strings.Repeat("p", 63), strings.Repeat("n", 63), strings.Repeat("s", 253), "65536", "10.1.0.1%eth0", "a-b.c")
	f.Fuzz(func(t *testing.T, svcName, ns, account, port, addr, domain string) {
		pod := meshPod(ns, "p", account)
		pod.Annotations = map[string]string{routes.InboundPortAnnotation: port}
		s := &OutboundSnapshot{
			Services:       []*corev1.Service{meshSvc(ns, svcName), meshSvc("shop", "ok")},
			EndpointSlices: []*discoveryv1.EndpointSlice{meshSlice(ns, svcName, "s", meshEP{ip: addr, pod: "p"})},
			Pods:           []*corev1.Pod{pod},
		}
		res := TranslateOutbound(routes.OutboundKubernetes{ClusterDomain: domain}, s, OutboundOptions{TrustDomain: testTD, LocalNamespace: "shop"})
		f := &routes.File{Version: 1, Mesh: &routes.Mesh{TrustDomain: testTD, CertFile: "c", KeyFile: "k", BundleFile: "b"}, Upstreams: map[string]routes.Upstream{}}
		if _, err := f.Merge(res.Fragment); err != nil && validDomain(domain) {
			t.Fatalf("fragment refused: %v\n%+v", err, res.Fragment)
		}
		want := routes.ServiceAccountID(testTD, ns, cmp.Or(account, "default"))
		for name, u := range res.Fragment.Upstreams {
			if len(u.Endpoints) > 0 && u.MeshIdentity != want {
				t.Fatalf("upstream %s: identity %q, want %q", name, u.MeshIdentity, want)
			}
		}
	})
}

// validDomain is what the sidecar file's validation lets through as a
// cluster_domain.
func validDomain(d string) bool {
	return d == "" || len(d) <= 253 && routesDNSSubdomain(d)
}

func routesDNSSubdomain(d string) bool {
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}
