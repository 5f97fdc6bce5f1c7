package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/caller"
	"github.com/causewayhq/causeway/mesh/meshtest"
	"github.com/causewayhq/causeway/routes"
)

// inboundPeerID completes an mTLS handshake with the sidecar's inbound
// listener, presenting client, and returns the ID the sidecar presented.
func inboundPeerID(t *testing.T, addr string, client meshtest.Files) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(client.Cert, client.Key)
	if err != nil {
		t.Fatal(err)
	}
	// The client checks nothing: this test is about what the server shows.
	conn, err := tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("handshake with the inbound listener: %v", err)
	}
	defer conn.Close()
	peer := conn.ConnectionState().PeerCertificates
	if len(peer) == 0 || len(peer[0].URIs) != 1 {
		t.Fatalf("the sidecar presented no SPIFFE certificate")
	}
	return peer[0].URIs[0].String()
}

// A reload that changes the sidecar's identity reaches the inbound
// listener at the next handshake (the listener does not keep the identity
// it started with); a refused reload changes neither the identity presented
// nor the expiry gauge.
func TestSidecarReloadIdentity(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	edgeFiles := ca.IssueFiles(t.TempDir(), edgeID)
	ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
	paymentsFiles := ca.IssueFiles(t.TempDir(), paymentsID)
	svc := echoUpstream(t, "svc")

	sc := startSidecar(t, sidecarConfig(ordersFiles, hostPort(svc), []string{edgeID}, nil))
	if got := inboundPeerID(t, sc.Addr("inbound"), edgeFiles); got != ordersID {
		t.Fatalf("presented %s, want %s", got, ordersID)
	}

	writeFile(t, sc.path, sidecarConfig(paymentsFiles, hostPort(svc), []string{edgeID}, nil))
	if err := sc.Reload(); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if got := inboundPeerID(t, sc.Addr("inbound"), edgeFiles); got != paymentsID {
			t.Fatalf("handshake %d after the reload presented %s, want %s", i, got, paymentsID)
		}
	}
	if sc.ID() != paymentsID {
		t.Fatalf("ID() = %s", sc.ID())
	}
	expiry := func(id string) float64 {
		v, _ := sample(t, sc.registry, "causeway_certificate_expiry_timestamp_seconds", map[string]string{"name": id})
		return v
	}
	before := expiry(paymentsID)
	if before == 0 {
		t.Fatal("no expiry published for the committed identity")
	}

	// A refused file names an identity that cannot be loaded, and one that
	// can; neither may reach the listener or the gauge.
	bad := filepath.Join(t.TempDir(), "missing.pem")
	refused := strings.Replace(sidecarConfig(ordersFiles, hostPort(svc), []string{edgeID}, nil), ordersFiles.Cert, bad, 1)
	writeFile(t, sc.path, refused)
	if err := sc.Reload(); err == nil {
		t.Fatal("a sidecar file naming a missing certificate was accepted")
	}
	// An identity that loads, in a file refused for another reason.
	refused = sidecarConfig(ordersFiles, hostPort(svc), []string{"not-a-spiffe-id"}, nil)
	writeFile(t, sc.path, refused)
	if err := sc.Reload(); err == nil {
		t.Fatal("a sidecar file with an invalid allow entry was accepted")
	}
	if got := inboundPeerID(t, sc.Addr("inbound"), edgeFiles); got != paymentsID {
		t.Fatalf("after refused reloads the sidecar presented %s, want %s", got, paymentsID)
	}
	if got := expiry(paymentsID); got != before {
		t.Fatalf("expiry gauge changed by a refused reload: %v -> %v", before, got)
	}
	if _, err := os.Stat(bad); err == nil {
		t.Fatal("the refused reload created a file")
	}
}

// The sidecar's listeners get the edge's connection caps: with
// server.max_connections: 1, a second client connection to the outbound
// listener is closed unserved while the first is held, and served once it
// is given back. (Before the shared server the sidecar had no cap at all.)
func TestSidecarConnectionCap(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
	paymentsFiles := ca.IssueFiles(t.TempDir(), paymentsID)
	svc := echoUpstream(t, "svc")
	payments := startSidecar(t, sidecarConfig(paymentsFiles, hostPort(svc), []string{ordersID}, nil))
	cfg := sidecarConfig(ordersFiles, hostPort(svc), []string{edgeID}, map[string][2]string{"payments": {payments.Addr("inbound"), paymentsID}})
	sc := startSidecar(t, cfg+"server: {max_connections: 1}\n")

	request := func(c net.Conn) error { return getOn(c, "payments") }
	first, err := net.Dial("tcp", sc.Addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	if err := request(first); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	second, err := net.Dial("tcp", sc.Addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if err := request(second); err == nil {
		t.Fatal("a second connection was served beyond max_connections: 1")
	}
	first.Close()
	waitServed(t, sc.Addr("outbound"), "payments")
}

// A sidecar reload neither forgets the caller tokens already used (with
// callers.replay, a token seen before the reload is refused after it, as
// before it) nor lets a refused file widen who may call: after each reload,
// accepted or refused, a used token is still refused, a caller outside
// inbound.allow is still refused, and a fresh token still passes.
func TestSidecarReloadKeepsCallerChecks(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	edgeFiles := ca.IssueFiles(t.TempDir(), edgeID)
	ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
	paymentsFiles := ca.IssueFiles(t.TempDir(), paymentsID)
	var served atomic.Int64
	svc := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		_, _ = io.WriteString(w, "ok\n")
	})
	file := func(allow []string, extra string) string {
		return sidecarConfig(ordersFiles, svc, allow, nil) +
			fmt.Sprintf("  callers: {issuers: [%q], replay: true}\n", edgeID) + extra
	}
	sc := startSidecar(t, file([]string{edgeID}, ""))

	edgeSrc, err := mesh.NewSource(context.Background(), edgeFiles.Cert, edgeFiles.Key, edgeFiles.Bundle, mesh.SourceOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = edgeSrc.Close() })
	minter := caller.NewMinter(edgeSrc, caller.MintOptions{})
	aud, err := mesh.ParseID(ordersID)
	if err != nil {
		t.Fatal(err)
	}
	mint := func() string {
		tok, err := minter.Mint(caller.Principal{Subject: "alice", Authenticator: "keys"}, aud)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	clientFor := func(files meshtest.Files) *http.Client {
		cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	asEdge, asPayments := clientFor(edgeFiles), clientFor(paymentsFiles)
	call := func(c *http.Client, token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "https://"+sc.Addr("inbound")+"/x", nil)
		req.Header.Set(routes.DefaultCallerHeader, token)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	used := mint()
	if got := call(asEdge, used); got != http.StatusOK {
		t.Fatalf("first use of a token: %d", got)
	}
	if got := call(asEdge, used); got != http.StatusUnauthorized {
		t.Fatalf("second use of a token before any reload: %d, want 401", got)
	}
	reloads := []struct {
		name    string
		file    string
		refused bool
	}{
		{name: "the same file again (SIGHUP)", file: file([]string{edgeID}, "")},
		{name: "a changed file", file: file([]string{edgeID}, "  timeout: 20s\n")},
		{name: "a refused file that allows the payments workload", file: file([]string{edgeID, paymentsID, "not-a-spiffe-id"}, ""), refused: true},
		{name: "a refused file without replay and allowing the payments workload", file: strings.Replace(file([]string{edgeID, paymentsID}, "plugins: {}\n"), "replay: true", "replay: false", 1), refused: true},
	}
	for _, rl := range reloads {
		writeFile(t, sc.path, rl.file)
		if err := sc.Reload(); (err != nil) != rl.refused {
			t.Fatalf("%s: reload error %v, refused %v", rl.name, err, rl.refused)
		}
		before := served.Load()
		if got := call(asEdge, used); got != http.StatusUnauthorized {
			t.Errorf("%s: a token used before the reload was accepted again: %d, want 401", rl.name, got)
		}
		if got := call(asPayments, mint()); got != http.StatusForbidden {
			t.Errorf("%s: a caller outside inbound.allow got %d, want 403", rl.name, got)
		}
		if n := served.Load() - before; n != 0 {
			t.Errorf("%s: the service received %d refused requests", rl.name, n)
		}
		fresh := mint()
		if got := call(asEdge, fresh); got != http.StatusOK {
			t.Fatalf("%s: a fresh token: %d", rl.name, got)
		}
		used = fresh
	}
}

// 100 sidecar reloads under 16 callers of three workloads: the edge,
// allowed by every file; payments, allowed by every other accepted file;
// and an intruder that only refused files allow (next to an entry that
// does not parse, a missing certificate, an allow entry of another trust
// domain with a trust_domain set). The intruder is never let through, the
// service sees exactly the requests answered 200, each answer carries the
// request's own token, and once the reloads stop the last accepted file
// decides alone.
func TestSidecarRapidReloadsNeverWidenCallers(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	dir := t.TempDir()
	ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
	const intruderID = "spiffe://example.org/ns/shop/sa/intruder"
	files := map[string]meshtest.Files{
		edgeID:     ca.IssueFiles(t.TempDir(), edgeID),
		paymentsID: ca.IssueFiles(t.TempDir(), paymentsID),
		intruderID: ca.IssueFiles(t.TempDir(), intruderID),
	}
	var served atomic.Int64
	svc := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		served.Add(1)
		_, _ = fmt.Fprintf(w, "%s|%s", r.Header.Get(PeerIDHeader), body)
	})
	accepted := func(i int) (string, []string) {
		allow := []string{edgeID}
		if i%2 == 1 {
			allow = append(allow, paymentsID)
		}
		return sidecarConfig(ordersFiles, svc, allow, nil) + fmt.Sprintf("# %d\n", i), allow
	}
	refusedFiles := []string{
		sidecarConfig(ordersFiles, svc, []string{edgeID, paymentsID, intruderID, "not-a-spiffe-id"}, nil),
		strings.Replace(sidecarConfig(ordersFiles, svc, []string{edgeID, paymentsID, intruderID}, nil), ordersFiles.Cert, filepath.Join(dir, "missing.pem"), 1),
		strings.Replace(sidecarConfig(ordersFiles, svc, []string{edgeID, intruderID, "spiffe://other.org/x"}, nil), "bundle_file:", "trust_domain: example.org, bundle_file:", 1),
	}
	first, _ := accepted(0)
	sc := startSidecar(t, first)

	clients := map[string]*http.Client{}
	for id, f := range files {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}
		t.Cleanup(tr.CloseIdleConnections)
		clients[id] = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	call := func(id, token string) (int, string, error) {
		resp, err := clients[id].Post("https://"+sc.Addr("inbound")+"/x", "text/plain", strings.NewReader(token))
		if err != nil {
			return 0, "", err
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode, string(body), nil
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var ok, denied, bad atomic.Int64
	var once sync.Once
	ids := []string{edgeID, paymentsID, intruderID}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				id := ids[(w+n)%len(ids)]
				token := fmt.Sprintf("w%d-%d", w, n)
				code, body, err := call(id, token)
				switch {
				case err != nil:
					bad.Add(1)
					once.Do(func() { t.Errorf("%s %s: %v", id, token, err) })
				case code == http.StatusForbidden && id != edgeID:
					denied.Add(1)
				case code != http.StatusOK || id == intruderID || body != id+"|"+token:
					bad.Add(1)
					once.Do(func() { t.Errorf("%s %s: %d %q", id, token, code, body) })
				default:
					ok.Add(1)
				}
			}
		})
	}
	var allow []string
	for i := 1; i <= 100; i++ {
		if i%3 == 0 {
			writeFile(t, sc.path, refusedFiles[(i/3)%len(refusedFiles)])
			if err := sc.Reload(); err == nil {
				t.Fatalf("reload %d: a refused file was accepted", i)
			}
			continue
		}
		var file string
		file, allow = accepted(i)
		writeFile(t, sc.path, file)
		if err := sc.Reload(); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	stop()
	wg.Wait()
	if got := served.Load(); got != ok.Load() {
		t.Errorf("the service received %d requests, %d were answered 200", got, ok.Load())
	}
	if ok.Load() == 0 || denied.Load() == 0 {
		t.Fatalf("%d allowed, %d denied: the traffic did not see both kinds of file", ok.Load(), denied.Load())
	}
	for _, id := range ids {
		want := http.StatusForbidden
		if slices.Contains(allow, id) {
			want = http.StatusOK
		}
		if code, _, err := call(id, "final"); err != nil || code != want {
			t.Fatalf("after the reloads %s got %d (%v), want %d (allow %v)", id, code, err, want, allow)
		}
	}
	t.Logf("%d allowed, %d denied, %d wrong across 100 reloads (33 refused)", ok.Load(), denied.Load(), bad.Load())
}
