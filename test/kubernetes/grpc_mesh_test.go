package kubernetes_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
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
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/gateway"
	"github.com/causewayhq/causeway/mesh/meshtest"
	"github.com/causewayhq/causeway/routes"
)

// TestGRPCRouteThroughASidecar: a GRPCRoute to a mesh Service, end to
// end with a real gRPC client and server: edge -> (mTLS) -> the pod's
// sidecar -> (h2c) -> the gRPC service on the pod's loopback. A unary
// call answers; a gRPC error status (NOT_FOUND) reaches the client as
// that status; a server-streaming call delivers each message as it is
// sent. The service sees every call once, with the edge's verified ID.
func TestGRPCRouteThroughASidecar(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	const ns = "grpc-mesh"
	edgeID := routes.ServiceAccountID(meshTD, "causeway-system", "causeway-gateway")
	rpcID := routes.ServiceAccountID(meshTD, ns, "rpc")
	ca := meshtest.NewCA(t, meshTD)

	// The gRPC service, on loopback as a pod's app would be, recording
	// what reached it.
	var mu sync.Mutex
	var calls []string // "method peer"
	var streams atomic.Int64
	record := func(ctx context.Context, method string) {
		md, _ := metadata.FromIncomingContext(ctx)
		mu.Lock()
		calls = append(calls, method+" "+fmt.Sprint(md.Get(gateway.PeerIDHeader)))
		mu.Unlock()
	}
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			record(ctx, info.FullMethod)
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(s any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			record(ss.Context(), info.FullMethod)
			streams.Add(1)
			return h(s, ss)
		}),
	)
	hs := health.NewServer()
	hs.SetServingStatus("shop.Cart", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	ln := must(net.Listen("tcp", "127.0.0.1:0"))(t)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	ip := edgeMeshAddr(40)
	files := ca.IssueFiles(t.TempDir(), rpcID)
	serveSidecar(t, "rpc-1", fmt.Sprintf(`version: 1
identity: {cert_file: %q, key_file: %q, bundle_file: %q}
access_log: {output: "off"}
admin: "127.0.0.1:0"
inbound:
  listen: %q
  forward_to: %q
  allow: [%q]
`, files.Cert, files.Key, files.Bundle, net.JoinHostPort(ip, "15443"), ln.Addr().String(), edgeID))
	direct := appPort(t, ip) // the app port must never be dialled

	must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	meshGateway(t, c, ns)
	p := must(c.core.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "rpc-1", Annotations: map[string]string{"test/ip": ip}},
		Spec:       corev1.PodSpec{ServiceAccountName: "rpc", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}, metav1.CreateOptions{}))(t)
	must(c.core.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cart", Labels: map[string]string{routes.MeshLabel: "true"}},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 80}}},
	}, metav1.CreateOptions{}))(t)
	must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, meshSlice(ns, "cart", "cart-1", p), metav1.CreateOptions{}))(t)
	must(c.gw.GatewayV1().GRPCRoutes(ns).Create(ctx, &gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "health"},
		Spec: gatewayv1.GRPCRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
			Hostnames:       []gatewayv1.Hostname{"rpc.example"},
			Rules: []gatewayv1.GRPCRouteRule{{
				Matches:     []gatewayv1.GRPCRouteMatch{{Method: &gatewayv1.GRPCMethodMatch{Service: ptr("grpc.health.v1.Health")}}},
				BackendRefs: []gatewayv1.GRPCBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "cart", Port: ptr(gatewayv1.PortNumber(80))}}}},
			}},
		}}, metav1.CreateOptions{}))(t)

	e := serveEdge(t, meshEdgeFile(t, kubeconfig, ns, meshSection(t, ca, edgeID)))
	conn := must(grpc.NewClient(e.Addr("http"), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("rpc.example")))(t)
	t.Cleanup(func() { _ = conn.Close() })
	client := healthpb.NewHealthClient(conn)
	check := func(svc string) (*healthpb.HealthCheckResponse, error) {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		return client.Check(cctx, &healthpb.HealthCheckRequest{Service: svc})
	}
	eventually(t, "the unary call answers through the sidecar", func() bool {
		res, err := check("shop.Cart")
		return err == nil && res.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
	mu.Lock()
	calls = nil
	mu.Unlock()

	t.Run("unary calls", func(t *testing.T) {
		for range 50 {
			if res, err := check("shop.Cart"); err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("Check: %v %v", res, err)
			}
		}
	})
	t.Run("a gRPC error status reaches the client as itself", func(t *testing.T) {
		_, err := check("shop.Unknown")
		if st, _ := status.FromError(err); st.Code() != codes.NotFound || st.Message() != "unknown service" {
			t.Fatalf("Check of an unknown service: %v, want NOT_FOUND from the service", err)
		}
	})
	t.Run("a server-streaming call delivers each message as it is sent", func(t *testing.T) {
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		defer wcancel()
		stream := must(client.Watch(wctx, &healthpb.HealthCheckRequest{Service: "shop.Cart"}))(t)
		want := []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVING}
		for i, w := range want {
			if i > 0 {
				// The next message is sent only after the previous one
				// arrived: a proxy that buffered the stream would stall here.
				hs.SetServingStatus("shop.Cart", w)
			}
			res, err := stream.Recv()
			if err != nil || res.GetStatus() != w {
				t.Fatalf("message %d: %v %v, want %v", i, res, err, w)
			}
		}
		wcancel()
		if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
			t.Fatalf("after cancel: %v", err)
		}
	})

	mu.Lock()
	got := append([]string(nil), calls...)
	mu.Unlock()
	want := map[string]int{
		"/grpc.health.v1.Health/Check [" + edgeID + "]": 51,
		"/grpc.health.v1.Health/Watch [" + edgeID + "]": 1,
	}
	seen := map[string]int{}
	for _, c := range got {
		seen[c]++
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("the service received %v, want %v", seen, want)
	}
	if n := direct.Load(); n != 0 {
		t.Fatalf("the app port was dialled %d times", n)
	}
}
