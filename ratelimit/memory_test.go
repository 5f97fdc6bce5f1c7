package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// TestMemoryKeyRotation: an attacker sends one request per key over a
// million keys while a victim and the attacker's own steady key keep
// asking. The table never holds more than its bound, the heap stays near
// what the bound costs, and neither steady key is ever allowed more than
// its limit in any window: filling the table evicts no bucket that has not
// refilled.
func TestMemoryKeyRotation(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		per     time.Duration
		maxKeys int
		rotated int
	}{
		// A rotated key's bucket is full again 6 s after its request: the
		// table stays full and most rotated keys go to the overflow.
		{"slow refill, default bound", time.Minute, 0, 1_000_000},
		// Full again after 100 ms: sweeps keep freeing room.
		{"fast refill, small bound", time.Second, 10_000, 300_000},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			const rate, burst = 10, 10
			l := Limit{Name: "per-ip", Rate: rate, Per: tc.per, Burst: burst}
			clk := newClock()
			m := NewMemory(clk.Now)
			m.SetMaxKeys(tc.maxKeys)
			bound := tc.maxKeys
			if bound == 0 {
				bound = DefaultMaxKeys
			}
			heap0 := heapInUse()
			steady := map[string][]time.Time{}
			ask := func(key string) {
				d, err := m.Allow(context.Background(), key, l)
				if err != nil {
					t.Fatal(err)
				}
				if d.Allowed {
					steady[key] = append(steady[key], clk.Now())
				}
			}
			maxLen := 0
			for i := range tc.rotated {
				if _, err := m.Allow(context.Background(), "10.0."+strconv.Itoa(i), l); err != nil {
					t.Fatal(err)
				}
				if i%100 == 0 {
					ask("victim")
					ask("mallory")
				}
				if i%10_000 == 0 {
					maxLen = max(maxLen, m.Len())
				}
				clk.Add(time.Microsecond)
			}
			maxLen = max(maxLen, m.Len())
			heap := heapInUse() - heap0
			st := m.Stats()
			t.Logf("%d rotated keys: at most %d held (bound %d), heap +%d MB, %d overflow decisions, %d refilled buckets dropped",
				tc.rotated, maxLen, bound, heap>>20, st.Overflowed, st.Dropped)
			// The bound is per shard, rounded up.
			if maxLen > bound+memShards {
				t.Errorf("held %d keys, bound %d", maxLen, bound)
			}
			// About 150 bytes per key, with room for the map's growth; a
			// million keys held would take well over 100 MB.
			if limit := uint64(bound)*600 + 8<<20; heap > limit {
				t.Errorf("heap grew by %d MB for a bound of %d keys (limit %d MB)", heap>>20, bound, limit>>20)
			}
			for _, k := range []string{"victim", "mallory"} {
				if len(steady[k]) == 0 {
					t.Fatalf("%s was never allowed", k)
				}
				if w := overLimit(steady[k], rate, burst, tc.per); w != "" {
					t.Errorf("%s over its limit: %s", k, w)
				}
			}
		})
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestMemoryOverflowThenEntry: a key counted in its overflow bucket while
// the table was full, and given an entry of its own once a sweep made room,
// continues from the overflow bucket's level instead of a fresh burst.
func TestMemoryOverflowThenEntry(t *testing.T) {
	const rate, burst = 10, 10
	l := Limit{Name: "l", Rate: rate, Per: time.Minute, Burst: burst}
	for _, tc := range []struct {
		desc string
		// spend is how many requests x sends while in the overflow.
		spend int
	}{
		{"overflow bucket drained", burst},
		{"overflow bucket half spent", burst / 2},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			clk := newClock()
			m := NewMemory(clk.Now)
			m.SetMaxKeys(memShards) // one key per shard
			shardOf := func(k string) uint64 { return maphash.String(m.seed, l.Name+"\x00"+k) % memShards }
			// filler takes the only place in x's shard.
			x, filler := "x", ""
			for i := 0; filler == ""; i++ {
				if k := fmt.Sprintf("f%d", i); shardOf(k) == shardOf(x) {
					filler = k
				}
			}
			var log []time.Time
			ask := func(k string) bool {
				d, err := m.Allow(context.Background(), k, l)
				if err != nil {
					t.Fatal(err)
				}
				if d.Allowed && k == x {
					log = append(log, clk.Now())
				}
				return d.Allowed
			}
			if !ask(filler) {
				t.Fatal("filler refused")
			}
			for range tc.spend {
				ask(x)
			}
			if m.Stats().Overflowed == 0 {
				t.Fatal("x was not counted in the overflow")
			}
			// The filler's bucket refills (6 s per token); x's refused
			// requests count as misses until a sweep drops the filler and x
			// gets the entry.
			clk.Add(6 * time.Second)
			for range 40 {
				ask(x)
				clk.Add(time.Millisecond)
			}
			if m.Stats().Dropped != 1 {
				t.Fatalf("dropped %d: the filler should have been swept", m.Stats().Dropped)
			}
			// Half the window later x asks again, now from an entry of its
			// own.
			clk.Add(30 * time.Second)
			for range burst {
				ask(x)
			}
			if m.Len() != 1 {
				t.Fatalf("keys %d, dropped %d: x should hold the shard's entry", m.Len(), m.Stats().Dropped)
			}
			if w := overLimit(log, rate, burst, time.Minute); w != "" {
				t.Fatalf("x over its limit across the overflow and its entry: %s", w)
			}
		})
	}
}

// TestMemorySetMaxKeys: the bound is per shard, rounded up; 0 or less is
// the default.
func TestMemorySetMaxKeys(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want int64
	}{
		{0, (DefaultMaxKeys + memShards - 1) / memShards},
		{-5, (DefaultMaxKeys + memShards - 1) / memShards},
		{1, 1},
		{64, 1},
		{65, 2},
		{1_000_000, 15625},
	} {
		m := NewMemory(nil)
		m.SetMaxKeys(tc.n)
		if got := m.shardCap.Load(); got != tc.want {
			t.Errorf("SetMaxKeys(%d): %d per shard, want %d", tc.n, got, tc.want)
		}
	}
}

// TestServiceMaxKeys: rate_limit_memory.max_keys reaches the Service's
// in-memory table at each configuration, and a negative bound is refused
// when the file loads.
func TestServiceMaxKeys(t *testing.T) {
	s := New(context.Background(), Options{})
	t.Cleanup(func() { s.Close() })
	for _, tc := range []struct {
		desc    string
		section string
		want    int64
	}{
		{"a bound", "rate_limit_memory: {max_keys: 128}\n", 2},
		{"left out: the default", "", (DefaultMaxKeys + memShards - 1) / memShards},
		{"0: the default", "rate_limit_memory: {max_keys: 0}\n", (DefaultMaxKeys + memShards - 1) / memShards},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			f := testFile(t, tc.section+"routes: [{name: r, match: {path_prefix: /}, upstream: u}]\n")
			if err := s.Configure(context.Background(), f); err != nil {
				t.Fatal(err)
			}
			if got := s.mem.shardCap.Load(); got != tc.want {
				t.Fatalf("%d per shard, want %d", got, tc.want)
			}
		})
	}
	_, err := routes.Parse("t.yaml", []byte("version: 1\nrate_limit_memory: {max_keys: -1}\nupstreams: {u: {endpoints: [\"127.0.0.1:1\"]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: u}]\n"))
	if err == nil || !strings.Contains(err.Error(), "rate_limit_memory.max_keys: must not be negative") {
		t.Fatalf("negative max_keys: %v", err)
	}
}
