package gateway

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// An https upstream answers without Content-Length or chunked framing, so
// its body ends at the close, and the connection then ends with a bare FIN
// (its process died; or someone on the path cut it: the truncation attack
// of RFC 8446 6.1) instead of a close_notify alert. The client of the edge,
// HTTP/1.1 (re-framed chunked) and HTTP/1.0 (close-delimited), must see its
// answer cut, never a whole-looking short body; with close_notify the same
// answer is whole. Before the fix the edge took crypto/tls's EOF for the
// end and sent the last chunk after the 20 bytes it had.
func TestEdgeCutsHTTPSBodyEndedWithoutCloseNotify(t *testing.T) {
	cert, caPath := backendTestCert(t)
	srv := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	const body = "twenty bytes of body"
	addr := testutil.ServeConns(t, func(raw net.Conn) {
		defer raw.Close()
		tc := tls.Server(raw, srv)
		req, err := http.ReadRequest(bufio.NewReader(tc))
		if err != nil {
			return
		}
		if _, err := io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"+body); err != nil {
			return
		}
		if req.URL.Path == "/notify" {
			_ = tc.Close()
		}
		// Else the socket alone: a FIN, no close_notify.
	})
	te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q], scheme: https, tls: {server_name: backend.test, ca_file: %q}}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, addr, caPath))
	edgeAddr := strings.TrimPrefix(te.url, "http://")
	for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
		for _, path := range []string{"/notify", "/cut"} {
			t.Run(proto+path, func(t *testing.T) {
				for i := range 20 {
					c, err := net.Dial("tcp", edgeAddr)
					if err != nil {
						t.Fatal(err)
					}
					_ = c.SetDeadline(time.Now().Add(10 * time.Second))
					fmt.Fprintf(c, "GET %s %s\r\nHost: a.test\r\n\r\n", path, proto)
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					if err != nil {
						c.Close()
						t.Fatalf("round %d: %v", i, err)
					}
					b, err := io.ReadAll(resp.Body)
					c.Close()
					if resp.StatusCode != http.StatusOK {
						t.Fatalf("round %d: status %d", i, resp.StatusCode)
					}
					if path == "/notify" {
						if err != nil || string(b) != body {
							t.Fatalf("round %d: read %q, err %v; want the body whole", i, b, err)
						}
						continue
					}
					if err == nil {
						t.Fatalf("round %d: a body cut without close_notify reached the client as whole: %q", i, b)
					}
				}
			})
		}
	}
}
