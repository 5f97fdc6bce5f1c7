// Package meshtest issues mesh certificates in memory for tests: a CA per
// test, workload certificates with the knobs tests need (expired, CA flag,
// wrong URIs), and helpers that write them to files or open a mesh.Source on
// them. Any package's tests may use it; production code must not.
package meshtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"log/slog"
	"math/big"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh"
)

// CA is an in-memory certificate authority bound to one test: its methods
// fail the test instead of returning errors.
type CA struct {
	*mesh.Authority
	t testing.TB
}

// NewCA creates a root CA for trustDomain (e.g. "example.org").
func NewCA(t testing.TB, trustDomain string) *CA {
	t.Helper()
	td, err := mesh.ParseTrustDomain(trustDomain)
	if err != nil {
		t.Fatalf("meshtest: %v", err)
	}
	a, err := mesh.NewRoot(td, 0, time.Now())
	if err != nil {
		t.Fatalf("meshtest: %v", err)
	}
	return &CA{Authority: a, t: t}
}

// Intermediate creates an intermediate CA signed by c; its leaves carry the
// intermediate in their chain and verify against c's bundle.
func (c *CA) Intermediate() *CA {
	c.t.Helper()
	a, err := c.Authority.NewIntermediate(0, time.Now())
	if err != nil {
		c.t.Fatalf("meshtest: %v", err)
	}
	return &CA{Authority: a, t: c.t}
}

// Pool is the CA's bundle as a certificate pool.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range c.Roots {
		p.AddCert(r)
	}
	return p
}

// Cert is an issued workload certificate in every form a test may need.
type Cert struct {
	// ID is the SPIFFE ID asked for (zero if URIs replaced it).
	ID mesh.ID
	// CertPEM is the leaf followed by its chain; KeyPEM its PKCS #8 key.
	CertPEM, KeyPEM []byte
	Leaf            *x509.Certificate
	TLS             tls.Certificate
}

// Option changes what Issue produces.
type Option func(*spec)

type spec struct {
	notBefore, notAfter time.Time
	isCA                bool
	uris                []string
	urisSet             bool
	rawURIs             []string
}

// TTL sets the lifetime from now (default 24h).
func TTL(d time.Duration) Option {
	return func(s *spec) { s.notBefore, s.notAfter = time.Now().Add(-time.Minute), time.Now().Add(d) }
}

// Validity sets NotBefore and NotAfter exactly, e.g. to issue a certificate
// that expired, or one valid only under an injected clock.
func Validity(notBefore, notAfter time.Time) Option {
	return func(s *spec) { s.notBefore, s.notAfter = notBefore, notAfter }
}

// Expired issues a certificate that expired an hour ago.
func Expired() Option {
	return Validity(time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
}

// AsCA sets the CA flag on the leaf, which SPIFFE verification refuses.
func AsCA() Option { return func(s *spec) { s.isCA = true } }

// URIs replaces the URI SANs (none, two, or not spiffe://), to test that
// verification insists on exactly one SPIFFE ID.
func URIs(uris ...string) Option { return func(s *spec) { s.uris, s.urisSet = uris, true } }

// RawURIs writes the URI SANs byte for byte. URIs goes through url.Parse,
// which lowers a scheme's case, so "SPIFFE://..." can only be issued
// this way.
func RawURIs(uris ...string) Option {
	return func(s *spec) { s.rawURIs, s.uris, s.urisSet = uris, nil, true }
}

// Issue issues a certificate for id (a SPIFFE ID string). With no options it
// goes through mesh.Authority.Issue, exactly like `causeway ca issue`.
func (c *CA) Issue(id string, opts ...Option) *Cert {
	c.t.Helper()
	sid, err := mesh.ParseID(id)
	if err != nil && !c.hasURIs(opts) {
		c.t.Fatalf("meshtest: %v", err)
	}
	if len(opts) == 0 {
		is, err := c.Authority.Issue(sid, 0, time.Now())
		if err != nil {
			c.t.Fatalf("meshtest: %v", err)
		}
		keyPEM, err := is.KeyPEM()
		if err != nil {
			c.t.Fatalf("meshtest: %v", err)
		}
		return &Cert{ID: sid, CertPEM: is.CertPEM(), KeyPEM: keyPEM, Leaf: is.Cert, TLS: is.TLSCertificate()}
	}
	s := spec{notBefore: time.Now().Add(-time.Minute), notAfter: time.Now().Add(mesh.DefaultLeafTTL), uris: []string{id}}
	for _, o := range opts {
		o(&s)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		c.t.Fatalf("meshtest: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshtest"}},
		NotBefore:             s.notBefore,
		NotAfter:              s.notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  s.isCA,
	}
	if s.isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	for _, u := range s.uris {
		pu, err := url.Parse(u)
		if err != nil {
			c.t.Fatalf("meshtest: URI %q: %v", u, err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	if s.rawURIs != nil {
		names := make([]asn1.RawValue, len(s.rawURIs))
		for i, u := range s.rawURIs {
			names[i] = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(u)}
		}
		san, err := asn1.Marshal(names)
		if err != nil {
			c.t.Fatalf("meshtest: %v", err)
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: san})
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		c.t.Fatalf("meshtest: %v", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Cert, key.Public(), c.Key)
	if err != nil {
		c.t.Fatalf("meshtest: signing: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		c.t.Fatalf("meshtest: %v", err)
	}
	is := &mesh.Issued{ID: sid, Cert: leaf, Key: key, Chain: chainOf(c.Authority)}
	keyPEM, err := is.KeyPEM()
	if err != nil {
		c.t.Fatalf("meshtest: %v", err)
	}
	if s.urisSet {
		sid = mesh.ID{}
	}
	return &Cert{ID: sid, CertPEM: is.CertPEM(), KeyPEM: keyPEM, Leaf: leaf, TLS: is.TLSCertificate()}
}

func (c *CA) hasURIs(opts []Option) bool {
	var s spec
	for _, o := range opts {
		o(&s)
	}
	return s.urisSet
}

// chainOf is what a leaf signed by a presents: a and its chain, unless a is
// a root.
func chainOf(a *mesh.Authority) []*x509.Certificate {
	for _, r := range a.Roots {
		if r.Equal(a.Cert) {
			return nil
		}
	}
	return append([]*x509.Certificate{a.Cert}, a.Chain...)
}

// WriteFiles writes the certificate to dir/name.pem and its key to
// dir/name-key.pem (mode 0600), atomically, and returns both paths.
func (c *Cert) WriteFiles(t testing.TB, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := mesh.WriteFileAtomic(keyFile, c.KeyPEM, 0o600); err != nil {
		t.Fatalf("meshtest: %v", err)
	}
	if err := mesh.WriteFileAtomic(certFile, c.CertPEM, 0o644); err != nil {
		t.Fatalf("meshtest: %v", err)
	}
	return certFile, keyFile
}

// WriteBundle writes the CA's bundle to dir/bundle.pem and returns the path.
func (c *CA) WriteBundle(dir string) string {
	c.t.Helper()
	p := filepath.Join(dir, "bundle.pem")
	if err := mesh.WriteFileAtomic(p, c.BundlePEM(), 0o644); err != nil {
		c.t.Fatalf("meshtest: %v", err)
	}
	return p
}

// Files locates a workload's certificate, key and bundle on disk.
type Files struct {
	Cert, Key, Bundle string
}

// IssueFiles issues a certificate for id and writes it, its key and the
// bundle into dir as svid.pem, svid-key.pem and bundle.pem.
func (c *CA) IssueFiles(dir, id string, opts ...Option) Files {
	c.t.Helper()
	cert, key := c.Issue(id, opts...).WriteFiles(c.t, dir, "svid")
	return Files{Cert: cert, Key: key, Bundle: c.WriteBundle(dir)}
}

// Source issues a certificate for id, writes it to a fresh temporary
// directory and opens a mesh.Source on it (logging nowhere), closed when the
// test ends.
func (c *CA) Source(id string, opts ...Option) (*mesh.Source, Files) {
	c.t.Helper()
	return c.SourceWithOptions(mesh.SourceOptions{Logger: slog.New(slog.DiscardHandler)}, id, opts...)
}

// SourceWithOptions is Source with the mesh.SourceOptions given (a clock, a
// logger, an Expiry hook).
func (c *CA) SourceWithOptions(so mesh.SourceOptions, id string, opts ...Option) (*mesh.Source, Files) {
	c.t.Helper()
	f := c.IssueFiles(c.t.TempDir(), id, opts...)
	s, err := mesh.NewSource(context.Background(), f.Cert, f.Key, f.Bundle, so)
	if err != nil {
		c.t.Fatalf("meshtest: %v", err)
	}
	c.t.Cleanup(func() { s.Close() })
	return s, f
}
