package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// Calls from the edge to a service behind its sidecar share the mesh hop's
// connections (gRPC one HTTP/2 connection, CertBound; HTTP/1.1 a pool of
// them, H1 over TLS), and the sidecar re-checks the caller's certificate
// at every request. The edge's certificate is renewed after the first
// call, as SPIRE renews an SVID at half its life, and four callers keep
// calling while the clock the edge and the sidecar share moves to just
// before the old certificate's expiry (within certExpiryMargin: the edge
// must stop using the old connections, the sidecar still accepts them, so
// no request is caught in flight by the next step) and then past it (the
// sidecar refuses the old certificate). No call may fail, and the service
// answers every call exactly once: the connections made with the old
// certificate are retired on the edge's clock and the calls go on new
// ones, made with the renewed certificate. Before the fix the old
// connections carried calls past the expiry (first on the wall clock, and
// once that was fixed, on the wall clock while the sidecar held the
// certificate to its own), and the sidecar refused them (403, caller
// certificate no longer valid).
func TestMeshGRPCCallsSurviveCertificateRotation(t *testing.T) {
	tests := []struct {
		desc string
		// serve starts the service behind the sidecar, counting the calls
		// it answers in reached; route is the edge's route to it and
		// caller a call through the edge at addr.
		serve  func(t *testing.T, reached *atomic.Int64) (addr string)
		route  string
		caller func(t *testing.T, edge string) func() error
	}{
		{desc: "gRPC over HTTP/2", serve: serveGRPCHealth, route: "/grpc.health.v1.Health/", caller: grpcHealthCaller},
		{desc: "HTTP/1.1", serve: serveCounting, route: "/orders", caller: httpCaller},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			ca := meshtest.NewCA(t, "example.org")
			// Certificates are dated by the wall clock; the clock starts
			// there and moves only when the test moves it.
			clk := testutil.NewFakeClockAt(time.Now())
			var reached atomic.Int64
			svc := tc.serve(t, &reached)
			orders := startSidecarClock(t, sidecarConfig(ca.IssueFiles(t.TempDir(), ordersID), svc, []string{edgeID}, nil), clk.Now)

			edgeDir := t.TempDir()
			old := ca.Issue(edgeID, meshtest.TTL(time.Hour))
			old.WriteFiles(t, edgeDir, "svid")
			files := meshtest.Files{Cert: edgeDir + "/svid.pem", Key: edgeDir + "/svid-key.pem", Bundle: ca.WriteBundle(edgeDir)}
			te := startEdge(t, listenHeader+fmt.Sprintf(`mesh: {trust_domain: example.org, cert_file: %q, key_file: %q, bundle_file: %q}
upstreams:
  orders: {endpoints: [%q], mesh_identity: %q}
routes:
  - {name: orders, match: {path_prefix: %q}, upstream: orders}
`, files.Cert, files.Key, files.Bundle, orders.Addr("inbound"), ordersID, tc.route), withClock(clk))
			call := tc.caller(t, te.Addr("http"))

			// The mesh hop's connection, made with the certificate about
			// to expire.
			if err := call(); err != nil {
				t.Fatal(err)
			}
			// Renewed; the edge has loaded it once its expiry metric moves.
			ca.Issue(edgeID, meshtest.TTL(24*time.Hour)).WriteFiles(t, edgeDir, "svid")
			testutil.WaitFor(t, func() bool { return edgeCertExpiry(t, te) > old.Leaf.NotAfter.Unix() })

			const callers = 4
			var calls, failed atomic.Int64
			var firstErr atomic.Value
			// step is the clock's step; done[i] is the step of the last
			// call caller i started and finished.
			var step atomic.Int64
			var done [callers]atomic.Int64
			var n [callers]atomic.Int64 // calls caller i finished in the current step
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for i := range callers {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						s := step.Load()
						calls.Add(1)
						if err := call(); err != nil {
							failed.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
						}
						if done[i].Swap(s) != s {
							n[i].Store(0)
						}
						n[i].Add(1)
					}
				})
			}
			// settle waits until every caller has finished atLeast calls
			// started in step s: none is still on a connection chosen
			// before it.
			settle := func(s, atLeast int64) {
				testutil.WaitFor(t, func() bool {
					for i := range callers {
						if done[i].Load() != s || n[i].Load() < atLeast {
							return false
						}
					}
					return true
				})
			}
			// The clock moves before the step does, so a call counted in
			// a step started on the clock of that step.
			settle(0, 5)
			clk.Advance(old.Leaf.NotAfter.Add(-time.Second).Sub(clk.Now()))
			step.Store(1)
			settle(1, 5)
			clk.Advance(old.Leaf.NotAfter.Add(time.Second).Sub(clk.Now()))
			step.Store(2)
			settle(2, 20)
			close(stop)
			wg.Wait()

			t.Logf("%d calls across the expiry, %d failed", calls.Load(), failed.Load())
			if failed.Load() != 0 {
				t.Fatalf("%d of %d calls failed across the edge's certificate rotation; first: %v", failed.Load(), calls.Load(), firstErr.Load())
			}
			if reached.Load() != calls.Load()+1 {
				t.Fatalf("the service answered %d calls, want %d", reached.Load(), calls.Load()+1)
			}
		})
	}
}

// serveGRPCHealth serves gRPC health checks ("orders" serving), counting
// them in reached.
func serveGRPCHealth(t *testing.T, reached *atomic.Int64) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)
	gs := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		reached.Add(1)
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(gs, hs)
	var served sync.WaitGroup
	served.Go(func() { _ = gs.Serve(ln) })
	t.Cleanup(func() {
		gs.Stop()
		served.Wait()
	})
	return ln.Addr().String()
}

// grpcHealthCaller is a real grpc-go client's health check through the
// edge at addr.
func grpcHealthCaller(t *testing.T, addr string) func() error {
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := healthpb.NewHealthClient(cc)
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "orders"})
		if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			err = fmt.Errorf("status %v", resp.GetStatus())
		}
		return err
	}
}

// serveCounting serves "ok" over HTTP/1.1, counting requests in reached.
func serveCounting(t *testing.T, reached *atomic.Int64) string {
	return hostPort(echoUpstreamCounting(t, reached))
}

// httpCaller is a GET of /orders through the edge at addr that must be
// answered 200 "ok".
func httpCaller(t *testing.T, addr string) func() error {
	client := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	return func() error {
		resp, err := client.Get("http://" + addr + "/orders")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && (resp.StatusCode != http.StatusOK || string(body) != "ok") {
			err = fmt.Errorf("%d %q", resp.StatusCode, body)
		}
		return err
	}
}

// edgeCertExpiry is the expiry, in Unix seconds, of the edge's mesh
// certificate as its metrics publish it (0 before they do).
func edgeCertExpiry(t *testing.T, te *testEdge) int64 {
	t.Helper()
	_, body := get(t, te.admin+"/metrics")
	prefix := `causeway_certificate_expiry_timestamp_seconds{name="` + edgeID + `"} `
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int64(f)
		}
	}
	return 0
}
