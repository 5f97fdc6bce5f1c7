package transport

import (
	"io"
	"net/http"
	"sync/atomic"
	"testing"
)

// countEnds is a BodyEnder that counts its calls.
type countEnds struct{ n atomic.Int32 }

func (c *countEnds) BodyEnded() { c.n.Add(1) }

// OnBodyClose takes only a body of H1's own for its own response, once;
// the ender is called by the first Close alone, after a read to the end or
// before it, and the connection of a body read whole is still reused.
func TestOnBodyClose(t *testing.T) {
	s, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/empty" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		_, _ = io.WriteString(w, "body")
	})
	h1 := newTestPool(t, 4, notATimeout)
	for _, tc := range []struct {
		desc   string
		path   string
		before func(resp *http.Response) // what happens to resp before OnBodyClose
		read   bool                      // read to EOF before the closes
		want   bool                      // OnBodyClose takes it
		closes int
	}{
		{desc: "read whole, closed once", path: "/", read: true, want: true, closes: 1},
		{desc: "read whole, closed three times", path: "/", read: true, want: true, closes: 3},
		{desc: "closed before EOF, twice", path: "/", want: true, closes: 2},
		{desc: "no body (204)", path: "/empty", read: true, closes: 1},
		{desc: "a body wrapped by another", path: "/", read: true, closes: 1, before: func(resp *http.Response) {
			resp.Body = io.NopCloser(resp.Body)
		}},
		{desc: "an ender there already", path: "/", read: true, closes: 1, before: func(resp *http.Response) {
			if !OnBodyClose(resp, new(countEnds)) {
				t.Fatal("the first ender was refused")
			}
		}},
		{desc: "the body of another response", path: "/", read: true, closes: 1, before: func(resp *http.Response) {
			other := *resp
			resp.Body.(*h1Body).resp = &other
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, s.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := h1.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			if tc.before != nil {
				tc.before(resp)
			}
			var ends countEnds
			if got := OnBodyClose(resp, &ends); got != tc.want {
				t.Fatalf("OnBodyClose = %t, want %t", got, tc.want)
			}
			if tc.read {
				if _, err := io.ReadAll(resp.Body); err != nil {
					t.Fatal(err)
				}
			}
			if n := ends.n.Load(); n != 0 {
				t.Fatalf("ender called %d times before Close", n)
			}
			for range tc.closes {
				resp.Body.Close()
			}
			want := int32(0)
			if tc.want {
				want = 1
			}
			if n := ends.n.Load(); n != want {
				t.Fatalf("ender called %d times after %d closes, want %d", n, tc.closes, want)
			}
		})
	}
	// Every body read whole gave its connection back: 2 connections, the
	// second after the body closed early; 3 leaves room for a server that
	// closes one of its own accord.
	if n := conns.Load(); n > 3 {
		t.Fatalf("%d connections for 7 requests, one closed early: reuse broken", n)
	}
}
