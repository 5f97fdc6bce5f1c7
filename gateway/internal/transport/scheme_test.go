package transport

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/causewayhq/causeway/mesh"
)

// ForScheme is the one choice of transport for a server outside the mesh:
// H1 for http, TLSUpgrades for https, each carrying a request to a real
// server; any other scheme (including one not in lower case, which
// url.Parse never yields) is refused rather than sent some default way.
func TestForSchemeChoosesByTheSchemeKnownAtBuildTime(t *testing.T) {
	m := newMeshTLS(t)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.Path)
	}))
	t.Cleanup(plain.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: plain.Config.Handler}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(tls.NewListener(ln, m.server.Clone())) })
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	id, err := mesh.ParseID(sidecarID)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		scheme, url string
		want        string // the transport's type; "" refused
	}{
		{"http", plain.URL, "*transport.H1"},
		{"https", "https://" + ln.Addr().String(), "*transport.TLSUpgrades"},
		{"", "", ""},
		{"HTTPS", "", ""},
		{"h2c", "", ""},
		{"ws", "", ""},
	}
	for _, tc := range tests {
		t.Run("scheme "+tc.scheme, func(t *testing.T) {
			p, err := ForScheme(tc.scheme, m.transport(id), nil)
			if tc.want == "" {
				if err == nil || p != nil {
					t.Fatalf("ForScheme(%q) = %T, %v; want it refused", tc.scheme, p, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.CloseIdleConnections)
			if got := fmt.Sprintf("%T", p); got != tc.want {
				t.Fatalf("ForScheme(%q) = %s, want %s", tc.scheme, got, tc.want)
			}
			req, _ := http.NewRequest(http.MethodGet, tc.url+"/x", nil)
			resp, err := p.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "/x" {
				t.Fatalf("got %q, want %q", b, "/x")
			}
		})
	}
}
