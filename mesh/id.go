// Package mesh is Causeway's workload identity layer: SPIFFE IDs carried in
// X.509 certificates (X509-SVIDs), a small certificate authority, mTLS client
// and server configurations whose certificates and trust bundle follow their
// files as they rotate, and authorization of verified peer IDs.
//
// It does no proxying: the gateway's engine serves both the edge and the
// sidecar and takes its TLS configurations from here.
//
// Parsing and verification of SPIFFE IDs and X509-SVIDs are delegated to
// github.com/spiffe/go-spiffe/v2 (spiffeid, x509svid, x509bundle): the
// SPIFFE rules (exactly one URI SAN, leaf not a CA, chain to the bundle of the
// peer's trust domain, no host name check) are subtle, and that library is the
// reference implementation the SPIFFE project maintains.
package mesh

import (
	"crypto/x509"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ID is a SPIFFE ID such as spiffe://example.org/ns/shop/sa/orders. It is
// comparable, so it can key a map; the zero ID is no identity.
type ID = spiffeid.ID

// TrustDomain is the authority part of a SPIFFE ID (example.org).
type TrustDomain = spiffeid.TrustDomain

// ParseID parses a SPIFFE ID, refusing anything the SPIFFE ID specification
// does not allow (another scheme, upper-case trust domain, query, fragment,
// port, empty or dot path segments).
func ParseID(s string) (ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return ID{}, fmt.Errorf("parsing SPIFFE ID %q: %w", s, err)
	}
	return id, nil
}

// ParseTrustDomain parses a trust domain name ("example.org") or the trust
// domain's own ID ("spiffe://example.org").
func ParseTrustDomain(s string) (TrustDomain, error) {
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		return TrustDomain{}, fmt.Errorf("parsing trust domain %q: %w", s, err)
	}
	return td, nil
}

// IDFromCert returns the SPIFFE ID in a certificate's URI SAN. It only reads
// the certificate: it says nothing about whether the certificate is trusted.
func IDFromCert(cert *x509.Certificate) (ID, error) {
	id, err := x509svid.IDFromCert(cert)
	if err != nil {
		return ID{}, fmt.Errorf("reading SPIFFE ID of certificate %x: %w", cert.SerialNumber, err)
	}
	return id, nil
}
