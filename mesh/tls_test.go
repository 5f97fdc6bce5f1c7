package mesh_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

const (
	ordersID   = "spiffe://example.org/ns/shop/sa/orders"
	gatewayID  = "spiffe://example.org/ns/edge/sa/gateway"
	paymentsID = "spiffe://example.org/ns/shop/sa/payments"
)

type handshakeResult struct {
	serverErr, clientErr error
	serverState          tls.ConnectionState
	clientState          tls.ConnectionState
}

// handshake runs one real TLS handshake over 127.0.0.1 and one byte of
// application data from server to client, which is where a TLS 1.3 client
// learns that the server refused its certificate.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type srv struct {
		err   error
		state tls.ConnectionState
	}
	ch := make(chan srv, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- srv{err: err}
			return
		}
		defer c.Close()
		// A safety net against a hung test, not a measured threshold.
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		sc := tls.Server(c, serverCfg)
		if err := sc.Handshake(); err != nil {
			ch <- srv{err: err}
			return
		}
		_, err = sc.Write([]byte("x"))
		ch <- srv{err: err, state: sc.ConnectionState()}
		_ = sc.Close()
	}()
	var res handshakeResult
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	cc := tls.Client(conn, clientCfg)
	res.clientErr = cc.Handshake()
	if res.clientErr == nil {
		var b [1]byte
		_, res.clientErr = io.ReadFull(cc, b[:])
		res.clientState = cc.ConnectionState()
	}
	cc.Close()
	s := <-ch
	res.serverErr, res.serverState = s.err, s.state
	return res
}

// rawClient presents cert (or nothing) and checks nothing about the server:
// the side under test is the server.
func rawClient(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: certs, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
}

func TestServerConfigRefusesBadClients(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	server, _ := ca.Source(ordersID)
	otherCA := meshtest.NewCA(t, "example.org")
	otherTD := meshtest.NewCA(t, "other.org")
	inter := ca.Intermediate()

	tests := []struct {
		name   string
		client *tls.Config
		wantID string // "" means the handshake must fail
		errHas string
	}{
		{"a certificate from the CA is accepted", rawClient(ca.Issue(gatewayID).TLS), gatewayID, ""},
		{"a certificate from an intermediate is accepted", rawClient(inter.Issue(gatewayID).TLS), gatewayID, ""},
		{"no client certificate fails the handshake", rawClient(), "", "certificate"},
		{"an expired certificate is refused", rawClient(ca.Issue(gatewayID, meshtest.Expired()).TLS), "", "expired"},
		{"a not-yet-valid certificate is refused", rawClient(ca.Issue(gatewayID, meshtest.Validity(time.Now().Add(time.Hour), time.Now().Add(2*time.Hour))).TLS), "", "not yet valid"},
		{"a certificate from another CA of the same trust domain is refused", rawClient(otherCA.Issue(gatewayID).TLS), "", "unknown authority"},
		{"a certificate from another trust domain is refused", rawClient(otherTD.Issue("spiffe://other.org/ns/edge/sa/gateway").TLS), "", "other.org"},
		{"a leaf with the CA flag is refused", rawClient(ca.Issue(gatewayID, meshtest.AsCA()).TLS), "", "CA flag"},
		{"a leaf with two URI SANs is refused", rawClient(ca.Issue(gatewayID, meshtest.URIs(gatewayID, paymentsID)).TLS), "", "more than one URI SAN"},
		{"a leaf without a URI SAN is refused", rawClient(ca.Issue(gatewayID, meshtest.URIs()).TLS), "", "no URI SAN"},
		{"a leaf naming the bare trust domain is refused", rawClient(ca.Issue(gatewayID, meshtest.URIs("spiffe://example.org")).TLS), "", "names the trust domain"},
		{"a leaf with a non-SPIFFE URI is refused", rawClient(ca.Issue(gatewayID, meshtest.URIs("https://example.org/gateway")).TLS), "", "scheme"},
		// Spellings of an allowed ID that a lax parser would read as it:
		// each is refused outright, never mapped onto gatewayID.
		{"a percent-encoded path is refused", rawClient(ca.Issue(gatewayID, meshtest.URIs("spiffe://example.org/ns/edge/sa/gate%77ay")).TLS), "", "path segment characters"},
		{"a trailing slash is refused", rawClient(ca.Issue(gatewayID, meshtest.URIs(gatewayID+"/")).TLS), "", "trailing slash"},
		{"a dot segment is refused", rawClient(ca.Issue(gatewayID, meshtest.URIs("spiffe://example.org/ns/edge/sa/x/../gateway")).TLS), "", "dot segments"},
		{"an upper-case trust domain is refused", rawClient(ca.Issue(gatewayID, meshtest.URIs("spiffe://EXAMPLE.org/ns/edge/sa/gateway")).TLS), "", "trust domain characters"},
		{"an upper-case scheme is refused", rawClient(ca.Issue(gatewayID, meshtest.RawURIs("SPIFFE://example.org/ns/edge/sa/gateway")).TLS), "", "not written as the SPIFFE ID"},
		{"a port is refused", rawClient(ca.Issue(gatewayID, meshtest.URIs("spiffe://example.org:443/ns/edge/sa/gateway")).TLS), "", "trust domain characters"},
		{"user info is refused", rawClient(ca.Issue(gatewayID, meshtest.URIs("spiffe://edge@example.org/ns/edge/sa/gateway")).TLS), "", "trust domain characters"},
		{"a query is refused", rawClient(ca.Issue(gatewayID, meshtest.URIs(gatewayID+"?sa=gateway")).TLS), "", "path segment characters"},
		{"a fragment is refused", rawClient(ca.Issue(gatewayID, meshtest.URIs(gatewayID+"#x")).TLS), "", "path segment characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := handshake(t, mesh.ServerConfig(server), tc.client)
			if tc.wantID == "" {
				if res.serverErr == nil {
					t.Fatalf("server accepted the client")
				}
				if res.clientErr == nil {
					t.Fatalf("client saw no failure")
				}
				if !strings.Contains(res.serverErr.Error(), tc.errHas) {
					t.Fatalf("server error %q does not mention %q", res.serverErr, tc.errHas)
				}
				return
			}
			if res.serverErr != nil || res.clientErr != nil {
				t.Fatalf("handshake failed: server %v, client %v", res.serverErr, res.clientErr)
			}
			id, ok := mesh.PeerID(&res.serverState)
			if !ok || id.String() != tc.wantID {
				t.Fatalf("PeerID = %v, %v; want %s", id, ok, tc.wantID)
			}
		})
	}
}

func TestClientConfigRefusesBadServers(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	client, _ := ca.Source(gatewayID)
	otherCA := meshtest.NewCA(t, "example.org")
	otherTD := meshtest.NewCA(t, "other.org")
	want := mustID(t, ordersID)

	tests := []struct {
		name   string
		server tls.Certificate
		ok     bool
		errHas string
	}{
		{"the expected server is accepted", ca.Issue(ordersID).TLS, true, ""},
		{"the expected server behind an intermediate is accepted", ca.Intermediate().Issue(ordersID).TLS, true, ""},
		{"an impostor with a valid certificate for another ID is refused", ca.Issue(paymentsID).TLS, false, "not the expected " + ordersID},
		{"an expired server certificate is refused", ca.Issue(ordersID, meshtest.Expired()).TLS, false, "expired"},
		{"a server certificate from another CA is refused", otherCA.Issue(ordersID).TLS, false, "unknown authority"},
		{"a server of another trust domain is refused", otherTD.Issue("spiffe://other.org/ns/shop/sa/orders").TLS, false, "other.org"},
		{"a CA-flagged server leaf is refused", ca.Issue(ordersID, meshtest.AsCA()).TLS, false, "CA flag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			serverCfg := &tls.Config{Certificates: []tls.Certificate{tc.server}, ClientAuth: tls.RequireAnyClientCert}
			res := handshake(t, serverCfg, mesh.ClientConfig(client, want))
			if tc.ok {
				if res.serverErr != nil || res.clientErr != nil {
					t.Fatalf("handshake failed: server %v, client %v", res.serverErr, res.clientErr)
				}
				if id, ok := mesh.PeerID(&res.clientState); !ok || id != want {
					t.Fatalf("client PeerID = %v, %v; want %s", id, ok, want)
				}
				if id, ok := mesh.PeerID(&res.serverState); !ok || id.String() != gatewayID {
					t.Fatalf("the client did not present its certificate: server PeerID = %v, %v", id, ok)
				}
				return
			}
			if res.clientErr == nil {
				t.Fatal("client accepted the server")
			}
			if !strings.Contains(res.clientErr.Error(), tc.errHas) {
				t.Fatalf("client error %q does not mention %q", res.clientErr, tc.errHas)
			}
		})
	}
}

// TestClockDrivesVerification shows the injected clock is the one used to
// judge peers: the same certificate is accepted now and refused once the
// source's clock is past its NotAfter.
func TestClockDrivesVerification(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	peer := ca.Issue(gatewayID, meshtest.TTL(time.Hour))
	f := ca.IssueFiles(t.TempDir(), ordersID)
	clock := newClock(time.Now())
	src, err := mesh.NewSource(context.Background(), f.Cert, f.Key, f.Bundle, mesh.SourceOptions{Now: clock.Now, Logger: discardSlog()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for _, tc := range []struct {
		name string
		now  time.Time
		err  string
	}{
		{"inside the validity period", time.Now(), ""},
		{"after the peer's NotAfter", peer.Leaf.NotAfter.Add(time.Second), "expired"},
		{"before the peer's NotBefore", peer.Leaf.NotBefore.Add(-time.Second), "not yet valid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock.Set(tc.now)
			_, err := src.Verify([]*x509.Certificate{peer.Leaf})
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("Verify = %v, want %q", err, tc.err)
			}
		})
	}
}

func mustID(t testing.TB, s string) mesh.ID {
	t.Helper()
	id, err := mesh.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// serveMesh serves h over mTLS with ServerConfig(src) on 127.0.0.1, the way
// the gateway will (http.Server.ServeTLS, so HTTP/2 is configured).
func serveMesh(t testing.TB, src *mesh.Source, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, TLSConfig: mesh.ServerConfig(src), ErrorLog: discardLog(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

func meshClient(t testing.TB, cfg *tls.Config, h2, keepAlive bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2, DisableKeepAlives: !keepAlive}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		cfg.NextProtos = []string{"http/1.1"}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// peerEcho answers 403 to a peer the authorizer refuses, the way the
// sidecar's inbound listener will, and echoes the peer ID otherwise.
func peerEcho(authz mesh.Authorizer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := authz.Request(r)
		if err != nil {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		io.WriteString(w, id.String()+" "+r.Proto)
	})
}

func TestMTLSOverHTTP(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	server, _ := ca.Source(ordersID)
	gateway, _ := ca.Source(gatewayID)
	payments, _ := ca.Source(paymentsID)
	addr := serveMesh(t, server, peerEcho(mesh.AuthorizeOnly(mustID(t, gatewayID))))
	for _, tc := range []struct {
		name     string
		client   *mesh.Source
		h2       bool
		wantCode int
		wantBody string
	}{
		{"a listed ID is served over HTTP/2", gateway, true, 200, gatewayID + " HTTP/2.0"},
		{"a listed ID is served over HTTP/1.1", gateway, false, 200, gatewayID + " HTTP/1.1"},
		{"a verified but unlisted ID gets 403", payments, true, 403, "forbidden\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := meshClient(t, mesh.ClientConfig(tc.client, mustID(t, ordersID)), tc.h2, true)
			resp, err := c.Get("https://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode || string(body) != tc.wantBody {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, tc.wantCode, tc.wantBody)
			}
		})
	}
	t.Run("a plaintext request is refused", func(t *testing.T) {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("plaintext got %d", resp.StatusCode)
			}
		}
	})
	t.Run("the client refuses a server that is not the expected one", func(t *testing.T) {
		c := meshClient(t, mesh.ClientConfig(gateway, mustID(t, paymentsID)), true, true)
		_, err := c.Get("https://" + addr + "/")
		if err == nil || !strings.Contains(err.Error(), "not the expected") {
			t.Fatalf("err = %v", err)
		}
	})
}
