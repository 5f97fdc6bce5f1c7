package kubernetes_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
)

// A GRPCRoute through the edge to a real gRPC server on a pod address: the
// routed method answers, over h2c from the client and h2c to the pod; a
// method the route does not list gets the gRPC status a gRPC client
// understands (UNIMPLEMENTED), never an HTML or JSON body.
func TestGRPCRouteThroughTheEdge(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)

	ip := testnetns.Addr(256 + 20)
	ln := must(net.Listen("tcp", net.JoinHostPort(ip, "8080")))(t)
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("shop.Cart", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	const ns = "rpc"
	must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	_ = c.createClass(ctx) // may exist already
	must(c.gw.GatewayV1().Gateways(ns).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}}}}, metav1.CreateOptions{}))(t)
	must(c.core.CoreV1().Services(ns).Create(ctx, service(ns, "cart"), metav1.CreateOptions{}))(t)
	must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "cart", "cart-1", pod{"cart-1", ip}), metav1.CreateOptions{}))(t)
	must(c.gw.GatewayV1().GRPCRoutes(ns).Create(ctx, &gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "health"},
		Spec: gatewayv1.GRPCRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
			Hostnames:       []gatewayv1.Hostname{"rpc.example"},
			Rules: []gatewayv1.GRPCRouteRule{{
				Matches:     []gatewayv1.GRPCRouteMatch{{Method: &gatewayv1.GRPCMethodMatch{Service: ptr("grpc.health.v1.Health"), Method: ptr("Check")}}},
				BackendRefs: []gatewayv1.GRPCBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "cart", Port: ptr(gatewayv1.PortNumber(80))}}}},
			}},
		}}, metav1.CreateOptions{}))(t)

	e := serveEdge(t, edgeFile(t, kubeconfig, false, ns))

	conn := must(grpc.NewClient(e.Addr("http"), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("rpc.example")))(t)
	t.Cleanup(func() { _ = conn.Close() })
	client := healthpb.NewHealthClient(conn)
	call := func() (*healthpb.HealthCheckResponse, error) {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		return client.Check(cctx, &healthpb.HealthCheckRequest{Service: "shop.Cart"})
	}
	eventually(t, "the routed method answers", func() bool {
		res, err := call()
		return err == nil && res.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
	// Health/List is not routed: the edge's 404 reaches the client as a
	// gRPC status.
	lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
	defer lcancel()
	_, err := client.List(lctx, &healthpb.HealthListRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("an unrouted method: %v, want UNIMPLEMENTED", err)
	}
}
