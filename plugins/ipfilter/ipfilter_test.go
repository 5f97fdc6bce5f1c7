package ipfilter

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/plugins/plugintest"
)

func TestConfigErrors(t *testing.T) {
	tests := []struct{ desc, config, want string }{
		{"nothing to filter", "", "plugins.p.config: needs allow or deny"},
		{"only trusted proxies", "trusted_proxies: [10.0.0.0/8]", "needs allow or deny"},
		{"bad CIDR", "allow: [10.0.0.0/33]", `plugins.p.config.allow: "10.0.0.0/33" is not a CIDR`},
		{"bad address", "deny: [example.com]", `plugins.p.config.deny: "example.com" is neither an IP address nor a CIDR`},
		{"bad trusted proxy", "allow: [10.0.0.0/8]\ntrusted_proxies: [x]", "plugins.p.config.trusted_proxies"},
		{"mapped range", "allow: ['::ffff:10.0.0.0/104']", "write IPv4-mapped ranges as IPv4"},
		{"not a list", "allow: 10.0.0.0/8", "expected a list"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if got := plugintest.ConfigError(t, "ip_filter", tt.config); !strings.Contains(got, tt.want) {
				t.Fatalf("error %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFilter(t *testing.T) {
	inst := plugintest.MustNew(t, "ip_filter", `allow: [10.0.0.0/8, "2001:db8::/32", 192.0.2.7]
deny: [10.6.6.0/24]
trusted_proxies: [172.16.0.0/12]`)
	h := inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	tests := []struct {
		desc, remote, xff string
		want              int
	}{
		{"allowed CIDR", "10.1.2.3:5000", "", 204},
		{"allowed single address", "192.0.2.7:5000", "", 204},
		{"neighbour of the single address", "192.0.2.8:5000", "", 403},
		{"IPv6 allowed", "[2001:db8::1]:443", "", 204},
		{"IPv6 outside", "[2001:db9::1]:443", "", 403},
		{"IPv4-mapped peer", "[::ffff:10.1.2.3]:5000", "", 204},
		{"deny wins over allow", "10.6.6.6:5000", "", 403},
		{"not allowed", "203.0.113.9:5000", "", 403},
		{"untrusted peer's XFF is ignored", "203.0.113.9:5000", "10.1.2.3", 403},
		{"untrusted peer cannot get in by XFF", "10.6.6.6:1", "10.1.2.3", 403},
		{"trusted proxy: client from XFF", "172.16.0.1:5000", "10.1.2.3", 204},
		{"trusted proxy: denied client from XFF", "172.16.0.1:5000", "10.6.6.6", 403},
		{"client-forged left entries are not believed", "172.16.0.1:5000", "10.1.2.3, 203.0.113.9", 403},
		{"chain of trusted proxies", "172.16.0.1:5000", "10.1.2.3, 172.20.0.1", 204},
		{"garbage in a believed entry fails closed", "172.16.0.1:5000", "not-an-ip", 403},
		{"all hops trusted: left-most", "172.16.0.1:5000", "172.17.0.1", 403},
		{"unparsable peer", "@unix", "", 403},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.remote
			if tt.xff != "" {
				r.Header.Set("X-Forwarded-For", tt.xff)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d", rec.Code, tt.want)
			}
			if tt.want == 403 && !strings.Contains(rec.Body.String(), `"error":"forbidden"`) {
				t.Fatalf("body %q", rec.Body)
			}
		})
	}
}

// TestEdgeClientIP: without trusted_proxies of its own, the filter uses the
// client address the edge put in RequestInfo (from the file's top-level
// trusted_proxies); with its own list, it works the chain out itself.
func TestEdgeClientIP(t *testing.T) {
	tests := []struct {
		desc, config, remote, xff, edge string
		unresolved                      bool
		want                            int
	}{
		{"edge could not resolve the chain: refused, not judged by the proxy's address", "allow: [10.0.0.0/8]", "10.9.9.9:1", "unknown", "10.9.9.9", true, 403},
		{"edge's address allowed", "allow: [10.0.0.0/8]", "172.16.0.1:1", "", "10.1.2.3", false, 204},
		{"edge's address refused", "allow: [10.0.0.0/8]", "10.9.9.9:1", "", "203.0.113.1", false, 403},
		{"edge says nothing: the peer", "allow: [10.0.0.0/8]", "10.9.9.9:1", "", "", false, 204},
		{"own trusted proxies win", "allow: [10.0.0.0/8]\ntrusted_proxies: [172.16.0.0/12]", "172.16.0.1:1", "10.1.2.3", "203.0.113.1", false, 204},
		{"own trusted proxies: empty entries skipped, port allowed", "allow: [10.0.0.0/8]\ntrusted_proxies: [172.16.0.0/12]", "172.16.0.1:1", "10.1.2.3:5000, ,", "", false, 204},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			inst := plugintest.MustNew(t, "ip_filter", tt.config)
			h := inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.remote
			if tt.xff != "" {
				r.Header.Set("X-Forwarded-For", tt.xff)
			}
			if tt.edge != "" {
				r = r.WithContext(plugins.WithRequestInfo(r.Context(), plugins.RequestInfo{Route: "r", ClientIP: netip.MustParseAddr(tt.edge), ClientIPUnresolved: tt.unresolved}))
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d", rec.Code, tt.want)
			}
		})
	}
}

func TestDenyOnly(t *testing.T) {
	inst := plugintest.MustNew(t, "ip_filter", "deny: [198.51.100.0/24]")
	h := inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for remote, want := range map[string]int{"198.51.100.1:1": 403, "198.51.101.1:1": 200} {
		t.Run(remote, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = remote
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != want {
				t.Fatalf("status %d, want %d", rec.Code, want)
			}
		})
	}
}
