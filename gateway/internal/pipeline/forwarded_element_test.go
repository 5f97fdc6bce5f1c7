package pipeline

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// forwardedElementRef is the element as it was built before it took one
// allocation: the reference forwardedElement must match byte for byte.
func forwardedElementRef(peer netip.Addr, peerStr, host, proto string) string {
	node := peerStr
	switch {
	case !peer.IsValid():
		node = "unknown"
	case peer.Is6():
		node = `"[` + peerStr + `]"`
	}
	if host == "" {
		return "for=" + node + ";proto=" + proto
	}
	q := host
	for i := 0; i < len(host); i++ {
		c := host[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && strings.IndexByte("!#$%&'*+-.^_`|~", c) < 0 {
			q = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(host) + `"`
			break
		}
	}
	return "for=" + node + ";host=" + q + ";proto=" + proto
}

func TestForwardedElementMatchesReference(t *testing.T) {
	peers := []string{"", "192.0.2.1", "2001:db8::1"}
	for _, tc := range []struct {
		desc, host string
	}{
		{"no host", ""},
		{"token host", "example.com"},
		{"host with a port", "example.com:8080"},
		{"IPv6 literal host", "[2001:db8::1]:443"},
		{"quote in host", `ex"ample.com`},
		{"backslash in host", `ex\ample.com`},
		{"both, repeated", `a\\""b\"`},
		{"space", "a b"},
		{"non-ASCII", "exämple.com"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			for _, p := range peers {
				var addr netip.Addr
				if p != "" {
					addr = netip.MustParseAddr(p)
				}
				for _, proto := range []string{"http", "https"} {
					got := forwardedElement("", false, addr, p, tc.host, proto)
					want := forwardedElementRef(addr, p, tc.host, proto)
					if got != want {
						t.Errorf("peer %q proto %s: got %q, want %q", p, proto, got, want)
					}
					// After a trusted proxy's elements (even an empty
					// one): as joining them with ", " did.
					for _, prior := range []string{"for=203.0.113.9", `for="[2001:db8::2]";proto=https, for=10.0.0.1`, ""} {
						if got := forwardedElement(prior, true, addr, p, tc.host, proto); got != prior+", "+want {
							t.Errorf("peer %q proto %s after %q: got %q, want %q", p, proto, prior, got, prior+", "+want)
						}
					}
				}
			}
		})
	}
}

func TestForwardedElementAllocatesOnce(t *testing.T) {
	peer := netip.MustParseAddr("192.0.2.1")
	for _, tc := range []struct {
		desc   string
		prior  string
		extend bool
	}{
		{desc: "first hop", prior: "", extend: false},
		{desc: "after a trusted proxy's element", prior: "for=203.0.113.9;host=\"api.example.com:443\";proto=https", extend: true},
	} {
		if n := testing.AllocsPerRun(100, func() {
			_ = forwardedElement(tc.prior, tc.extend, peer, "192.0.2.1", "example.com:8080", "https")
		}); n != 1 {
			t.Errorf("%s: forwardedElement with a quoted host: %v allocations, want 1", tc.desc, n)
		}
	}
}

func TestAddrStringMatchesString(t *testing.T) {
	for _, tc := range []struct {
		desc, remote string
		allocs       float64
	}{
		{"IPv4 with a port", "192.0.2.1:1234", 0},
		{"IPv4 without a port", "192.0.2.1", 1},
		{"IPv4-mapped IPv6", "[::ffff:192.0.2.1]:1234", 1},
		{"IPv6", "[2001:db8::1]:443", 1},
		{"IPv6 loopback", "[::1]:80", 1},
		{"IPv6 with a zone", "[fe80::1%eth0]:80", 1},
		{"IPv4 in a bracket", "[192.0.2.1]:80", 1},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tc.remote}
			var tp TrustedProxies
			pi := tp.Resolve(r)
			if !pi.Peer.IsValid() {
				if pi.PeerStr != "" {
					t.Fatalf("no peer, PeerStr %q", pi.PeerStr)
				}
				return
			}
			if want := pi.Peer.String(); pi.PeerStr != want {
				t.Errorf("PeerStr %q, want %q", pi.PeerStr, want)
			}
			if n := testing.AllocsPerRun(100, func() { _ = addrString(pi.Peer, tc.remote) }); n > tc.allocs {
				t.Errorf("%v allocations, want at most %v", n, tc.allocs)
			}
		})
	}
}
