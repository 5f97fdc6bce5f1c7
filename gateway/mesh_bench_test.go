package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// BenchmarkMeshPaths measures one request over keep-alive connections along
// the three paths of the mesh, each with real listeners on loopback:
//
//	direct:          client -> edge -> service
//	edge-sidecar:    client -> edge -mTLS-> sidecar -> service
//	sidecar-sidecar: service's client -> sidecar -mTLS-> sidecar -> service
//
// It reports requests/s and p99 (go test -bench MeshPaths -benchmem ./gateway);
// compare the three within one run.
func BenchmarkMeshPaths(b *testing.B) {
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 64))
	}))
	defer svc.Close()
	ca := meshtest.NewCA(b, "example.org")
	edgeFiles := ca.IssueFiles(b.TempDir(), edgeID)
	ordersFiles := ca.IssueFiles(b.TempDir(), ordersID)
	paymentsFiles := ca.IssueFiles(b.TempDir(), paymentsID)

	payments := startSidecar(b, sidecarConfig(paymentsFiles, hostPort(svc), []string{ordersID, edgeID}, nil))
	orders := startSidecar(b, sidecarConfig(ordersFiles, hostPort(svc), []string{edgeID},
		map[string][2]string{"payments": {payments.Addr("inbound"), paymentsID}}))
	direct := startEdge(b, listenHeader+fmt.Sprintf("upstreams:\n  s: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: s}\n", hostPort(svc)))
	viaMesh := startEdge(b, meshEdgeConfig(edgeFiles, payments.Addr("inbound"), paymentsID))

	paths := []struct{ name, url, host string }{
		{"direct", "http://" + direct.Addr("http") + "/", ""},
		{"edge-sidecar", "http://" + viaMesh.Addr("http") + "/orders", ""},
		{"sidecar-sidecar", "http://" + orders.Addr("outbound") + "/", "payments"},
	}
	for _, p := range paths {
		b.Run(p.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()
			b.ReportAllocs()
			testutil.BenchParallelLatency(b, 4, func() error {
				req, _ := http.NewRequest(http.MethodGet, p.url, nil)
				if p.host != "" {
					req.Host = p.host
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
		})
	}
}
