package ratelimit

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testredis"
)

// benchChain builds the handler chain a request runs through: nothing, the
// in-memory limiter, or the Redis limiter, in front of a handler that
// answers 200. Limits are high so every decision is a real allowed one
// (the common case); 1,000 client addresses rotate so buckets vary.
func benchChain(b *testing.B, mode string) http.Handler {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	if mode == "none" {
		return next
	}
	section := ""
	if mode == "redis" {
		srv := testredis.Start(b)
		section = fmt.Sprintf("redis: {url: %q, timeout: 1s}\n", srv.URL())
	}
	file := testFile(b, section+`
rate_limits:
  per-ip: {key: client_ip, limit: 1000000000, per: 1s}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: per-ip}
`)
	// Production settings: real time, Redis's clock.
	s := New(b.Context(), Options{Decisions: NewDecisionsMetric()})
	b.Cleanup(func() { s.Close() })
	if err := s.Configure(b.Context(), file); err != nil {
		b.Fatal(err)
	}
	mw, err := s.Middleware(file.Routes[0], KeySources{})
	if err != nil {
		b.Fatal(err)
	}
	return mw(next)
}

var benchAddrs = func() []string {
	a := make([]string, 1000)
	for i := range a {
		a[i] = fmt.Sprintf("10.%d.%d.1:5000", i/256, i%256)
	}
	return a
}()

// BenchmarkDecision: one request at a time, reporting p50/p99 latency of
// the whole chain and decisions per second.
func BenchmarkDecision(b *testing.B) {
	for _, mode := range []string{"none", "memory", "redis"} {
		b.Run(mode, func(b *testing.B) {
			h := benchChain(b, mode)
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r := httptest.NewRequest(http.MethodGet, "/x", nil)
				r.RemoteAddr = benchAddrs[i%len(benchAddrs)]
				w := httptest.NewRecorder()
				start := time.Now()
				h.ServeHTTP(w, r)
				lat = append(lat, time.Since(start))
				if w.Code != http.StatusOK {
					b.Fatalf("status %d", w.Code)
				}
			}
			b.StopTimer()
			reportLatency(b, lat)
		})
	}
}

// BenchmarkDecisionParallel: concurrent requests (8 × GOMAXPROCS
// goroutines, so Redis round trips overlap as they do under real load),
// reporting decisions per second and the p50/p99 latency of one decision
// under that load.
func BenchmarkDecisionParallel(b *testing.B) {
	for _, mode := range []string{"none", "memory", "redis"} {
		b.Run(mode, func(b *testing.B) {
			h := benchChain(b, mode)
			var n atomic.Int64
			var mu sync.Mutex
			lat := make([]time.Duration, 0, b.N)
			b.SetParallelism(8)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var local []time.Duration
				defer func() {
					mu.Lock()
					lat = append(lat, local...)
					mu.Unlock()
				}()
				for pb.Next() {
					i := n.Add(1)
					r := httptest.NewRequest(http.MethodGet, "/x", nil)
					r.RemoteAddr = benchAddrs[int(i)%len(benchAddrs)]
					w := httptest.NewRecorder()
					t0 := time.Now()
					h.ServeHTTP(w, r)
					local = append(local, time.Since(t0))
					if w.Code != http.StatusOK {
						b.Errorf("status %d", w.Code)
						return
					}
				}
			})
			elapsed := time.Since(start)
			b.StopTimer()
			reportLatency(b, lat)
			// reportLatency's decisions/s is per goroutine; overwrite it with
			// the throughput of all of them together.
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
		})
	}
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	var total time.Duration
	for _, d := range lat {
		total += d
	}
	b.ReportMetric(float64(lat[len(lat)*50/100].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(len(lat))/total.Seconds(), "decisions/s")
}
