package ratelimit

import (
	"strconv"
	"testing"
	"time"
)

// TestDenyCacheFullOfLiveRefusals: a client that varies its key (a header
// key, IPv6 prefixes, API keys) until the memory of refusals is full of
// refusals that are still live (limit: 1 per hour), then keeps sending new
// keys. The memory must not search every entry for one that ended on each
// new refusal: that is a scan of 65,536 entries, under the lock every
// limited request takes, per refused request. At most one scan per eighth
// of the table's size in new keys.
func TestDenyCacheFullOfLiveRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
	}{
		{"small", 1024},
		{"production size", denyCacheSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newDenyCache(tc.size)
			refusal := Decision{Limit: 1, RetryAfter: time.Hour, ResetAfter: time.Hour}
			now := int64(1_000_000)
			for i := range tc.size {
				c.put("fill"+strconv.Itoa(i), now, refusal)
			}
			if len(c.m) != tc.size {
				t.Fatalf("filled %d of %d", len(c.m), tc.size)
			}
			const more = 20_000
			before := c.scans
			for i := range more {
				c.put("new"+strconv.Itoa(i), now+int64(i), refusal)
				// Refusals already held are still answered from memory.
				if _, ok := c.get("fill"+strconv.Itoa(i%tc.size), now+int64(i)); !ok {
					t.Fatalf("a live refusal was forgotten after %d new keys", i)
				}
			}
			scans := c.scans - before
			if limit := more/(tc.size/8) + 1; scans > limit {
				t.Errorf("%d scans of the full table for %d new keys; want at most %d", scans, more, limit)
			}
			if len(c.m) > tc.size {
				t.Errorf("the table holds %d refusals; its bound is %d", len(c.m), tc.size)
			}
			// Once the refusals end, new ones are remembered again.
			later := now + time.Hour.Microseconds() + more
			for i := range tc.size / 8 {
				c.put("after"+strconv.Itoa(i), later, refusal)
			}
			if _, ok := c.get("after"+strconv.Itoa(tc.size/8-1), later); !ok {
				t.Error("a refusal after the others ended was not remembered")
			}
		})
	}
}
