package kubernetes_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/routes"
)

// countingPod is startPod that also counts what it received.
func countingPod(t *testing.T, name, ip string) (pod, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "8080"))
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int64
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintf(w, `{"Pod":%q,"Path":%q}`, name, r.URL.Path)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return pod{name, ip}, &hits
}

// scopedEdgeFile is a routes file for an edge that serves only the
// Gateways listed, of class.
func scopedEdgeFile(t *testing.T, path, kubeconfig, class, ns string, gateways ...string) {
	t.Helper()
	list := ""
	for i, g := range gateways {
		if i > 0 {
			list += ", "
		}
		list += fmt.Sprintf("%q", ns+"/"+g)
	}
	if err := os.WriteFile(path, []byte(fmt.Sprintf("version: 1\nlisten: {http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: \"off\"}\n"+
		"providers:\n  kubernetes: {kubeconfig: %q, gateway_class: %q, namespaces: [%s], gateways: [%s]}\n", kubeconfig, class, ns, list)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestEdgePerGateway: two edges, each limited to its own Gateway, with a
// route on each Gateway matching the same requests (and one more path
// only on b's). Every request sent to an edge reaches its own Gateway's
// backend, and the other backend receives nothing from it; a reload that
// changes the edge's Gateway moves it over.
func TestEdgePerGateway(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	const ns, class = "edge-per-gateway", "edge-per-gateway"
	podA, hitsA := countingPod(t, "pod-a", testnetns.Addr(256+70))
	podB, hitsB := countingPod(t, "pod-b", testnetns.Addr(256+71))

	must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	must(c.gw.GatewayV1().GatewayClasses().Create(ctx, &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: class},
		Spec: gatewayv1.GatewayClassSpec{ControllerName: routes.KubernetesControllerName}}, metav1.CreateOptions{}))(t)
	for _, g := range []struct {
		name string
		p    pod
	}{{"a", podA}, {"b", podB}} {
		must(c.gw.GatewayV1().Gateways(ns).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: g.name},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: class, Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}}}}, metav1.CreateOptions{}))(t)
		svc := "svc-" + g.name
		must(c.core.CoreV1().Services(ns).Create(ctx, service(ns, svc), metav1.CreateOptions{}))(t)
		must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, svc, svc+"-1", g.p), metav1.CreateOptions{}))(t)
		rules := []gatewayv1.HTTPRouteRule{prefixRule("/", svc, "")}
		if g.name == "b" {
			rules = append(rules, prefixRule("/only-b", svc, ""))
		}
		r := httpRoute(ns, "to-"+g.name, rules...)
		r.Spec.ParentRefs = []gatewayv1.ParentReference{{Name: gatewayv1.ObjectName(g.name)}}
		must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, r, metav1.CreateOptions{}))(t)
	}

	dir := t.TempDir()
	fileA, fileB := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	scopedEdgeFile(t, fileA, kubeconfig, class, ns, "a")
	scopedEdgeFile(t, fileB, kubeconfig, class, ns, "b")
	edgeA, edgeB := serveEdge(t, fileA), serveEdge(t, fileB)
	addrA, addrB := edgeA.Addr("http"), edgeB.Addr("http")
	eventually(t, "edge a serves Gateway a", func() bool { code, s, _ := send(t, addrA, "shop.example", "/"); return code == 200 && s.Pod == "pod-a" })
	eventually(t, "edge b serves Gateway b", func() bool {
		code, s, _ := send(t, addrB, "shop.example", "/only-b/x")
		return code == 200 && s.Pod == "pod-b"
	})

	// Counted from here: each backend gets exactly what was sent to its
	// own Gateway's edge.
	hitsA.Store(0)
	hitsB.Store(0)
	paths := []string{"/", "/x", "/only-b", "/only-b/x"}
	const rounds = 100
	for i := range rounds {
		p := paths[i%len(paths)]
		for _, e := range []struct {
			addr, want string
		}{{addrA, "pod-a"}, {addrB, "pod-b"}} {
			if code, s, body := send(t, e.addr, "shop.example", p); code != 200 || s.Pod != e.want {
				t.Fatalf("request %d for %s to the edge of %s: %d %s", i, p, e.want, code, body)
			}
		}
	}
	if a, b := hitsA.Load(), hitsB.Load(); a != rounds || b != rounds {
		t.Fatalf("pod-a received %d and pod-b %d requests, want %d each", a, b, rounds)
	}

	// Each Gateway's listener counts its own route only: its edge wrote
	// its status.
	for _, g := range []string{"a", "b"} {
		eventually(t, "Gateway "+g+" counts one route", func() bool {
			gw := must(c.gw.GatewayV1().Gateways(ns).Get(ctx, g, metav1.GetOptions{}))(t)
			return len(gw.Status.Listeners) == 1 && gw.Status.Listeners[0].AttachedRoutes == 1
		})
	}

	// Reloaded with Gateway b instead, edge a serves b's routes and no
	// longer a's.
	scopedEdgeFile(t, fileA, kubeconfig, class, ns, "b")
	if err := edgeA.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "edge a serves Gateway b after the reload", func() bool {
		code, s, _ := send(t, addrA, "shop.example", "/")
		return code == 200 && s.Pod == "pod-b"
	})
	before := hitsA.Load()
	for i := range rounds {
		if code, s, body := send(t, addrA, "shop.example", paths[i%len(paths)]); code != 200 || s.Pod != "pod-b" {
			t.Fatalf("after the reload, request %d: %d %s", i, code, body)
		}
	}
	if n := hitsA.Load() - before; n != 0 {
		t.Fatalf("after the reload, pod-a received %d requests through edge a", n)
	}
}
