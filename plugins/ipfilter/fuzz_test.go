package ipfilter

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/causewayhq/causeway/plugins/plugintest"
)

// FuzzClientIP: whatever peer address and X-Forwarded-For arrive, the
// filter does not panic, and a client it names is either the TCP peer or an
// entry of the header: it never makes an address up.
func FuzzClientIP(f *testing.F) {
	for _, s := range [][2]string{
		{"172.16.0.1:1", "10.1.2.3"},
		{"172.16.0.1:1", "10.1.2.3, 172.20.0.1"},
		{"[::ffff:172.16.0.1]:1", " , ,"},
		{"10.0.0.1:1", "garbage"},
		{"@", ""},
		{"[fe80::1%eth0]:80", "fe80::2%lo"},
	} {
		f.Add(s[0], s[1])
	}
	inst, set, err := plugintest.New("ip_filter", "allow: [10.0.0.0/8]\ntrusted_proxies: [172.16.0.0/12, \"fe80::/10\"]")
	if err != nil {
		f.Fatal(err)
	}
	defer set.Close()
	filter := inst.(*Filter)
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Forwarded-For", xff)
		a, ok := filter.ClientIP(r)
		if !ok {
			return
		}
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
			t.Fatalf("client %v from %q / %q", a, remote, xff)
		}
		_ = filter.Allowed(a)
	})
}
