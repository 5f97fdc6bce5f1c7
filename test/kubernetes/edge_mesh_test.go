package kubernetes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/mesh/meshtest"
	"github.com/causewayhq/causeway/routes"
)

// The edge's mesh tests' pods take 10.244.3.x.
func edgeMeshAddr(n int) string { return testnetns.Addr(768 + n) }

// appPort listens on a pod's app port (the EndpointSlice's port) and
// counts the connections made to it: the edge must never dial it for a
// mesh Service.
func appPort(t *testing.T, ip string) *atomic.Int64 {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "8080"))
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return &n
}

// meshEdgeFile writes a routes file that takes its routes from the
// namespace ns only, for a GatewayClass of the test's own (other tests
// create "causeway" and expect to be first), with the mesh section given.
func meshEdgeFile(t *testing.T, kubeconfig, ns, mesh string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "causeway.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", admin: ""}
access_log: {output: "off"}
providers:
  kubernetes: {kubeconfig: %q, namespaces: [%s], gateway_class: %s}
%s`, kubeconfig, ns, ns, mesh)), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// meshSection is the edge's mesh section with an identity of ca's.
func meshSection(t *testing.T, ca *meshtest.CA, id string) string {
	files := ca.IssueFiles(t.TempDir(), id)
	return fmt.Sprintf("mesh: {trust_domain: %s, cert_file: %q, key_file: %q, bundle_file: %q}\n", meshTD, files.Cert, files.Key, files.Bundle)
}

// meshGateway makes the GatewayClass ns (of our controller) and its
// Gateway "gw" in ns.
func meshGateway(t *testing.T, c cluster, ns string) {
	t.Helper()
	ctx := context.Background()
	must(c.gw.GatewayV1().GatewayClasses().Create(ctx, &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: ns},
		Spec: gatewayv1.GatewayClassSpec{ControllerName: routes.KubernetesControllerName}}, metav1.CreateOptions{}))(t)
	must(c.gw.GatewayV1().Gateways(ns).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: gatewayv1.ObjectName(ns), Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}}}}, metav1.CreateOptions{}))(t)
}

// TestEdgeIntoTheMesh runs an edge with a mesh identity whose HTTPRoute
// names a Service labelled for the mesh: every request goes through the
// pods' real sidecars over mTLS, each pod held to its own ServiceAccount's
// ID, and never to the pods' app port.
func TestEdgeIntoTheMesh(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	const ns = "edge-mesh"
	saID := func(sa string) string { return routes.ServiceAccountID(meshTD, ns, sa) }
	edgeID := routes.ServiceAccountID(meshTD, "causeway-system", "causeway-gateway")
	ca := meshtest.NewCA(t, meshTD)

	// The pods: two of ServiceAccount payments, one of payments-v2 on an
	// annotated port, and one that runs as payments but whose sidecar
	// holds another account's certificate. Each sidecar admits only the
	// edge.
	pay1 := startMeshPod(t, ca, "pay-1", edgeMeshAddr(1), 15443, saID("payments"), edgeID)
	pay2 := startMeshPod(t, ca, "pay-2", edgeMeshAddr(2), 15443, saID("payments"), edgeID)
	v2 := startMeshPod(t, ca, "pay-v2", edgeMeshAddr(3), 16443, saID("payments-v2"), edgeID)
	spoof := startMeshPod(t, ca, "spoof-1", edgeMeshAddr(4), 15443, saID("intruder"), edgeID)
	all := []*meshPod{pay1, pay2, v2, spoof}
	var direct []*atomic.Int64
	for _, p := range all {
		direct = append(direct, appPort(t, p.ip))
	}

	must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	pods := map[string]*corev1.Pod{}
	for _, p := range []struct {
		pod     *meshPod
		account string
	}{{pay1, "payments"}, {pay2, "payments"}, {v2, "payments-v2"}, {spoof, "payments"}} {
		obj := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.pod.name, Annotations: map[string]string{"test/ip": p.pod.ip}},
			Spec:       corev1.PodSpec{ServiceAccountName: p.account, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		}
		if p.pod.port != routes.DefaultSidecarInboundPort {
			obj.Annotations[routes.InboundPortAnnotation] = fmt.Sprint(p.pod.port)
		}
		pods[p.pod.name] = must(c.core.CoreV1().Pods(ns).Create(ctx, obj, metav1.CreateOptions{}))(t)
	}
	for _, name := range []string{"pay", "spoofed"} {
		svc := service(ns, name)
		svc.Labels = map[string]string{routes.MeshLabel: "true"}
		must(c.core.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}))(t)
	}
	must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, meshSlice(ns, "pay", "pay-a", pods["pay-1"], pods["pay-2"]), metav1.CreateOptions{}))(t)
	must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, meshSlice(ns, "spoofed", "spoofed-a", pods["spoof-1"]), metav1.CreateOptions{}))(t)
	meshGateway(t, c, ns)
	must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, httpRoute(ns, "store", prefixRule("/pay", "pay", ""), prefixRule("/spoofed", "spoofed", "")), metav1.CreateOptions{}))(t)

	// The edge, with its own identity in the mesh.
	e := serveEdge(t, meshEdgeFile(t, kubeconfig, ns, meshSection(t, ca, edgeID)))
	addr := e.Addr("http")
	hc := &http.Client{Timeout: 10 * time.Second}
	get := func(path string) (int, string, string, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		req.Host = "shop.example"
		res, err := hc.Do(req)
		if err != nil {
			return 0, "", "", err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		var got struct{ Pod, Peer string }
		_ = json.Unmarshal(b, &got)
		return res.StatusCode, got.Pod, got.Peer, nil
	}
	answeredBy := func(t *testing.T, n int) map[string]int {
		t.Helper()
		seen := map[string]int{}
		for range n {
			code, pod, peer, err := get("/pay/x")
			if err != nil || code != 200 || peer != edgeID {
				t.Fatalf("%d %s %q %v", code, pod, peer, err)
			}
			seen[pod]++
		}
		return seen
	}
	eventually(t, "the mesh Service is served", func() bool { code, _, _, _ := get("/pay/x"); return code == 200 })

	t.Run("requests reach the backends through their sidecars", func(t *testing.T) {
		before := pay1.hits.Load() + pay2.hits.Load()
		seen := answeredBy(t, 40)
		if seen["pay-1"] == 0 || seen["pay-2"] == 0 || len(seen) != 2 {
			t.Fatalf("answered by %v, want pay-1 and pay-2", seen)
		}
		// Each backend saw the request its sidecar forwarded, with the
		// edge's verified ID (answeredBy checks the peer).
		if got := pay1.hits.Load() + pay2.hits.Load() - before; got != 40 {
			t.Fatalf("the backends received %d requests, want 40", got)
		}
		// Status is written by the leader after the model is served, so it
		// may trail the first answers.
		eventually(t, "the route's ResolvedRefs is True", func() bool {
			r := routeCondition(t, c, ns, "store", "ResolvedRefs")
			return r != nil && r.Status == metav1.ConditionTrue
		})
	})

	t.Run("a pod whose certificate is not its ServiceAccount's receives nothing", func(t *testing.T) {
		for range 10 {
			code, _, _, err := get("/spoofed/x")
			if err != nil || (code != http.StatusBadGateway && code != http.StatusServiceUnavailable) {
				t.Fatalf("spoofed: %d %v, want a refusal", code, err)
			}
		}
		if n := spoof.hits.Load(); n != 0 {
			t.Fatalf("%d requests reached the spoofing pod's backend", n)
		}
	})

	updateSlice := func(names ...string) error {
		return setMeshSlice(ctx, c, ns, "pay", "pay-a", pods, names...)
	}

	t.Run("another ServiceAccount's pod is its own upstream, on its own port", func(t *testing.T) {
		if err := updateSlice("pay-1", "pay-v2"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "pay-1 and pay-v2 serve", func() bool {
			s := answeredBy(t, 20)
			return s["pay-1"] > 0 && s["pay-v2"] > 0 && s["pay-2"] == 0
		})
	})

	t.Run("concurrent requests while endpoints change: none lost, none misrouted", func(t *testing.T) {
		if err := updateSlice("pay-1", "pay-2"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "pay-1 and pay-2 serve", func() bool { s := answeredBy(t, 20); return s["pay-1"] > 0 && s["pay-2"] > 0 })
		var before int64
		for _, p := range all {
			before += p.hits.Load()
		}
		const workers, each = 8, 50
		var ok atomic.Int64
		errs := make(chan string, workers*each+1000)
		// pay-1 stays throughout: a request always has a pod to go to.
		stopChurn := churnSlice(ctx, [][]string{{"pay-1", "pay-v2"}, {"pay-1", "pay-2", "pay-v2"}, {"pay-1"}, {"pay-1", "pay-2"}}, 30*time.Millisecond, updateSlice, errs)
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range each {
					code, pod, peer, err := get("/pay/x")
					switch {
					case err != nil:
						errs <- err.Error()
					case code != 200:
						errs <- fmt.Sprintf("status %d", code)
					case pod != "pay-1" && pod != "pay-2" && pod != "pay-v2":
						errs <- "answered by " + pod
					case peer != edgeID:
						errs <- "the backend saw peer " + peer
					default:
						ok.Add(1)
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
		var after int64
		for _, p := range all {
			after += p.hits.Load()
		}
		if ok.Load() != workers*each || after-before != workers*each {
			t.Fatalf("%d answered, %d received by the backends, want %d each", ok.Load(), after-before, workers*each)
		}
		t.Logf("%d requests during %d endpoint changes", workers*each, changes)
	})

	t.Run("no pod is left: 503", func(t *testing.T) {
		if err := updateSlice(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "an empty mesh Service answers 503", func() bool { code, _, _, _ := get("/pay/x"); return code == http.StatusServiceUnavailable })
	})

	// Checked last, over everything above.
	for i, n := range direct {
		if n.Load() != 0 {
			t.Errorf("%s's app port was dialled %d times", all[i].name, n.Load())
		}
	}
	if spoof.hits.Load() != 0 {
		t.Errorf("the spoofing pod's backend received %d requests", spoof.hits.Load())
	}
}

// TestEdgeMeshNeedsItsSection: an edge without a mesh section refuses a
// mesh Service in the route's status and never calls its pods in
// plaintext; once a reload adds the section, the same route is served
// through the pod's sidecar.
func TestEdgeMeshNeedsItsSection(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	const ns = "edge-mesh-off"
	edgeID := routes.ServiceAccountID(meshTD, "causeway-system", "causeway-gateway")
	ca := meshtest.NewCA(t, meshTD)
	pay := startMeshPod(t, ca, "pay-1", edgeMeshAddr(10), 15443, routes.ServiceAccountID(meshTD, ns, "payments"), edgeID)
	direct := appPort(t, pay.ip)

	must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	p := must(c.core.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pay.name, Annotations: map[string]string{"test/ip": pay.ip}},
		Spec:       corev1.PodSpec{ServiceAccountName: "payments", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}, metav1.CreateOptions{}))(t)
	svc := service(ns, "pay")
	svc.Labels = map[string]string{routes.MeshLabel: "true"}
	must(c.core.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}))(t)
	must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, meshSlice(ns, "pay", "pay-a", p), metav1.CreateOptions{}))(t)
	meshGateway(t, c, ns)
	must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, httpRoute(ns, "store", prefixRule("/pay", "pay", "")), metav1.CreateOptions{}))(t)

	file := meshEdgeFile(t, kubeconfig, ns, "")
	e := serveEdge(t, file)
	addr := e.Addr("http")
	eventually(t, "ResolvedRefs=False naming the mesh section", func() bool {
		r := routeCondition(t, c, ns, "store", "ResolvedRefs")
		return r != nil && r.Status == metav1.ConditionFalse && r.Reason == "NoMeshIdentity" && strings.Contains(r.Message, "set a mesh section")
	})
	for range 5 {
		if code, _, body := send(t, addr, "shop.example", "/pay/x"); code != http.StatusInternalServerError {
			t.Fatalf("without a mesh section: %d %s, want 500", code, body)
		}
	}

	// The same file with the mesh section, in place of the served one.
	text := must(os.ReadFile(meshEdgeFile(t, kubeconfig, ns, meshSection(t, ca, edgeID))))(t)
	if err := os.WriteFile(file, text, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "served through the sidecar once the mesh section is there", func() bool {
		code, s, _ := send(t, addr, "shop.example", "/pay/x")
		return code == 200 && s.Pod == "pay-1"
	})
	eventually(t, "ResolvedRefs=True", func() bool {
		r := routeCondition(t, c, ns, "store", "ResolvedRefs")
		return r != nil && r.Status == metav1.ConditionTrue
	})
	if n := direct.Load(); n != 0 {
		t.Fatalf("the pod's app port was dialled %d times", n)
	}
	if pay.hits.Load() == 0 {
		t.Fatal("the backend received nothing")
	}
}
