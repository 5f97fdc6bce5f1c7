package ratelimit

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A decision on a key the table holds allocates nothing: the table's key
// (limit name, NUL, key) is built on the stack for the lookup, and the
// limit's parameters are compared as numbers, not as a signature string.
// Keys of every length (past the stack buffer too), and one key under two
// limits, are still counted apart, each against its own burst.
func TestMemoryAllowKeysApart(t *testing.T) {
	ctx := context.Background()
	l := Limit{Name: "per-ip", Rate: 3, Per: time.Hour, Burst: 3}
	other := Limit{Name: "per-user", Rate: 3, Per: time.Hour, Burst: 3}
	clk := newClock()
	m := NewMemory(clk.Now)
	for _, tc := range []struct {
		desc string
		l    Limit
		key  string
	}{
		{"short key", l, "10.0.0.1"},
		{"the key past the stack buffer", l, strings.Repeat("k", 300)},
		{"name and key exactly fill the buffer", l, strings.Repeat("f", 128-len(l.Name)-1)},
		{"a key with a NUL", l, "a\x00b"},
		{"another limit, a key spent above", other, "10.0.0.1"},
		{"empty key", l, ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			for i := range 3 {
				if d, err := m.Allow(ctx, tc.key, tc.l); err != nil || !d.Allowed || d.Remaining != 2-i {
					t.Fatalf("request %d: %+v, %v; want allowed with %d left", i, d, err, 2-i)
				}
			}
			if d, _ := m.Allow(ctx, tc.key, tc.l); d.Allowed {
				t.Fatalf("fourth request allowed: %+v", d)
			}
		})
	}
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = m.Allow(ctx, "10.0.0.1", l)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per decision on a known key, want 0", allocs)
	}
}

// BenchmarkMemoryAllow is one decision of the in-memory limiter on a key
// it holds, for one busy key and spread over 1,000 keys.
func BenchmarkMemoryAllow(b *testing.B) {
	ctx := context.Background()
	l := Limit{Name: "per-ip", Rate: 1_000_000_000, Per: time.Second}
	keys := benchAddrs
	for _, tc := range []struct {
		name string
		keys []string
	}{
		{"one-key", keys[:1]},
		{"1000-keys", keys},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m := NewMemory(time.Now)
			for _, k := range tc.keys {
				_, _ = m.Allow(ctx, k, l)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if d, _ := m.Allow(ctx, tc.keys[i%len(tc.keys)], l); !d.Allowed {
					b.Fatal("refused")
				}
			}
		})
	}
}
