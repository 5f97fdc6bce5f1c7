package test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/gateway"
	"github.com/causewayhq/causeway/internal/testspire"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh"
)

// startSidecar serves the sidecar file config until the test ends.
func startSidecar(tb testing.TB, config string, log *slog.Logger) *gateway.Sidecar {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "sidecar.yaml")
	writeConfig(tb, path, config)
	sc, err := gateway.NewSidecar(context.Background(), gateway.SidecarOptions{ConfigPath: path, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	if err := sc.Listen(); err != nil {
		sc.Close()
		tb.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Serve(ctx) }()
	tb.Cleanup(func() { stop(); <-done })
	return sc
}

// loadedSerials returns the serial numbers of the identities a workload
// loaded, in order, from its JSON log ("mesh: identity loaded").
func loadedSerials(logs *testutil.Buffer) []string {
	var out []string
	for _, line := range strings.Split(logs.String(), "\n") {
		var l struct {
			Msg    string `json:"msg"`
			Serial string `json:"serial"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "mesh: identity loaded" {
			if len(out) == 0 || out[len(out)-1] != l.Serial {
				out = append(out, l.Serial)
			}
		}
	}
	return out
}

// TestSPIRESoak is the long rotation run of docs/reliability.md (`make
// soak-spire`; CAUSEWAY_SPIRE_SOAK=1, CAUSEWAY_SPIRE_SOAK_DURATION, default
// 4m): a real spire-server (X.509-SVID TTL 1 minute, CA TTL 3 minutes) and
// one agent per workload; load at a bounded rate through client -> edge
// -mTLS-> orders' sidecar -> orders -> its sidecar's outbound -mTLS->
// payments' sidecar -> payments, across every workload's SVID rotations
// (an agent renews at half the TTL) and the server's CA rotations (the
// next CA is prepared at half the CA's life and activated near its end).
// The edge keeps at most one idle connection to the sidecar, so the mTLS
// hops keep opening connections, each a handshake with the current SVIDs.
// Zero failed requests; at least three SVID rotations per workload and one
// CA rotation seen. The short version of this path (10 s SVIDs, an agent
// restart) runs in `make test`: TestSPIREMeshPathUnderRotationAndAgentRestart
// in ./gateway.
func TestSPIRESoak(t *testing.T) {
	if os.Getenv("CAUSEWAY_SPIRE_SOAK") == "" {
		t.Skip("the SPIRE rotation soak runs for minutes: make soak-spire (CAUSEWAY_SPIRE_SOAK=1)")
	}
	testspire.Require(t)
	duration := 4 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("CAUSEWAY_SPIRE_SOAK_DURATION")); err == nil {
		duration = d
	}
	const (
		edgeID     = "spiffe://example.org/ns/edge/sa/gateway"
		ordersID   = "spiffe://example.org/ns/shop/sa/orders"
		paymentsID = "spiffe://example.org/ns/shop/sa/payments"
		// rate bounds the load: requests per second over all workers.
		rate    = 100
		workers = 8
	)
	srv, err := testspire.StartServer(t.TempDir(), testspire.ServerOptions{TrustDomain: "example.org", SVIDTTL: time.Minute, CATTL: 3 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	agents := map[string]*testspire.Agent{}
	for name, id := range map[string]string{"edge": edgeID, "orders": ordersID, "payments": paymentsID} {
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
	logs := map[string]*testutil.Buffer{"edge": {}, "orders": {}, "payments": {}}
	logger := func(name string) *slog.Logger { return slog.New(slog.NewJSONHandler(logs[name], nil)) }
	sidecar := func(name, forwardTo, allow, outbound string) string {
		return fmt.Sprintf("version: 1\nidentity: {source: spire, socket: %q, trust_domain: example.org}\naccess_log: {output: \"off\"}\nadmin: \"127.0.0.1:0\"\n"+
			"inbound: {listen: \"127.0.0.1:0\", forward_to: %q, allow: [%q]}\n%s", agents[name].Socket, forwardTo, allow, outbound)
	}

	var paymentsGot atomic.Int64
	payments := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(gateway.PeerIDHeader) != ordersID {
			http.Error(w, "payments: caller "+r.Header.Get(gateway.PeerIDHeader), http.StatusForbidden)
			return
		}
		paymentsGot.Add(1)
		_, _ = io.WriteString(w, "charged")
	}))
	defer payments.Close()
	paymentsSidecar := startSidecar(t, sidecar("payments", strings.TrimPrefix(payments.URL, "http://"), ordersID, ""), logger("payments"))

	var ordersOutbound atomic.Value
	ordersClient := &http.Client{Timeout: 10 * time.Second}
	defer ordersClient.CloseIdleConnections()
	orders := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(gateway.PeerIDHeader) != edgeID {
			http.Error(w, "orders: caller "+r.Header.Get(gateway.PeerIDHeader), http.StatusForbidden)
			return
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+ordersOutbound.Load().(string)+"/charge", nil)
		req.Host = "payments"
		resp, err := ordersClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
	}))
	defer orders.Close()
	ordersSidecar := startSidecar(t, sidecar("orders", strings.TrimPrefix(orders.URL, "http://"), edgeID,
		fmt.Sprintf("outbound:\n  listen: \"127.0.0.1:0\"\n  services:\n    payments: {endpoints: [%q], identity: %q}\n", paymentsSidecar.Addr("inbound"), paymentsID)),
		logger("orders"))
	ordersOutbound.Store(ordersSidecar.Addr("outbound"))
	te := startEdgeWithLogger(t, header+fmt.Sprintf(`mesh: {trust_domain: example.org, source: spire, socket: %q}
upstreams:
  orders: {endpoints: [%q], mesh_identity: %q, max_idle_per_endpoint: 1}
routes:
  - {name: orders, match: {path_prefix: /orders}, upstream: orders}
`, agents["edge"].Socket, ordersSidecar.Addr("inbound"), ordersID), logger("edge"))
	for _, admin := range []string{te.Addr("admin"), ordersSidecar.Addr("admin"), paymentsSidecar.Addr("admin")} {
		waitReady(t, "http://"+admin+"/readyz")
	}

	// An independent reader of the edge's Workload API records which CA
	// signed each SVID the agent hands out: a new signer is a CA rotation.
	watch, err := mesh.NewWorkloadAPISource(context.Background(), agents["edge"].Socket, mesh.SourceOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()

	ctx, stop := context.WithTimeout(context.Background(), duration)
	defer stop()
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	signers := map[string]bool{}
	var order []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			if svid, err := watch.GetX509SVID(); err == nil {
				k := hex.EncodeToString(svid.Certificates[0].AuthorityKeyId)
				if !signers[k] {
					signers[k] = true
					order = append(order, k)
					t.Logf("%s: SVIDs signed by CA %s", time.Now().Format(time.TimeOnly), k[:12])
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			tick := time.NewTicker(time.Second * workers / rate)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				resp, err := client.Get("http://" + te.Addr("http") + "/orders/" + fmt.Sprint(w))
				var body []byte
				if err == nil {
					body, _ = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, []byte("charged")) {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: %v %v %q", time.Since(start).Round(time.Second), err, resp, body))
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()

	rotations := map[string]int{}
	for name, l := range logs {
		rotations[name] = len(loadedSerials(l)) - 1
	}
	t.Logf("SPIRE soak: %s, %d requests, %d failed, payments received %d; SVID rotations: edge %d, orders %d, payments %d; CAs seen: %d (%d rotations)",
		duration, ok.Load()+failed.Load(), failed.Load(), paymentsGot.Load(), rotations["edge"], rotations["orders"], rotations["payments"], len(order), len(order)-1)
	if failed.Load() > 0 {
		t.Errorf("%d of %d requests failed; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if paymentsGot.Load() != ok.Load() {
		t.Errorf("payments received %d requests, the client got %d answers", paymentsGot.Load(), ok.Load())
	}
	for name, n := range rotations {
		if n < 3 {
			t.Errorf("%s loaded %d new SVIDs, want at least 3 rotations", name, n)
		}
	}
	if len(order) < 2 {
		t.Errorf("no CA rotation within %s (CA TTL 3m)", duration)
	}
}

// waitReady polls a readiness URL until it answers 200.
func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 60s", url)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
