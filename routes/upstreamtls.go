package routes

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// UpstreamTLS says how the edge verifies an upstream that terminates TLS
// itself (scheme: https): the name it asks for, whom it trusts, and which
// names the certificate must hold. Without it an https upstream is
// verified against the system roots and the endpoint's own address.
// Gateway API's BackendTLSPolicy maps onto it.
type UpstreamTLS struct {
	// ServerName is sent as SNI and, without SubjectAltNames, is the name
	// the certificate must hold.
	ServerName string `yaml:"server_name"`
	// CAFile is a PEM bundle of the roots trusted for this upstream, read
	// when the file is loaded; CAPEM is the same inline. Neither: the
	// system roots.
	CAFile string `yaml:"ca_file"`
	CAPEM  string `yaml:"ca_pem"`
	// SubjectAltNames, when set, replace ServerName as what is checked:
	// the certificate must hold at least one of them.
	SubjectAltNames []SubjectAltName `yaml:"subject_alt_names"`
}

// SubjectAltName is one name an upstream's certificate may hold: a DNS
// name (hostname) or a URI such as a SPIFFE ID (uri), exactly one.
type SubjectAltName struct {
	Hostname string `yaml:"hostname"`
	URI      string `yaml:"uri"`
}

// ParseCABundle reads a PEM bundle of CA certificates: every block must be
// a CERTIFICATE that parses, and there must be at least one, so a
// truncated or garbled bundle is refused instead of trusting less (or
// nothing) silently.
func ParseCABundle(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, not CERTIFICATE", len(certs)+1, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("trailing data that is not PEM")
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return certs, nil
}

// AbsoluteURI reports whether s is a URI subject alternative name the
// model takes: it parses, has a scheme, and has something after it. A
// provider checks its URIs with it before they reach the model, which
// would otherwise refuse every route with the one it cannot read.
func AbsoluteURI(s string) bool {
	pu, err := url.Parse(s)
	return err == nil && pu.Scheme != "" && (pu.Opaque != "" || pu.Host != "" || pu.Path != "")
}

// checkUpstreamTLS checks an upstream's tls section (p is its key path).
func (c *checker) checkUpstreamTLS(p string, u Upstream) {
	t := u.TLS
	if t == nil {
		return
	}
	p += ".tls"
	if u.MeshIdentity != "" {
		c.errorf(p, "mesh upstreams are verified by their SPIFFE ID (mesh_identity): leave tls out")
		return
	}
	if u.Scheme != "https" {
		c.errorf(p, "needs scheme: https")
	}
	if h := t.ServerName; h != "" && net.ParseIP(h) == nil && (!hostRe.MatchString(h) || h[0] == '*') {
		c.errorf(p+".server_name", "%q is not a host name (lower case, no wildcard, no port)", h)
	}
	switch {
	case t.CAFile != "" && t.CAPEM != "":
		c.errorf(p+".ca_pem", "ca_file and ca_pem are exclusive: use one")
	case t.CAPEM != "":
		if _, err := ParseCABundle([]byte(t.CAPEM)); err != nil {
			c.errorf(p+".ca_pem", "not a CA bundle: %v", err)
		}
	}
	for i, s := range t.SubjectAltNames {
		sp := fmt.Sprintf("%s.subject_alt_names[%d]", p, i)
		switch {
		case (s.Hostname == "") == (s.URI == ""):
			c.errorf(sp, "needs exactly one of hostname and uri")
		case s.Hostname != "":
			if !hostRe.MatchString(s.Hostname) {
				c.errorf(sp+".hostname", "%q is not a host name (lower case; a wildcard only as *.)", s.Hostname)
			}
		default:
			if !AbsoluteURI(s.URI) {
				c.errorf(sp+".uri", "%q is not an absolute URI (scheme:rest, such as spiffe://example.org/ns/a/sa/b)", s.URI)
			}
		}
	}
}
