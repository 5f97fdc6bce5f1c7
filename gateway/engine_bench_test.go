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

	"github.com/causewayhq/causeway/gateway/internal/h1server"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
)

// BenchmarkProxyEngine is BenchmarkProxy through the edge's own HTTP/1.1
// engine rather than a recorder: one keep-alive client connection on
// loopback, one GET after another, the whole edge (server, runtime,
// forwarder, upstream transport) to a real upstream; with no route timeout
// and with one (which costs a timer and ends the request's context with
// its own cause).
func BenchmarkProxyEngine(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 64))
	}))
	defer up.Close()
	for _, tc := range []struct{ name, route string }{
		{"plain", ""},
		{"route_timeout", ", timeout: 30s"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := fmt.Sprintf("version: 1\naccess_log: {output: \"off\"}\nupstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u%s}\n",
				strings.TrimPrefix(up.URL, "http://"), tc.route)
			f, err := routes.Parse("bench.yaml", []byte(cfg))
			if err != nil {
				b.Fatal(err)
			}
			rt, err := buildRuntime(f, buildDeps{metrics: newMetrics(promRegistry())})
			if err != nil {
				b.Fatal(err)
			}
			defer rt.close()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := &h1server.Server{Handler: rt}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()
			defer func() {
				srv.Close()
				<-served
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := []byte("GET /orders/42 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
			br := bufio.NewReaderSize(c, 4096)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if err := testutil.ReadSizedResponse(br); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
