// Package kubernetes_test runs the edge against a real kube-apiserver and
// etcd, with the Gateway API CRDs, inside a network namespace of its own:
// the backends have pod-network addresses (10.244.x.y) that EndpointSlices
// accept, and the edge reaches them there. Nothing is mocked: the objects
// a user applies go through the API server's validation, the edge's
// provider watches them, and requests go through the edge's listener to
// the backends, which report what they received.
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
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/causewayhq/causeway/gateway"
	"github.com/causewayhq/causeway/internal/testk8s"
	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
)

var cp *testk8s.ControlPlane

func TestMain(m *testing.M) {
	os.Exit(testnetns.Main(func() int {
		return testk8s.StartMain(m, &cp, func(c *testk8s.ControlPlane) error {
			return c.InstallGatewayAPI()
		})
	}))
}

// pod is a backend with a pod address, answering with its name and what
// it received.
type pod struct {
	name, ip string
}

type seen struct {
	Pod, Path, Host, Gw string
}

func startPod(t *testing.T, name, ip string) pod {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "8080"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/hang") {
			// Held until the edge gives up on it (or a minute).
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
			return
		}
		_ = json.NewEncoder(w).Encode(seen{Pod: name, Path: r.URL.Path, Host: r.Host, Gw: r.Header.Get("X-Gw")})
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return pod{name, ip}
}

type cluster struct {
	core kubernetes.Interface
	gw   gwclient.Interface
	dyn  dynamic.Interface
}

// createClass creates the GatewayClass "causeway" for the edge's
// controller; an error when it cannot, as when an earlier test of the
// package's one API server made it already.
func (c cluster) createClass(ctx context.Context) error {
	_, err := c.gw.GatewayV1().GatewayClasses().Create(ctx, &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "causeway"},
		Spec: gatewayv1.GatewayClassSpec{ControllerName: routes.KubernetesControllerName}}, metav1.CreateOptions{})
	return err
}

func clientsFor(t *testing.T, kubeconfig string) cluster {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 1000, 1000
	core, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gwclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cluster{core, gw, dyn}
}

// must(call())(t) is call's value, or the test fails with its error.
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func ptr[T any](v T) *T { return &v }

func slice(ns, svc, name string, pods ...pod) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
	}
	for _, p := range pods {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{p.ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}})
	}
	return es
}

func service(ns, name string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{
		Ports: []corev1.ServicePort{{Name: "http", Port: 80}},
	}}
}

func prefixRule(path, svc, svcNS string) gatewayv1.HTTPRouteRule {
	ref := gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(svc), Port: ptr(gatewayv1.PortNumber(80))}}}
	if svcNS != "" {
		ref.Namespace = ptr(gatewayv1.Namespace(svcNS))
	}
	return gatewayv1.HTTPRouteRule{
		Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptr(gatewayv1.PathMatchPathPrefix), Value: ptr(path)}}},
		BackendRefs: []gatewayv1.HTTPBackendRef{ref},
	}
}

func httpRoute(ns, name string, rules ...gatewayv1.HTTPRouteRule) *gatewayv1.HTTPRoute {
	return &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: gatewayv1.HTTPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
		Hostnames:       []gatewayv1.Hostname{"shop.example"},
		Rules:           rules,
	}}
}

// send makes one request to the edge for host and path.
func send(t *testing.T, addr, host, path string) (int, seen, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	req.Host = host
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var s seen
	_ = json.Unmarshal(b, &s)
	return res.StatusCode, s, string(b)
}

// edgeFile writes a routes file with no routes of its own that takes
// them from the cluster (from the namespaces given, else all), on
// loopback ports; withAdmin adds an admin listener.
func edgeFile(t *testing.T, kubeconfig string, withAdmin bool, namespaces ...string) string {
	t.Helper()
	admin := ""
	if withAdmin {
		admin = "127.0.0.1:0"
	}
	ns := ""
	if len(namespaces) > 0 {
		ns = ", namespaces: [" + strings.Join(namespaces, ", ") + "]"
	}
	file := filepath.Join(t.TempDir(), "causeway.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf("version: 1\nlisten: {http: \"127.0.0.1:0\", admin: %q}\naccess_log: {output: \"off\"}\nproviders:\n  kubernetes: {kubeconfig: %q%s}\n", admin, kubeconfig, ns)), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// serveEdge runs an edge on the routes file at path until the test ends;
// its log is shown when the test fails.
func serveEdge(t *testing.T, path string) *gateway.Edge {
	t.Helper()
	logs := &testutil.Buffer{}
	e := must(gateway.NewEdge(context.Background(), gateway.EdgeOptions{ConfigPath: path, Logger: slog.New(slog.NewJSONHandler(logs, nil))}))(t)
	serveUntilEnd(t, "edge", e, logs)
	return e
}

// listenServer is an edge or a sidecar.
type listenServer interface {
	Listen() error
	Serve(context.Context) error
	Close()
}

// serveUntilEnd listens and serves s until the test ends; what it logged
// is shown, under what, when the test fails.
func serveUntilEnd(t *testing.T, what string, s listenServer, logs *testutil.Buffer) {
	t.Helper()
	if err := s.Listen(); err != nil {
		s.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("%s log:\n%s", what, logs.String())
		}
	})
}

// updateFresh reads an object, changes it and writes it back, reading
// again when the write conflicts: the edge writes the status of routes
// and policies, and each status write changes the object's version.
func updateFresh[T any](t *testing.T, get func() (T, error), change func(T), update func(T) (T, error)) T {
	t.Helper()
	var out T
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := get()
		if err != nil {
			return err
		}
		change(cur)
		out, err = update(cur)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 30s: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func routeCondition(t *testing.T, c cluster, ns, name, typ string) *metav1.Condition {
	t.Helper()
	r := must(c.gw.GatewayV1().HTTPRoutes(ns).Get(context.Background(), name, metav1.GetOptions{}))(t)
	for _, p := range r.Status.Parents {
		if p.ControllerName != routes.KubernetesControllerName {
			continue
		}
		for i := range p.Conditions {
			if p.Conditions[i].Type == typ && p.Conditions[i].ObservedGeneration == r.Generation {
				return &p.Conditions[i]
			}
		}
	}
	return nil
}

func TestGatewayAPIThroughTheEdge(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	p1, p2, db := startPod(t, "web-1", testnetns.Addr(256+1)), startPod(t, "web-2", testnetns.Addr(256+2)), startPod(t, "db-1", testnetns.Addr(256+3))

	// The edge: a file with no routes of its own.
	e := serveEdge(t, edgeFile(t, kubeconfig, true))
	addr := e.Addr("http")

	// What a user applies.
	for _, ns := range []string{"shop", "data"} {
		must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	}
	must(c.gw.GatewayV1().GatewayClasses().Create(ctx, &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "causeway"},
		Spec: gatewayv1.GatewayClassSpec{ControllerName: routes.KubernetesControllerName}}, metav1.CreateOptions{}))(t)
	must(c.gw.GatewayV1().Gateways("shop").Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "gw"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}}}}, metav1.CreateOptions{}))(t)
	must(c.core.CoreV1().Services("shop").Create(ctx, service("shop", "web"), metav1.CreateOptions{}))(t)
	must(c.core.DiscoveryV1().EndpointSlices("shop").Create(ctx, slice("shop", "web", "web-abc", p1, p2), metav1.CreateOptions{}))(t)
	api := prefixRule("/api", "web", "")
	api.Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "X-Gw", Value: "causeway"}}}}}
	must(c.gw.GatewayV1().HTTPRoutes("shop").Create(ctx, httpRoute("shop", "store", api), metav1.CreateOptions{}))(t)

	// Served, through both pods, with the filter applied, and the whole
	// segment only.
	eventually(t, "the route is served", func() bool { code, _, _ := send(t, addr, "shop.example", "/api/items"); return code == 200 })
	pods := map[string]bool{}
	for i := 0; i < 40; i++ {
		code, s, body := send(t, addr, "shop.example", "/api/items")
		if code != 200 || s.Path != "/api/items" || s.Host != "shop.example" || s.Gw != "causeway" {
			t.Fatalf("request %d: %d %s", i, code, body)
		}
		pods[s.Pod] = true
	}
	if !pods["web-1"] || !pods["web-2"] {
		t.Fatalf("pods reached: %v, want both", pods)
	}
	for _, tc := range []struct{ host, path string }{{"shop.example", "/apix"}, {"other.example", "/api/items"}} {
		if code, _, body := send(t, addr, tc.host, tc.path); code != 404 {
			t.Fatalf("%s%s: %d %s, want 404", tc.host, tc.path, code, body)
		}
	}
	if res, err := http.Get("http://" + e.Addr("admin") + "/readyz"); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("readyz: %v %v", res, err)
	}

	// The status the edge wrote.
	eventually(t, "route accepted and resolved", func() bool {
		a, r := routeCondition(t, c, "shop", "store", "Accepted"), routeCondition(t, c, "shop", "store", "ResolvedRefs")
		return a != nil && a.Status == metav1.ConditionTrue && r != nil && r.Status == metav1.ConditionTrue
	})
	eventually(t, "gateway programmed", func() bool {
		g := must(c.gw.GatewayV1().Gateways("shop").Get(ctx, "gw", metav1.GetOptions{}))(t)
		for _, cd := range g.Status.Conditions {
			if cd.Type == "Programmed" && cd.Status == metav1.ConditionTrue && cd.ObservedGeneration == g.Generation {
				return len(g.Status.Listeners) == 1 && g.Status.Listeners[0].AttachedRoutes == 1
			}
		}
		return false
	})

	// A pod leaves: traffic follows the EndpointSlice.
	es := must(c.core.DiscoveryV1().EndpointSlices("shop").Get(ctx, "web-abc", metav1.GetOptions{}))(t)
	es.Endpoints = es.Endpoints[1:] // web-2 stays
	must(c.core.DiscoveryV1().EndpointSlices("shop").Update(ctx, es, metav1.UpdateOptions{}))(t)
	eventually(t, "only web-2 serves", func() bool {
		for i := 0; i < 20; i++ {
			if _, s, _ := send(t, addr, "shop.example", "/api/x"); s.Pod != "web-2" {
				return false
			}
		}
		return true
	})

	// A route to a Service that does not exist: 500 in the edge's error
	// format and BackendNotFound; the rest serves on.
	must(c.gw.GatewayV1().HTTPRoutes("shop").Create(ctx, httpRoute("shop", "broken", prefixRule("/broken", "nope", "")), metav1.CreateOptions{}))(t)
	eventually(t, "the broken route answers 500", func() bool {
		code, _, body := send(t, addr, "shop.example", "/broken")
		return code == 500 && strings.Contains(body, `"status":500`)
	})
	eventually(t, "BackendNotFound", func() bool {
		r := routeCondition(t, c, "shop", "broken", "ResolvedRefs")
		return r != nil && r.Status == metav1.ConditionFalse && r.Reason == "BackendNotFound"
	})
	if code, s, _ := send(t, addr, "shop.example", "/api/x"); code != 200 || s.Pod != "web-2" {
		t.Fatalf("the good route after a broken one: %d %+v", code, s)
	}

	// Another namespace's Service needs a ReferenceGrant there.
	must(c.core.CoreV1().Services("data").Create(ctx, service("data", "db"), metav1.CreateOptions{}))(t)
	must(c.core.DiscoveryV1().EndpointSlices("data").Create(ctx, slice("data", "db", "db-abc", db), metav1.CreateOptions{}))(t)
	must(c.gw.GatewayV1().HTTPRoutes("shop").Create(ctx, httpRoute("shop", "cross", prefixRule("/db", "db", "data")), metav1.CreateOptions{}))(t)
	eventually(t, "RefNotPermitted", func() bool {
		r := routeCondition(t, c, "shop", "cross", "ResolvedRefs")
		return r != nil && r.Status == metav1.ConditionFalse && r.Reason == "RefNotPermitted"
	})
	if code, s, body := send(t, addr, "shop.example", "/db"); code != 500 || s.Pod != "" {
		t.Fatalf("a backend in another namespace without a grant: %d %s", code, body)
	}
	must(c.gw.GatewayV1beta1().ReferenceGrants("data").Create(ctx, &gatewayv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "data", Name: "shop-to-db"},
		Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Namespace: "shop"}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
		}}, metav1.CreateOptions{}))(t)
	eventually(t, "the granted backend serves", func() bool { _, s, _ := send(t, addr, "shop.example", "/db"); return s.Pod == "db-1" })

	// What the CRD's own validation refuses never reaches the edge.
	bad := httpRoute("shop", "invalid", prefixRule("no-slash", "web", ""))
	if _, err := c.gw.GatewayV1().HTTPRoutes("shop").Create(ctx, bad, metav1.CreateOptions{}); err == nil {
		t.Fatal("the API server accepted a path without a leading slash")
	}

	// The API server goes away: the edge serves its last model; when it
	// is back, changes flow again.
	cp.StopAPIServer()
	for i := 0; i < 20; i++ {
		if code, s, _ := send(t, addr, "shop.example", "/api/x"); code != 200 || s.Pod != "web-2" {
			t.Fatalf("while the API server is away: %d %+v", code, s)
		}
	}
	if err := cp.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	routesAPI := c.gw.GatewayV1().HTTPRoutes("shop")
	getRoute := func(name string) func() (*gatewayv1.HTTPRoute, error) {
		return func() (*gatewayv1.HTTPRoute, error) { return routesAPI.Get(ctx, name, metav1.GetOptions{}) }
	}
	putRoute := func(r *gatewayv1.HTTPRoute) (*gatewayv1.HTTPRoute, error) {
		return routesAPI.Update(ctx, r, metav1.UpdateOptions{})
	}
	updateFresh(t, getRoute("store"), func(store *gatewayv1.HTTPRoute) {
		store.Spec.Rules = append(store.Spec.Rules, prefixRule("/new", "web", ""))
	}, putRoute)
	eventually(t, "a change after the API server's return is served", func() bool {
		code, s, _ := send(t, addr, "shop.example", "/new/x")
		return code == 200 && s.Pod == "web-2"
	})

	// Rule timeouts: the request bound answers 504 in the edge's format
	// while the pod still holds the request; the API server's own rule
	// refuses a backend bound longer than the request's.
	slow := prefixRule("/slow", "web", "")
	slow.Timeouts = &gatewayv1.HTTPRouteTimeouts{Request: ptr(gatewayv1.Duration("2s")), BackendRequest: ptr(gatewayv1.Duration("200ms"))}
	must(c.gw.GatewayV1().HTTPRoutes("shop").Create(ctx, httpRoute("shop", "slow", slow), metav1.CreateOptions{}))(t)
	eventually(t, "the slow route is served", func() bool { code, _, _ := send(t, addr, "shop.example", "/slow/x"); return code == 200 })
	if code, _, body := send(t, addr, "shop.example", "/slow/hang"); code != http.StatusGatewayTimeout || !strings.Contains(body, "timed out") {
		t.Fatalf("a held request: %d %s, want 504 from the backend bound", code, body)
	}
	longer := prefixRule("/longer", "web", "")
	longer.Timeouts = &gatewayv1.HTTPRouteTimeouts{Request: ptr(gatewayv1.Duration("1s")), BackendRequest: ptr(gatewayv1.Duration("2s"))}
	if _, err := c.gw.GatewayV1().HTTPRoutes("shop").Create(ctx, httpRoute("shop", "bad-timeouts", longer), metav1.CreateOptions{}); err == nil {
		t.Fatal("the API server accepted a backendRequest longer than request")
	}
	updateFresh(t, getRoute("slow"), func(r *gatewayv1.HTTPRoute) { r.Spec.Rules[0].Timeouts.BackendRequest = nil }, putRoute)
	eventually(t, "the request bound alone answers", func() bool {
		code, _, body := send(t, addr, "shop.example", "/slow/hang")
		return code == http.StatusGatewayTimeout && strings.Contains(body, "route timeout")
	})
}

// plainGateway makes namespace ns with Gateway "gw" (one HTTP listener, of
// the class "causeway", made if missing) and Service "web" whose
// EndpointSlice holds p.
func plainGateway(t *testing.T, c cluster, ns string, p pod) {
	t.Helper()
	ctx := context.Background()
	must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	_ = c.createClass(ctx) // may exist already
	must(c.gw.GatewayV1().Gateways(ns).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}}}}, metav1.CreateOptions{}))(t)
	must(c.core.CoreV1().Services(ns).Create(ctx, service(ns, "web"), metav1.CreateOptions{}))(t)
	must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "web", "web-a", p), metav1.CreateOptions{}))(t)
}
