package ratelimit

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testredis"
)

// TestLeaseExpiryOnInjectedClock: leased tokens expire a hold after their
// grant on the Service's clock (Options.Now), not the wall clock, which the
// test clock is eleven months away from. Until a grant's expiry the edge
// spends from it; from its expiry it is no
// longer held.
func TestLeaseExpiryOnInjectedClock(t *testing.T) {
	srv := testredis.Start(t)
	e := newEdges(t, 1, fmt.Sprintf("url: %q, timeout: 5s", srv.URL()), "lease", 1000, 1000, time.Second, "deny")
	h := e.hs[0]
	hot := func() int { return h.do(map[string]string{"X-User": "hot"}).Code }
	for range 20 { // demand builds a lease of many tokens
		for range 20 {
			if c := hot(); c != http.StatusOK {
				t.Fatalf("warm-up: %d", c)
			}
		}
		e.settle()
		e.clk.Add(time.Millisecond)
	}
	svc := e.svcs[0]
	svc.leases.mu.Lock()
	var l *lease
	for _, x := range svc.leases.m {
		l = x
	}
	svc.leases.mu.Unlock()
	grants := func() (held, first, last int64) {
		l.mu.Lock()
		defer l.mu.Unlock()
		first = 1 << 62
		for i := range l.n {
			held += l.grants[i].tokens
			first, last = min(first, l.grants[i].expires), max(last, l.grants[i].expires)
		}
		return held, first, last
	}
	held, first, last := grants()
	now := e.clk.Now().UnixMicro()
	hold := leaseHold(leaseBucket(Limit{Name: "l", Rate: 1000, Per: time.Second, Burst: 1000}.mustBucket(t)))
	if held < 2 || first <= now || last > now+hold {
		t.Fatalf("held %d tokens expiring in [%d, %d]µs from now; want several within a hold (%dµs)", held, first-now, last-now, hold)
	}

	// One µs before the first grant's expiry, a request spends from the
	// lease: at most one Redis call (a renewal).
	e.clk.Add(time.Duration(first-now-1) * time.Microsecond)
	before := testredis.CommandCalls(t, srv.Addr, "evalsha")
	if c := hot(); c != http.StatusOK {
		t.Fatalf("before the expiry: %d", c)
	}
	e.settle()
	if calls := testredis.CommandCalls(t, srv.Addr, "evalsha") - before; calls > 1 {
		t.Fatalf("%d Redis calls before any grant expired; want at most a renewal", calls)
	}
	// At the last grant's expiry, a request leaves none of the earlier
	// grants held: their unused tokens were dropped.
	e.clk.Add(time.Duration(last-first+1) * time.Microsecond)
	if c := hot(); c != http.StatusOK {
		t.Fatalf("after the expiry: %d", c)
	}
	e.settle()
	l.mu.Lock()
	for i := range l.n {
		if l.grants[i].expires <= last {
			t.Errorf("a grant expiring at %dµs is still held at %dµs", l.grants[i].expires-now, e.clk.Now().UnixMicro()-now)
		}
	}
	l.mu.Unlock()
}

func (l Limit) mustBucket(t *testing.T) bucket {
	t.Helper()
	b, err := l.bucket()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
