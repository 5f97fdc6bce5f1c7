package testutil

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchParallelLatency runs op from parallelism×GOMAXPROCS goroutines for
// b.N iterations in all and reports, besides ns/op, the rate (req/s) and the
// median and 99th percentile of op's duration (p50-µs, p99-µs): a server
// benchmark's throughput and tail together. An op error fails the
// benchmark and stops that goroutine.
func BenchParallelLatency(b *testing.B, parallelism int, op func() error) {
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(parallelism)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var local []time.Duration
		for pb.Next() {
			t0 := time.Now()
			if err := op(); err != nil {
				b.Error(err)
				return
			}
			local = append(local, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	if n := len(lat); n > 0 {
		b.ReportMetric(float64(n)/elapsed.Seconds(), "req/s")
		b.ReportMetric(float64(lat[n/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[n*99/100].Microseconds()), "p99-µs")
	}
}
