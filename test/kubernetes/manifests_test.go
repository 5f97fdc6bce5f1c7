package kubernetes_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/routes"
)

// exampleDir holds the Gateway API example; exampleFiles is the install
// order its README gives (namespaces and RBAC first, the route last).
const exampleDir = "../../examples/kubernetes/gateway-api"

var exampleFiles = []string{"rbac.yaml", "gatewayclass.yaml", "gateway.yaml", "edge.yaml", "gateway-per-edge.yaml", "example-app.yaml", "httproute.yaml", "policy.yaml"}

// readManifests returns every object of the example's files, in install
// order. A YAML file in the folder that the list does not name fails the
// test, so a new manifest cannot go untested.
func readManifests(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	found, err := filepath.Glob(filepath.Join(exampleDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		if !slices.Contains(exampleFiles, filepath.Base(f)) {
			t.Fatalf("%s is not in exampleFiles: add it in its install order", f)
		}
	}
	var objs []*unstructured.Unstructured
	for _, name := range exampleFiles {
		b, err := os.ReadFile(filepath.Join(exampleDir, name))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, decodeObjects(t, name, bytes.NewReader(b))...)
	}
	return objs
}

// decodeObjects reads a stream of YAML (or JSON) documents; empty
// documents are passed over. what names the source in errors.
func decodeObjects(t *testing.T, what string, r io.Reader) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatalf("%s: %v", what, err)
		}
		if m != nil {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("the example has no %s %s", kind, name)
	return nil
}

// TestExampleGatewayPerEdge: gateway-per-edge.yaml's routes file loads,
// and its edge serves exactly the Gateway beside it, of the class beside
// it, a class that edge.yaml's edge does not serve; its Deployment mounts
// that file and its status address is its own Service.
func TestExampleGatewayPerEdge(t *testing.T) {
	objs := readManifests(t)
	cm := find(t, objs, "ConfigMap", "causeway-gateway-public-routes")
	text, _, _ := unstructured.NestedString(cm.Object, "data", "causeway.yaml")
	f, err := routes.Parse("gateway-per-edge.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	k := f.Providers.Kubernetes
	gw, svc := find(t, objs, "Gateway", "public"), find(t, objs, "Service", "causeway-gateway-public")
	find(t, objs, "GatewayClass", k.GatewayClass)
	if class, _, _ := unstructured.NestedString(gw.Object, "spec", "gatewayClassName"); class != k.GatewayClass || k.GatewayClass == routes.DefaultGatewayClass {
		t.Errorf("Gateway public is of class %q, the edge serves %q (edge.yaml's is %q)", class, k.GatewayClass, routes.DefaultGatewayClass)
	}
	if want := []string{gw.GetNamespace() + "/" + gw.GetName()}; !slices.Equal(k.Gateways, want) {
		t.Errorf("gateways %v, want %v", k.Gateways, want)
	}
	if a := k.StatusAddress; a == nil || a.Service != svc.GetNamespace()+"/"+svc.GetName() {
		t.Errorf("status_address %+v, want the Service %s/%s", a, svc.GetNamespace(), svc.GetName())
	}
	dep := find(t, objs, "Deployment", "causeway-gateway-public")
	vols, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "volumes")
	if len(vols) != 1 || fmt.Sprint(vols[0].(map[string]any)["configMap"]) != fmt.Sprint(map[string]any{"name": cm.GetName()}) {
		t.Errorf("the Deployment mounts %v, want the ConfigMap %s", vols, cm.GetName())
	}
}

// TestExampleRBACIsTheDocumented keeps rbac.yaml's ClusterRole and lease
// Role equal to docs/kubernetes.md's block, which the provider's tests run
// with: the example then grants exactly what is known to be enough.
func TestExampleRBACIsTheDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	const begin, end = "<!-- rbac:begin -->", "<!-- rbac:end -->"
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("docs/kubernetes.md has no %s ... %s block", begin, end)
	}
	block := strings.TrimSpace(doc[i+len(begin) : j])
	block = strings.TrimSuffix(strings.TrimPrefix(block, "```yaml"), "```")
	docObjs := decodeObjects(t, "docs/kubernetes.md's RBAC block", strings.NewReader(block))
	objs := readManifests(t)
	for _, tc := range []struct{ kind, name string }{{"ClusterRole", "causeway-gateway"}, {"Role", "causeway-gateway-lease"}} {
		want, got := find(t, docObjs, tc.kind, tc.name), find(t, objs, tc.kind, tc.name)
		var wr, gr rbacv1.ClusterRole
		for _, p := range []struct {
			u   *unstructured.Unstructured
			out *rbacv1.ClusterRole
		}{{want, &wr}, {got, &gr}} {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(p.u.Object, p.out); err != nil {
				t.Fatal(err)
			}
		}
		if !reflect.DeepEqual(wr.Rules, gr.Rules) || want.GetNamespace() != got.GetNamespace() {
			t.Errorf("%s %s: rbac.yaml has %s/%+v, docs/kubernetes.md %s/%+v", tc.kind, tc.name, got.GetNamespace(), gr.Rules, want.GetNamespace(), wr.Rules)
		}
	}
	// The bindings give both to the edge's ServiceAccount, the one its
	// Deployment runs as.
	sa := find(t, objs, "ServiceAccount", "causeway-gateway")
	dep := find(t, objs, "Deployment", "causeway-gateway")
	if n, _, _ := unstructured.NestedString(dep.Object, "spec", "template", "spec", "serviceAccountName"); n != sa.GetName() || dep.GetNamespace() != sa.GetNamespace() {
		t.Errorf("the Deployment runs as %s/%s, want %s/%s", dep.GetNamespace(), n, sa.GetNamespace(), sa.GetName())
	}
	for _, tc := range []struct{ kind, name, roleKind string }{{"ClusterRoleBinding", "causeway-gateway", "ClusterRole"}, {"RoleBinding", "causeway-gateway-lease", "Role"}} {
		var rb rbacv1.RoleBinding
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(find(t, objs, tc.kind, tc.name).Object, &rb); err != nil {
			t.Fatal(err)
		}
		wantSubj := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.GetName(), Namespace: sa.GetNamespace()}}
		if rb.RoleRef.Kind != tc.roleKind || !reflect.DeepEqual(rb.Subjects, wantSubj) {
			t.Errorf("%s %s: %+v %+v", tc.kind, tc.name, rb.RoleRef, rb.Subjects)
		}
	}
}

// TestExampleManifests applies examples/kubernetes/gateway-api to the real
// API server, so every object passes its validation (the Gateway API CRDs'
// CEL rules included, which kubeconform cannot check), then runs the edge
// with the ConfigMap's own routes file, as the example's ServiceAccount
// (impersonated: only rbac.yaml's permissions), with POD_NAME and
// POD_NAMESPACE as the Deployment sets them. It then checks what the README
// says to check: the Gateway Programmed, the HTTPRoute accepted, and curl
// through the edge reaching both versions about 90/10 with the header
// filter applied. There is no kubelet, so the example app's pods are test
// servers and their EndpointSlices are made here, as the controller would.
func TestExampleManifests(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	cfg := must(clientcmd.BuildConfigFromFlags("", kubeconfig))(t)
	dyn := must(dynamic.NewForConfig(cfg))(t)
	groups := must(restmapper.GetAPIGroupResources(must(discovery.NewDiscoveryClientForConfig(cfg))(t)))(t)
	mapper := restmapper.NewDiscoveryRESTMapper(groups)

	// Another test of this package may have made the GatewayClass; one
	// made here is removed again.
	_, err := c.gw.GatewayV1().GatewayClasses().Get(ctx, "causeway", metav1.GetOptions{})
	classExisted := err == nil
	objs := readManifests(t)
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s %s: %v", gvk, o.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		body := must(o.MarshalJSON())(t)
		// Server-side apply: created, or made equal to the manifest when
		// an earlier test made the same object.
		if _, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "example", Force: ptr(true)}); err != nil {
			t.Fatalf("applying %s %s/%s: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
		}
		if !classExisted && gvk.Kind == "GatewayClass" {
			t.Cleanup(func() { _ = ri.Delete(context.Background(), o.GetName(), metav1.DeleteOptions{}) })
		}
	}

	// The pods the Services select, with their EndpointSlices.
	type hit struct{ pod, gwHeader, debug, path, host string }
	hits := make(chan hit, 1024)
	startEcho := func(name, ip string) {
		ln := must(net.Listen("tcp", net.JoinHostPort(ip, "8080")))(t)
		srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case hits <- hit{name, r.Header.Get("X-Gateway"), r.Header.Get("X-Debug"), r.URL.Path, r.Host}:
			default:
			}
			_, _ = io.WriteString(w, name)
		})}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
	}
	for i, svc := range []string{"echo", "echo-canary"} {
		ip := testnetns.Addr(256 + 40 + i)
		startEcho(svc, ip)
		s := slice("echo", svc, svc+"-abc", pod{svc, ip})
		must(c.core.DiscoveryV1().EndpointSlices("echo").Create(ctx, s, metav1.CreateOptions{}))(t)
	}

	// The edge, from the ConfigMap's file: only the listeners move to free
	// loopback ports and the kubeconfig is given (no in-cluster config
	// here); the kubeconfig acts as the example's ServiceAccount.
	cm := find(t, objs, "ConfigMap", "causeway-gateway-routes")
	file, _, _ := unstructured.NestedString(cm.Object, "data", "causeway.yaml")
	var rf map[string]any
	if err := yaml.Unmarshal([]byte(file), &rf); err != nil {
		t.Fatal(err)
	}
	if l := rf["listen"].(map[string]any); l["http"] != ":8080" || l["admin"] != ":9901" {
		t.Fatalf("the routes file listens on %v: the Deployment's ports and probes say :8080 and :9901", l)
	}
	rf["listen"] = map[string]any{"http": "127.0.0.1:0", "admin": "127.0.0.1:0"}
	rf["access_log"] = map[string]any{"output": "off"}
	saConfig := must(clientcmd.LoadFromFile(kubeconfig))(t)
	for _, ai := range saConfig.AuthInfos {
		ai.Impersonate = "system:serviceaccount:causeway-system:causeway-gateway"
	}
	dir := t.TempDir()
	saKubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*saConfig, saKubeconfig); err != nil {
		t.Fatal(err)
	}
	rf["providers"].(map[string]any)["kubernetes"].(map[string]any)["kubeconfig"] = saKubeconfig
	path := filepath.Join(dir, "causeway.yaml")
	if err := os.WriteFile(path, must(yaml.Marshal(rf))(t), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("POD_NAME", "causeway-gateway-7d9f-abcde")
	t.Setenv("POD_NAMESPACE", "causeway-system")
	e := serveEdge(t, path)
	addr := e.Addr("http")

	// The README's checks: the Gateway Programmed (kubectl get gateway -o
	// yaml), the route accepted, and curl -H 'Host: echo.example.com'.
	eventually(t, "the Gateway is Programmed with the route attached", func() bool {
		g := must(c.gw.GatewayV1().Gateways("causeway-system").Get(ctx, "causeway", metav1.GetOptions{}))(t)
		for _, cd := range g.Status.Conditions {
			if cd.Type == "Programmed" && cd.Status == metav1.ConditionTrue && cd.ObservedGeneration == g.Generation {
				return len(g.Status.Listeners) == 1 && g.Status.Listeners[0].AttachedRoutes == 1
			}
		}
		return false
	})
	eventually(t, "the HTTPRoute is Accepted and its refs resolved", func() bool {
		a, r := routeCondition(t, c, "echo", "echo", "Accepted"), routeCondition(t, c, "echo", "echo", "ResolvedRefs")
		return a != nil && a.Status == metav1.ConditionTrue && r != nil && r.Status == metav1.ConditionTrue
	})
	// The policy: accepted, and its limit on the route the edge serves.
	eventually(t, "the CausewayPolicy is Accepted", func() bool {
		a := policyAccepted(t, c, "echo", "echo-limits")
		return a != nil && a.Status == metav1.ConditionTrue
	})
	eventually(t, "the route carries the policy's rate limit", func() bool {
		res, err := http.Get("http://" + e.Addr("admin") + "/config")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return strings.Contains(string(b), "k8s.echo.policy.echo-limits.ratelimit.0")
	})
	lease := must(c.core.CoordinationV1().Leases("causeway-system").Get(ctx, "causeway-causeway-status", metav1.GetOptions{}))(t)
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "causeway-gateway-7d9f-abcde" {
		t.Errorf("the status Lease is held by %v, want the pod name", lease.Spec.HolderIdentity)
	}

	get := func(host, path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		req.Host = host
		req.Header.Set("X-Debug", "1")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	for len(hits) > 0 {
		<-hits
	}
	const n = 1000
	count := map[string]int{}
	for i := 0; i < n; i++ {
		code, body := get("echo.example.com", fmt.Sprintf("/echo/%d", i))
		if code != 200 {
			t.Fatalf("request %d: %d %s", i, code, body)
		}
		h := <-hits
		if h.gwHeader != "causeway" || h.debug != "" || h.path != fmt.Sprintf("/echo/%d", i) || h.host != "echo.example.com" || h.pod != body {
			t.Fatalf("request %d: the backend received %+v, answered %q", i, h, body)
		}
		count[h.pod]++
	}
	// 10 % of 1000: 100 expected, standard deviation about 9.5; 60..140
	// is over four of them, so a correct split fails once in 10^4 runs.
	if c := count["echo-canary"]; c < 60 || c > 140 || count["echo"]+c != n {
		t.Errorf("split over %d requests: %v, want about 900/100", n, count)
	}
	for _, tc := range []struct{ host, path string }{{"echo.example.com", "/echoes"}, {"other.example.com", "/echo/x"}} {
		if code, body := get(tc.host, tc.path); code != 404 {
			t.Errorf("%s%s: %d %s, want 404", tc.host, tc.path, code, body)
		}
	}

	// What the Service's port and the Deployment's ports promise.
	svc := must(c.core.CoreV1().Services("causeway-system").Get(ctx, "causeway-gateway", metav1.GetOptions{}))(t)
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 80 || svc.Spec.Ports[0].TargetPort.StrVal != "http" {
		t.Errorf("the edge's Service: %+v", svc.Spec)
	}
}

// TestExampleMigrationDocApplies sends every Kubernetes object in the
// YAML blocks of migrate-ingress-nginx.md (the Ingresses before, the
// HTTPRoute after) to the real API server as a server-side dry run: the
// page's examples pass the API server's and the CRDs' validation as
// written. Blocks without apiVersion and kind (routes file snippets) are
// not objects and are passed over.
func TestExampleMigrationDocApplies(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	cfg := must(clientcmd.BuildConfigFromFlags("", kubeconfig))(t)
	dyn := must(dynamic.NewForConfig(cfg))(t)
	mapper := restmapper.NewDiscoveryRESTMapper(must(restmapper.GetAPIGroupResources(must(discovery.NewDiscoveryClientForConfig(cfg))(t)))(t))

	b := must(os.ReadFile(filepath.Join(exampleDir, "migrate-ingress-nginx.md")))(t)
	var objs []*unstructured.Unstructured
	for _, block := range strings.Split(string(b), "```yaml\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		for _, o := range decodeObjects(t, "migrate-ingress-nginx.md:\n"+block, strings.NewReader(block)) {
			if o.GetAPIVersion() != "" && o.GetKind() != "" {
				objs = append(objs, o)
			}
		}
	}
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
		if ns := o.GetNamespace(); ns != "" {
			if _, err := c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s %s: %v", gvk, o.GetName(), err)
		}
		body := must(o.MarshalJSON())(t)
		_, err = dyn.Resource(m.Resource).Namespace(o.GetNamespace()).Patch(ctx, o.GetName(), types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: "example", Force: ptr(true), DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Errorf("migrate-ingress-nginx.md: %s %s/%s: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
		}
	}
	// The page's before and after: a parse that finds fewer has lost some.
	if kinds["Ingress"] != 3 || kinds["HTTPRoute"] != 1 {
		t.Errorf("objects found in migrate-ingress-nginx.md: %v, want 3 Ingresses and 1 HTTPRoute", kinds)
	}
}
