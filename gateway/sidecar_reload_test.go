package gateway

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/mesh/meshtest"
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
