package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testspire"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// BenchmarkMeshPaths measures one request over keep-alive connections along
// the paths of the mesh, each with real listeners on loopback, with the
// identities from files (the built-in CA) and from SPIRE (a real
// spire-server and one agent per workload):
//
//	direct:                client -> edge -> service
//	SOURCE/edge-sidecar:   client -> edge -mTLS-> sidecar -> service
//	SOURCE/sidecar-sidecar: service's client -> sidecar -mTLS-> sidecar -> service
//	SOURCE/handshake:      a new mTLS connection to a sidecar (full handshake,
//	                       no resumption), the edge's identity on the client side
//
// It reports requests/s and p99 (go test -bench MeshPaths -benchmem ./gateway);
// compare within one run: files against spire shows what the identity
// source costs. The spire cases are skipped only without the SPIRE binaries
// (and fail in CI without them, as the SPIRE tests do).
func BenchmarkMeshPaths(b *testing.B) {
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 64))
	}))
	defer svc.Close()
	direct := startEdge(b, listenHeader+fmt.Sprintf("upstreams:\n  s: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: s}\n", hostPort(svc)))
	b.Run("direct", func(b *testing.B) { benchGet(b, "http://"+direct.Addr("http")+"/", "") })
	for _, source := range []string{"files", "spire"} {
		b.Run(source, func(b *testing.B) {
			w := startMeshWorld(b, source, hostPort(svc))
			b.Run("edge-sidecar", func(b *testing.B) { benchGet(b, "http://"+w.edge.Addr("http")+"/orders", "") })
			b.Run("sidecar-sidecar", func(b *testing.B) { benchGet(b, "http://"+w.orders.Addr("outbound")+"/", "payments") })
			b.Run("handshake", func(b *testing.B) {
				cfg := mesh.ClientConfig(w.client, mustParseID(b, paymentsID))
				addr := w.payments.Addr("inbound")
				b.ReportAllocs()
				testutil.BenchParallelLatency(b, 1, func() error {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						return err
					}
					defer c.Close()
					return tls.Client(c, cfg).Handshake()
				})
			})
		})
	}
}

// meshWorld is an edge, two sidecars and a client identity, all on one
// identity source.
type meshWorld struct {
	edge             *testEdge
	orders, payments *testSidecar
	// client holds the edge's identity, for handshakes of the benchmark's own.
	client *mesh.Source
}

func startMeshWorld(b *testing.B, source, svc string) *meshWorld {
	w := &meshWorld{}
	if source == "files" {
		ca := meshtest.NewCA(b, "example.org")
		ordersFiles := ca.IssueFiles(b.TempDir(), ordersID)
		paymentsFiles := ca.IssueFiles(b.TempDir(), paymentsID)
		w.payments = startSidecar(b, sidecarConfig(paymentsFiles, svc, []string{ordersID, edgeID}, nil))
		w.orders = startSidecar(b, sidecarConfig(ordersFiles, svc, []string{edgeID},
			map[string][2]string{"payments": {w.payments.Addr("inbound"), paymentsID}}))
		var edgeFiles meshtest.Files
		w.client, edgeFiles = ca.Source(edgeID)
		w.edge = startEdge(b, meshEdgeConfig(edgeFiles, w.payments.Addr("inbound"), paymentsID))
		return w
	}
	testspire.Require(b)
	srv, err := testspire.StartServer(b.TempDir(), testspire.ServerOptions{TrustDomain: "example.org", SVIDTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Stop)
	sockets := map[string]string{}
	for _, id := range []string{edgeID, ordersID, paymentsID} {
		a, err := srv.StartAgent(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(a.Stop)
		if _, err := srv.CreateEntry(a, testspire.Entry{SPIFFEID: id}); err != nil {
			b.Fatal(err)
		}
		sockets[id] = a.Socket
	}
	w.payments = startSidecar(b, spireSidecarConfig(sockets[paymentsID], svc, []string{ordersID, edgeID}, nil))
	w.orders = startSidecar(b, spireSidecarConfig(sockets[ordersID], svc, []string{edgeID},
		map[string][2]string{"payments": {w.payments.Addr("inbound"), paymentsID}}))
	w.edge = startEdge(b, listenHeader+fmt.Sprintf(`mesh: {trust_domain: example.org, source: spire, socket: %q}
upstreams:
  orders: {endpoints: [%q], mesh_identity: %q}
routes:
  - {name: orders, match: {path_prefix: /orders}, upstream: orders}
`, sockets[edgeID], w.payments.Addr("inbound"), paymentsID))
	w.client, err = mesh.NewWorkloadAPISource(context.Background(), sockets[edgeID], mesh.SourceOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = w.client.Close() })
	for _, admin := range []string{w.edge.admin, "http://" + w.orders.Addr("admin"), "http://" + w.payments.Addr("admin")} {
		waitStatus(b, admin+"/readyz", http.StatusOK)
	}
	for w.client.Ready() != nil {
		time.Sleep(50 * time.Millisecond)
	}
	return w
}

func mustParseID(tb testing.TB, s string) mesh.ID {
	tb.Helper()
	id, err := mesh.ParseID(s)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// benchGet measures GET url (Host: host when set) over keep-alive
// connections from 4×GOMAXPROCS clients.
func benchGet(b *testing.B, url, host string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	b.ReportAllocs()
	testutil.BenchParallelLatency(b, 4, func() error {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}
