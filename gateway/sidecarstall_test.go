package gateway

import (
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh/meshtest"
)

// blockedReadConn is a client connection whose reads never return until
// the test ends: a TLS client over it sends its ClientHello and then
// waits for an answer it never reads, so the server's handshake stalls
// after the ClientHello.
type blockedReadConn struct {
	net.Conn
	done <-chan struct{}
}

func (c blockedReadConn) Read([]byte) (int, error) { <-c.done; return 0, io.EOF }

// Stalled peers on both of a sidecar's listeners are let go by the
// server, and the connection cap they filled is usable again. Each case
// fills the cap (server.max_connections: 4) with clients that stall: a
// TLS record header and 10 bytes of a ClientHello; a whole ClientHello
// after which the client reads nothing (the handshake waits for the
// client's certificate); a request head sent a byte every 20 ms forever
// to the outbound listener. Every stalled connection must be closed by the
// server while its client still holds it (read_header_timeout 300ms bounds
// the TLS handshake and the head), and a real request then succeeds on the
// same listener. No defect found.
func TestSidecarStalledPeersReleased(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	edgeFiles := ca.IssueFiles(t.TempDir(), edgeID)
	ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
	paymentsFiles := ca.IssueFiles(t.TempDir(), paymentsID)
	svc := echoUpstream(t, "svc")
	payments := startSidecar(t, sidecarConfig(paymentsFiles, hostPort(svc), []string{ordersID}, nil))
	cfg := sidecarConfig(ordersFiles, hostPort(svc), []string{edgeID}, map[string][2]string{"payments": {payments.Addr("inbound"), paymentsID}})
	sc := startSidecar(t, cfg+"server: {max_connections: 4, read_header_timeout: 300ms}\n")
	cert, err := tls.LoadX509KeyPair(edgeFiles.Cert, edgeFiles.Key)
	if err != nil {
		t.Fatal(err)
	}
	const capacity = 4
	for _, tc := range []struct {
		name     string
		listener string
		stall    func(c net.Conn, done <-chan struct{}) // starts the stall; returns at once
		served   func(t *testing.T, addr string)
	}{
		{"inbound: part of a ClientHello", "inbound", func(c net.Conn, _ <-chan struct{}) {
			_, _ = c.Write(append([]byte{0x16, 0x03, 0x01, 0x02, 0x00}, make([]byte, 10)...))
		}, inboundServed(edgeFiles)},
		{"inbound: ClientHello, then nothing read", "inbound", func(c net.Conn, done <-chan struct{}) {
			tc := tls.Client(blockedReadConn{Conn: c, done: done}, &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true})
			go func() { _ = tc.Handshake() }() // ends when the test's done closes
		}, inboundServed(edgeFiles)},
		{"outbound: a head byte by byte forever", "outbound", func(c net.Conn, done <-chan struct{}) {
			go func() {
				head := "GET / HTTP/1.1\r\nHost: payments\r\nX-Slow: "
				for i := 0; ; i++ {
					b := "a"
					if i < len(head) {
						b = head[i : i+1]
					}
					if _, err := io.WriteString(c, b); err != nil {
						return
					}
					select {
					case <-done:
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			}()
		}, func(t *testing.T, addr string) { waitServed(t, addr, "payments") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := sc.Addr(tc.listener)
			done := make(chan struct{})
			defer close(done)
			released := make(chan error, capacity)
			for range capacity {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				tc.stall(c, done)
				// The test reads the raw socket: whatever the server sent,
				// then the end it makes.
				go func() {
					_, err := io.Copy(io.Discard, c)
					released <- err
				}()
			}
			for i := range capacity {
				select {
				case <-released:
				case <-time.After(20 * time.Second): // a guard far beyond the 300 ms bound
					t.Fatalf("%d of %d stalled connections still open 20 s later (read_header_timeout 300ms)", capacity-i, capacity)
				}
			}
			tc.served(t, addr)
		})
	}
}

// inboundServed completes an mTLS handshake with the inbound listener as
// the edge, retrying while the cap's slots are given back.
func inboundServed(client meshtest.Files) func(t *testing.T, addr string) {
	return func(t *testing.T, addr string) {
		t.Helper()
		cert, err := tls.LoadX509KeyPair(client.Cert, client.Key)
		if err != nil {
			t.Fatal(err)
		}
		var last error
		for range 100 {
			d := &net.Dialer{Timeout: 5 * time.Second}
			c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true})
			if err == nil {
				ok := len(c.ConnectionState().PeerCertificates) > 0 && strings.HasPrefix(c.ConnectionState().PeerCertificates[0].URIs[0].String(), "spiffe://")
				c.Close()
				if ok {
					return
				}
			}
			last = err
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no mTLS handshake with the inbound listener after the stalled ones: %v", last)
	}
}
