package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"

	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/causewayhq/causeway/gateway/internal/pipeline"
	"github.com/causewayhq/causeway/routes"
)

// discardExporter takes spans and drops them, counting: the benchmarks
// measure recording and batching, not a collector's network.
type discardExporter struct{ spans atomic.Int64 }

func (d *discardExporter) ExportSpans(_ context.Context, s []sdktrace.ReadOnlySpan) error {
	d.spans.Add(int64(len(s)))
	return nil
}
func (d *discardExporter) Shutdown(context.Context) error { return nil }

// BenchmarkObservabilityMetrics is the metric work of one proxied request:
// the route's counter and histogram, the upstream's counter and histogram.
func BenchmarkObservabilityMetrics(b *testing.B) {
	m := newMetrics(promRegistry())
	rm := m.forRoute("orders")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.upstreamRequest("orders", "10.0.0.1:7001", 200, 3*time.Millisecond)
			rm.observe("GET", 200, 4*time.Millisecond)
		}
	})
}

// BenchmarkObservabilityAccessLog is one access-log line (JSON, to a
// discarding writer), logged and sampled out.
func BenchmarkObservabilityAccessLog(b *testing.B) {
	for _, sample := range []float64{1, 0.01} {
		b.Run(fmt.Sprintf("sample=%g", sample), func(b *testing.B) {
			al := &accessLog{output: "bench", sample: sample, logger: slog.New(slog.NewJSONHandler(&lockedWriter{w: io.Discard}, nil))}
			r := httptest.NewRequest(http.MethodGet, "http://api.example.com/orders/42?token=x", nil)
			st := &reqState{requestID: pipeline.NewUUID(), traceID: "4bf92f3577b34da6a3ce929d0e0e4736", clientIP: "192.0.2.1", route: "orders",
				upstream: "orders", endpoint: &proxy.Endpoint{Addr: "10.0.0.1:7001", Label: "10.0.0.1:7001"}, upstreamDur: 3 * time.Millisecond, principal: "acme"}
			st.rec.status, st.rec.bytes = 200, 512
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					al.log(r, st, 4*time.Millisecond)
				}
			})
		})
	}
}

// BenchmarkObservabilityPropagate is the trace-context work every request
// pays, tracing on or off: passing a client's traceparent on, or starting one.
func BenchmarkObservabilityPropagate(b *testing.B) {
	for _, tc := range []struct{ name, tp string }{
		{"client-traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{"new-trace", ""},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "http://x/", nil)
			b.ReportAllocs()
			for b.Loop() {
				st := reqState{}
				if tc.tp != "" {
					r.Header.Set(traceparentHeader, tc.tp)
				} else {
					r.Header.Del(traceparentHeader)
				}
				st.propagateTrace(r)
			}
		})
	}
}

// BenchmarkObservabilityEdge is a whole proxied request through the edge's
// runtime (real loopback upstream, keep-alive), with the access log off and
// on, and tracing off, on with sample ratio 0 (propagation and unsampled
// spans) and on with ratio 1 (every span recorded and batched).
func BenchmarkObservabilityEdge(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 64))
	}))
	defer up.Close()
	cfg := fmt.Sprintf("version: 1\naccess_log: {output: \"off\"}\nupstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", strings.TrimPrefix(up.URL, "http://"))
	f, err := routes.Parse("bench.yaml", []byte(cfg))
	if err != nil {
		b.Fatal(err)
	}
	zero, one := 0.0, 1.0
	for _, tc := range []struct {
		name   string
		log    bool
		tracer *float64
	}{
		{"log=off/tracing=off", false, nil},
		{"log=on/tracing=off", true, nil},
		{"log=off/tracing=ratio0", false, &zero},
		{"log=off/tracing=ratio1", false, &one},
		{"log=on/tracing=ratio1", true, &one},
	} {
		b.Run(tc.name, func(b *testing.B) {
			deps := buildDeps{metrics: newMetrics(promRegistry())}
			if tc.log {
				deps.access = &accessLog{output: "bench", sample: 1, logger: slog.New(slog.NewJSONHandler(&lockedWriter{w: io.Discard}, nil))}
			}
			exp := &discardExporter{}
			var release func() error
			if tc.tracer != nil {
				tr := newTracerWith(routes.Tracing{OTLPEndpoint: "http://unused", SampleRatio: tc.tracer, ServiceName: "bench"}, exp)
				release = tr.shutdown
				deps.stages = []Stage{tr}
			}
			rt, err := buildRuntime(f, deps)
			if err != nil {
				b.Fatal(err)
			}
			target := httptest.NewRequest(http.MethodGet, "http://api.example.com/orders/42", nil)
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
			b.StopTimer()
			rt.close()
			if release != nil {
				if err := release(); err != nil {
					b.Fatal(err)
				}
				if *tc.tracer == 1 && exp.spans.Load() < int64(b.N) {
					b.Fatalf("%d spans exported for %d requests", exp.spans.Load(), b.N)
				}
			}
		})
	}
}
