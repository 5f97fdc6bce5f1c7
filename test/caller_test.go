package test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/causewayhq/causeway/mesh/meshtest"
)

// TestCallerIdentityAcrossProcesses runs the real binary as an edge and
// three sidecars (orders, payments, ledger), each a process of its own,
// beside three services: client -> edge -> orders -> payments -> ledger.
// The user the edge authenticated must reach every service, through two
// token exchanges, and the ledger's max_hops must refuse the third hop
// when asked to.
func TestCallerIdentityAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	bin := buildCauseway(t, dir)
	ca := meshtest.NewCA(t, "example.org")
	const (
		edgeID     = "spiffe://example.org/ns/edge/sa/gateway"
		ordersID   = "spiffe://example.org/ns/shop/sa/orders"
		paymentsID = "spiffe://example.org/ns/shop/sa/payments"
		ledgerID   = "spiffe://example.org/ns/shop/sa/ledger"
	)
	type hop struct {
		name, id, inbound, outbound, admin string
		mu                                 sync.Mutex
		seen                               []http.Header
	}
	hops := []*hop{{name: "orders", id: ordersID}, {name: "payments", id: paymentsID}, {name: "ledger", id: ledgerID}}
	for _, h := range hops {
		h.inbound, h.outbound, h.admin = freeTCPAddr(t), freeTCPAddr(t), freeTCPAddr(t)
	}
	// Each service records what it received and, but the last, calls the
	// next through its own sidecar, passing the caller token on.
	for i, h := range hops {
		svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.mu.Lock()
			h.seen = append(h.seen, r.Header.Clone())
			h.mu.Unlock()
			if i == len(hops)-1 {
				_, _ = io.WriteString(w, "ledger ok\n")
				return
			}
			next := hops[i+1]
			req, _ := http.NewRequest(r.Method, "http://"+h.outbound+r.URL.Path, nil)
			req.Host = next.name
			req.Header.Set("Causeway-Caller", r.Header.Get("Causeway-Caller"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			w.WriteHeader(resp.StatusCode)
			_, _ = io.Copy(w, resp.Body)
		}))
		t.Cleanup(svc.Close)
		files := ca.IssueFiles(t.TempDir(), h.id)
		allow := edgeID
		if i > 0 {
			allow = hops[i-1].id
		}
		var b strings.Builder
		fmt.Fprintf(&b, `version: 1
identity: {cert_file: %q, key_file: %q, bundle_file: %q}
access_log: {output: %q}
admin: %q
inbound:
  listen: %q
  forward_to: %q
  allow: [%q]
  callers: {issuers: [%q], require: true, headers: [X-User-Id]}
`, files.Cert, files.Key, files.Bundle, filepath.Join(dir, h.name+".log"), h.admin, h.inbound, strings.TrimPrefix(svc.URL, "http://"), allow, edgeID)
		if h.name == "ledger" {
			b.WriteString("  rules:\n    - match: {path_prefix: /deep}\n      callers: {max_hops: 1}\n")
		}
		if i < len(hops)-1 {
			next := hops[i+1]
			fmt.Fprintf(&b, "outbound:\n  listen: %q\n  services:\n    %s: {endpoints: [%q], identity: %q}\n", h.outbound, next.name, next.inbound, next.id)
		}
		startProcess(t, dir, h.name, b.String(), bin, "sidecar", "http://"+h.admin+"/readyz")
	}

	keys := filepath.Join(dir, "keys")
	sum := sha256.Sum256([]byte("alice-key-0123456789"))
	writeConfig(t, keys, "alice:"+hex.EncodeToString(sum[:])+"\n")
	edgeFiles := ca.IssueFiles(t.TempDir(), edgeID)
	httpAddr, adminAddr := freeTCPAddr(t), freeTCPAddr(t)
	startProcess(t, dir, "edge", fmt.Sprintf(`version: 1
listen: {http: %q, admin: %q}
access_log: {output: %q}
mesh:
  trust_domain: example.org
  cert_file: %q
  key_file: %q
  bundle_file: %q
  caller_token: {}
authenticators:
  users: {api_key: {keys_file: %q, forward_name: X-User-Id}}
upstreams:
  orders: {endpoints: [%q], mesh_identity: %q}
routes:
  - {name: orders, match: {path_prefix: /}, upstream: orders, auth: [users]}
`, httpAddr, adminAddr, filepath.Join(dir, "edge.log"), edgeFiles.Cert, edgeFiles.Key, edgeFiles.Bundle, keys, hops[0].inbound, ordersID),
		bin, "edge", "http://"+adminAddr+"/readyz")

	get := func(path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+httpAddr+path, nil)
		req.Header.Set("X-API-Key", "alice-key-0123456789")
		req.Header.Set("X-User-Id", "root") // a client's copy: never believed
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("/pay"); code != http.StatusOK || body != "ledger ok\n" {
		t.Fatalf("status %d: %s", code, body)
	}
	chain := edgeID
	for _, h := range hops {
		h.mu.Lock()
		got := h.seen[len(h.seen)-1]
		h.mu.Unlock()
		if got.Get("X-Causeway-Caller-Subject") != "alice" || got.Get("X-User-Id") != "alice" {
			t.Errorf("%s saw subject %q, X-User-Id %q", h.name, got.Get("X-Causeway-Caller-Subject"), got.Get("X-User-Id"))
		}
		if got.Get("X-Causeway-Caller-Chain") != chain {
			t.Errorf("%s saw chain %q, want %q", h.name, got.Get("X-Causeway-Caller-Chain"), chain)
		}
		chain += "," + h.id
	}
	// Two exchanges put the ledger two hops from the edge; /deep allows one.
	if code, body := get("/deep"); code != http.StatusForbidden || !strings.Contains(body, "hops") {
		t.Fatalf("/deep: %d %s", code, body)
	}
	// A workload calling the ledger without a token: require refuses it.
	req, _ := http.NewRequest(http.MethodGet, "http://"+hops[1].outbound+"/pay", nil)
	req.Host = "ledger"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("tokenless call to the ledger: %d", resp.StatusCode)
	}
	var token string
	hops[0].mu.Lock()
	token = hops[0].seen[0].Get("Causeway-Caller")
	hops[0].mu.Unlock()
	for _, name := range []string{"edge", "orders", "payments", "ledger"} {
		b, err := os.ReadFile(filepath.Join(dir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		if token == "" || strings.Contains(string(b), token) || strings.Contains(string(b), "alice-key-0123456789") {
			t.Errorf("%s's access log holds a token or key", name)
		}
	}
}

// startProcess writes config to dir/name.yaml and runs bin ROLE -config
// on it until the test ends, waiting for ready to answer 200.
func startProcess(t *testing.T, dir, name, config, bin, role, ready string) {
	t.Helper()
	cfg := filepath.Join(dir, name+".yaml")
	writeConfig(t, cfg, config)
	logs, err := os.Create(filepath.Join(dir, name+".stderr"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, role, "-config", cfg)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		logs.Close()
	})
	waitHTTP(t, ready)
}
