package mesh_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// oneByteServer accepts connections, runs wrap on each (a TLS handshake, or
// nothing), writes one byte and closes: the cost of a connection set-up.
func oneByteServer(b *testing.B, wrap func(net.Conn) net.Conn) string {
	return testutil.ServeConns(b, func(c net.Conn) {
		conn := wrap(c)
		if tc, ok := conn.(*tls.Conn); ok {
			if err := tc.Handshake(); err != nil {
				return
			}
		}
		_, _ = conn.Write([]byte("x"))
		_, _ = io.Copy(io.Discard, conn) // until the client closes
	})
}

// BenchmarkHandshake measures a new connection to 127.0.0.1 with a full
// handshake (no resumption) and one byte read: plain TCP, TLS with a
// server certificate only, and mesh mTLS (ECDSA P-256 both ways, SPIFFE
// verification on both sides).
func BenchmarkHandshake(b *testing.B) {
	ca := meshtest.NewCA(b, "example.org")
	server, _ := ca.Source(ordersID)
	client, _ := ca.Source(gatewayID)
	serverOnly := &tls.Config{Certificates: []tls.Certificate{ca.Issue(ordersID).TLS}}
	cases := []struct {
		name      string
		serverTLS *tls.Config
		clientTLS *tls.Config
	}{
		{"plain-tcp", nil, nil},
		{"tls-server-auth", serverOnly, verifyChainOnly(ca.Pool())},
		{"mtls-spiffe", mesh.ServerConfig(server), mesh.ClientConfig(client, mustID(b, ordersID))},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			addr := oneByteServer(b, func(c net.Conn) net.Conn {
				if tc.serverTLS == nil {
					return c
				}
				return tls.Server(c, tc.serverTLS)
			})
			b.ReportAllocs()
			var buf [1]byte
			for b.Loop() {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				conn := c
				if tc.clientTLS != nil {
					conn = tls.Client(c, tc.clientTLS)
				}
				if _, err := io.ReadFull(conn, buf[:]); err != nil {
					b.Fatal(err)
				}
				conn.Close()
			}
		})
	}
}

// verifyChainOnly is a client that verifies the server's chain as Go's
// default verification would, minus the host name (the leaf has none), so
// the baseline pays for chain verification like the mesh client does.
func verifyChainOnly(roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			return err
		},
	}
}

// BenchmarkRequest measures a GET over a reused connection: plain HTTP/1.1
// against mesh mTLS over HTTP/1.1 and HTTP/2, each authorizing the peer ID
// per request as the sidecar will.
func BenchmarkRequest(b *testing.B) {
	ca := meshtest.NewCA(b, "example.org")
	server, _ := ca.Source(ordersID)
	client, _ := ca.Source(gatewayID)
	authz := mesh.AuthorizeOnly(mustID(b, gatewayID))
	ok := []byte("ok")
	meshHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := authz.Request(r); err != nil {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.Write(ok)
	})
	plainAddr := servePlain(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(ok) }))
	meshAddr := serveMesh(b, server, meshHandler)
	cases := []struct {
		name string
		url  string
		c    *http.Client
	}{
		{"plain-http1", "http://" + plainAddr + "/", &http.Client{Transport: &http.Transport{}}},
		{"mtls-http1", "https://" + meshAddr + "/", meshClient(b, mesh.ClientConfig(client, mustID(b, ordersID)), false, true)},
		{"mtls-http2", "https://" + meshAddr + "/", meshClient(b, mesh.ClientConfig(client, mustID(b, ordersID)), true, true)},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			get := func() {
				resp, err := tc.c.Get(tc.url)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			get() // the connection is set up outside the measurement
			b.ReportAllocs()
			for b.Loop() {
				get()
			}
			if tr, ok := tc.c.Transport.(*http.Transport); ok {
				tr.CloseIdleConnections()
			}
		})
	}
}

func servePlain(b *testing.B, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ErrorLog: discardLog()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	b.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}
