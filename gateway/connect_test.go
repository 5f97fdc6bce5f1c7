package gateway

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A CONNECT is refused with 405 and never reaches an upstream, whatever
// its target names. Before the fix a route matched it by Host and the
// upstream received the CONNECT as a request of its own.
func TestConnectIsRefused(t *testing.T) {
	up := echoUpstream(t, "a")
	te := startEdge(t, listenHeader+fmt.Sprintf("upstreams:\n  a: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: a}\n", hostPort(up)))
	for _, target := range []string{"a:443", hostPort(up), "127.0.0.1:22"} {
		t.Run(target, func(t *testing.T) {
			c, err := net.Dial("tcp", strings.TrimPrefix(te.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
			resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Fatalf("CONNECT %s: %d, want 405", target, resp.StatusCode)
			}
		})
	}
}
