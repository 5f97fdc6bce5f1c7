package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh/meshtest"
)

const (
	edgeID     = "spiffe://example.org/ns/edge/sa/gateway"
	ordersID   = "spiffe://example.org/ns/shop/sa/orders"
	paymentsID = "spiffe://example.org/ns/shop/sa/payments"
)

type testSidecar struct {
	*Sidecar
	path   string
	cancel context.CancelFunc
	done   chan error
}

func startSidecar(t testing.TB, config string) *testSidecar {
	t.Helper()
	return startSidecarClock(t, config, nil)
}

// startSidecarClock is startSidecar on clock (nil: the wall clock), for
// tests that move time past a certificate.
func startSidecarClock(t testing.TB, config string, clock func() time.Time) *testSidecar {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sidecar.yaml")
	writeFile(t, path, config)
	s, err := NewSidecar(context.Background(), SidecarOptions{ConfigPath: path, Logger: slog.New(slog.DiscardHandler), ReloadDebounce: 20 * time.Millisecond, Clock: clock})
	if err != nil {
		t.Fatalf("NewSidecar: %v", err)
	}
	if err := s.Listen(); err != nil {
		s.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testSidecar{Sidecar: s, path: path, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ts.done:
		case <-time.After(10 * time.Second):
			panic("sidecar did not stop")
		}
	})
	return ts
}

func sidecarConfig(files meshtest.Files, forwardTo string, allow []string, services map[string][2]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nidentity: {cert_file: %q, key_file: %q, bundle_file: %q}\n", files.Cert, files.Key, files.Bundle)
	fmt.Fprintf(&b, "access_log: {output: \"off\"}\nadmin: \"127.0.0.1:0\"\n")
	fmt.Fprintf(&b, "inbound:\n  listen: \"127.0.0.1:0\"\n  forward_to: %q\n  allow: [", forwardTo)
	for i, a := range allow {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", a)
	}
	b.WriteString("]\n")
	if len(services) > 0 {
		b.WriteString("outbound:\n  listen: \"127.0.0.1:0\"\n  services:\n")
	}
	for name, s := range services {
		fmt.Fprintf(&b, "    %s: {endpoints: [%q], identity: %q}\n", name, s[0], s[1])
	}
	return b.String()
}

// meshEdgeConfig is an edge whose upstream is reached through the mesh.
func meshEdgeConfig(files meshtest.Files, upstreamAddr, upstreamID string) string {
	return listenHeader + fmt.Sprintf(`mesh: {trust_domain: example.org, cert_file: %q, key_file: %q, bundle_file: %q}
upstreams:
  orders: {endpoints: [%q], mesh_identity: %q}
routes:
  - {name: orders, match: {path_prefix: /orders}, upstream: orders}
`, files.Cert, files.Key, files.Bundle, upstreamAddr, upstreamID)
}

// The full path: client -> edge -mTLS-> sidecar(orders) -> orders service
// -> sidecar(orders) outbound -mTLS-> sidecar(payments) -> payments service.
func TestMeshPath(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	edgeFiles := ca.IssueFiles(t.TempDir(), edgeID)
	ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
	paymentsFiles := ca.IssueFiles(t.TempDir(), paymentsID)

	payments := echoUpstream(t, "payments")
	paymentsSidecar := startSidecar(t, sidecarConfig(paymentsFiles, hostPort(payments), []string{ordersID}, nil))

	var ordersOutbound atomic.Value // the orders sidecar's outbound address, known after start
	orders := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		// The orders service calls payments through its own sidecar.
		req, _ := http.NewRequest(http.MethodGet, "http://"+ordersOutbound.Load().(string)+"/charge", nil)
		req.Host = "payments"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		w.Header().Set("X-Seen-Peer", r.Header.Get(PeerIDHeader))
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
	})
	ordersSidecar := startSidecar(t, sidecarConfig(ordersFiles, orders, []string{edgeID},
		map[string][2]string{"payments": {paymentsSidecar.Addr("inbound"), paymentsID}}))
	ordersOutbound.Store(ordersSidecar.Addr("outbound"))

	te := startEdge(t, meshEdgeConfig(edgeFiles, ordersSidecar.Addr("inbound"), ordersID))

	resp, body := get(t, te.url+"/orders/1", PeerIDHeader, "spiffe://example.org/ns/evil/sa/forged")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Seen-Peer"); got != edgeID {
		t.Errorf("orders saw caller %q, want the edge's verified ID (client copy must be stripped)", got)
	}
	e := decodeEcho(t, body)
	if e.Upstream != "payments" || e.Path != "/charge" {
		t.Fatalf("payments echo %+v", e)
	}
	if got := e.Header.Get(PeerIDHeader); got != ordersID {
		t.Errorf("payments saw caller %q, want %q", got, ordersID)
	}

	_, metrics := get(t, "http://"+ordersSidecar.Addr("admin")+"/metrics")
	for _, want := range []string{
		`causeway_mesh_requests_total{code="200",direction="inbound",peer="` + edgeID + `"} 1`,
		`causeway_mesh_requests_total{code="200",direction="outbound",peer="` + paymentsID + `"} 1`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func httptestServer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return hostPort(s)
}

func TestMeshRefusals(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	other := meshtest.NewCA(t, "example.org") // same trust domain, different keys
	edgeFiles := ca.IssueFiles(t.TempDir(), edgeID)
	ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
	svc := echoUpstream(t, "orders")
	sc := startSidecar(t, sidecarConfig(ordersFiles, hostPort(svc), []string{edgeID}, nil))

	client := func(c *meshtest.Cert) *http.Client {
		cfg := &tls.Config{RootCAs: ca.Pool(), InsecureSkipVerify: true} // SPIFFE: no host names; the sidecar's identity is not under test here
		if c != nil {
			cfg.Certificates = []tls.Certificate{c.TLS}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	}
	url := "https://" + sc.Addr("inbound") + "/"

	t.Run("plaintext refused", func(t *testing.T) {
		resp, err := http.Get("http://" + sc.Addr("inbound") + "/")
		if err == nil {
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("plaintext got %d", resp.StatusCode)
			}
		}
	})
	t.Run("no client certificate fails the handshake", func(t *testing.T) {
		if resp, err := client(nil).Get(url); err == nil {
			resp.Body.Close()
			t.Fatalf("request without a certificate got %d", resp.StatusCode)
		}
	})
	t.Run("unlisted caller gets 403", func(t *testing.T) {
		resp, err := client(ca.Issue("spiffe://example.org/ns/shop/sa/intruder")).Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("certificate from another CA fails the handshake", func(t *testing.T) {
		if resp, err := client(other.Issue(edgeID)).Get(url); err == nil {
			resp.Body.Close()
			t.Fatalf("foreign certificate got %d", resp.StatusCode)
		}
	})
	t.Run("expired certificate fails the handshake", func(t *testing.T) {
		expired := ca.Issue(edgeID, meshtest.Expired())
		if resp, err := client(expired).Get(url); err == nil {
			resp.Body.Close()
			t.Fatalf("expired certificate got %d", resp.StatusCode)
		}
	})
	t.Run("listed caller passes", func(t *testing.T) {
		resp, err := client(ca.Issue(edgeID)).Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || decodeEcho(t, body).Header.Get(PeerIDHeader) != edgeID {
			t.Fatalf("status %d body %s", resp.StatusCode, body)
		}
	})
	t.Run("a caller's Connection header cannot remove the verified peer id", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Connection", "keep-alive, "+PeerIDHeader)
		req.Header.Set(PeerIDHeader, "spiffe://example.org/ns/evil/sa/forged")
		resp, err := client(ca.Issue(edgeID)).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := decodeEcho(t, body).Header.Values(PeerIDHeader); resp.StatusCode != http.StatusOK || len(got) != 1 || got[0] != edgeID {
			t.Fatalf("status %d: the service saw caller %q, want %q", resp.StatusCode, got, edgeID)
		}
	})
	t.Run("edge refuses an impostor sidecar", func(t *testing.T) {
		// The sidecar presents orders' identity; the edge expects payments'.
		te := startEdge(t, meshEdgeConfig(edgeFiles, sc.Addr("inbound"), paymentsID))
		resp, body := get(t, te.url+"/orders")
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	})
	t.Run("mesh.require refuses plain upstreams", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "c.yaml")
		writeFile(t, path, listenHeader+fmt.Sprintf("mesh: {trust_domain: example.org, cert_file: %q, key_file: %q, bundle_file: %q, require: true}\nupstreams:\n  plain: {endpoints: [\"127.0.0.1:1\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: plain}\n", edgeFiles.Cert, edgeFiles.Key, edgeFiles.Bundle))
		err := Validate(context.Background(), path)
		if err == nil || !strings.Contains(err.Error(), "plain-HTTP upstream is refused") {
			t.Fatalf("got %v", err)
		}
	})
}

// Every certificate (edge, sidecars) is rotated while requests flow through
// edge -> sidecar -> service: none may fail.
func TestMeshRotationUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("rotation under load takes several seconds")
	}
	ca := meshtest.NewCA(t, "example.org")
	edgeDir, ordersDir := t.TempDir(), t.TempDir()
	edgeFiles := ca.IssueFiles(edgeDir, edgeID)
	ordersFiles := ca.IssueFiles(ordersDir, ordersID)
	svc := echoUpstream(t, "orders")
	sc := startSidecar(t, sidecarConfig(ordersFiles, hostPort(svc), []string{edgeID}, nil))
	te := startEdge(t, meshEdgeConfig(edgeFiles, sc.Addr("inbound"), ordersID))

	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	done := meshLoad(ctx, t, 6, te.url+"/orders")
	for i := 0; ctx.Err() == nil; i++ {
		ca.IssueFiles(edgeDir, edgeID)
		ca.IssueFiles(ordersDir, ordersID)
		time.Sleep(300 * time.Millisecond)
	}
	ok, failed := done()
	if failed > 0 || ok == 0 {
		t.Fatalf("%d failed, %d ok during rotation", failed, ok)
	}
	t.Logf("%d requests during certificate rotation, none failed", ok)
}

// meshLoad sends GETs to url from workers goroutines until ctx ends, on a
// new connection every fourth request so that handshakes happen
// throughout, not only at the start. wait waits for the workers and
// returns how many requests were answered 200 and how many were not.
func meshLoad(ctx context.Context, t *testing.T, workers int, url string) (wait func() (ok, failed int64)) {
	var okN, failedN atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				client := &http.Client{Transport: &http.Transport{DisableKeepAlives: i%4 == 0}}
				resp, err := client.Get(url)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				client.CloseIdleConnections()
				if err != nil || resp.StatusCode != http.StatusOK {
					failedN.Add(1)
					firstErr.Do(func() { t.Logf("first failure: %v %v", err, resp) })
					continue
				}
				okN.Add(1)
			}
		}()
	}
	return func() (int64, int64) {
		wg.Wait()
		return okN.Load(), failedN.Load()
	}
}

// inbound.allow_service_accounts lets in the pods of a ServiceAccount by
// the SPIFFE ID the mesh names them with; a caller of another account, of
// a same-named account in another namespace, or with a longer path is
// refused with 403 and never reaches the service.
func TestMeshAllowServiceAccounts(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
	var hits atomic.Int64
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(svc.Close)
	cfg := strings.Replace(sidecarConfig(ordersFiles, hostPort(svc), []string{"spiffe://example.org/ns/ops/sa/debugger"}, nil),
		"  allow: [", "  allow_service_accounts: [edge/gateway]\n  allow: [", 1)
	cfg = strings.Replace(cfg, "identity: {", "identity: {trust_domain: example.org, ", 1)
	sc := startSidecar(t, cfg)
	url := "https://" + sc.Addr("inbound") + "/"
	for _, tc := range []struct {
		id   string
		want int
	}{
		{"spiffe://example.org/ns/edge/sa/gateway", http.StatusOK},
		{"spiffe://example.org/ns/ops/sa/debugger", http.StatusOK}, // allow still counts
		{"spiffe://example.org/ns/edge/sa/other", http.StatusForbidden},
		{"spiffe://example.org/ns/shop/sa/gateway", http.StatusForbidden},
		{"spiffe://example.org/ns/edge/sa/gateway/x", http.StatusForbidden},
	} {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: ca.Pool(), InsecureSkipVerify: true, Certificates: []tls.Certificate{ca.Issue(tc.id).TLS}}}}
		before := hits.Load()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		resp.Body.Close()
		c.CloseIdleConnections()
		if resp.StatusCode != tc.want {
			t.Fatalf("%s: %d, want %d", tc.id, resp.StatusCode, tc.want)
		}
		if reached := hits.Load() - before; (reached == 1) != (tc.want == http.StatusOK) {
			t.Fatalf("%s: the service was reached %d times", tc.id, reached)
		}
	}
}
