package ratelimit

import (
	"net/http"
	"reflect"
	"strconv"
	"testing"
	"time"
)

// setHeadersReference is what setHeaders did with Header.Set, one slice
// per value: the behaviour the shared array must keep.
func setHeadersReference(h http.Header, d Decision) {
	h.Set(HeaderLimit, strconv.Itoa(d.Limit))
	h.Set(HeaderRemaining, strconv.Itoa(d.Remaining))
	h.Set(HeaderReset, strconv.FormatInt(ceilSeconds(d.ResetAfter.Microseconds()), 10))
}

func TestSetHeadersAsHeaderSet(t *testing.T) {
	tests := []struct {
		desc   string
		d      Decision
		before http.Header // what the response already carries
	}{
		{desc: "allowed", d: Decision{Allowed: true, Limit: 100, Remaining: 99, ResetAfter: 600 * time.Millisecond}},
		{desc: "refused, nothing left", d: Decision{Limit: 3, Remaining: 0, ResetAfter: 59500 * time.Millisecond}},
		{desc: "whole seconds stay whole", d: Decision{Allowed: true, Limit: 1, Remaining: 0, ResetAfter: 2 * time.Second}},
		{desc: "zero reset", d: Decision{Allowed: true, Limit: 7, Remaining: 7}},
		{
			desc: "earlier values under either spelling are replaced",
			d:    Decision{Allowed: true, Limit: 10, Remaining: 4, ResetAfter: time.Second},
			before: http.Header{
				"Ratelimit-Limit": {"1", "2"}, "Ratelimit-Remaining": {"x"}, "Ratelimit-Reset": {"9"},
				"X-Other": {"kept"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, want := tc.before.Clone(), tc.before.Clone()
			if got == nil {
				got, want = http.Header{}, http.Header{}
			}
			setHeaders(got, tc.d)
			setHeadersReference(want, tc.d)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("headers\n got %v\nwant %v", got, want)
			}
			// The values share one array: adding to one (a proxied
			// response's own copy) must not write into the next.
			got.Add(HeaderLimit, "from-upstream")
			got.Add(HeaderRemaining, "from-upstream")
			want.Add(HeaderLimit, "from-upstream")
			want.Add(HeaderRemaining, "from-upstream")
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("after Add\n got %v\nwant %v", got, want)
			}
		})
	}
}

// TestSetHeadersAllocations: three number strings and one array, where
// Header.Set also made a slice per value and canonicalized the draft's
// spelling into a new string each time (eight in all, measured).
func TestSetHeadersAllocations(t *testing.T) {
	d := Decision{Allowed: true, Limit: 100000, Remaining: 99999, ResetAfter: 1500 * time.Millisecond}
	h := http.Header{}
	if n := testing.AllocsPerRun(1000, func() { setHeaders(h, d) }); n > 4 {
		t.Fatalf("%v allocations per call, want at most 4", n)
	}
}
