package proxy

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
)

// TestUpstreamTLSConfig dials a real TLS server through the pool an https
// upstream gets, with each way of verifying it, and checks what the
// server saw (the SNI) and that a refused check never reaches it.
func TestUpstreamTLSConfig(t *testing.T) {
	ca, other := testutil.NewCA(t), testutil.NewCA(t)
	certPEM, keyPEM := ca.LeafSANs(t, 2, []string{"backend.example.com"}, "spiffe://example.org/ns/shop/sa/orders")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var snis []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("over " + r.Proto))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		mu.Lock()
		snis = append(snis, h.ServerName)
		mu.Unlock()
		return nil, nil
	}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	srv.StartTLS()
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		desc    string
		tls     *routes.UpstreamTLS
		wantErr string // "" : served
		wantSNI string
	}{
		{"right CA and name (inline)", &routes.UpstreamTLS{ServerName: "backend.example.com", CAPEM: string(ca.PEM())}, "", "backend.example.com"},
		{"right CA and name (file)", &routes.UpstreamTLS{ServerName: "backend.example.com", CAFile: caFile}, "", "backend.example.com"},
		{"another CA", &routes.UpstreamTLS{ServerName: "backend.example.com", CAPEM: string(other.PEM())}, "certificate signed by unknown authority", "backend.example.com"},
		{"another name", &routes.UpstreamTLS{ServerName: "other.example.com", CAPEM: string(ca.PEM())}, "not other.example.com", "other.example.com"},
		{"system roots do not know the test CA", &routes.UpstreamTLS{ServerName: "backend.example.com"}, "unknown authority", "backend.example.com"},
		{"no tls section: system roots and the address", nil, "127.0.0.1", ""},
		{"DNS SAN instead of the server name", &routes.UpstreamTLS{ServerName: "sni.example.com", CAPEM: string(ca.PEM()),
			SubjectAltNames: []routes.SubjectAltName{{Hostname: "backend.example.com"}}}, "", "sni.example.com"},
		{"URI SAN", &routes.UpstreamTLS{ServerName: "backend.example.com", CAPEM: string(ca.PEM()),
			SubjectAltNames: []routes.SubjectAltName{{URI: "spiffe://example.org/ns/shop/sa/orders"}}}, "", "backend.example.com"},
		{"SANs replace the server name: the server name alone does not pass", &routes.UpstreamTLS{ServerName: "backend.example.com", CAPEM: string(ca.PEM()),
			SubjectAltNames: []routes.SubjectAltName{{URI: "spiffe://example.org/ns/shop/sa/payments"}}}, "none of the subject alternative names", "backend.example.com"},
		{"one of several SANs", &routes.UpstreamTLS{ServerName: "backend.example.com", CAPEM: string(ca.PEM()),
			SubjectAltNames: []routes.SubjectAltName{{Hostname: "nope.example.com"}, {URI: "spiffe://example.org/ns/shop/sa/orders"}}}, "", "backend.example.com"},
		{"SAN with another CA", &routes.UpstreamTLS{ServerName: "backend.example.com", CAPEM: string(other.PEM()),
			SubjectAltNames: []routes.SubjectAltName{{Hostname: "backend.example.com"}}}, "unknown authority", "backend.example.com"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			mu.Lock()
			snis = nil
			mu.Unlock()
			u := routes.Upstream{Scheme: "https", TLS: tc.tls, MaxIdlePerHost: 1}
			pool, err := NewTransportPool("t", u, UpstreamTLSConfig, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.CloseIdle()
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/", nil)
			resp, err := pool.Transport.RoundTrip(req)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && err == nil:
				resp.Body.Close()
				t.Fatalf("served, want refused (%s)", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q, want %q", err, tc.wantErr)
			}
			if err == nil {
				resp.Body.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			if len(snis) == 0 || snis[0] != tc.wantSNI {
				t.Fatalf("server saw SNI %q, want %q", snis, tc.wantSNI)
			}
		})
	}
}

func TestUpstreamTLSConfigBadCA(t *testing.T) {
	for _, tc := range []struct{ desc, pem, want string }{
		{"garbage", "not a certificate", "trailing data"},
		{"empty", "", ""},
		{"a key, not a certificate", "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", "not CERTIFICATE"},
		{"a certificate block that does not parse", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "certificate 1"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg, err := UpstreamTLSConfig(routes.Upstream{Scheme: "https", TLS: &routes.UpstreamTLS{ServerName: "a.example.com", CAPEM: tc.pem}})
			if tc.pem == "" {
				// No inline CA: the system roots, as without a tls section.
				if err != nil || cfg.RootCAs != nil {
					t.Fatalf("cfg %v err %v", cfg, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
