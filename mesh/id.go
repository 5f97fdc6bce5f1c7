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
	"encoding/asn1"
	"errors"
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
	if err == nil {
		err = writtenAs(cert, id)
	}
	if err != nil {
		return ID{}, fmt.Errorf("reading SPIFFE ID of certificate %x: %w", cert.SerialNumber, err)
	}
	return id, nil
}

// writtenAs refuses a certificate whose URI SAN, as written in it, is not
// exactly id. crypto/x509 hands go-spiffe the SAN through url.Parse, which
// lowers the scheme's case: "SPIFFE://example.org/ns/edge/sa/gateway", which
// the SPIFFE ID rules (and ParseID) refuse, would otherwise be read as
// spiffe://example.org/ns/edge/sa/gateway. A CA or a registration policy
// that checks the text it signs would let that spelling through as not an
// ID of ours; the mesh must not then grant it one.
func writtenAs(cert *x509.Certificate, id ID) error {
	uris, err := rawURISANs(cert)
	if err != nil {
		return err
	}
	if len(uris) != 1 || uris[0] != id.String() {
		return fmt.Errorf("URI SAN %q is not written as the SPIFFE ID %s", uris, id)
	}
	return nil
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// rawURISANs returns the uniformResourceIdentifier entries ([6] IA5String,
// RFC 5280 4.2.1.6) of cert's subjectAltName extension, byte for byte.
func rawURISANs(cert *x509.Certificate) ([]string, error) {
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var seq asn1.RawValue
		rest, err := asn1.Unmarshal(ext.Value, &seq)
		if err != nil || len(rest) != 0 || !seq.IsCompound || seq.Tag != asn1.TagSequence {
			return nil, errors.New("malformed subjectAltName extension")
		}
		var uris []string
		for b := seq.Bytes; len(b) > 0; {
			var name asn1.RawValue
			if b, err = asn1.Unmarshal(b, &name); err != nil {
				return nil, errors.New("malformed subjectAltName extension")
			}
			if name.Class == asn1.ClassContextSpecific && name.Tag == 6 {
				uris = append(uris, string(name.Bytes))
			}
		}
		return uris, nil
	}
	return nil, nil
}
