package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"

	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/gateway/internal/pipeline"
	"github.com/causewayhq/causeway/gateway/internal/transport"
	"github.com/causewayhq/causeway/routes"
	"github.com/gorilla/mux"
)

// manyRoutes is n routes over n/10 hosts with 10 path prefixes each (fewer
// than 10 routes: one host), plus host-less routes, the mix a real edge has.
func manyRoutes(n int) []routes.Route {
	var rs []routes.Route
	for i := 0; i < n; i++ {
		host := fmt.Sprintf("svc%d.example.com", i/10)
		rs = append(rs, routes.Route{
			Name:  fmt.Sprintf("r%d", i),
			Match: routes.Match{Host: host, PathPrefix: fmt.Sprintf("/api/v%d/items", i%10)},
		})
	}
	return rs
}

// The request in the benchmarks targets the last route, the worst case for
// a router that matches linearly.
func lastRouteRequest(n int) *http.Request {
	return httptest.NewRequest(http.MethodGet, fmt.Sprintf("http://svc%d.example.com/api/v%d/items/42", (n-1)/10, (n-1)%10), nil)
}

func BenchmarkRouterMatch(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			var entries []pipeline.RouteEntry
			for _, r := range manyRoutes(n) {
				entries = append(entries, pipeline.RouteEntry{Cfg: &r, Handler: named(r.Name)})
			}
			rt := pipeline.NewRouter(entries)
			req := lastRouteRequest(n)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if h, _ := rt.Match(req); h == nil {
					b.Fatal("no match")
				}
			}
		})
	}
}

// BenchmarkFlatMux is the baseline the bucketed router is measured against:
// one gorilla/mux router holding every route, matched linearly.
func BenchmarkFlatMux(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			mr := mux.NewRouter().SkipClean(true) // as the router's buckets are
			for _, r := range manyRoutes(n) {
				mr.NewRoute().Host(r.Match.Host).PathPrefix(r.Match.PathPrefix).Handler(named(r.Name))
			}
			req := lastRouteRequest(n)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				var m mux.RouteMatch
				if !mr.Match(req, &m) || m.Handler == nil {
					b.Fatal("no match")
				}
			}
		})
	}
}

// BenchmarkProxy measures the whole edge (request id, routing, forwarded
// headers, metrics, proxying over a pooled keep-alive connection) against a
// real upstream on loopback, with 1 and with 1,000 routes.
func BenchmarkProxy(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 64))
	}))
	defer up.Close()
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			var cfg strings.Builder
			fmt.Fprintf(&cfg, "version: 1\naccess_log: {output: \"off\"}\nupstreams:\n  u: {endpoints: [%q]}\nroutes:\n", strings.TrimPrefix(up.URL, "http://"))
			for _, r := range manyRoutes(n) {
				fmt.Fprintf(&cfg, "  - {name: %s, match: {host: %s, path_prefix: %s}, upstream: u}\n", r.Name, r.Match.Host, r.Match.PathPrefix)
			}
			f, err := routes.Parse("bench.yaml", []byte(cfg.String()))
			if err != nil {
				b.Fatal(err)
			}
			rt, err := buildRuntime(f, buildDeps{metrics: newMetrics(promRegistry())})
			if err != nil {
				b.Fatal(err)
			}
			defer rt.close()
			target := lastRouteRequest(n)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := target.Clone(target.Context())
					req.RemoteAddr = "192.0.2.1:1234"
					w := httptest.NewRecorder()
					rt.ServeHTTP(w, req)
					if w.Code != 200 {
						b.Fatalf("status %d: %s", w.Code, w.Body)
					}
				}
			})
		})
	}
}

// BenchmarkUpstreamTransport compares the calling-goroutine HTTP/1.1 path
// with net/http's Transport for the same body-less GET over a keep-alive
// connection to a real upstream, one request at a time and 8 in parallel.
func BenchmarkUpstreamTransport(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 64))
	}))
	defer up.Close()
	pool, err := proxy.NewTransportPool("b", routes.Upstream{Scheme: "http", Protocol: routes.DefaultProtocol, MaxIdlePerHost: 64}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.CloseIdle()
	h1 := pool.Transport.(*transport.H1)
	for _, tc := range []struct {
		name string
		rt   http.RoundTripper
	}{{"calling-goroutine", h1}, {"net-http", h1.Fallback()}} {
		roundTrip := func(b *testing.B) {
			req, _ := http.NewRequest(http.MethodGet, up.URL+"/", nil)
			resp, err := tc.rt.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		b.Run(tc.name+"/serial", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				roundTrip(b)
			}
		})
		b.Run(tc.name+"/parallel-8", func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(4) // 4 x GOMAXPROCS(2)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					roundTrip(b)
				}
			})
		})
	}
}
