package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// rawExchange sends req on a fresh TCP connection to addr and returns
// everything the edge writes back until it closes or goes quiet.
func rawExchange(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	buf := make([]byte, 4096)
	for {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return out.String()
}

// informationalUpstream answers every request with the given 1xx
// responses, then a 200 with "final".
func informationalUpstream(t *testing.T, informational string) string {
	return testutil.ServeConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if _, err := io.WriteString(c, informational+"HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 5\r\n\r\nfinal"); err != nil {
				return
			}
		}
	})
}

// TestNoInformationalToHTTP10Client: RFC 9110 §15.2 says a server MUST
// NOT send a 1xx response to an HTTP/1.0 client. An HTTP/1.0 client reads the
// first status line as the answer, so a forwarded 103 or unsolicited 100
// takes the place of the upstream's real response (and, on a keep-alive
// HTTP/1.0 connection, the real response becomes the next request's answer).
func TestNoInformationalToHTTP10Client(t *testing.T) {
	for name, informational := range map[string]string{
		"103 Early Hints": "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
		"unsolicited 100": "HTTP/1.1 100 Continue\r\n\r\n",
		"several 1xx":     "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </b.js>\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			addr := informationalUpstream(t, informational)
			te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, addr))
			host := strings.TrimPrefix(te.url, "http://")
			for _, method := range []string{"GET", "POST"} {
				req := method + " /x HTTP/1.0\r\nHost: " + host + "\r\n"
				if method == "POST" {
					req += "Content-Length: 4\r\n\r\nbody"
				} else {
					req += "\r\n"
				}
				out := rawExchange(t, host, req)
				first, _, _ := strings.Cut(out, "\r\n")
				if !strings.HasSuffix(first, " 200 OK") || strings.Contains(out, " 10") && strings.Index(out, " 10") < strings.Index(out, " 200 ") {
					t.Errorf("%s from an HTTP/1.0 client: the edge answered %q first; full answer:\n%s", method, first, out)
				}
			}
		})
	}
}

// TestInformationalKeepsEdgeHeaders: after the upstream sends a 1xx,
// the final response still carries the headers the edge sets on every
// answer (X-Request-Id) — httputil.ReverseProxy clears the response header
// map after forwarding a 1xx.
func TestInformationalKeepsEdgeHeaders(t *testing.T) {
	addr := informationalUpstream(t, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
	te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, addr))
	for _, method := range []string{"GET", "POST"} {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("body")
		}
		req, _ := http.NewRequest(method, te.url+"/x", body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "final" || resp.Header.Get("X-Final") != "yes" {
			t.Fatalf("%s: got %d %q %v", method, resp.StatusCode, b, resp.Header)
		}
		if resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("%s after a 103: final response has no X-Request-Id; headers %v", method, resp.Header)
		}
	}
}
