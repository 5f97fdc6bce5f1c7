package proxy

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/causewayhq/causeway/routes"
)

// UpstreamTLSConfig is the client configuration for an https upstream
// outside the mesh: the system roots and the endpoint's own address
// without a tls section; with one, its roots, its server name (the SNI,
// and the name checked) and, when given, its subject alternative names,
// one of which the certificate must hold in place of the server name.
// A handshake that fails any check fails the attempt (502); nothing falls
// back to plain HTTP or to a weaker check.
func UpstreamTLSConfig(u routes.Upstream) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	t := u.TLS
	if t == nil {
		return cfg, nil
	}
	cfg.ServerName = t.ServerName
	var pem []byte
	switch {
	case t.CAFile != "":
		b, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pem = b
	case t.CAPEM != "":
		pem = []byte(t.CAPEM)
	}
	if pem != nil {
		certs, err := routes.ParseCABundle(pem)
		if err != nil {
			return nil, fmt.Errorf("tls CA bundle: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		for _, c := range certs {
			cfg.RootCAs.AddCert(c)
		}
	}
	if len(t.SubjectAltNames) == 0 {
		return cfg, nil
	}
	// The chain is verified as usual but the name is not the server
	// name: crypto/tls checks the chain only when told to skip its own
	// check, so VerifyConnection does both.
	roots, sans := cfg.RootCAs, t.SubjectAltNames
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("upstream presented no certificate")
		}
		leaf := cs.PeerCertificates[0]
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return err
		}
		if !holdsAnySAN(leaf, sans) {
			return fmt.Errorf("upstream certificate holds none of the subject alternative names %s", sanList(sans))
		}
		return nil
	}
	return cfg, nil
}

// holdsAnySAN says whether leaf has one of sans: a DNS name as
// VerifyHostname matches it (a wildcard in the certificate covers one
// label) or, for a wanted wildcard, the same wildcard; a URI exactly.
func holdsAnySAN(leaf *x509.Certificate, sans []routes.SubjectAltName) bool {
	for _, s := range sans {
		switch {
		case s.URI != "":
			for _, u := range leaf.URIs {
				if u.String() == s.URI {
					return true
				}
			}
		case strings.HasPrefix(s.Hostname, "*."):
			for _, d := range leaf.DNSNames {
				if strings.EqualFold(d, s.Hostname) {
					return true
				}
			}
		case s.Hostname != "":
			if leaf.VerifyHostname(s.Hostname) == nil {
				return true
			}
		}
	}
	return false
}

func sanList(sans []routes.SubjectAltName) string {
	var b strings.Builder
	for i, s := range sans {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(s.Hostname + s.URI)
	}
	return b.String()
}

// tlsKey identifies an upstream's TLS settings for transportKey, the CA
// file by its content: a changed bundle needs a new pool, not the old
// pool's connections and configuration.
func tlsKey(t *routes.UpstreamTLS) string {
	if t == nil {
		return ""
	}
	h := sha256.New()
	fmt.Fprintf(h, "%q|%q|%q|", t.ServerName, t.CAFile, t.CAPEM)
	if t.CAFile != "" {
		b, err := os.ReadFile(t.CAFile)
		if err != nil {
			fmt.Fprintf(h, "unreadable %v", err)
		}
		h.Write(b)
	}
	for _, s := range t.SubjectAltNames {
		fmt.Fprintf(h, "|%q|%q", s.Hostname, s.URI)
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}
