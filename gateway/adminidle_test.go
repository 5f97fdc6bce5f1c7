package gateway

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// An admin connection that made its requests and then says nothing more
// is closed at server.idle_timeout, as a data connection is. The admin
// listener has no connection cap (it must answer when the data listeners
// are full), so a connection it never closes is a file descriptor and a
// goroutine held for as long as the client likes: enough of them take the
// process's descriptors from the data listeners and the upstreams. Before
// the fix the admin server had a header timeout only, and Go's server
// waits for the next request without a deadline when neither IdleTimeout
// nor ReadTimeout is set: the connection stayed open forever.
func TestAdminIdleConnectionsAreClosed(t *testing.T) {
	up := echoUpstream(t, "a")
	te := startEdge(t, listenHeader+"server: {idle_timeout: 200ms}\n"+
		"upstreams:\n  a: {endpoints: [\""+hostPort(up)+"\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: a}\n")
	addr := strings.TrimPrefix(te.admin, "http://")
	for _, tc := range []struct {
		name     string
		requests []string // sent one after the other on one connection before it idles
	}{
		{"after one request", []string{"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"}},
		{"after several", []string{
			"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
			"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
			"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
		}},
		{"after a refused request", []string{"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// A guard against a hang, far beyond the 200 ms idle timeout:
			// not a speed limit.
			_ = c.SetDeadline(time.Now().Add(15 * time.Second))
			br := bufio.NewReader(c)
			for _, req := range tc.requests {
				if _, err := io.WriteString(c, req); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.Close {
					t.Fatalf("%q: the server closed the connection after the answer (%d); the case needs a kept one", req, resp.StatusCode)
				}
			}
			n, err := br.ReadByte()
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				t.Fatal("the idle admin connection was still open after 15 s (server.idle_timeout 200ms)")
			case err == nil:
				t.Fatalf("unexpected byte %q from the server", n)
			}
		})
	}
}
