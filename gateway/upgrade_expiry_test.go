package gateway

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh/meshtest"
)

// A WebSocket tunnel through a sidecar is authenticated once, by the
// handshake and the check of the upgrade request, and then outlives the
// caller's certificate (docs/mesh.md: as in Envoy and Istio, mTLS
// authenticates a connection when it is set up; closing tunnels at every
// rotation would cut live sessions). The sidecar's clock moves past the
// caller's certificate while a tunnel is open: the tunnel still carries
// bytes both ways, while a new connection with the same certificate gets
// no tunnel. This pins the behaviour the documentation describes.
func TestUpgradedTunnelOutlivesCallersCertificate(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	svc := newUpgradeRecorder(t)
	callerCert := ca.Issue(edgeID, meshtest.TTL(time.Hour)).TLS

	var offset atomic.Int64
	s := startSidecarClock(t, sidecarConfig(ca.IssueFiles(t.TempDir(), ordersID), svc.addr(), []string{edgeID}, nil),
		func() time.Time { return time.Now().Add(time.Duration(offset.Load())) })

	// upgrade opens a tunnel through the sidecar, or says why it got none.
	upgrade := func() (*tls.Conn, *bufio.Reader, error) {
		c, err := tls.Dial("tcp", s.Addr("inbound"), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}, Certificates: []tls.Certificate{callerCert}})
		if err != nil {
			return nil, nil, err
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: orders\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			c.Close()
			return nil, nil, fmt.Errorf("got %d", resp.StatusCode)
		}
		return c, br, nil
	}
	echo := func(c *tls.Conn, br *bufio.Reader, msg string) {
		t.Helper()
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("tunnel echoed %q, %v; want %q", buf, err, msg)
		}
	}

	c, br, err := upgrade()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo(c, br, "HELLO")

	offset.Store(int64(2 * time.Hour)) // the caller's certificate has expired
	echo(c, br, "STILL OPEN")
	c2, _, err := upgrade()
	if err == nil {
		c2.Close()
		t.Fatal("a new connection with the expired certificate got a tunnel")
	}
	t.Logf("a new connection with the expired certificate: %v", err)
}
