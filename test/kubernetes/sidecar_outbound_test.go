package kubernetes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/causewayhq/causeway/gateway"
	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh/meshtest"
	"github.com/causewayhq/causeway/routes"
)

// The sidecar tests' pods take 10.244.2.x: the edge's tests use 10.244.1.x.
func meshAddr(n int) string { return testnetns.Addr(512 + n) }

const meshTD = "example.org"

// meshPod is a pod of the mesh: a backend on loopback that counts what
// reaches it, behind a real sidecar whose inbound listener is on the
// pod's address, presenting the certificate given.
type meshPod struct {
	name, ip string
	port     int // the sidecar's inbound port
	hits     atomic.Int64
}

func startMeshPod(t *testing.T, ca *meshtest.CA, name, ip string, port int, certID, allow string) *meshPod {
	t.Helper()
	p := &meshPod{name: name, ip: ip, port: port}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]string{"pod": name, "peer": r.Header.Get(gateway.PeerIDHeader)})
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	files := ca.IssueFiles(t.TempDir(), certID)
	serveSidecar(t, name, fmt.Sprintf(`version: 1
identity: {cert_file: %q, key_file: %q, bundle_file: %q}
access_log: {output: "off"}
admin: "127.0.0.1:0"
inbound:
  listen: %q
  forward_to: %q
  allow: [%q]
`, files.Cert, files.Key, files.Bundle, net.JoinHostPort(ip, fmt.Sprint(port)), ln.Addr().String(), allow))
	return p
}

// serveSidecar runs a sidecar on the given file until the test ends; its
// log is shown when the test fails.
func serveSidecar(t *testing.T, name, config string) *gateway.Sidecar {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.Buffer{}
	s := must(gateway.NewSidecar(context.Background(), gateway.SidecarOptions{ConfigPath: path, Logger: slog.New(slog.NewJSONHandler(logs, nil))}))(t)
	serveUntilEnd(t, "sidecar "+name, s, logs)
	return s
}

// call sends one request through the client's outbound listener and
// returns the status, the pod that answered ("" for none) and the body.
func call(client *http.Client, addr, host string) (int, string, string, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/x", nil)
	req.Host = host
	res, err := client.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var got struct{ Pod string }
	_ = json.Unmarshal(b, &got)
	return res.StatusCode, got.Pod, string(b), nil
}

func meshSlice(ns, svc, name string, pods ...*corev1.Pod) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
	}
	for _, p := range pods {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{p.Annotations["test/ip"]},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: p.Name, UID: p.UID},
		})
	}
	return es
}

// setMeshSlice gives EndpointSlice name in ns (of mesh Service svc) the
// endpoints of the named pods, none when names is empty.
func setMeshSlice(ctx context.Context, c cluster, ns, svc, name string, pods map[string]*corev1.Pod, names ...string) error {
	var ps []*corev1.Pod
	for _, n := range names {
		ps = append(ps, pods[n])
	}
	es, err := c.core.DiscoveryV1().EndpointSlices(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	es.Endpoints = meshSlice(ns, svc, name, ps...).Endpoints
	_, err = c.core.DiscoveryV1().EndpointSlices(ns).Update(ctx, es, metav1.UpdateOptions{})
	return err
}

// churnSlice applies sets in turn with set, one every interval, until the
// returned stop is called; stop returns how many changes were made. A
// failed change is reported to errs.
func churnSlice(ctx context.Context, sets [][]string, every time.Duration, set func(...string) error, errs chan<- string) (stop func() int) {
	churn, cancel := context.WithCancel(ctx)
	churned := make(chan int)
	go func() {
		n := 0
		for churn.Err() == nil {
			if err := set(sets[n%len(sets)]...); err != nil {
				errs <- "changing the endpoints: " + err.Error()
			}
			n++
			time.Sleep(every)
		}
		churned <- n
	}()
	return func() int {
		cancel()
		return <-churned
	}
}

// TestSidecarOutboundFromKubernetes runs a sidecar whose outbound services
// come from the API server, in front of real peer sidecars and backends,
// and follows the cluster as it changes.
func TestSidecarOutboundFromKubernetes(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	const ns = "mesh-out"
	saID := func(sa string) string { return routes.ServiceAccountID(meshTD, ns, sa) }
	clientID := saID("client")
	ca := meshtest.NewCA(t, meshTD)

	// The pods: three of ServiceAccount payments, one of payments-v2 (the
	// same Service, another account, on an annotated port), and one that
	// runs as payments but whose sidecar holds another account's
	// certificate (a pod that should never be believed). filepay is
	// outside the cluster, named by the sidecar file.
	pay1 := startMeshPod(t, ca, "pay-1", meshAddr(1), 15443, saID("payments"), clientID)
	pay2 := startMeshPod(t, ca, "pay-2", meshAddr(2), 15443, saID("payments"), clientID)
	pay3 := startMeshPod(t, ca, "pay-3", meshAddr(3), 15443, saID("payments"), clientID)
	v2 := startMeshPod(t, ca, "pay-v2", meshAddr(4), 16443, saID("payments-v2"), clientID)
	spoof := startMeshPod(t, ca, "spoof-1", meshAddr(5), 15443, saID("intruder"), clientID)
	filepay := startMeshPod(t, ca, "filepay", meshAddr(6), 15443, saID("filepay"), clientID)

	must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	for _, sa := range []string{"payments", "payments-v2", "intruder"} {
		must(c.core.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}))(t)
	}
	pods := map[string]*corev1.Pod{}
	for _, p := range []struct {
		pod     *meshPod
		account string
	}{{pay1, "payments"}, {pay2, "payments"}, {pay3, "payments"}, {v2, "payments-v2"}, {spoof, "payments"}} {
		obj := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.pod.name, Annotations: map[string]string{"test/ip": p.pod.ip}},
			Spec:       corev1.PodSpec{ServiceAccountName: p.account, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		}
		if p.pod.port != routes.DefaultSidecarInboundPort {
			obj.Annotations[routes.InboundPortAnnotation] = fmt.Sprint(p.pod.port)
		}
		pods[p.pod.name] = must(c.core.CoreV1().Pods(ns).Create(ctx, obj, metav1.CreateOptions{}))(t)
	}
	mesh := map[string]string{routes.MeshLabel: "true"}
	for _, name := range []string{"pay", "spoofed", "plain"} {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: mesh}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
		if name == "plain" {
			svc.Labels = nil // not in the mesh
		}
		must(c.core.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}))(t)
	}
	must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, meshSlice(ns, "pay", "pay-a", pods["pay-1"], pods["pay-2"]), metav1.CreateOptions{}))(t)
	must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, meshSlice(ns, "spoofed", "spoofed-a", pods["spoof-1"]), metav1.CreateOptions{}))(t)
	must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, meshSlice(ns, "plain", "plain-a", pods["pay-3"]), metav1.CreateOptions{}))(t)

	// The caller's sidecar: services from the cluster, and one name the
	// file defines itself, which stays the file's.
	files := ca.IssueFiles(t.TempDir(), clientID)
	client := serveSidecar(t, "client", fmt.Sprintf(`version: 1
identity: {cert_file: %q, key_file: %q, bundle_file: %q, trust_domain: %s}
access_log: {output: "off"}
admin: "127.0.0.1:0"
outbound:
  listen: "127.0.0.1:0"
  kubernetes: {kubeconfig: %q, namespaces: [%s]}
  services:
    pay.%s: {endpoints: [%q], identity: %q}
`, files.Cert, files.Key, files.Bundle, meshTD, kubeconfig, ns, ns, net.JoinHostPort(filepay.ip, "15443"), saID("filepay")))
	out := client.Addr("outbound")
	hc := &http.Client{Timeout: 10 * time.Second}
	get := func(host string) (int, string, string) {
		t.Helper()
		code, pod, body, err := call(hc, out, host)
		if err != nil {
			t.Fatal(err)
		}
		return code, pod, body
	}
	payHost := "pay." + ns + ".svc"
	eventually(t, "the cluster's service is callable", func() bool { code, _, _ := get(payHost); return code == 200 })
	res, err := hc.Get("http://" + client.Addr("admin") + "/readyz")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("readyz once synced: %v %v", res, err)
	}
	res.Body.Close()
	// pay-1, pay-2 and spoof-1 (its pod resolves; its certificate is
	// checked when dialled); plain's pay-3 is not in the mesh.
	metrics := must(hc.Get("http://" + client.Addr("admin") + "/metrics"))(t)
	text, _ := io.ReadAll(metrics.Body)
	metrics.Body.Close()
	for _, want := range []string{`causeway_mesh_outbound_endpoints{state="callable"} 3`, `causeway_mesh_outbound_endpoints{state="left_out"} 0`} {
		if !strings.Contains(string(text), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	t.Run("requests reach the Service's pods, counted at the backend", func(t *testing.T) {
		before := pay1.hits.Load() + pay2.hits.Load()
		seen := map[string]int{}
		for _, host := range []string{payHost, "pay." + ns + ".svc.cluster.local"} {
			for range 20 {
				code, pod, body := get(host)
				if code != 200 {
					t.Fatalf("%s: %d %s", host, code, body)
				}
				seen[pod]++
			}
		}
		if seen["pay-1"] == 0 || seen["pay-2"] == 0 || len(seen) != 2 {
			t.Fatalf("answered by %v, want pay-1 and pay-2", seen)
		}
		if got := pay1.hits.Load() + pay2.hits.Load() - before; got != 40 {
			t.Fatalf("the backends received %d requests, want 40", got)
		}
	})

	t.Run("the file's service keeps its name", func(t *testing.T) {
		before := filepay.hits.Load()
		if code, pod, body := get("pay." + ns); code != 200 || pod != "filepay" {
			t.Fatalf("pay.%s: %d %s, want the file's filepay", ns, code, body)
		}
		if filepay.hits.Load() != before+1 {
			t.Fatal("filepay's backend did not receive the request")
		}
	})

	t.Run("a pod whose certificate is not its ServiceAccount's is refused", func(t *testing.T) {
		for range 10 {
			if code, _, body := get("spoofed." + ns + ".svc"); code != http.StatusBadGateway && code != http.StatusServiceUnavailable {
				t.Fatalf("spoofed: %d %s, want a refusal", code, body)
			}
		}
		if n := spoof.hits.Load(); n != 0 {
			t.Fatalf("%d requests reached the spoofing pod's backend", n)
		}
	})

	t.Run("a Service outside the mesh is unknown", func(t *testing.T) {
		code, _, body := get("plain." + ns + ".svc")
		if code != http.StatusNotFound || !strings.Contains(body, `"status":404`) || pay3.hits.Load() != 0 {
			t.Fatalf("plain: %d %s (pay-3 hits %d)", code, body, pay3.hits.Load())
		}
	})

	updateSlice := func(names ...string) error {
		return setMeshSlice(ctx, c, ns, "pay", "pay-a", pods, names...)
	}
	setSlice := func(t *testing.T, names ...string) {
		t.Helper()
		if err := updateSlice(names...); err != nil {
			t.Fatal(err)
		}
	}
	answeredBy := func(t *testing.T, n int) map[string]int {
		t.Helper()
		seen := map[string]int{}
		for range n {
			code, pod, body := get(payHost)
			if code != 200 {
				t.Fatalf("%d %s", code, body)
			}
			seen[pod]++
		}
		return seen
	}

	t.Run("scaling up and down is followed", func(t *testing.T) {
		setSlice(t, "pay-1", "pay-2", "pay-3", "pay-v2")
		eventually(t, "pay-3 and pay-v2 serve", func() bool {
			s := answeredBy(t, 30)
			return s["pay-3"] > 0 && s["pay-v2"] > 0
		})
		setSlice(t, "pay-3")
		eventually(t, "only pay-3 serves", func() bool { s := answeredBy(t, 10); return s["pay-3"] == 10 })
		before := pay1.hits.Load() + pay2.hits.Load() + v2.hits.Load()
		answeredBy(t, 20)
		if after := pay1.hits.Load() + pay2.hits.Load() + v2.hits.Load(); after != before {
			t.Fatalf("pods scaled away received %d requests", after-before)
		}
	})

	t.Run("the API server away: the last services serve; back: changes flow", func(t *testing.T) {
		cp.StopAPIServer()
		stopped := true
		defer func() {
			if stopped {
				_ = cp.StartAPIServer()
			}
		}()
		for range 20 {
			if code, pod, body := get(payHost); code != 200 || pod != "pay-3" {
				t.Fatalf("while the API server is away: %d %s", code, body)
			}
		}
		if err := cp.StartAPIServer(); err != nil {
			t.Fatal(err)
		}
		stopped = false
		setSlice(t, "pay-1")
		eventually(t, "a change after the API server's return is followed", func() bool { s := answeredBy(t, 5); return s["pay-1"] == 5 })
	})

	t.Run("concurrent requests while endpoints change: none lost, none misrouted", func(t *testing.T) {
		setSlice(t, "pay-1", "pay-2")
		eventually(t, "pay-1 and pay-2 serve", func() bool { s := answeredBy(t, 20); return s["pay-1"] > 0 && s["pay-2"] > 0 })
		backends := []*meshPod{pay1, pay2, pay3, v2, spoof, filepay}
		var before int64
		for _, b := range backends {
			before += b.hits.Load()
		}
		const workers, each = 8, 75
		var wg sync.WaitGroup
		var ok atomic.Int64
		errs := make(chan string, 2*workers*each+1000)
		// pay-1 stays throughout: a request always has a pod to go to.
		stopChurn := churnSlice(ctx, [][]string{{"pay-1", "pay-3"}, {"pay-1", "pay-2", "pay-v2"}, {"pay-1"}, {"pay-1", "pay-2"}}, 30*time.Millisecond, updateSlice, errs)
		pc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
		for range workers {
			wg.Go(func() {
				for range each {
					code, pod, body, err := call(pc, out, payHost)
					switch {
					case err != nil:
						errs <- err.Error()
					case code != 200:
						errs <- fmt.Sprintf("%d %s", code, body)
					case pod != "pay-1" && pod != "pay-2" && pod != "pay-3" && pod != "pay-v2":
						errs <- "answered by " + pod
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
		for _, b := range backends {
			after += b.hits.Load()
		}
		if ok.Load() != workers*each || after-before != workers*each {
			t.Fatalf("%d answered, %d received by the backends, want %d each", ok.Load(), after-before, workers*each)
		}
		if spoof.hits.Load() != 0 || filepay.hits.Load() != 1 {
			t.Fatalf("misrouted: spoof %d, filepay %d", spoof.hits.Load(), filepay.hits.Load())
		}
		t.Logf("%d requests during %d endpoint changes", workers*each, changes)
	})

	t.Run("a deleted Service answers 404", func(t *testing.T) {
		if err := c.core.CoreV1().Services(ns).Delete(ctx, "pay", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the deleted Service is unknown", func() bool {
			code, _, body := get(payHost)
			return code == http.StatusNotFound && strings.Contains(body, `"status":404`)
		})
		// The file's own name stays.
		if code, pod, _ := get("pay." + ns); code != 200 || pod != "filepay" {
			t.Fatalf("the file's service after the delete: %d %s", code, pod)
		}
	})
}

// TestSidecarRBACExampleIsTheDocumented keeps sidecar-rbac.yaml's
// ClusterRole equal to docs/kubernetes.md's block, which the watcher's
// tests run with, and checks that it is bound in a namespace only.
func TestSidecarRBACExampleIsTheDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	const begin, end = "<!-- sidecar-rbac:begin -->", "<!-- sidecar-rbac:end -->"
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("docs/kubernetes.md has no %s ... %s block", begin, end)
	}
	block := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(doc[i+len(begin):j]), "```yaml"), "```")
	want := find(t, decodeObjects(t, "docs/kubernetes.md's sidecar RBAC block", strings.NewReader(block)), "ClusterRole", "causeway-sidecar")
	f, err := os.Open("../../examples/kubernetes/sidecar-rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs := decodeObjects(t, "sidecar-rbac.yaml", f)
	got := find(t, objs, "ClusterRole", "causeway-sidecar")
	if !reflect.DeepEqual(want.Object["rules"], got.Object["rules"]) {
		t.Errorf("sidecar-rbac.yaml has %v, docs/kubernetes.md %v", got.Object["rules"], want.Object["rules"])
	}
	for _, o := range objs {
		if o.GetKind() == "ClusterRoleBinding" {
			t.Errorf("%s binds the sidecar's role in every namespace", o.GetName())
		}
	}
	find(t, objs, "RoleBinding", "orders-sidecar")
}
