package clientip

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func mustPrefixes(t testing.TB, list ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range list {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestResolve(t *testing.T) {
	r := New(mustPrefixes(t, "10.0.0.0/8", "2001:db8:ffff::/48", "::ffff:172.16.0.0/108"))
	for _, tc := range []struct {
		name   string
		peer   string
		xff    []string
		want   string
		wantOK bool
	}{
		{"untrusted peer: its claim is ignored", "192.0.2.1:5000", []string{"203.0.113.9"}, "192.0.2.1", true},
		{"untrusted peer without a chain", "192.0.2.1:5000", nil, "192.0.2.1", true},
		{"trusted peer: right-most untrusted entry", "10.0.0.1:5000", []string{"198.51.100.1, 203.0.113.9"}, "203.0.113.9", true},
		{"trusted hops are skipped", "10.0.0.1:5000", []string{"203.0.113.9, 10.9.9.9"}, "203.0.113.9", true},
		{"several header lines read right to left", "10.0.0.1:5000", []string{"198.51.100.1", "203.0.113.9, 10.2.2.2"}, "203.0.113.9", true},
		{"forged entries left of the client are never read", "10.0.0.1:5000", []string{"garbage, 203.0.113.9"}, "203.0.113.9", true},
		{"every entry trusted: the left-most", "10.0.0.1:5000", []string{"10.3.3.3, 10.2.2.2"}, "10.3.3.3", true},
		{"trusted peer without a chain", "10.0.0.1:5000", nil, "10.0.0.1", true},
		{"empty entries are skipped", "10.0.0.1:5000", []string{"203.0.113.9,, ,\t", ""}, "203.0.113.9", true},
		{"entry with a port", "10.0.0.1:5000", []string{"203.0.113.9:4711"}, "203.0.113.9", true},
		{"bracketed IPv6 with a port", "10.0.0.1:5000", []string{"[2001:db8::7]:4711"}, "2001:db8::7", true},
		{"bracketed IPv6 without a port", "10.0.0.1:5000", []string{"[2001:db8::7]"}, "2001:db8::7", true},
		{"zone dropped", "10.0.0.1:5000", []string{"fe80::1%eth0"}, "fe80::1", true},
		{"IPv4-mapped entry unmapped", "10.0.0.1:5000", []string{"::ffff:203.0.113.9"}, "203.0.113.9", true},
		{"IPv4-mapped peer matches an IPv4 range", "[::ffff:10.0.0.1]:5000", []string{"203.0.113.9"}, "203.0.113.9", true},
		{"mapped trusted range matches IPv4", "172.16.0.1:5000", []string{"203.0.113.9"}, "203.0.113.9", true},
		{"IPv6 trusted peer", "[2001:db8:ffff::1]:5000", []string{"2001:db8::9"}, "2001:db8::9", true},
		{"garbage from a trusted hop: the last vouched address, not ok", "10.0.0.1:5000", []string{"unknown, 10.2.2.2"}, "10.2.2.2", false},
		{"garbage right at the peer", "10.0.0.1:5000", []string{"203.0.113.9, _hidden"}, "10.0.0.1", false},
		{"port out of range is garbage", "10.0.0.1:5000", []string{"203.0.113.9:99999"}, "10.0.0.1", false},
		{"unbracketed IPv6 with a port is garbage", "10.0.0.1:5000", []string{"2001:db8::7:80:1:2:3:4"}, "10.0.0.1", false},
		{"peer not an address", "@", []string{"203.0.113.9"}, "invalid IP", false},
		{"unix socket peer", "", nil, "invalid IP", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := r.ResolveRemote(tc.peer, http.Header{"X-Forwarded-For": tc.xff})
			if got.String() != tc.want || ok != tc.wantOK {
				t.Errorf("Resolve(%q, %q) = %v, %v; want %s, %v", tc.peer, tc.xff, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestZeroResolverTrustsNobody(t *testing.T) {
	for _, r := range []*Resolver{nil, {}, New(nil)} {
		got, ok := r.ResolveRemote("10.0.0.1:1", http.Header{"X-Forwarded-For": {"203.0.113.9"}, "Forwarded": {"for=203.0.113.9"}})
		if got.String() != "10.0.0.1" || !ok || r.HasTrusted() {
			t.Errorf("%#v: %v %v", r, got, ok)
		}
	}
}

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":          "192.0.2.1",
		"192.0.2.1:80":       "192.0.2.1",
		"[2001:db8::1]:80":   "2001:db8::1",
		"[2001:db8::1]":      "2001:db8::1",
		"2001:db8::1":        "2001:db8::1",
		"[::ffff:1.2.3.4]":   "1.2.3.4",
		"[192.0.2.1]":        "",
		"192.0.2.1:":         "",
		"192.0.2.1:x":        "",
		"192.0.2.1:65536":    "",
		"[2001:db8::1":       "",
		"example.com:80":     "",
		"":                   "",
		" 192.0.2.1":         "", //nolint:gocritic // the leading space is the case under test
		"\"[2001:db8::1]\"":  "",
		"for=192.0.2.1":      "",
		"192.0.2.1:080":      "192.0.2.1",
		"fe80::1%25eth0":     "fe80::1",
		"[fe80::1%eth0]:443": "fe80::1",
	} {
		a, ok := ParseAddr(in)
		got := ""
		if ok {
			got = a.String()
		}
		if got != want {
			t.Errorf("ParseAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzResolve checks the resolver against a plain reference reading of the
// same rules (split, trim, skip empties, walk from the right) and the
// properties every consumer relies on: an untrusted peer is always the
// client; the client is the peer or an address in the chain; ok means the
// client is untrusted or the chain held only trusted proxies.
func FuzzResolve(f *testing.F) {
	for _, s := range [][2]string{
		{"10.0.0.1:1", "203.0.113.9"},
		{"10.0.0.1:1", "203.0.113.9, 10.2.2.2"},
		{"10.0.0.1:1", " ,, [2001:db8::1]:80 ,\t10.0.0.7"},
		{"192.0.2.1:1", "10.0.0.2"},
		{"10.0.0.1:1", "unknown"},
		{"[::ffff:10.0.0.1]:1", "::ffff:10.9.9.9,fe80::1%eth0"},
	} {
		f.Add(s[0], s[1], "")
	}
	r := New(mustPrefixes(f, "10.0.0.0/8", "2001:db8:ffff::/48"))
	f.Fuzz(func(t *testing.T, peerStr, xff1, xff2 string) {
		xff := []string{xff1, xff2}
		got, ok := r.ResolveRemote(peerStr, http.Header{"X-Forwarded-For": xff})
		peer, peerOK := ParseAddr(peerStr)
		if !peerOK {
			if ok || got.IsValid() {
				t.Fatalf("invalid peer %q resolved to %v, %v", peerStr, got, ok)
			}
			return
		}
		if !r.Trusts(peer) {
			if got != peer || !ok {
				t.Fatalf("untrusted peer %v: got %v, %v", peer, got, ok)
			}
			return
		}
		// Reference reading.
		var entries []string
		for _, v := range xff {
			for _, e := range strings.Split(v, ",") {
				if e = strings.Trim(e, " \t"); e != "" {
					entries = append(entries, e)
				}
			}
		}
		want, wantOK := peer, true
		for i := len(entries) - 1; i >= 0; i-- {
			a, parsed := ParseAddr(entries[i])
			if !parsed {
				wantOK = false
				break
			}
			want = a
			if !r.Trusts(a) {
				break
			}
		}
		if got != want || ok != wantOK {
			t.Fatalf("peer %v chain %q: got %v, %v; reference %v, %v", peer, xff, got, ok, want, wantOK)
		}
		if got.Zone() != "" || got.Is4In6() {
			t.Fatalf("%v: zones and mapped forms must not leak", got)
		}
	})
}

func BenchmarkResolve(b *testing.B) {
	r := New(mustPrefixes(b, "10.0.0.0/8"))
	peer := netip.MustParseAddr("10.0.0.1")
	xff := []string{"198.51.100.1, 203.0.113.9, 10.2.2.2"}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := r.Resolve(peer, xff, nil); !ok {
			b.Fatal("unresolved")
		}
	}
}
