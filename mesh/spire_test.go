package mesh_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testspire"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh"
)

// spireServer is the package's one spire-server, started by the first test
// that needs it and stopped in TestMain.
var spireServer struct {
	once sync.Once
	dir  string
	srv  *testspire.Server
	err  error
}

func sharedSPIRE(t *testing.T) *testspire.Server {
	t.Helper()
	testspire.Require(t)
	spireServer.once.Do(func() {
		// Not t.TempDir: the server is shared by every test of the
		// package and outlives the test that starts it.
		spireServer.dir, spireServer.err = os.MkdirTemp("", "mesh-spire") //nolint:usetesting // see above
		if spireServer.err == nil {
			spireServer.srv, spireServer.err = testspire.StartServer(spireServer.dir, testspire.ServerOptions{TrustDomain: "example.org"})
		}
	})
	if spireServer.err != nil {
		t.Fatal(spireServer.err)
	}
	return spireServer.srv
}

func stopSharedSPIRE() {
	if spireServer.srv != nil {
		spireServer.srv.Stop()
	}
	if spireServer.dir != "" {
		_ = os.RemoveAll(spireServer.dir)
	}
}

// spireWorkload starts an agent for one workload and registers id for it.
func spireWorkload(t *testing.T, srv *testspire.Server, e testspire.Entry) (*testspire.Agent, string) {
	t.Helper()
	a, err := srv.StartAgent(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	entry, err := srv.CreateEntry(a, e)
	if err != nil {
		t.Fatal(err)
	}
	return a, entry
}

func openSPIRE(t *testing.T, socket string, opts mesh.SourceOptions) *mesh.Source {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = discardSlog()
	}
	s, err := mesh.NewWorkloadAPISource(context.Background(), socket, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// waitReady waits until s has an identity; the bound is a safety net.
func waitReady(t *testing.T, s *mesh.Source) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("no identity after 30s: %v", s.Ready())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mtlsServer serves one-byte answers over mTLS with server's identity,
// letting in only allowed callers; it returns its address.
func mtlsServer(t *testing.T, server *mesh.Source, allow mesh.Authorizer) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", mesh.ServerConfig(server))
	if err != nil {
		t.Fatal(err)
	}
	return testutil.ServeListener(t, ln, func(c net.Conn) {
		tc := c.(*tls.Conn)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if tc.Handshake() != nil {
			return
		}
		cs := tc.ConnectionState()
		id, _ := mesh.PeerID(&cs)
		if allow(id) != nil {
			_, _ = tc.Write([]byte("-"))
			return
		}
		_, _ = tc.Write([]byte("+"))
	})
}

// call makes one mTLS connection from client to addr expecting want, and
// reads the server's verdict.
func call(client *mesh.Source, addr string, want mesh.ID) error {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, mesh.ClientConfig(client, want))
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil {
		return fmt.Errorf("reading verdict: %w", err)
	}
	if b[0] != '+' {
		return errors.New("refused by the server's allow-list")
	}
	return nil
}

func TestSPIRESourceStartsWithoutAgentAndServes(t *testing.T) {
	srv := sharedSPIRE(t)
	var connected atomic.Int32
	connected.Store(-1)
	logs := &logBuffer{}
	// The socket the agent will use does not exist yet.
	// A short path: a Unix socket path is limited to about 100 bytes and
	// t.TempDir's carries the test's long name.
	sockDir, err := os.MkdirTemp("", "sp-late") //nolint:usetesting // see above
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	a, err := srv.StartAgent(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	id := mustID(t, "spiffe://example.org/ns/shop/sa/late")
	if _, err := srv.CreateEntry(a, testspire.Entry{SPIFFEID: id.String()}); err != nil {
		t.Fatal(err)
	}
	a.Kill()
	s := openSPIRE(t, a.Socket, mesh.SourceOptions{Logger: logs.logger(), TrustDomain: "example.org",
		Connected: func(up bool) {
			if up {
				connected.Store(1)
			} else {
				connected.Store(0)
			}
		}})
	if err := s.Ready(); !errors.Is(err, mesh.ErrNoIdentity) {
		t.Fatalf("Ready with no agent = %v, want ErrNoIdentity", err)
	}
	if _, err := s.Certificate(); err == nil {
		t.Fatal("a source with no identity gave a certificate")
	}
	time.Sleep(1500 * time.Millisecond)
	if connected.Load() != 0 {
		t.Fatalf("connected = %d with no agent, want 0", connected.Load())
	}
	start := time.Now()
	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, s)
	t.Logf("identity %s %s after the agent was healthy", s.ID(), time.Since(start).Round(time.Millisecond))
	if s.ID() != id || connected.Load() != 1 {
		t.Fatalf("ID %s connected %d, want %s and 1", s.ID(), connected.Load(), id)
	}
	if !strings.Contains(logs.String(), "Workload API reachable") {
		t.Fatalf("no reachable log line:\n%s", logs.String())
	}
}

func TestSPIRERotationAgentRestartAndRevocation(t *testing.T) {
	srv := sharedSPIRE(t)
	clientID := mustID(t, "spiffe://example.org/ns/edge/sa/gateway")
	serverID := mustID(t, "spiffe://example.org/ns/shop/sa/orders")
	// A 10 s SVID: the agent renews at half its life, so a rotation every 5 s.
	ca, _ := spireWorkload(t, srv, testspire.Entry{SPIFFEID: clientID.String(), TTL: 10 * time.Second})
	sa, serverEntry := spireWorkload(t, srv, testspire.Entry{SPIFFEID: serverID.String(), TTL: 10 * time.Second})
	var expiries sync.Map
	client := openSPIRE(t, ca.Socket, mesh.SourceOptions{TrustDomain: "example.org"})
	server := openSPIRE(t, sa.Socket, mesh.SourceOptions{TrustDomain: "example.org", Expiry: func(id string, na time.Time) { expiries.Store(na, id) }})
	waitReady(t, client)
	waitReady(t, server)
	addr := mtlsServer(t, server, mesh.AuthorizeID(clientID))

	// Load across rotations: every call must succeed.
	run := func(d time.Duration) (int, map[string]bool) {
		serials := map[string]bool{}
		n := 0
		for end := time.Now().Add(d); time.Now().Before(end); n++ {
			if err := call(client, addr, serverID); err != nil {
				t.Fatalf("call %d failed: %v", n, err)
			}
			c, _ := server.Certificate()
			serials[c.Leaf.SerialNumber.String()] = true
		}
		return n, serials
	}
	n, serials := run(12 * time.Second)
	if len(serials) < 2 {
		t.Fatalf("%d calls saw %d server certificates; want a rotation", n, len(serials))
	}
	t.Logf("%d calls across %d server SVIDs, 0 failures", n, len(serials))
	count := 0
	expiries.Range(func(any, any) bool { count++; return true })
	if count < 2 {
		t.Fatalf("expiry callback saw %d certificates", count)
	}

	// The server's agent dies: its current SVID stays in use meanwhile.
	sa.Kill()
	if n, _ := run(2 * time.Second); n == 0 {
		t.Fatal("no calls while the agent was down")
	}
	if err := sa.Restart(); err != nil {
		t.Fatal(err)
	}
	run(2 * time.Second)

	// Deleted entry: no renewal, refused once the SVID has expired.
	if err := srv.DeleteEntry(serverEntry); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := call(client, addr, serverID)
		if err != nil {
			if !strings.Contains(err.Error(), "expired") && !strings.Contains(err.Error(), "certificate") {
				t.Fatalf("refused for another reason: %v", err)
			}
			t.Logf("refused after the entry was deleted: %v", err)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a workload whose entry was deleted was still accepted after 30s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if server.Ready() == nil {
		t.Fatal("a source with an expired SVID says it is ready")
	}
}

func TestSPIREFederatedPeerNeedsItsBundle(t *testing.T) {
	srv := sharedSPIRE(t)
	// A second, real SPIRE server for the partner trust domain; the two
	// federate by exchanging bundles (spire-server bundle set).
	partner, err := testspire.StartServer(t.TempDir(), testspire.ServerOptions{TrustDomain: "partner.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer partner.Stop()
	ours, err := srv.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := partner.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	if err := partner.SetFederatedBundle("example.org", ours); err != nil {
		t.Fatal(err)
	}
	peerID := mustID(t, "spiffe://partner.test/ns/pay/sa/api")
	pa, _ := spireWorkload(t, partner, testspire.Entry{SPIFFEID: peerID.String(), FederatesWith: []string{"example.org"}})
	peer := openSPIRE(t, pa.Socket, mesh.SourceOptions{})
	waitReady(t, peer)
	addr := mtlsServer(t, peer, mesh.AuthorizeMemberOf("example.org"))

	// Without the partner's bundle: refused, however valid its SVID.
	noFed, _ := spireWorkload(t, srv, testspire.Entry{SPIFFEID: "spiffe://example.org/ns/edge/sa/nofed"})
	plain := openSPIRE(t, noFed.Socket, mesh.SourceOptions{TrustDomain: "example.org"})
	waitReady(t, plain)
	if err := call(plain, addr, peerID); err == nil || !strings.Contains(err.Error(), "partner.test") {
		t.Fatalf("a peer of a trust domain without a bundle: %v, want a refusal naming partner.test", err)
	}

	// With the bundle delivered by the Workload API: accepted.
	if err := srv.SetFederatedBundle("partner.test", theirs); err != nil {
		t.Fatal(err)
	}
	fed, _ := spireWorkload(t, srv, testspire.Entry{SPIFFEID: "spiffe://example.org/ns/edge/sa/fed", FederatesWith: []string{"partner.test"}})
	client := openSPIRE(t, fed.Socket, mesh.SourceOptions{TrustDomain: "example.org"})
	waitReady(t, client)
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := call(client, addr, peerID)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("federated peer refused: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The wrong ID in the federated domain is still refused.
	if err := call(client, addr, mustID(t, "spiffe://partner.test/ns/pay/sa/other")); err == nil {
		t.Fatal("a federated peer was accepted as another ID")
	}

	// The bundle withdrawn: refused again.
	if err := srv.DeleteFederatedBundle("partner.test"); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		err := call(client, addr, peerID)
		if err != nil {
			t.Logf("refused once the bundle was withdrawn: %v", err)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still accepted 30s after the partner's bundle was deleted")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A process that several registration entries match gets several SVIDs:
// spiffe_id picks one by its ID (whatever the agent's order), an ID the
// agent does not hand out leaves the source without an identity and says
// why, and without spiffe_id the first is used with a warning.
func TestSPIRESourcePicksSVIDByID(t *testing.T) {
	srv := sharedSPIRE(t)
	a, err := srv.StartAgent(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	ids := []string{"spiffe://example.org/ns/vm/sa/edge", "spiffe://example.org/ns/vm/sa/orders", "spiffe://example.org/ns/vm/sa/payments"}
	for _, id := range ids {
		if _, err := srv.CreateEntry(a, testspire.Entry{SPIFFEID: id}); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range ids {
		s := openSPIRE(t, a.Socket, mesh.SourceOptions{TrustDomain: "example.org", SPIFFEID: want})
		waitReady(t, s)
		// The agent may deliver the entries over several updates: wait
		// until all three are there, then the pick must still hold.
		deadline := time.Now().Add(30 * time.Second)
		for s.ID().String() != want && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if s.ID().String() != want {
			t.Fatalf("spiffe_id %s: the source holds %s", want, s.ID())
		}
	}

	missing := "spiffe://example.org/ns/vm/sa/nobody"
	s := openSPIRE(t, a.Socket, mesh.SourceOptions{TrustDomain: "example.org", SPIFFEID: missing})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(fmt.Sprint(s.Ready()), "no SVID for spiffe_id "+missing) {
		if time.Now().After(deadline) {
			t.Fatalf("Ready = %v, want it to say the agent sent no SVID for %s", s.Ready(), missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := s.Certificate(); err == nil {
		t.Fatal("a source whose spiffe_id the agent does not hand out gave a certificate")
	}

	logs := &logBuffer{}
	first := openSPIRE(t, a.Socket, mesh.SourceOptions{TrustDomain: "example.org", Logger: logs.logger()})
	waitReady(t, first)
	deadline = time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "several SVIDs") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning about several SVIDs without spiffe_id:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	if _, err := mesh.NewWorkloadAPISource(context.Background(), a.Socket, mesh.SourceOptions{TrustDomain: "example.org", SPIFFEID: "spiffe://other.org/x"}); err == nil {
		t.Fatal("a spiffe_id outside the trust domain was accepted")
	}
}
