package edgetls

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/routes"
)

// A provider's pairs (Gateway HTTPS listeners' Secrets) are served by SNI
// after the file's: the file wins a name both have and keeps the default.
func TestProviderCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "provider CA")
	fileCert, fileKey := ca.writePair(t, dir, "file", "api.example.com")
	shopCert, shopKey := ca.leaf(t, "shop", false, "shop.example.com")
	clashCert, clashKey := ca.leaf(t, "clash", false, "api.example.com", "clash.example.com")
	wildCert, wildKey := ca.leaf(t, "wild", false, "*.apps.example.com")

	m := newManager(t, &routes.TLS{MinVersion: "1.2",
		Certificates: []routes.Certificate{{CertFile: fileCert, KeyFile: fileKey}},
		FromProviders: []routes.InlineCertificate{
			{Source: "Secret shop/web", CertPEM: shopCert, KeyPEM: shopKey},
			{Source: "Secret shop/clash", CertPEM: clashCert, KeyPEM: clashKey},
			{Source: "Secret apps/wild", CertPEM: wildCert, KeyPEM: wildKey},
		}}, Options{})
	addr := serveTLS(t, m.TLSConfig(), okHandler())
	tests := []struct{ sni, want string }{ // want: the served certificate's common name
		{"shop.example.com", "shop"},
		{"api.example.com", "api.example.com"}, // the file's (its common name is its first name), not the Secret's that names it too
		{"clash.example.com", "clash"},         // the Secret's own other name
		{"x.apps.example.com", "wild"},
		{"unknown.test", "api.example.com"}, // the file's first is the default
	}
	for _, tt := range tests {
		st, err := handshake(addr, &tls.Config{ServerName: tt.sni, RootCAs: ca.pool(), InsecureSkipVerify: tt.sni == "unknown.test"})
		if err != nil {
			t.Fatalf("sni %q: %v", tt.sni, err)
		}
		if got := st.PeerCertificates[0].Subject.CommonName; got != tt.want {
			t.Fatalf("sni %q: served %q, want %q", tt.sni, st.PeerCertificates[0].Subject.CommonName, tt.want)
		}
	}
}

// With providers.kubernetes a tls section may start with no certificate:
// handshakes fail cleanly until the cluster's arrive.
func TestProviderCertificatesNoneYet(t *testing.T) {
	if _, err := New(t.Context(), &routes.TLS{MinVersion: "1.2"}, Options{}); err == nil {
		t.Fatal("a tls section with nothing to serve was accepted without providers")
	}
	m := newManager(t, &routes.TLS{MinVersion: "1.2"}, Options{ProviderCertificates: true})
	addr := serveTLS(t, m.TLSConfig(), okHandler())
	if _, err := handshake(addr, &tls.Config{ServerName: "shop.example.com", InsecureSkipVerify: true}); err == nil {
		t.Fatal("a handshake succeeded with no certificate to serve")
	}
}

// A bad pair names its source, never the key.
func TestCheckPair(t *testing.T) {
	ca := newCA(t, "check CA")
	cert, key := ca.leaf(t, "ok", false, "ok.example.com")
	_, otherKey := ca.leaf(t, "other", false, "other.example.com")
	noName, noNameKey := ca.leaf(t, "", false)
	if err := CheckPair(cert, key); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct{ cert, key []byte }{{cert, otherKey}, {noName, noNameKey}, {[]byte("junk"), key}, {cert, nil}} {
		err := CheckPair(tc.cert, tc.key)
		if err == nil {
			t.Fatalf("case %d accepted", i)
		}
		if strings.Contains(err.Error(), "PRIVATE KEY") || (len(tc.key) > 0 && strings.Contains(err.Error(), string(tc.key[30:60]))) {
			t.Fatalf("case %d: the error shows the key: %v", i, err)
		}
	}
	_, err := New(t.Context(), &routes.TLS{MinVersion: "1.2", FromProviders: []routes.InlineCertificate{{Source: "Secret a/b", CertPEM: cert, KeyPEM: otherKey}}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "Secret a/b") {
		t.Fatalf("error %v, want one naming the Secret", err)
	}
}

// A pair with Hosts (a Gateway listener's hostname) is served only for the
// names that hostname matches, never by the names it carries: an older
// Gateway's Secret that names another Gateway's host does not win that
// host's handshakes. The most specific listener hostname decides (exact,
// then the longest wildcard, which covers one or more labels); the file's
// exact names still come first.
func TestProviderCertificatesScopedToListenerHost(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "scoped CA")
	fileCert, fileKey := ca.writePair(t, dir, "file", "admin.example.com")
	// Gateway a's listener a.example.com, whose Secret also names b's host
	// and admin's: listed first, as the older Gateway's is.
	grabCert, grabKey := ca.leaf(t, "grab", false, "a.example.com", "b.example.com", "admin.example.com", "*.apps.example.com")
	bCert, bKey := ca.leaf(t, "b", false, "b.example.com")
	appsCert, appsKey := ca.leaf(t, "apps", false, "*.apps.example.com")
	anyCert, anyKey := ca.leaf(t, "any", false, "other.example.com")

	m := newManager(t, &routes.TLS{MinVersion: "1.2",
		Certificates: []routes.Certificate{{CertFile: fileCert, KeyFile: fileKey}},
		FromProviders: []routes.InlineCertificate{
			{Source: "Secret a/grab", CertPEM: grabCert, KeyPEM: grabKey, Hosts: []string{"a.example.com"}},
			{Source: "Secret b/b", CertPEM: bCert, KeyPEM: bKey, Hosts: []string{"b.example.com"}},
			{Source: "Secret c/apps", CertPEM: appsCert, KeyPEM: appsKey, Hosts: []string{"*.apps.example.com"}},
			// A listener without a hostname: served by its names.
			{Source: "Secret d/any", CertPEM: anyCert, KeyPEM: anyKey},
		}}, Options{})
	addr := serveTLS(t, m.TLSConfig(), okHandler())
	tests := []struct{ sni, want string }{ // want: the served certificate's common name
		{"a.example.com", "grab"},
		{"b.example.com", "b"},                     // b's listener, not a's Secret that names it first
		{"x.apps.example.com", "apps"},             // the wildcard listener's
		{"x.y.apps.example.com", "apps"},           // a listener wildcard covers more than one label
		{"admin.example.com", "admin.example.com"}, // the file's exact name
		{"other.example.com", "any"},               // a pair without Hosts, by its name
	}
	for _, tt := range tests {
		t.Run(tt.sni, func(t *testing.T) {
			st, err := handshake(addr, &tls.Config{ServerName: tt.sni, RootCAs: ca.pool(), InsecureSkipVerify: tt.sni == "x.y.apps.example.com"})
			if err != nil {
				t.Fatalf("sni %q: %v", tt.sni, err)
			}
			if got := st.PeerCertificates[0].Subject.CommonName; got != tt.want {
				t.Fatalf("sni %q: served %q, want %q", tt.sni, got, tt.want)
			}
		})
	}
}

// The certificate for a client that sends no server name, or one no
// certificate is for: the file's first; else the provider pair marked
// Default (the first Gateway the edge is told to serve); else none, and
// the handshake is refused with unrecognized_name. Never a provider pair
// because it came first: that order is the Gateways' age, which whoever
// may create a Gateway decides, so a tenant's Secret would be what every
// client dialling an IP address is shown.
func TestDefaultCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "default CA")
	fileCert, fileKey := ca.writePair(t, dir, "file", "file.example.com")
	tenantCert, tenantKey := ca.leaf(t, "tenant", false, "tenant.example.com")
	scopedCert, scopedKey := ca.leaf(t, "scoped", false, "scoped.example.com")
	edgeCert, edgeKey := ca.leaf(t, "edge", false, "edge.example.com")
	tenant := routes.InlineCertificate{Source: "Secret tenant/tls", CertPEM: tenantCert, KeyPEM: tenantKey}
	scoped := routes.InlineCertificate{Source: "Secret tenant/scoped", CertPEM: scopedCert, KeyPEM: scopedKey, Hosts: []string{"scoped.example.com"}}
	edge := routes.InlineCertificate{Source: "Secret infra/edge", CertPEM: edgeCert, KeyPEM: edgeKey, Default: true}
	file := []routes.Certificate{{CertFile: fileCert, KeyFile: fileKey}}
	tests := []struct {
		name      string
		file      []routes.Certificate
		providers []routes.InlineCertificate
		want      string // the served certificate's common name; "" refused
	}{
		{"only providers' pairs, none Default", nil, []routes.InlineCertificate{scoped, tenant}, ""},
		{"a Default pair after older tenants' pairs", nil, []routes.InlineCertificate{scoped, tenant, edge}, "edge"},
		{"the file's first before a Default pair", file, []routes.InlineCertificate{tenant, edge}, "file.example.com"},
		{"the file's first, providers' pairs none Default", file, []routes.InlineCertificate{tenant}, "file.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, &routes.TLS{MinVersion: "1.2", Certificates: tt.file, FromProviders: tt.providers}, Options{ProviderCertificates: true})
			addr := serveTLS(t, m.TLSConfig(), okHandler())
			for _, sni := range []string{"", "unknown.test"} {
				st, err := handshake(addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
				if tt.want == "" {
					// The alert, not merely a failure: a client or a
					// load balancer's probe can tell it from a fault.
					if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
						t.Fatalf("sni %q: handshake error %v (served %d certificates), want an unrecognized_name alert", sni, err, len(st.PeerCertificates))
					}
					continue
				}
				if err != nil {
					t.Fatalf("sni %q: %v", sni, err)
				}
				if got := st.PeerCertificates[0].Subject.CommonName; got != tt.want {
					t.Fatalf("sni %q: served %q, want %q", sni, got, tt.want)
				}
			}
			// The tenant's pair (in every case) is still served by its name.
			st, err := handshake(addr, &tls.Config{ServerName: "tenant.example.com", RootCAs: ca.pool()})
			if err != nil || st.PeerCertificates[0].Subject.CommonName != "tenant" {
				t.Fatalf("sni tenant.example.com: %v, want the tenant's pair", err)
			}
		})
	}
}
