package kubernetes_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/providers/kubernetes"
)

// grpcRecorder is a gRPC backend that keeps the metadata of every call
// that reached it, so a test checks what the upstream received.
type grpcRecorder struct {
	mu   sync.Mutex
	seen []metadata.MD
}

func (g *grpcRecorder) calls() []metadata.MD {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]metadata.MD(nil), g.seen...)
}

func startGRPCRecorder(t *testing.T, ip string) *grpcRecorder {
	t.Helper()
	g := &grpcRecorder{}
	ln := must(net.Listen("tcp", net.JoinHostPort(ip, "8080")))(t)
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		g.mu.Lock()
		g.seen = append(g.seen, md.Copy())
		g.mu.Unlock()
		return h(ctx, req)
	}))
	hs := health.NewServer()
	hs.SetServingStatus("shop.Cart", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return g
}

// A CausewayPolicy on a GRPCRoute, through a real edge to a real gRPC
// server: a gRPC client is refused with a gRPC status it understands
// (UNAUTHENTICATED for no key or a wrong one, INTERNAL while the policy is
// invalid), never a JSON body, and none of the refused calls reaches the
// backend. An accepted call reaches it with the key stripped and the
// forward_name header set by the edge, whatever the client sent in it.
func TestCausewayPolicyOnAGRPCRoute(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	ip := testnetns.Addr(256 + 60)
	backend := startGRPCRecorder(t, ip)

	const ns = "rpc-guarded"
	must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	_ = c.createClass(ctx) // may exist already
	must(c.gw.GatewayV1().Gateways(ns).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}}}}, metav1.CreateOptions{}))(t)
	must(c.core.CoreV1().Services(ns).Create(ctx, service(ns, "cart"), metav1.CreateOptions{}))(t)
	must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "cart", "cart-1", pod{"cart-1", ip}), metav1.CreateOptions{}))(t)
	const key = "grpc-alice-key-0123456789"
	must(c.core.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "keys"}, Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"alice": []byte(key)}}, metav1.CreateOptions{}))(t)
	policies := c.dyn.Resource(kubernetes.PolicyGVR).Namespace(ns)
	const goodSpec = `{
		"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "GRPCRoute", "name": "health"}],
		"authenticators": [{"config": {"api_key": {"header": "X-Key", "forward_name": "X-Client"}}, "secrets": {"apiKeys": {"name": "keys"}}}]}`
	// The policy first: the route is never served without it.
	must(policies.Create(ctx, policyJSON(t, ns, "rpc-keys", goodSpec), metav1.CreateOptions{}))(t)
	must(c.gw.GatewayV1().GRPCRoutes(ns).Create(ctx, &gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "health"},
		Spec: gatewayv1.GRPCRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
			Hostnames:       []gatewayv1.Hostname{"rpc-guarded.example"},
			Rules: []gatewayv1.GRPCRouteRule{{
				Matches:     []gatewayv1.GRPCRouteMatch{{Method: &gatewayv1.GRPCMethodMatch{Service: ptr("grpc.health.v1.Health"), Method: ptr("Check")}}},
				BackendRefs: []gatewayv1.GRPCBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "cart", Port: ptr(gatewayv1.PortNumber(80))}}}},
			}},
		}}, metav1.CreateOptions{}))(t)

	e := serveEdge(t, edgeFile(t, kubeconfig, false, ns))
	conn := must(grpc.NewClient(e.Addr("http"), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("rpc-guarded.example")))(t)
	t.Cleanup(func() { _ = conn.Close() })
	client := healthpb.NewHealthClient(conn)
	// call sends Check with the given metadata (pairs of key and value).
	call := func(md ...string) error {
		cctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, md...), 5*time.Second)
		defer cancel()
		res, err := client.Check(cctx, &healthpb.HealthCheckRequest{Service: "shop.Cart"})
		if err == nil && res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("the backend answered %v", res.GetStatus())
		}
		return err
	}
	eventually(t, "the keyed call is served", func() bool { return call("x-key", key) == nil })
	if n := len(backend.calls()); n != 1 {
		t.Fatalf("the backend saw %d calls before the first keyed one was served, want 1", n)
	}

	// Each refusal is a gRPC status (a JSON body would reach the client
	// as UNKNOWN or INTERNAL with an "unexpected content-type" message).
	refused := []struct {
		name string
		md   []string
		want codes.Code
	}{
		{"no key", nil, codes.Unauthenticated},
		{"a wrong key", []string{"x-key", "guess"}, codes.Unauthenticated},
		{"two keys", []string{"x-key", key, "x-key", key}, codes.Unauthenticated},
		{"the forwarded header alone", []string{"x-client", "alice"}, codes.Unauthenticated},
		{"a key one byte short", []string{"x-key", key[:len(key)-1]}, codes.Unauthenticated},
	}
	for _, tc := range refused {
		err := call(tc.md...)
		st, _ := status.FromError(err)
		if st.Code() != tc.want || strings.Contains(st.Message(), "content-type") {
			t.Errorf("%s: %v, want %v from the edge", tc.name, err, tc.want)
		}
	}
	// A client's own X-Client never reaches the backend as sent.
	for i := 0; i < 20; i++ {
		if err := call("x-key", key, "x-client", "admin"); err != nil {
			t.Fatalf("a keyed call with a spoofed x-client: %v", err)
		}
	}
	seen := backend.calls()
	if len(seen) != 21 {
		t.Fatalf("the backend saw %d calls, want 21 (the keyed ones only)", len(seen))
	}
	for _, md := range seen {
		if got := md.Get("x-client"); len(got) != 1 || got[0] != "alice" {
			t.Fatalf("the backend saw x-client %q, want [alice] set by the edge", got)
		}
		if got := md.Get("x-key"); len(got) != 0 {
			t.Fatalf("the key reached the backend: %q", got)
		}
	}

	// An invalid policy (a Secret that does not exist) fails closed with
	// a gRPC status, for keyed and unkeyed calls alike.
	updateFresh(t, getPolicy(ctx, policies, "rpc-keys"), func(cur *unstructured.Unstructured) {
		cur.Object["spec"] = policyJSON(t, ns, "rpc-keys", strings.Replace(goodSpec, `"name": "keys"`, `"name": "gone"`, 1)).Object["spec"]
	}, putPolicy(ctx, policies))
	eventually(t, "the invalid policy fails closed", func() bool { return status.Code(call("x-key", key)) == codes.Internal })
	before := len(backend.calls())
	for i := 0; i < 20; i++ {
		md := []string{"x-key", key}
		if i%2 == 1 {
			md = nil
		}
		err := call(md...)
		st, _ := status.FromError(err)
		if st.Code() != codes.Internal || !strings.Contains(st.Message(), "CausewayPolicy") {
			t.Fatalf("a call while the policy is invalid: %v, want INTERNAL naming the policy", err)
		}
	}
	if got := len(backend.calls()); got != before {
		t.Fatalf("the backend saw %d calls while the policy was invalid", got-before)
	}
	eventually(t, "Invalid in the policy's status", func() bool {
		a := policyAccepted(t, c, ns, "rpc-keys")
		return a != nil && a.Reason == "Invalid" && strings.Contains(a.Message, "gone")
	})
}
