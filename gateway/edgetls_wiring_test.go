package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a certificate for names and its key into dir.
func selfSigned(t *testing.T, dir string, names ...string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(leaf)
	return certFile, keyFile, pool
}

// The edge with a tls section: HTTPS with HTTP/2, the http listener
// redirecting, HSTS on TLS responses, the expiry metric.
func TestEdgeTLS(t *testing.T) {
	up := echoUpstream(t, "a")
	certFile, keyFile, pool := selfSigned(t, t.TempDir(), "api.example.com")
	te := startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
tls:
  certificates: [{cert_file: %q, key_file: %q}]
  hsts: {max_age: 1h}
upstreams:
  a: {endpoints: [%q]}
routes:
  - {name: r, match: {host: api.example.com, path_prefix: /}, upstream: a}
`, certFile, keyFile, hostPort(up)))

	client := &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "api.example.com"},
			ForceAttemptHTTP2: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()

	req, _ := http.NewRequest(http.MethodGet, "https://"+te.Addr("https")+"/x?y=1", nil)
	req.Host = "api.example.com"
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("status %d proto %s: %s", resp.StatusCode, resp.Proto, body)
	}
	if e := decodeEcho(t, body); e.Header.Get("X-Forwarded-Proto") != "https" || e.Path != "/x" {
		t.Fatalf("upstream saw %+v", e)
	}
	if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=3600" {
		t.Errorf("HSTS %q", got)
	}

	req, _ = http.NewRequest(http.MethodGet, "http://"+te.Addr("http")+"/x?y=1", nil)
	req.Host = "api.example.com"
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, httpsPort, _ := net.SplitHostPort(te.Addr("https"))
	if want := "https://api.example.com:" + httpsPort + "/x?y=1"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Fatalf("redirect %d to %q, want 308 to %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	if resp.Header.Get("Strict-Transport-Security") != "" {
		t.Error("HSTS sent over plain HTTP")
	}

	_, metrics := get(t, te.admin+"/metrics")
	if !strings.Contains(string(metrics), `causeway_certificate_expiry_timestamp_seconds{name="api.example.com"}`) {
		t.Errorf("expiry metric missing:\n%s", metrics)
	}
}

// clientCA makes a CA and one client certificate it signed.
func clientCA(t *testing.T, dir, cn string) (caFile string, client tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "clients CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn, Organization: []string{"Partner"}},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(dir, "client-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// North-south mTLS: a client without a certificate is refused at the
// handshake; a verified client's subject reaches the upstream, and a
// client-sent copy of that header does not.
func TestEdgeClientCertificates(t *testing.T) {
	up := echoUpstream(t, "a")
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir, "api.example.com")
	caFile, clientCert := clientCA(t, dir, "partner-1")
	te := startEdge(t, fmt.Sprintf(`version: 1
listen: {https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
tls:
  certificates: [{cert_file: %q, key_file: %q}]
  client_ca_file: %q
  client_auth: require
upstreams:
  a: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: a}
`, certFile, keyFile, caFile, hostPort(up)))
	do := func(certs []tls.Certificate) (*http.Response, error) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "api.example.com", Certificates: certs}}}
		defer c.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodGet, "https://"+te.Addr("https")+"/", nil)
		req.Header.Set(ClientCertSubjectHeader, "CN=forged")
		return c.Do(req)
	}
	if resp, err := do(nil); err == nil {
		resp.Body.Close()
		t.Fatalf("no client certificate: got %d", resp.StatusCode)
	}
	resp, err := do([]tls.Certificate{clientCert})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := decodeEcho(t, body).Header.Get(ClientCertSubjectHeader); got != "CN=partner-1,O=Partner" {
		t.Fatalf("upstream saw subject %q", got)
	}
}

// tls.redirect_http: false makes the http listener serve the routes too.
func TestEdgeTLSWithoutRedirect(t *testing.T) {
	up := echoUpstream(t, "a")
	certFile, keyFile, _ := selfSigned(t, t.TempDir(), "api.example.com")
	te := startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
tls:
  certificates: [{cert_file: %q, key_file: %q}]
  redirect_http: false
upstreams:
  a: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: a}
`, certFile, keyFile, hostPort(up)))
	resp, body := get(t, te.url+"/x")
	if resp.StatusCode != http.StatusOK || decodeEcho(t, body).Header.Get("X-Forwarded-Proto") != "http" {
		t.Fatalf("plain request: %d %s", resp.StatusCode, body)
	}
}
