package ratelimit

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/causewayhq/causeway/internal/clientip"
)

// FuzzClientIP: whatever the peer address and X-Forwarded-For hold, the
// client address is "" or a real IP, and an untrusted peer's header is
// never believed.
func FuzzClientIP(f *testing.F) {
	f.Add("10.0.0.1:80", "203.0.113.9, 10.1.1.1")
	f.Add("192.0.2.1:1", "1.1.1.1")
	f.Add("[fd00::1]:443", "2001:db8::2, nonsense")
	f.Add("pipe", "")
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	fn := ClientIPFunc(trusted)
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Forwarded-For", xff)
		got := fn(r)
		if got == "" {
			return
		}
		a, err := netip.ParseAddr(got)
		if err != nil {
			t.Fatalf("%q is not an IP", got)
		}
		if peer, ok := clientip.ParseAddr(remote); ok && !clientip.New(trusted).Trusts(peer) && a != peer {
			t.Fatalf("untrusted peer %v: believed %q from X-Forwarded-For %q", peer, got, xff)
		}
	})
}

// FuzzBucket: for any limit and any sequence position, the Go algorithm
// keeps its level within [0, cap] and its answers consistent.
func FuzzBucket(f *testing.F) {
	f.Add(3, int64(1_000_000), 2, int64(0), int64(500_000), int64(-3))
	f.Add(1, int64(1), 1, int64(7), int64(1<<40), int64(1))
	f.Fuzz(func(t *testing.T, rate int, perUS int64, burst int, t0, dt1, dt2 int64) {
		l := Limit{Name: "f", Rate: rate, Per: micros(perUS), Burst: burst}
		b, err := l.bucket()
		if err != nil {
			return
		}
		// Keep stamps where int64 µs arithmetic cannot overflow.
		const span = int64(1) << 52
		t0, dt1, dt2 = t0%span, dt1%span, dt2%span
		level := b.cap
		last := t0
		for _, now := range []int64{t0, t0 + dt1, t0 + dt1 + dt2} {
			level = b.refill(level, last, now)
			last = max(last, now)
			var d Decision
			level, d = b.take(level)
			if level < 0 || level > b.cap {
				t.Fatalf("level %d outside [0, %d]", level, b.cap)
			}
			if d.Allowed == (d.RetryAfter > 0) || d.Remaining < 0 || d.ResetAfter < 0 {
				t.Fatalf("inconsistent decision %+v", d)
			}
		}
	})
}
