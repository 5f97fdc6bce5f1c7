package transport

import (
	"context"
	"io"
	"net/http"
	"slices"
	"testing"
)

// A connection put back to its host's empty idle stack uses its own
// one-slot array (h1Conn.alone) instead of a new one: taking it and
// putting it back allocates nothing. With several connections idle the
// stack must still hold each of them exactly once, last put back on top,
// whichever array it started from.
func TestH1IdleStackPutBack(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})
	host := srv.Listener.Addr().String()
	for _, tc := range []struct {
		desc  string
		conns int
	}{
		{"one connection", 1},
		{"two connections", 2},
		{"three connections", 3},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			h1 := newTestPool(t, 4, notATimeout)
			idle := func() []*h1Conn {
				h1.mu.Lock()
				defer h1.mu.Unlock()
				return slices.Clone(h1.idle[host])
			}
			var cs []*h1Conn
			for range tc.conns {
				c, reused, err := h1.getConn(context.Background(), host)
				if err != nil || reused {
					t.Fatalf("getConn: reused=%v %v, want a new connection", reused, err)
				}
				cs = append(cs, c)
			}
			// Put back in one order, taken in the reverse, put back in
			// the reverse again: every array the stack can be in.
			for _, c := range cs {
				h1.putConn(c)
			}
			if got := idle(); !slices.Equal(got, cs) {
				t.Fatalf("idle stack %p, want %p", got, cs)
			}
			for i := len(cs) - 1; i >= 0; i-- {
				c, reused, err := h1.getConn(context.Background(), host)
				if err != nil || !reused || c != cs[i] {
					t.Fatalf("getConn: %p reused=%v %v, want %p", c, reused, err, cs[i])
				}
			}
			if got := idle(); len(got) != 0 {
				t.Fatalf("%d idle connections after taking all, want 0", len(got))
			}
			rev := slices.Clone(cs)
			slices.Reverse(rev)
			for _, c := range rev {
				h1.putConn(c)
			}
			if got := idle(); !slices.Equal(got, rev) {
				t.Fatalf("idle stack %p, want %p", got, rev)
			}

			top := rev[len(rev)-1]
			if n := testing.AllocsPerRun(100, func() {
				c, _, err := h1.getConn(context.Background(), host)
				if err != nil || c != top {
					t.Fatalf("getConn: %p %v, want %p", c, err, top)
				}
				h1.putConn(c)
			}); n != 0 {
				t.Errorf("taking the top idle connection and putting it back: %v allocations, want 0", n)
			}
			if got := idle(); !slices.Equal(got, rev) {
				t.Fatalf("idle stack %p after reuse, want %p", got, rev)
			}
		})
	}
}
