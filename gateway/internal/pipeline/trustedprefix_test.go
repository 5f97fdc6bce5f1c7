package pipeline

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// Which peers a trusted_proxies entry makes trusted, for the spellings of
// IPv4 in IPv6 and the edge cases of prefix lengths and zones. A peer is
// compared unmapped and without its zone, as a dual-stack listener reports
// IPv4 clients as ::ffff:a.b.c.d.
func TestTrustedProxyPrefixes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		list    []string
		trusted []string // RemoteAddr values that must be trusted
		not     []string // and must not
		refused bool     // the list is refused
	}{
		{"IPv4 range, IPv4 and mapped peers", []string{"10.0.0.0/8"},
			[]string{"10.1.2.3:1", "[::ffff:10.1.2.3]:1"}, []string{"11.0.0.1:1", "[::1]:1", "[::a01:203]:1"}, false},
		{"mapped /104 is the IPv4 /8", []string{"::ffff:10.0.0.0/104"},
			[]string{"10.1.2.3:1", "[::ffff:10.1.2.3]:1"}, []string{"11.0.0.1:1", "[::1]:1"}, false},
		{"mapped address alone", []string{"::ffff:10.0.0.1"},
			[]string{"10.0.0.1:1", "[::ffff:10.0.0.1]:1"}, []string{"10.0.0.2:1"}, false},
		{"/32 is one address", []string{"192.0.2.7/32"},
			[]string{"192.0.2.7:1"}, []string{"192.0.2.8:1", "192.0.2.6:1"}, false},
		{"IPv6 /0 is IPv6 only", []string{"::/0"},
			[]string{"[2001:db8::1]:1", "[::1]:1"}, []string{"192.0.2.1:1", "[::ffff:192.0.2.1]:1"}, false},
		{"IPv4 /0 is IPv4 only", []string{"0.0.0.0/0"},
			[]string{"192.0.2.1:1", "[::ffff:192.0.2.1]:1"}, []string{"[2001:db8::1]:1"}, false},
		{"a peer's zone is ignored", []string{"fe80::/10"},
			[]string{"[fe80::1%eth0]:1"}, []string{"[fec0::1]:1", "[2001:db8::1%eth0]:1"}, false},
		// "::ffff:10.0.0.0/8" reads as 10/8 but masks to ::/8, which holds
		// ::1 and the IPv4-compatible addresses and no IPv4 peer: before,
		// it was taken and trusted every local IPv6 client.
		{"mapped shorter than /96", []string{"::ffff:10.0.0.0/8"}, nil, nil, true},
		{"mapped /95", []string{"::ffff:10.0.0.0/95"}, nil, nil, true},
		{"zone in a CIDR", []string{"fe80::%eth0/10"}, nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp, err := NewTrustedProxies(tc.list)
			if tc.refused {
				if err == nil {
					probe := httptest.NewRequest(http.MethodGet, "/", nil)
					probe.RemoteAddr = "[::1]:1"
					t.Fatalf("%q accepted (trusts ::1: %v)", tc.list, tp.Resolve(probe).Trusted)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, peers := range []struct {
				list []string
				want bool
			}{{tc.trusted, true}, {tc.not, false}} {
				for _, peer := range peers.list {
					r := httptest.NewRequest(http.MethodGet, "/", nil)
					r.RemoteAddr = peer
					r.Header.Set("X-Forwarded-For", "203.0.113.9")
					pi := tp.Resolve(r)
					if pi.Trusted != peers.want {
						t.Errorf("%q with %q: trusted %v, want %v", peer, tc.list, pi.Trusted, peers.want)
					}
					if wantClient := map[bool]string{true: "203.0.113.9"}[peers.want]; wantClient != "" && pi.ClientStr != wantClient {
						t.Errorf("%q: client %q, want %q", peer, pi.ClientStr, wantClient)
					}
				}
			}
		})
	}
}
