package clientip

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzParseAddr holds ParseAddr, which tells the form of an address from
// its brackets and colons before parsing once, against the plain reading:
// try the address, then address:port, then a bracketed IPv6 address, with
// netip's own parsers. A mistake in the shortcut would make one proxy's
// X-Forwarded-For entry read as another address, or not at all.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{
		"192.0.2.1", "192.0.2.1:80", "192.0.2.1:", "192.0.2.1:99999", "192.0.2.1:0080",
		"2001:db8::1", "[2001:db8::1]", "[2001:db8::1]:443", "[2001:db8::1]:", "2001:db8::1:443",
		"[192.0.2.1]", "[192.0.2.1]:80", "::ffff:10.0.0.1", "[::ffff:10.0.0.1]:1", "fe80::1%eth0",
		"[fe80::1%eth0]:80", "[fe80::1%25eth0]", "unknown", "_hidden", "[", "]", "[]", ":", "::", "1.2.3.4 ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := ParseAddr(s)
		want, wantOK := referenceParseAddr(s)
		if ok != wantOK || got != want {
			t.Fatalf("ParseAddr(%q) = %v, %v; reference %v, %v", s, got, ok, want, wantOK)
		}
		if ok && (got.Is4In6() || got.Zone() != "") {
			t.Fatalf("ParseAddr(%q) = %v: mapped or zoned", s, got)
		}
	})
}

func referenceParseAddr(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if inner, found := strings.CutPrefix(s, "["); found {
		if inner, found = strings.CutSuffix(inner, "]"); found {
			if a, err := netip.ParseAddr(inner); err == nil && a.Is6() {
				return a.Unmap().WithZone(""), true
			}
		}
	}
	return netip.Addr{}, false
}
