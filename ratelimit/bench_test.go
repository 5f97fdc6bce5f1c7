package ratelimit

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testredis"
)

// benchChain builds the handler chain a request runs through: nothing, the
// in-memory limiter, or the Redis limiter, in front of a handler that
// answers 200. Limits are high so every decision is a real allowed one
// (the common case); 1,000 client addresses rotate so buckets vary.
//
// For the Redis mode it also returns the server, for redisCost.
func benchChain(b *testing.B, mode string) (http.Handler, *testredis.Server) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	if mode == "none" {
		return next, nil
	}
	section, limitMode := "", "exact"
	var srv *testredis.Server
	switch {
	case mode == "redis-cluster":
		// Three masters: the 1,000 client addresses spread decisions
		// over their slots.
		cl := testredis.StartCluster(b)
		a := cl.Addrs()
		section = fmt.Sprintf("redis: {addrs: [%q, %q, %q], timeout: 1s}\n", a[0], a[1], a[2])
	case strings.HasPrefix(mode, "redis"):
		srv = testredis.Start(b)
		section = fmt.Sprintf("redis: {url: %q, timeout: 1s}\n", srv.URL())
		if strings.Contains(mode, "lease") {
			limitMode = "lease"
		}
	}
	file := testFile(b, section+`
rate_limits:
  per-ip: {key: client_ip, limit: 1000000000, per: 1s, mode: `+limitMode+`}
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
	return mw(next), srv
}

// redisCost reads what Redis has spent so far: CPU seconds (user + sys)
// and read events (one per batch of commands it reads from a socket, so
// a pipeline of any size is one).
func redisCost(b *testing.B, srv *testredis.Server) (cpu float64, reads int64) {
	b.Helper()
	for _, section := range []string{"cpu", "stats"} {
		info, err := srv.Do("INFO", section)
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(info, "\n") {
			k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
			if !ok {
				continue
			}
			switch k {
			case "used_cpu_sys", "used_cpu_user":
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					b.Fatal(err)
				}
				cpu += f
			case "total_reads_processed":
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					b.Fatal(err)
				}
				reads = n
			}
		}
	}
	return cpu, reads
}

// reportRedisCost reports Redis's CPU time and socket reads per decision
// since before.
func reportRedisCost(b *testing.B, srv *testredis.Server, cpu0 float64, reads0 int64) {
	if srv == nil || b.N == 0 {
		return
	}
	cpu, reads := redisCost(b, srv)
	b.ReportMetric((cpu-cpu0)*1e6/float64(b.N), "redis-cpu-µs/op")
	b.ReportMetric(float64(reads-reads0)/float64(b.N), "redis-reads/op")
}

// processCPU is this process's CPU time (user + system). Per decision it
// is a cost other programs on a shared machine do not distort, unlike
// wall-clock throughput.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
//
// The -hot cases send every request from one client address (one busy
// key), the others spread them over many (quiet keys): leases pay off on
// the first and are one token per request, as exact, on the second.
func BenchmarkDecision(b *testing.B) {
	for _, mode := range []string{"none", "memory", "redis", "redis-lease", "redis-hot", "redis-lease-hot"} {
		b.Run(mode, func(b *testing.B) {
			addrs := benchAddrs
			if strings.HasSuffix(mode, "-hot") {
				addrs = benchAddrs[:1]
			}
			h, srv := benchChain(b, mode)
			lat := make([]time.Duration, 0, b.N)
			var cpu0 float64
			var reads0 int64
			if srv != nil {
				cpu0, reads0 = redisCost(b, srv)
			}
			b.ReportAllocs()
			b.ResetTimer()
			pcpu0 := processCPU(b)
			for i := 0; i < b.N; i++ {
				r := httptest.NewRequest(http.MethodGet, "/x", nil)
				r.RemoteAddr = addrs[i%len(addrs)]
				w := httptest.NewRecorder()
				start := time.Now()
				h.ServeHTTP(w, r)
				lat = append(lat, time.Since(start))
				if w.Code != http.StatusOK {
					b.Fatalf("status %d", w.Code)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU(b)-pcpu0).Microseconds())/float64(b.N), "go-cpu-µs/op")
			reportLatency(b, lat)
			reportRedisCost(b, srv, cpu0, reads0)
		})
	}
}

// BenchmarkDecisionParallel: concurrent requests (8 × GOMAXPROCS
// goroutines, so Redis round trips overlap as they do under real load),
// reporting decisions per second and the p50/p99 latency of one decision
// under that load.
func BenchmarkDecisionParallel(b *testing.B) {
	for _, mode := range []string{"none", "memory", "redis", "redis-lease", "redis-cluster"} {
		b.Run(mode, func(b *testing.B) {
			h, srv := benchChain(b, mode)
			var n atomic.Int64
			var mu sync.Mutex
			lat := make([]time.Duration, 0, b.N)
			var cpu0 float64
			var reads0 int64
			if srv != nil {
				cpu0, reads0 = redisCost(b, srv)
			}
			b.SetParallelism(8)
			b.ReportAllocs()
			b.ResetTimer()
			pcpu0 := processCPU(b)
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
			b.ReportMetric(float64((processCPU(b)-pcpu0).Microseconds())/float64(b.N), "go-cpu-µs/op")
			reportLatency(b, lat)
			// reportLatency's decisions/s is per goroutine; overwrite it with
			// the throughput of all of them together.
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
			reportRedisCost(b, srv, cpu0, reads0)
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

// BenchmarkBatcher: the Redis limiter alone (no HTTP), 8 × GOMAXPROCS
// goroutines deciding at once, without a Batcher (one round trip each)
// and with 1, 2 and 4 round trips in flight. CPU per decision, ours and
// Redis's, is the measure that other load on a shared machine distorts
// least.
func BenchmarkBatcher(b *testing.B) {
	for _, workers := range []int{0, 1, 2, 4} {
		name := "unbatched"
		if workers > 0 {
			name = fmt.Sprintf("workers-%d", workers)
		}
		b.Run(name, func(b *testing.B) {
			srv := testredis.Start(b)
			client := redisClient(b, srv)
			opts := RedisOptions{Timeout: time.Second}
			if workers > 0 {
				bat, err := NewBatcher(client, BatchOptions{Workers: workers})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { bat.Close() })
				opts.Batcher = bat
			}
			r, err := NewRedis(client, opts)
			if err != nil {
				b.Fatal(err)
			}
			if err := client.ScriptLoad(b.Context(), script).Err(); err != nil {
				b.Fatal(err)
			}
			l := Limit{Name: "l", Rate: 1_000_000_000, Per: time.Second}
			var n atomic.Int64
			cpu0, reads0 := redisCost(b, srv)
			b.SetParallelism(8)
			b.ResetTimer()
			pcpu0 := processCPU(b)
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					if d, err := r.Allow(context.Background(), benchAddrs[int(i)%len(benchAddrs)], l); err != nil || !d.Allowed {
						b.Errorf("%+v %v", d, err)
						return
					}
				}
			})
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64((processCPU(b)-pcpu0).Microseconds())/float64(b.N), "go-cpu-µs/op")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
			reportRedisCost(b, srv, cpu0, reads0)
		})
	}
}
