package edgetls

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/causewayhq/causeway/routes"
)

// causeway_tls_certificate_reloads_total{result}: a certificate file
// replaced by garbage counts one failure while the old certificate is still
// served (seen in a real handshake); a good replacement counts one success
// and is served.
func TestCertificateReloadMetric(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "reload metric CA")
	certFile, keyFile := ca.writePair(t, dir, "a", "api.example.com")
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causeway_tls_certificate_reloads_total", Help: "h"}, []string{"result"})
	reloaded := make(chan error, 8)
	m := newManager(t, &routes.TLS{MinVersion: "1.2", Certificates: []routes.Certificate{{CertFile: certFile, KeyFile: keyFile}}},
		Options{CertReloads: reloads, OnReload: func(err error) { reloaded <- err }})
	addr := serveTLS(t, m.TLSConfig(), okHandler())
	client := &tls.Config{RootCAs: ca.pool(), ServerName: "api.example.com"}
	served := func() string {
		t.Helper()
		cs, err := handshake(addr, client)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		return cs.PeerCertificates[0].SerialNumber.String()
	}
	count := func(result string) float64 {
		var mtr dto.Metric
		if err := reloads.WithLabelValues(result).Write(&mtr); err != nil {
			t.Fatal(err)
		}
		return mtr.GetCounter().GetValue()
	}
	// replace renames a file prepared outside the watched folder into place:
	// one file-system event, so one reload attempt, so exact counts.
	staging := t.TempDir()
	replace := func(path string, data []byte) {
		t.Helper()
		tmp := filepath.Join(staging, filepath.Base(path))
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	next := func() error {
		t.Helper()
		select {
		case err := <-reloaded:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("no reload attempt within 30s of the file change")
			return nil
		}
	}

	if s, f := count("success"), count("failure"); s != 0 || f != 0 {
		t.Fatalf("at start: success %v, failure %v; want both series at 0", s, f)
	}
	first := served()

	steps := []struct {
		name          string
		data          func() []byte
		wantErr       bool
		success, fail float64
		wantServed    func(serial string) bool
	}{
		{"garbage", func() []byte { return []byte("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n") },
			true, 0, 1, func(s string) bool { return s == first }},
		{"good certificate for the same key", func() []byte { return reissue(t, ca, keyFile, "api.example.com") },
			false, 1, 1, func(s string) bool { return s != first }},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			replace(certFile, st.data())
			if err := next(); (err != nil) != st.wantErr {
				t.Fatalf("reload error %v, want error: %v", err, st.wantErr)
			}
			if s, f := count("success"), count("failure"); s != st.success || f != st.fail {
				t.Fatalf("success %v, failure %v; want %v, %v", s, f, st.success, st.fail)
			}
			if got := served(); !st.wantServed(got) {
				t.Fatalf("served serial %s (first %s)", got, first)
			}
		})
	}

	// An explicit Reload is counted too.
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if s := count("success"); s != 2 {
		t.Fatalf("success %v after Reload, want 2", s)
	}
}

// reissue signs a new certificate for the key already in keyFile, so
// replacing only the certificate file is a complete, valid rotation.
func reissue(t *testing.T, ca *testCA, keyFile, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(12 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
