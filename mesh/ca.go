package mesh

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"
)

// Default lifetimes. Leaves are short-lived on purpose: with no revocation in
// the mesh, a stolen leaf key is only good until the leaf expires.
const (
	DefaultRootTTL         = 10 * 365 * 24 * time.Hour
	DefaultIntermediateTTL = 365 * 24 * time.Hour
	DefaultLeafTTL         = 24 * time.Hour
	// backdate moves NotBefore into the past so that a peer whose clock is a
	// little behind the issuer's does not refuse a certificate issued just now.
	backdate = 30 * time.Second
)

// Authority is a CA in memory: the certificate and key that sign, the
// certificates between it and the root, and the trust bundle.
type Authority struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// Chain holds Cert's issuers, nearest first, up to but excluding the
	// root; it is empty for a root.
	Chain []*x509.Certificate
	// Roots is the trust bundle every workload of the trust domain verifies
	// peers against.
	Roots []*x509.Certificate
}

// Issued is a workload certificate (an X509-SVID) with its key.
type Issued struct {
	ID   ID
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// Chain is what a peer needs to reach the root: the intermediates, nearest
	// first; the root itself is left out, as the peer has it in its bundle.
	Chain []*x509.Certificate
}

// NewRoot creates a self-signed root CA for trust domain td, valid for ttl
// (DefaultRootTTL if zero) from now.
func NewRoot(td TrustDomain, ttl time.Duration, now time.Time) (*Authority, error) {
	if td.IsZero() {
		return nil, errors.New("creating root CA: trust domain is empty")
	}
	if ttl == 0 {
		ttl = DefaultRootTTL
	}
	if ttl < 0 {
		return nil, fmt.Errorf("creating root CA: ttl %s is negative", ttl)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("creating root CA: generating key: %w", err)
	}
	tmpl, err := caTemplate(td, "root", now, now.Add(ttl))
	if err != nil {
		return nil, fmt.Errorf("creating root CA: %w", err)
	}
	cert, err := sign(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating root CA: %w", err)
	}
	return &Authority{Cert: cert, Key: key, Roots: []*x509.Certificate{cert}}, nil
}

// TrustDomain is the trust domain the authority issues for, read from the
// SPIFFE ID in its certificate (spiffe://TRUST_DOMAIN).
func (a *Authority) TrustDomain() TrustDomain {
	id, err := IDFromCert(a.Cert)
	if err != nil {
		return TrustDomain{}
	}
	return id.TrustDomain()
}

// NewIntermediate creates a CA signed by a, valid for ttl
// (DefaultIntermediateTTL if zero) from now, so that the root's key can stay
// offline while the intermediate issues leaves.
func (a *Authority) NewIntermediate(ttl time.Duration, now time.Time) (*Authority, error) {
	if ttl == 0 {
		ttl = DefaultIntermediateTTL
	}
	td := a.TrustDomain()
	notAfter, err := a.checkLifetime(ttl, now)
	if err != nil {
		return nil, fmt.Errorf("creating intermediate CA for %s: %w", td, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("creating intermediate CA for %s: generating key: %w", td, err)
	}
	tmpl, err := caTemplate(td, "intermediate", now, notAfter)
	if err != nil {
		return nil, fmt.Errorf("creating intermediate CA for %s: %w", td, err)
	}
	cert, err := sign(tmpl, a.Cert, key.Public(), a.Key)
	if err != nil {
		return nil, fmt.Errorf("creating intermediate CA for %s: %w", td, err)
	}
	return &Authority{Cert: cert, Key: key, Chain: a.issuerChain(), Roots: a.Roots}, nil
}

// Issue creates a workload certificate for id, valid for ttl
// (DefaultLeafTTL if zero) from now. An id outside the authority's trust
// domain is refused: peers would look it up in another trust domain's
// bundle, so it could never verify.
func (a *Authority) Issue(id ID, ttl time.Duration, now time.Time) (*Issued, error) {
	if id.IsZero() {
		return nil, errors.New("issuing certificate: SPIFFE ID is empty")
	}
	if ttl == 0 {
		ttl = DefaultLeafTTL
	}
	td := a.TrustDomain()
	if !id.MemberOf(td) {
		return nil, fmt.Errorf("issuing certificate for %s: outside the CA's trust domain %s", id, td)
	}
	notAfter, err := a.checkLifetime(ttl, now)
	if err != nil {
		return nil, fmt.Errorf("issuing certificate for %s: %w", id, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issuing certificate for %s: generating key: %w", id, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("issuing certificate for %s: %w", id, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Causeway mesh"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	cert, err := sign(tmpl, a.Cert, key.Public(), a.Key)
	if err != nil {
		return nil, fmt.Errorf("issuing certificate for %s: %w", id, err)
	}
	return &Issued{ID: id, Cert: cert, Key: key, Chain: a.issuerChain()}, nil
}

// checkLifetime refuses a certificate that would outlive its issuer: peers
// would refuse the chain from the moment the issuer expires, and a clamped
// lifetime would surprise whoever asked for ttl.
func (a *Authority) checkLifetime(ttl time.Duration, now time.Time) (time.Time, error) {
	if ttl < 0 {
		return time.Time{}, fmt.Errorf("ttl %s is negative", ttl)
	}
	if !now.Before(a.Cert.NotAfter) {
		return time.Time{}, fmt.Errorf("the issuing CA expired at %s", a.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	notAfter := now.Add(ttl)
	if notAfter.After(a.Cert.NotAfter) {
		return time.Time{}, fmt.Errorf("ttl %s would outlive the issuing CA, which expires at %s", ttl, a.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return notAfter, nil
}

// issuerChain is the chain a certificate signed by a presents: a itself
// and its own chain, unless a is a root, which peers already hold.
func (a *Authority) issuerChain() []*x509.Certificate {
	if a.isRoot() {
		return nil
	}
	return append([]*x509.Certificate{a.Cert}, a.Chain...)
}

func (a *Authority) isRoot() bool {
	for _, r := range a.Roots {
		if r.Equal(a.Cert) {
			return true
		}
	}
	return false
}

// BundlePEM is the trust bundle, the root certificates in PEM.
func (a *Authority) BundlePEM() []byte { return certsPEM(a.Roots...) }

// CertPEM is the authority's certificate followed by its chain, in PEM.
func (a *Authority) CertPEM() []byte {
	return certsPEM(append([]*x509.Certificate{a.Cert}, a.Chain...)...)
}

// KeyPEM is the authority's private key in PKCS #8 PEM.
func (a *Authority) KeyPEM() ([]byte, error) { return keyPEM(a.Key) }

// CertPEM is the leaf followed by its chain, in PEM: the content of a
// workload's certificate file.
func (i *Issued) CertPEM() []byte {
	return certsPEM(append([]*x509.Certificate{i.Cert}, i.Chain...)...)
}

// KeyPEM is the leaf's private key in PKCS #8 PEM.
func (i *Issued) KeyPEM() ([]byte, error) { return keyPEM(i.Key) }

// TLSCertificate is the leaf, its chain and key, ready for a tls.Config.
func (i *Issued) TLSCertificate() tls.Certificate {
	c := tls.Certificate{PrivateKey: i.Key, Leaf: i.Cert}
	c.Certificate = append(c.Certificate, i.Cert.Raw)
	for _, ch := range i.Chain {
		c.Certificate = append(c.Certificate, ch.Raw)
	}
	return c
}

func caTemplate(td TrustDomain, role string, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Causeway mesh"}, CommonName: td.Name() + " " + role + " CA"},
		NotBefore:             notBefore.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{td.ID().URL()},
		// A CA of this trust domain can only vouch for IDs in it: should an
		// intermediate's key leak, it cannot mint IDs of a federated domain.
		PermittedURIDomains: []string{td.Name()},
	}, nil
}

func sign(tmpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the certificate just signed: %w", err)
	}
	return cert, nil
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return serial, nil
}

func certsPEM(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseCertsPEM reads every CERTIFICATE block; anything else in the file is
// an error, so that a key pasted into a certificate file is noticed.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q (want CERTIFICATE)", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	if len(bytes.TrimSpace(data)) > 0 {
		return nil, errors.New("trailing data that is not PEM")
	}
	return certs, nil
}

// parseKeyPEM reads an ECDSA key in PKCS #8 ("PRIVATE KEY", what Causeway
// writes) or SEC 1 ("EC PRIVATE KEY", what `openssl ecparam -genkey` writes).
func parseKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM private key found")
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing PKCS #8 key: %w", err)
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("the key is a %T; the CA signs with ECDSA keys", k)
		}
		return ec, nil
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing EC key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("unexpected PEM block %q (want PRIVATE KEY)", block.Type)
}
