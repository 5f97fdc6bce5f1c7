package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testspire"
	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// recordingService is a plain-HTTP service behind a sidecar that keeps the
// caller identity of every request it received.
type recordingService struct {
	mu      sync.Mutex
	callers []string
	addr    string
}

func newRecordingService(t *testing.T, name string) *recordingService {
	rs := &recordingService{}
	rs.addr = httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		rs.mu.Lock()
		rs.callers = append(rs.callers, r.Header.Get(PeerIDHeader))
		rs.mu.Unlock()
		_ = json.NewEncoder(w).Encode(echo{Upstream: name, Path: r.URL.Path, Header: r.Header})
	})
	return rs
}

func (rs *recordingService) received() []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]string(nil), rs.callers...)
}

// Mixed identity sources: an edge and a sidecar on SPIRE, a sidecar in
// between on files from the built-in CA (`causeway ca init` / `ca issue`).
// They interoperate when the bundles say so: the SPIRE server has the
// built-in root as its UpstreamAuthority, so SPIRE's bundle holds that root
// and its SVIDs chain to it. With a SPIRE server on a CA of its own (same
// trust domain, other keys) every handshake between the two kinds is
// refused, in both directions, and nothing reaches a service.
func TestSPIREMixedWithBuiltInCA(t *testing.T) {
	testspire.Require(t)
	if testing.Short() {
		t.Skip("runs two SPIRE deployments")
	}
	// The built-in CA, as `causeway ca init` and `causeway ca issue` make it.
	caDir := t.TempDir()
	if err := mesh.InitCA(caDir, "example.org"); err != nil {
		t.Fatal(err)
	}
	filesDir := t.TempDir()
	id, err := mesh.ParseID(ordersID)
	if err != nil {
		t.Fatal(err)
	}
	if err := mesh.IssueLeaf(caDir, id, time.Hour, filepath.Join(filesDir, "orders")); err != nil {
		t.Fatal(err)
	}
	ordersFiles := meshtest.Files{
		Cert:   filepath.Join(filesDir, "orders.pem"),
		Key:    filepath.Join(filesDir, "orders-key.pem"),
		Bundle: filepath.Join(caDir, mesh.BundleFile),
	}

	for _, tc := range []struct {
		name     string
		upstream bool // SPIRE's CA is an intermediate of the built-in root
	}{
		{name: "bundles agree", upstream: true},
		{name: "bundles disagree", upstream: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := testspire.ServerOptions{TrustDomain: "example.org"}
			if tc.upstream {
				opts.UpstreamCert, opts.UpstreamKey = filepath.Join(caDir, mesh.RootCertFile), filepath.Join(caDir, mesh.RootKeyFile)
			}
			srv, err := testspire.StartServer(t.TempDir(), opts)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Stop()
			agents := map[string]*testspire.Agent{}
			for name, id := range map[string]string{"edge": edgeID, "payments": paymentsID} {
				a, err := srv.StartAgent(t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				defer a.Stop()
				if _, err := srv.CreateEntry(a, testspire.Entry{SPIFFEID: id}); err != nil {
					t.Fatal(err)
				}
				agents[name] = a
			}

			payments := newRecordingService(t, "payments")
			paymentsSidecar := startSidecar(t, spireSidecarConfig(agents["payments"].Socket, payments.addr, []string{ordersID}, nil))
			orders := newRecordingService(t, "orders")
			ordersSidecar := startSidecar(t, sidecarConfig(ordersFiles, orders.addr, []string{edgeID},
				map[string][2]string{"payments": {paymentsSidecar.Addr("inbound"), paymentsID}}))
			accessLog := filepath.Join(t.TempDir(), "access.log")
			te := startEdge(t, fmt.Sprintf("version: 1\nlisten: {http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: %q}\n", accessLog)+fmt.Sprintf(`mesh: {trust_domain: example.org, source: spire, socket: %q}
upstreams:
  orders: {endpoints: [%q], mesh_identity: %q}
routes:
  - {name: orders, match: {path_prefix: /orders}, upstream: orders}
`, agents["edge"].Socket, ordersSidecar.Addr("inbound"), ordersID))
			for _, admin := range []string{te.admin, "http://" + paymentsSidecar.Addr("admin"), "http://" + ordersSidecar.Addr("admin")} {
				waitStatus(t, admin+"/readyz", http.StatusOK)
			}

			// SPIRE edge -> files sidecar.
			const n = 20
			codes := map[int]int{}
			for range n {
				// A new connection each time: every request is a handshake.
				client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
				resp, err := client.Get(te.url + "/orders/1")
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				codes[resp.StatusCode]++
			}
			// files sidecar (outbound) -> SPIRE sidecar.
			req, _ := http.NewRequest(http.MethodGet, "http://"+ordersSidecar.Addr("outbound")+"/charge", nil)
			req.Host = "payments"
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()

			gotOrders, gotPayments := orders.received(), payments.received()
			if tc.upstream {
				if codes[200] != n {
					t.Fatalf("edge on SPIRE to the sidecar on files: %v, want %d x 200", codes, n)
				}
				if len(gotOrders) != n || gotOrders[0] != edgeID || gotOrders[n-1] != edgeID {
					t.Fatalf("orders received %d requests from %q, want %d from %s", len(gotOrders), gotOrders, n, edgeID)
				}
				if resp.StatusCode != http.StatusOK || len(gotPayments) != 1 || gotPayments[0] != ordersID {
					t.Fatalf("sidecar on files to the sidecar on SPIRE: %d %s; payments received %q, want one request from %s",
						resp.StatusCode, body, gotPayments, ordersID)
				}
				return
			}
			if codes[http.StatusBadGateway] != n {
				t.Fatalf("edge on SPIRE to a sidecar of another CA: %v, want %d x 502", codes, n)
			}
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("sidecar on files to a sidecar on SPIRE of another CA: %d %s, want 502", resp.StatusCode, body)
			}
			if len(gotOrders) != 0 || len(gotPayments) != 0 {
				t.Fatalf("with disagreeing bundles, orders received %q and payments %q; want nothing", gotOrders, gotPayments)
			}
			// Refused by certificate verification, not by anything else.
			data, err := os.ReadFile(accessLog)
			if err != nil {
				t.Fatal(err)
			}
			if lines := strings.Count(string(data), "certificate signed by unknown authority"); lines != n {
				t.Errorf("%d of %d access log lines give the refused certificate as the upstream error:\n%s", lines, n, data)
			}
		})
	}
}

// Mixed sources across trust domains: the built-in CA keeps a trust domain
// of its own (legacy.example), SPIRE has example.org. SPIRE is given the
// built-in CA's bundle as a federated bundle (spire-server bundle set, and
// entries that federate with legacy.example); the sidecar on files is given
// SPIRE's bundle in identity.federated_bundles. Then requests pass edge
// (SPIRE) -> sidecar (files) -> its outbound -> sidecar (SPIRE). With other
// roots for example.org on the files side (another SPIRE server's), or
// without the federation on the SPIRE side, the handshakes are refused and
// nothing reaches a service. (Without any example.org bundle the sidecar
// file itself is refused: its allow list names an ID it could never verify.)
func TestSPIREMixedAcrossTrustDomains(t *testing.T) {
	testspire.Require(t)
	if testing.Short() {
		t.Skip("runs a SPIRE deployment")
	}
	const legacyOrdersID = "spiffe://legacy.example/ns/shop/sa/orders"
	caDir := t.TempDir()
	if err := mesh.InitCA(caDir, "legacy.example"); err != nil {
		t.Fatal(err)
	}
	id, err := mesh.ParseID(legacyOrdersID)
	if err != nil {
		t.Fatal(err)
	}
	filesDir := t.TempDir()
	if err := mesh.IssueLeaf(caDir, id, time.Hour, filepath.Join(filesDir, "orders")); err != nil {
		t.Fatal(err)
	}
	legacyBundle, err := os.ReadFile(filepath.Join(caDir, mesh.BundleFile))
	if err != nil {
		t.Fatal(err)
	}

	srv, err := testspire.StartServer(t.TempDir(), testspire.ServerOptions{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	if err := srv.SetFederatedBundle("legacy.example", legacyBundle); err != nil {
		t.Fatal(err)
	}
	spireBundle, err := srv.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	spireBundleFile := filepath.Join(filesDir, "example.org-bundle.pem")
	if err := os.WriteFile(spireBundleFile, spireBundle, 0o644); err != nil {
		t.Fatal(err)
	}
	agent := func(id string, federates bool) *testspire.Agent {
		a, err := srv.StartAgent(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.Stop)
		e := testspire.Entry{SPIFFEID: id}
		if federates {
			e.FederatesWith = []string{"legacy.example"}
		}
		if _, err := srv.CreateEntry(a, e); err != nil {
			t.Fatal(err)
		}
		return a
	}
	edgeAgent, loneEdgeAgent, paymentsAgent := agent(edgeID, true), agent(edgeID, false), agent(paymentsID, true)

	payments := newRecordingService(t, "payments")
	paymentsSidecar := startSidecar(t, spireSidecarConfig(paymentsAgent.Socket, payments.addr, []string{legacyOrdersID}, nil))
	orders := newRecordingService(t, "orders")
	filesSidecar := func(bundle string) *testSidecar {
		fed := fmt.Sprintf(", federated_bundles: {example.org: %q}", bundle)
		return startSidecar(t, fmt.Sprintf(`version: 1
identity: {cert_file: %q, key_file: %q, bundle_file: %q, trust_domain: legacy.example%s}
access_log: {output: "off"}
admin: "127.0.0.1:0"
inbound: {listen: "127.0.0.1:0", forward_to: %q, allow: [%q]}
outbound:
  listen: "127.0.0.1:0"
  services:
    payments: {endpoints: [%q], identity: %q}
`, filepath.Join(filesDir, "orders.pem"), filepath.Join(filesDir, "orders-key.pem"), filepath.Join(caDir, mesh.BundleFile), fed,
			orders.addr, edgeID, paymentsSidecar.Addr("inbound"), paymentsID))
	}
	withSPIRE, withoutSPIRE := filesSidecar(spireBundleFile), filesSidecar(meshtest.NewCA(t, "example.org").WriteBundle(t.TempDir()))
	edge := func(a *testspire.Agent) *testEdge {
		return startEdge(t, listenHeader+fmt.Sprintf(`mesh: {trust_domain: example.org, source: spire, socket: %q}
upstreams:
  fed: {endpoints: [%q], mesh_identity: %q}
  nofed: {endpoints: [%q], mesh_identity: %q}
routes:
  - {name: fed, match: {path_prefix: /fed}, upstream: fed}
  - {name: nofed, match: {path_prefix: /nofed}, upstream: nofed}
`, a.Socket, withSPIRE.Addr("inbound"), legacyOrdersID, withoutSPIRE.Addr("inbound"), legacyOrdersID))
	}
	federatedEdge, loneEdge := edge(edgeAgent), edge(loneEdgeAgent)
	for _, admin := range []string{federatedEdge.admin, loneEdge.admin, "http://" + paymentsSidecar.Addr("admin")} {
		waitStatus(t, admin+"/readyz", http.StatusOK)
	}
	status := func(url, host string) int {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Host = host
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	// Refused first, so that what the services received after comes only
	// from the requests that should pass.
	for name, got := range map[string]int{
		"edge federating with legacy.example -> files sidecar with other example.org roots": status(federatedEdge.url+"/nofed", ""),
		"edge without the legacy.example bundle -> files sidecar":                           status(loneEdge.url+"/fed", ""),
		"files sidecar with other example.org roots -> SPIRE sidecar":                       status("http://"+withoutSPIRE.Addr("outbound")+"/charge", "payments"),
	} {
		if got != http.StatusBadGateway {
			t.Errorf("%s: %d, want 502", name, got)
		}
	}
	if o, p := orders.received(), payments.received(); len(o) != 0 || len(p) != 0 {
		t.Fatalf("refused paths delivered: orders received %q, payments %q", o, p)
	}

	const n = 10
	for range n {
		if got := status(federatedEdge.url+"/fed", ""); got != 200 {
			t.Fatalf("edge (SPIRE, example.org) -> sidecar (files, legacy.example): %d", got)
		}
	}
	if got := status("http://"+withSPIRE.Addr("outbound")+"/charge", "payments"); got != 200 {
		t.Fatalf("sidecar (files, legacy.example) -> sidecar (SPIRE, example.org): %d", got)
	}
	if o := orders.received(); len(o) != n || o[0] != edgeID || o[n-1] != edgeID {
		t.Errorf("orders received %q, want %d requests from %s", o, n, edgeID)
	}
	if p := payments.received(); len(p) != 1 || p[0] != legacyOrdersID {
		t.Errorf("payments received %q, want one request from %s", p, legacyOrdersID)
	}
}
