package gateway

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
)

// upgradeEngines are the two HTTP/1.1 server engines the upgrade path runs
// behind, as the route's config selects them.
var upgradeEngines = []string{"causeway", "net/http"}

func upgradeEdgeOn(t *testing.T, upAddr, engine string) string {
	_, addr := upgradeEdge(t, upAddr, fmt.Sprintf("server: {http1_engine: %q}\n", engine))
	return addr
}

// TestUpgradeDeclinedDropsNominated: an upstream that declines an upgrade
// with `Connection: close, X-Name` (one field or two) has X-Name dropped
// from the client's answer, head and trailer, as on the ordinary path;
// its other fields pass. Before, net/http's response reader dropped the
// whole Connection field of a closing answer, and X-Name reached the
// client.
func TestUpgradeDeclinedDropsNominated(t *testing.T) {
	u := startUpUpstream(t)
	for _, engine := range upgradeEngines {
		addr := upgradeEdgeOn(t, u.addr, engine)
		for _, tc := range []struct {
			name, path string
			status     int
			body       string
		}{
			{"one field, length", "/m/nominate", http.StatusOK, "plain"},
			{"two fields, chunked, trailer", "/m/nominate2", http.StatusForbidden, "no"},
		} {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				before := len(u.requests())
				nc, br := rawConn(t, addr)
				_, _ = io.WriteString(nc, upgradeReq(tc.path, ""))
				res, body := readHead(t, br, http.MethodGet)
				if res.StatusCode != tc.status || body != tc.body {
					t.Fatalf("%d %q, want %d %q", res.StatusCode, body, tc.status, tc.body)
				}
				if v, ok := res.Header["X-Name"]; ok {
					t.Fatalf("X-Name %q reached the client's head: %v", v, res.Header)
				}
				if v, ok := res.Trailer["X-Name"]; ok {
					t.Fatalf("X-Name %q reached the client's trailer", v)
				}
				if res.Header.Get("X-Kept") != "end" {
					t.Fatalf("the upstream's other fields were lost: %v", res.Header)
				}
				u.awaitEnded(t, u.requests()[before].conn)
			})
		}
	}
}

// TestUpgradeHostileSwitch: a 101 with a framing field, and a 101 behind
// two 1xx in one write, switch as an ordinary 101 does: the client's 101
// carries no framing, the bytes behind it are the tunnel's first, the
// tunnel echoes and the half-close comes back. A declined upgrade whose
// body never ends ends with the client, and the upstream's connection
// closes. Both engines.
func TestUpgradeHostileSwitch(t *testing.T) {
	u := startUpUpstream(t)
	for _, engine := range upgradeEngines {
		addr := upgradeEdgeOn(t, u.addr, engine)
		for _, tc := range []struct {
			name, path, first string
		}{
			{"101 with Content-Length", "/m/framed101", "hello"},
			{"100 and 103, then the 101", "/m/info101", "greeting"},
		} {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				nc, br := rawConn(t, addr)
				_, _ = io.WriteString(nc, upgradeReq(tc.path, ""))
				res := readSwitch(t, br)
				if res.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("status %d", res.StatusCode)
				}
				if _, ok := res.Header["Content-Length"]; ok {
					t.Fatalf("the client's 101 has a framing field: %v", res.Header)
				}
				first := make([]byte, len(tc.first))
				if _, err := io.ReadFull(br, first); err != nil || string(first) != tc.first {
					t.Fatalf("the tunnel's first bytes %q (%v), want %q", first, err, tc.first)
				}
				_, _ = io.WriteString(nc, "ping")
				_ = nc.(*net.TCPConn).CloseWrite()
				if got, err := io.ReadAll(br); string(got) != "ping" || err != nil {
					t.Fatalf("the tunnel echoed %q (%v), want ping", got, err)
				}
			})
		}
		t.Run(engine+"/declined, never ends", func(t *testing.T) {
			before := len(u.requests())
			nc, br := rawConn(t, addr)
			_, _ = io.WriteString(nc, upgradeReq("/m/endless", ""))
			res, err := http.ReadResponse(br, nil)
			if err != nil || res.StatusCode != http.StatusOK {
				t.Fatalf("%v %v", res, err)
			}
			if _, err := io.ReadFull(res.Body, make([]byte, 100)); err != nil {
				t.Fatal(err)
			}
			nc.Close()
			u.awaitEnded(t, u.requests()[before].conn)
		})
	}
}

// readSwitch reads response heads up to the first that is not a 1xx other
// than 101, as a client reads past 103 Early Hints.
func readSwitch(t *testing.T, br *bufio.Reader) *http.Response {
	t.Helper()
	for {
		res, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if res.StatusCode >= 200 || res.StatusCode == http.StatusSwitchingProtocols {
			return res
		}
	}
}

// TestUpgradeHTTPSUpstream: an https upstream (outside the mesh) gets its
// upgrades through the edge's own client over TLS, ALPN http/1.1: every
// round of upgradeRounds (bytes behind the 101, bytes before it, a
// half-close from either end, close_notify as the upstream's, declined
// answers with a forged one behind), and the Connection-nominated field of
// a declined one dropped, on both engines.
func TestUpgradeHTTPSUpstream(t *testing.T) {
	cert, caPath := backendTestCert(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := serveUpUpstream(t, tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}))
	rounds := 40
	if testing.Short() {
		rounds = 8
	}
	for _, engine := range upgradeEngines {
		e := startEdge(t, listenHeader+fmt.Sprintf(`server: {http1_engine: %q}
upstreams:
  u:
    endpoints: [%q]
    scheme: https
    tls: {server_name: backend.test, ca_file: %q}
routes:
  - {name: r, match: {path_prefix: /m/}, upstream: u}
`, engine, u.addr, caPath))
		addr := e.url[len("http://"):]
		for _, r := range upgradeRounds {
			t.Run(engine+"/"+r.name, func(t *testing.T) {
				concurrently(t, 4, func(w int) error {
					for i := w; i < rounds; i += 4 {
						if err := r.run(t, addr, u, i); err != nil {
							return fmt.Errorf("round %d: %w", i, err)
						}
					}
					return nil
				})
			})
		}
		t.Run(engine+"/declined with Connection: close, X-Name", func(t *testing.T) {
			nc, br := rawConn(t, addr)
			_, _ = io.WriteString(nc, upgradeReq("/m/nominate", ""))
			res, body := readHead(t, br, http.MethodGet)
			if res.StatusCode != http.StatusOK || body != "plain" {
				t.Fatalf("%d %q", res.StatusCode, body)
			}
			if v, ok := res.Header["X-Name"]; ok {
				t.Fatalf("X-Name %q reached the client", v)
			}
		})
	}
}
