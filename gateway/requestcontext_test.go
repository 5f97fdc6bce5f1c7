package gateway

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// On both HTTP/1.1 engines (the edge's own keeps the request's state and
// the route's bound in the request's one context, net/http's server in
// contexts of their own), a client that leaves ends the upstream request
// (the upstream sees its request's context end), and a route's timeout
// answers 504 "route timeout" and ends the upstream request too; a
// request after either, on a fresh connection, is served as usual.
func TestRequestContextOnBothEngines(t *testing.T) {
	for _, engine := range []string{routes.HTTP1EngineCauseway, routes.HTTP1EngineNetHTTP} {
		for _, tc := range []struct {
			name    string
			timeout string
			leave   bool
		}{
			{name: "client leaves", timeout: "5m", leave: true},
			{name: "client leaves under no route timeout", timeout: "0s", leave: true},
			{name: "route timeout", timeout: "500ms"},
		} {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				up := newHangingUpstream(t)
				cfg := strings.Replace(routeTimeoutConfig(hostPort(up.Server), "", tc.timeout),
					"access_log: {output: off}\n", "access_log: {output: off}\nserver: {http1_engine: "+engine+"}\n", 1)
				te := startEdge(t, cfg)
				c, err := net.Dial("tcp", strings.TrimPrefix(te.url, "http://"))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := io.WriteString(c, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				waitFor(t, func() bool { return up.hung.Load() == 1 })
				if tc.leave {
					c.Close()
				} else {
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					var e struct {
						Error string `json:"error"`
					}
					if resp.StatusCode != http.StatusGatewayTimeout || json.Unmarshal(body, &e) != nil || e.Error != "route timeout" {
						t.Fatalf("%d %q, want 504 route timeout", resp.StatusCode, body)
					}
				}
				waitFor(t, func() bool { return up.abandoned.Load() == 1 })
				resp, err := http.Get(te.url + "/fast?i=after")
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(body) != "fast after" {
					t.Fatalf("after: %d %q", resp.StatusCode, body)
				}
			})
		}
	}
}
