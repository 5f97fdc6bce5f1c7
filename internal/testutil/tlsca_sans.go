package testutil

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"
)

// PEM is the CA's certificate, PEM-encoded (what a ConfigMap's ca.crt or
// a CA file holds).
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// LeafSANs issues a server certificate holding the given DNS names and
// URIs (such as SPIFFE IDs), PEM-encoded with its key.
func (ca *CA) LeafSANs(tb testing.TB, serial int64, dnsNames []string, uris ...string) (certPEM, keyPEM []byte) {
	tb.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "leaf"}, DNSNames: dnsNames,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			tb.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	return ca.issue(tb, tmpl)
}
