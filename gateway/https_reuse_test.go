package gateway

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// The same through the whole edge to an https upstream outside the mesh
// that speaks HTTP/1.1 only: a body it writes 1 ms after a HEAD, 204 or
// 304 answer never becomes another request's answer. Before, those
// requests went through http.Transport, whose guard against such bodies
// (emptyGuardConn) reads plain sockets only: over TLS it saw records, and
// the connection went back to the pool. (An unsolicited response written
// 1 ms after an ordinary answer is not in the table: arriving after the
// next request was sent, it cannot be told from that request's answer on
// any HTTP/1.1 connection, plain ones included;
// TestH1TransportNeverHandsStrayBytesToTheNextRequest checks that those
// already there when a connection is taken are seen.)
func TestEdgeNeverLeaksStrayBytesFromHTTPSUpstream(t *testing.T) {
	cert, caPath := backendTestCert(t)
	get := func(url string) *http.Request { return newRequest(http.MethodGet, url, nil) }
	empty := func(url string) *http.Request {
		return newRequest(http.MethodGet, strings.Replace(url, "/w", "/empty/w", 1), nil)
	}
	head := func(url string) *http.Request { return newRequest(http.MethodHead, url, nil) }
	tests := []struct {
		mode    string
		provoke func(url string) *http.Request
	}{
		{"late body after HEAD", head},
		{"late body after 204", empty},
		{"late body after 304", empty},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			srv := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
			addr := testutil.HostileUpstreamTLS(t, srv, tt.mode, func() { time.Sleep(time.Millisecond) }, func() {})
			te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q], scheme: https, tls: {server_name: backend.test, ca_file: %q}}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, addr, caPath))
			alternate(t, te, tt.provoke, get)
		})
	}
}

// backendTestCert is an https upstream's certificate for "backend.test"
// and the path of a file holding the CA that signed it, for the upstream's
// tls.ca_file.
func backendTestCert(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	ca := testutil.NewCA(t)
	certPEM, keyPEM := ca.Leaf(t, "backend.test", 1)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	caPath := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, caPath, string(ca.PEM()))
	return cert, caPath
}
