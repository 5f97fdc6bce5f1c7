package gateway

import (
	"fmt"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Many goroutines count many names and statuses at once through one
// codeCounters: every series ends with exactly its own count, as
// WithLabelValues on each request gave, including names that share
// prefixes, codes outside 0-599 (all "other"), and more pairs than the
// list keeps (the rest are looked up in the vector).
func TestCodeCountersConcurrent(t *testing.T) {
	many := make([]string, codeCountersMax+8)
	for i := range many {
		many[i] = fmt.Sprintf("10.0.0.%d:80", i)
	}
	tests := []struct {
		desc    string
		names   []string
		codes   []int
		workers int
		each    int // increments per worker per (name, code)
	}{
		{desc: "one name, one code", names: []string{"GET"}, codes: []int{200}, workers: 8, each: 2000},
		{desc: "names sharing prefixes, several codes", names: []string{"10.0.0.1:80", "10.0.0.1:8080", "10.0.0.10:80", ""},
			codes: []int{200, 404, 502, 504}, workers: 8, each: 200},
		{desc: "codes past the labelled range", names: []string{"GET", "POST"}, codes: []int{200, 600, 999, -1}, workers: 4, each: 300},
		{desc: "more pairs than the list keeps", names: many, codes: []int{200, 503}, workers: 4, each: 50},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causeway_upstream_requests_total", Help: "test"},
				[]string{"upstream", "endpoint", "code"})
			cc := &codeCounters{vec: vec.MustCurryWith(prometheus.Labels{"upstream": "u"})}
			var wg sync.WaitGroup
			for w := range tc.workers {
				wg.Go(func() {
					// Each worker walks the pairs in its own order, so
					// first lookups of a pair race each other.
					n := len(tc.names) * len(tc.codes)
					for i := range tc.each * n {
						j := (i + w*7) % n
						cc.counter(tc.names[j/len(tc.codes)], tc.codes[j%len(tc.codes)]).Inc()
					}
				})
			}
			wg.Wait()
			want := map[[2]string]float64{}
			for _, name := range tc.names {
				for _, code := range tc.codes {
					want[[2]string{name, statusLabel(code)}] += float64(tc.workers * tc.each)
				}
			}
			for k, w := range want {
				if got := counterValue(t, vec.WithLabelValues("u", k[0], k[1])); got != w {
					t.Errorf("name %q code %s: %v, want %v", k[0], k[1], got, w)
				}
			}
			if got := seriesCount(vec); got != len(want) {
				t.Errorf("%d series, want %d", got, len(want))
			}
			if p := cc.pairs.Load(); p == nil || len(*p) > codeCountersMax {
				t.Errorf("the list keeps %v pairs, want 1 to %d", p, codeCountersMax)
			}
		})
	}
}
