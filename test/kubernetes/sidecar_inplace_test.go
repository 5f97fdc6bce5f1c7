package kubernetes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/mesh/meshtest"
	"github.com/causewayhq/causeway/routes"
)

// TestSidecarOutboundEndpointsInPlaceAndBackendTLS: EndpointSlice churn
// under concurrent outbound traffic is followed in place (the outbound
// generation is never rebuilt: /config's loaded_at stays), with every
// request answered by a pod of the slice and each backend having received
// exactly the requests answered in its name; then a BackendTLSPolicy that
// lists an identity the Service's pods do not present leaves it with
// nothing to call (503), and no request reaches a backend.
func TestSidecarOutboundEndpointsInPlaceAndBackendTLS(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	const ns = "mesh-inplace"
	saID := func(sa string) string { return routes.ServiceAccountID(meshTD, ns, sa) }
	clientID := saID("client")
	ca := meshtest.NewCA(t, meshTD)

	must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	// Four pods of one ServiceAccount: churn among them changes only
	// endpoints.
	var backends []*meshPod
	pods := map[string]*corev1.Pod{}
	for i := range 4 {
		name := fmt.Sprintf("web-%d", i+1)
		p := startMeshPod(t, ca, name, meshAddr(20+i), 15443, saID("web"), clientID)
		backends = append(backends, p)
		pods[name] = must(c.core.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{"test/ip": p.ip}},
			Spec:       corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		}, metav1.CreateOptions{}))(t)
	}
	must(c.core.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web", Labels: map[string]string{routes.MeshLabel: "true"}},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}, metav1.CreateOptions{}))(t)
	must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, meshSlice(ns, "web", "web-a", pods["web-1"], pods["web-2"]), metav1.CreateOptions{}))(t)

	files := ca.IssueFiles(t.TempDir(), clientID)
	client := serveSidecar(t, "client", fmt.Sprintf(`version: 1
identity: {cert_file: %q, key_file: %q, bundle_file: %q, trust_domain: %s}
access_log: {output: "off"}
admin: "127.0.0.1:0"
outbound:
  listen: "127.0.0.1:0"
  kubernetes: {kubeconfig: %q, namespaces: [%s]}
  services:
    legacy: {endpoints: ["10.244.9.9:15443"], identity: %q}
`, files.Cert, files.Key, files.Bundle, meshTD, kubeconfig, ns, saID("legacy")))
	out := client.Addr("outbound")
	hc := &http.Client{Timeout: 10 * time.Second}
	host := "web." + ns + ".svc"
	answered := func(n int) map[string]int {
		t.Helper()
		seen := map[string]int{}
		for range n {
			code, pod, body, err := call(hc, out, host)
			if err != nil || code != 200 {
				t.Fatalf("%d %s %v", code, body, err)
			}
			seen[pod]++
		}
		return seen
	}
	loadedAt := func() string {
		t.Helper()
		res := must(hc.Get("http://" + client.Addr("admin") + "/config"))(t)
		defer res.Body.Close()
		var v struct {
			LoadedAt string `json:"loaded_at"`
		}
		if err := json.NewDecoder(res.Body).Decode(&v); err != nil || v.LoadedAt == "" {
			t.Fatalf("/config: %v %+v", err, v)
		}
		return v.LoadedAt
	}
	setSlice := func(names ...string) error {
		return setMeshSlice(ctx, c, ns, "web", "web-a", pods, names...)
	}
	eventually(t, "web-1 and web-2 serve", func() bool {
		code, _, _, err := call(hc, out, host)
		if err != nil || code != 200 {
			return false
		}
		s := answered(20)
		return s["web-1"] > 0 && s["web-2"] > 0
	})

	t.Run("endpoint churn under concurrent traffic: in place, none lost or misrouted", func(t *testing.T) {
		before := loadedAt()
		hits := func() []int64 {
			var h []int64
			for _, b := range backends {
				h = append(h, b.hits.Load())
			}
			return h
		}
		start := hits()
		const workers, each = 8, 400
		var wg sync.WaitGroup
		var answeredBy [4]atomic.Int64
		errs := make(chan string, workers*each+1000)
		// web-1 stays throughout: a request always has a pod to go to.
		stopChurn := churnSlice(ctx, [][]string{{"web-1", "web-3"}, {"web-1", "web-2", "web-4"}, {"web-1"}, {"web-1", "web-2", "web-3", "web-4"}, {"web-1", "web-2"}}, 40*time.Millisecond, setSlice, errs)
		pc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
		for range workers {
			wg.Go(func() {
				for range each {
					code, pod, body, err := call(pc, out, host)
					var i int
					switch _, serr := fmt.Sscanf(pod, "web-%d", &i); {
					case err != nil:
						errs <- err.Error()
					case code != 200:
						errs <- fmt.Sprintf("%d %s", code, body)
					case serr != nil || i < 1 || i > 4:
						errs <- "answered by " + pod
					default:
						answeredBy[i-1].Add(1)
					}
				}
			})
		}
		wg.Wait()
		changes := stopChurn()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
		end := hits()
		var total int64
		for i := range backends {
			// What each backend received is exactly what was answered in
			// its name: nothing went to one pod and came back as another's.
			if got, want := end[i]-start[i], answeredBy[i].Load(); got != want {
				t.Errorf("web-%d received %d requests, answered %d", i+1, got, want)
			}
			total += answeredBy[i].Load()
		}
		if total != workers*each {
			t.Fatalf("%d answered, want %d", total, workers*each)
		}
		if after := loadedAt(); after != before {
			t.Fatalf("the outbound generation was rebuilt (loaded_at %s, then %s): endpoint changes must apply in place", before, after)
		}
		t.Logf("%d requests during %d endpoint changes, by pod %v %v %v %v", total, changes,
			answeredBy[0].Load(), answeredBy[1].Load(), answeredBy[2].Load(), answeredBy[3].Load())
	})

	policy := func(sans ...string) *gatewayv1.BackendTLSPolicy {
		p := &gatewayv1.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-identity"}}
		p.Spec.TargetRefs = []gatewayv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Kind: "Service", Name: "web"}}}
		p.Spec.Validation.Hostname = "web." + ns + ".svc"
		p.Spec.Validation.WellKnownCACertificates = ptr(gatewayv1.WellKnownCACertificatesSystem)
		for _, s := range sans {
			p.Spec.Validation.SubjectAltNames = append(p.Spec.Validation.SubjectAltNames, gatewayv1.SubjectAltName{Type: gatewayv1.URISubjectAltNameType, URI: gatewayv1.AbsoluteURI(s)})
		}
		return p
	}

	t.Run("a BackendTLSPolicy naming an identity the pods do not present: refused, nothing reaches a backend", func(t *testing.T) {
		if err := setSlice("web-1", "web-2"); err != nil {
			t.Fatal(err)
		}
		must(c.gw.GatewayV1().BackendTLSPolicies(ns).Create(ctx, policy(saID("admin")), metav1.CreateOptions{}))(t)
		eventually(t, "the policy refuses web", func() bool {
			code, _, _, err := call(hc, out, host)
			return err == nil && code == http.StatusServiceUnavailable
		})
		var before int64
		for _, b := range backends {
			before += b.hits.Load()
		}
		for range 200 {
			if code, pod, body, err := call(hc, out, host); err != nil || code != http.StatusServiceUnavailable || pod != "" {
				t.Fatalf("under the policy: %d %q %s %v, want 503", code, pod, body, err)
			}
		}
		var after int64
		for _, b := range backends {
			after += b.hits.Load()
		}
		if after != before {
			t.Fatalf("%d requests reached a backend under a policy that lists none of its identities", after-before)
		}
	})

	t.Run("the policy listing the pods' identity: called again", func(t *testing.T) {
		cur := must(c.gw.GatewayV1().BackendTLSPolicies(ns).Get(ctx, "web-identity", metav1.GetOptions{}))(t)
		cur.Spec = policy(saID("admin"), saID("web")).Spec
		must(c.gw.GatewayV1().BackendTLSPolicies(ns).Update(ctx, cur, metav1.UpdateOptions{}))(t)
		eventually(t, "web is called again", func() bool {
			code, _, _, err := call(hc, out, host)
			return err == nil && code == 200
		})
		if s := answered(20); s["web-1"]+s["web-2"] != 20 {
			t.Fatalf("answered by %v", s)
		}
	})
}
