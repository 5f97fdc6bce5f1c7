package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A client that half-closes its connection in the middle of its request's
// body, or while its request waits for the upstream (it sent all it will,
// and waits for the answer), never gets an empty 200:
// the upstream did not see a complete request, so the edge answers with
// the body's error or closes the connection, never with the empty 200 a
// handler that wrote nothing leaves the server to send.
func TestHalfClosedBodyIsNeverAnswered200(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return // an empty 200, as any handler that gives up on its body
		}
		_, _ = io.WriteString(w, "complete")
	}))
	defer up.Close()
	te := startEdge(t, listenHeader+fmt.Sprintf("upstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", hostPort(up)))
	addr := strings.TrimPrefix(te.url, "http://")
	for _, kind := range []string{"length", "chunked", "none"} {
		runs := 200
		if kind == "none" {
			runs = 20 // each waits for the slow upstream
		}
		for i := range runs {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			head := "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"
			switch kind {
			case "chunked":
				head = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"
			case "none":
				// A complete request; the client half-closes while the
				// upstream takes its time: cut, as nginx does, or the
				// upstream's own answer, never an empty 200.
				head = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
			}
			if _, err := io.WriteString(c, head); err != nil {
				t.Fatal(err)
			}
			if i%2 == 1 {
				time.Sleep(time.Millisecond) // let the upstream start reading
			}
			_ = c.(*net.TCPConn).CloseWrite()
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode < 400 && (kind != "none" || string(b) != "complete") {
					c.Close()
					t.Fatalf("%s run %d: %d %q; want an error status, the upstream's answer or no answer", kind, i, resp.StatusCode, b)
				}
			}
			c.Close()
		}
	}
}
