package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testspire"
)

// spireSidecarConfig is sidecarConfig with the identity from a Workload API.
func spireSidecarConfig(socket, forwardTo string, allow []string, services map[string][2]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nidentity: {source: spire, socket: %q, trust_domain: example.org}\n", socket)
	fmt.Fprintf(&b, "access_log: {output: \"off\"}\nadmin: \"127.0.0.1:0\"\n")
	quoted := make([]string, len(allow))
	for i, a := range allow {
		quoted[i] = strconv.Quote(a)
	}
	fmt.Fprintf(&b, "inbound:\n  listen: \"127.0.0.1:0\"\n  forward_to: %q\n  allow: [%s]\n", forwardTo, strings.Join(quoted, ", "))
	if len(services) > 0 {
		b.WriteString("outbound:\n  listen: \"127.0.0.1:0\"\n  services:\n")
	}
	for name, s := range services {
		fmt.Fprintf(&b, "    %s: {endpoints: [%q], identity: %q}\n", name, s[0], s[1])
	}
	return b.String()
}

func waitStatus(t testing.TB, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %d within 30s (last: %v %v)", url, want, err, resp)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The full mesh path on SPIRE identities: client -> edge -mTLS-> sidecar
// (orders) -> orders -> its sidecar's outbound -mTLS-> sidecar (payments)
// -> payments, under load, across several SVID rotations and a crash and
// restart of the orders sidecar's agent: no request fails.
func TestSPIREMeshPathUnderRotationAndAgentRestart(t *testing.T) {
	testspire.Require(t)
	if testing.Short() {
		t.Skip("runs SPIRE and load for about 25s")
	}
	srv, err := testspire.StartServer(t.TempDir(), testspire.ServerOptions{TrustDomain: "example.org", SVIDTTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	agents := map[string]*testspire.Agent{}
	for _, name := range []string{"edge", "orders", "payments"} {
		a, err := srv.StartAgent(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer a.Stop()
		agents[name] = a
	}

	payments := echoUpstream(t, "payments")
	paymentsSidecar := startSidecar(t, spireSidecarConfig(agents["payments"].Socket, hostPort(payments), []string{ordersID}, nil))
	// No entry yet: the sidecar runs, is not ready, and refuses handshakes.
	waitStatus(t, "http://"+paymentsSidecar.Addr("admin")+"/readyz", http.StatusServiceUnavailable)

	var ordersOutbound atomic.Value
	orders := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ordersOutbound.Load().(string)+"/charge", nil)
		req.Host = "payments"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
	})
	ordersSidecar := startSidecar(t, spireSidecarConfig(agents["orders"].Socket, orders, []string{edgeID},
		map[string][2]string{"payments": {paymentsSidecar.Addr("inbound"), paymentsID}}))
	ordersOutbound.Store(ordersSidecar.Addr("outbound"))
	te := startEdge(t, listenHeader+fmt.Sprintf(`mesh: {trust_domain: example.org, source: spire, socket: %q}
upstreams:
  orders: {endpoints: [%q], mesh_identity: %q}
routes:
  - {name: orders, match: {path_prefix: /orders}, upstream: orders}
`, agents["edge"].Socket, ordersSidecar.Addr("inbound"), ordersID))
	waitStatus(t, te.admin+"/readyz", http.StatusServiceUnavailable)

	for name, id := range map[string]string{"edge": edgeID, "orders": ordersID, "payments": paymentsID} {
		if _, err := srv.CreateEntry(agents[name], testspire.Entry{SPIFFEID: id, TTL: 10 * time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	for _, admin := range []string{te.admin, "http://" + ordersSidecar.Addr("admin"), "http://" + paymentsSidecar.Addr("admin")} {
		waitStatus(t, admin+"/readyz", http.StatusOK)
	}

	// The load runs until every workload's SVID has rotated under it, the
	// orders agent has been killed and restarted, and the orders sidecar
	// has an SVID from the restarted agent; the timeout only bounds it.
	ctx, stop := context.WithTimeout(context.Background(), 40*time.Second)
	defer stop()
	done := meshLoad(ctx, t, 4, te.url+"/orders")
	admins := map[string]string{edgeID: te.admin, ordersID: "http://" + ordersSidecar.Addr("admin"), paymentsID: "http://" + paymentsSidecar.Addr("admin")}
	issued := map[string]string{}
	for id, admin := range admins {
		issued[id] = svidExpiry(t, admin, id)
	}
	// A 10s SVID is renewed at about half its life: wait for the renewal
	// of each instead of a fixed time.
	for id, admin := range admins {
		waitSVIDRenewed(t, admin, id, issued[id])
	}
	agents["orders"].Kill()
	waitMetric(t, admins[ordersID]+"/metrics", `causeway_workload_api_connected{socket="`+agents["orders"].Socket+`"} 0`)
	beforeRestart := svidExpiry(t, admins[ordersID], ordersID)
	time.Sleep(2 * time.Second) // the sidecar serves on without its agent for a while
	if err := agents["orders"].Restart(); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, admins[ordersID]+"/metrics", `causeway_workload_api_connected{socket="`+agents["orders"].Socket+`"} 1`)
	// The restarted agent's SVID reaches the sidecar: without it the
	// sidecar's would expire and the mesh path fail.
	waitSVIDRenewed(t, admins[ordersID], ordersID, beforeRestart)
	if ctx.Err() != nil {
		t.Fatal("the load ended before the agent restart was through")
	}
	stop()
	ok, failed := done()
	if failed > 0 || ok == 0 {
		t.Fatalf("%d failed, %d ok across SVID rotations and an agent restart", failed, ok)
	}
	_, metrics := get(t, te.admin+"/metrics")
	if !strings.Contains(string(metrics), `causeway_certificate_expiry_timestamp_seconds{name="`+edgeID+`"}`) {
		t.Errorf("no expiry gauge for the edge's SVID")
	}
	t.Logf("%d requests across SVID rotations (10s TTL) and an agent restart, none failed", ok)
}

// svidExpiry is the expiry gauge admin shows for the SVID of id ("" when
// there is none).
func svidExpiry(t *testing.T, admin, id string) string {
	t.Helper()
	_, body := get(t, admin+"/metrics")
	prefix := `causeway_certificate_expiry_timestamp_seconds{name="` + id + `"} `
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// waitSVIDRenewed waits until admin shows an SVID for id that expires at
// another time than was (a new one).
func waitSVIDRenewed(t *testing.T, admin, id, was string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if now := svidExpiry(t, admin, id); now != "" && now != was {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no new SVID within 15s (expiry still %q)", id, was)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitMetric(t *testing.T, url, line string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, body := get(t, url)
		if strings.Contains(string(body), line) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed %s", line)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
