package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/routes"
)

// BenchmarkProxyTraffic measures the proxy path with the traffic features
// on, against BenchmarkProxy's plain round robin: three real upstreams on
// loopback, one route.
func BenchmarkProxyTraffic(b *testing.B) {
	var addrs []string
	for i := 0; i < 3; i++ {
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, strings.Repeat("x", 64))
		}))
		defer up.Close()
		addrs = append(addrs, fmt.Sprintf("%q", strings.TrimPrefix(up.URL, "http://")))
	}
	cases := []struct{ name, extra string }{
		{"round_robin", ""},
		{"least_request", "    balance: least_request\n"},
		{"p2c_ewma", "    balance: p2c_ewma\n"},
		{"ring_hash", "    balance: ring_hash\n    hash_on: header:X-User\n"},
		{"weighted", "    balance: weighted\n"},
		{"resilience", "    retries: {attempts: 2, on: [connect_failure, reset, \"503\"], per_try_timeout: 5s}\n    circuit_breaker: {max_requests: 10000, max_pending: 100, consecutive_5xx: 5, consecutive_failures: 50}\n"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			cfg := "version: 1\naccess_log: {output: \"off\"}\nupstreams:\n  u:\n    endpoints: [" + strings.Join(addrs, ", ") + "]\n" + c.extra +
				"routes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n"
			f, err := routes.Parse("bench.yaml", []byte(cfg))
			if err != nil {
				b.Fatal(err)
			}
			rt, err := buildRuntime(f, buildDeps{metrics: newMetrics(promRegistry())})
			if err != nil {
				b.Fatal(err)
			}
			defer rt.close()
			target := httptest.NewRequest(http.MethodGet, "http://bench.example/x", nil)
			target.Header.Set("X-User", "user-42")
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
