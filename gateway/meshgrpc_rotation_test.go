package gateway

import (
	"context"
	"fmt"
	"net"
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

	"github.com/causewayhq/causeway/mesh/meshtest"
)

// gRPC calls from the edge to a service behind its sidecar share an HTTP/2
// connection of the mesh hop, and the sidecar re-checks the caller's
// certificate at every request. The edge's certificate lives a few seconds
// and is renewed after the first call, as SPIRE renews an SVID at half its
// life; a real grpc-go client keeps calling, four calls at a time, until
// past the old certificate's expiry. No call may fail: the connection made
// with the old certificate is retired before it expires and the calls go
// on a new one, made with the renewed certificate. Before the fix the old
// connection carried calls past the expiry, and the sidecar refused them
// (403, caller certificate no longer valid).
func TestMeshGRPCCallsSurviveCertificateRotation(t *testing.T) {
	// Long enough for the edge and the sidecar to start and for the
	// renewal to be loaded before the retirement, certExpiryMargin (2 s)
	// before the expiry, on a machine loaded by the whole suite under
	// -race. Until 3 s before the expiry one call every 100 ms keeps the
	// old connection in use (so no idle timeout can retire it in the
	// fix's place); the four callers run only across the expiry.
	const lifetime = 15 * time.Second
	ca := meshtest.NewCA(t, "example.org")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int64
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
	orders := startSidecar(t, sidecarConfig(ca.IssueFiles(t.TempDir(), ordersID), ln.Addr().String(), []string{edgeID}, nil))

	edgeDir := t.TempDir()
	old := ca.Issue(edgeID, meshtest.TTL(lifetime))
	old.WriteFiles(t, edgeDir, "svid")
	files := meshtest.Files{Cert: edgeDir + "/svid.pem", Key: edgeDir + "/svid-key.pem", Bundle: ca.WriteBundle(edgeDir)}
	te := startEdge(t, listenHeader+fmt.Sprintf(`mesh: {trust_domain: example.org, cert_file: %q, key_file: %q, bundle_file: %q}
upstreams:
  orders: {endpoints: [%q], mesh_identity: %q}
routes:
  - {name: health, match: {path_prefix: /grpc.health.v1.Health/}, upstream: orders}
`, files.Cert, files.Key, files.Bundle, orders.Addr("inbound"), ordersID))

	cc, err := grpc.NewClient("passthrough:///"+te.Addr("http"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := healthpb.NewHealthClient(cc)
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "orders"})
		if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			err = fmt.Errorf("status %v", resp.GetStatus())
		}
		return err
	}
	// The mesh hop's connection, made with the certificate about to expire.
	if err := call(); err != nil {
		t.Fatal(err)
	}

	// Renewed; the edge has loaded it once its expiry metric moves.
	ca.Issue(edgeID, meshtest.TTL(time.Hour)).WriteFiles(t, edgeDir, "svid")
	for deadline := time.Now().Add(10 * time.Second); edgeCertExpiry(t, te) <= old.Leaf.NotAfter.Unix(); {
		if time.Now().After(deadline) {
			t.Fatal("the edge did not load its renewed certificate")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if left := time.Until(old.Leaf.NotAfter); left < 2*time.Second+500*time.Millisecond {
		t.Fatalf("the renewal was loaded %v before the old certificate's expiry: too late for the test to show anything", left)
	}

	var calls, failed atomic.Int64
	var firstErr atomic.Value
	for time.Until(old.Leaf.NotAfter) > 3*time.Second {
		calls.Add(1)
		if err := call(); err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, err.Error())
		}
		time.Sleep(100 * time.Millisecond)
	}
	end := old.Leaf.NotAfter.Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for time.Now().Before(end) {
				calls.Add(1)
				if err := call(); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d calls across the expiry, %d failed", calls.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d of %d calls failed across the edge's certificate rotation; first: %v", failed.Load(), calls.Load(), firstErr.Load())
	}
	if reached.Load() != calls.Load()+1 {
		t.Fatalf("the service answered %d calls, want %d", reached.Load(), calls.Load()+1)
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
