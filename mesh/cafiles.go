package mesh

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
)

// File names in a CA directory. A root CA directory (ca init) holds
// root.pem, root-key.pem and bundle.pem; an intermediate CA directory
// (ca intermediate) holds intermediate.pem (the intermediate followed by
// its chain, root excluded), intermediate-key.pem and a copy of bundle.pem.
const (
	RootCertFile         = "root.pem"
	RootKeyFile          = "root-key.pem"
	IntermediateCertFile = "intermediate.pem"
	IntermediateKeyFile  = "intermediate-key.pem"
	BundleFile           = "bundle.pem"
)

// CAOption adjusts InitCA, IssueIntermediate and IssueLeaf.
type CAOption func(*caOptions)

type caOptions struct {
	ttl time.Duration
	now func() time.Time
}

// WithTTL sets the lifetime of the CA certificate that InitCA or
// IssueIntermediate creates (zero: the default for its kind).
func WithTTL(d time.Duration) CAOption { return func(o *caOptions) { o.ttl = d } }

// WithClock sets the clock that dates certificates (default time.Now).
func WithClock(now func() time.Time) CAOption { return func(o *caOptions) { o.now = now } }

func caOpts(opts []CAOption) caOptions {
	o := caOptions{now: time.Now}
	for _, f := range opts {
		f(&o)
	}
	if o.now == nil {
		o.now = time.Now
	}
	return o
}

// InitCA creates a root CA for trustDomain in dir: root.pem, root-key.pem
// (mode 0600) and bundle.pem. It refuses to overwrite an existing CA key:
// every certificate of the trust domain depends on it.
func InitCA(dir, trustDomain string, opts ...CAOption) error {
	o := caOpts(opts)
	td, err := ParseTrustDomain(trustDomain)
	if err != nil {
		return fmt.Errorf("ca init: %w", err)
	}
	if err := refuseExisting(dir, RootKeyFile, RootCertFile, IntermediateKeyFile); err != nil {
		return fmt.Errorf("ca init: %w", err)
	}
	a, err := NewRoot(td, o.ttl, o.now())
	if err != nil {
		return fmt.Errorf("ca init: %w", err)
	}
	if err := saveAuthority(dir, a, RootCertFile, RootKeyFile); err != nil {
		return fmt.Errorf("ca init: %w", err)
	}
	return nil
}

// IssueIntermediate creates in outDir an intermediate CA signed by the CA in
// parentDir (a root or another intermediate). The new directory can then
// issue leaves while the root's key is kept offline.
func IssueIntermediate(parentDir, outDir string, opts ...CAOption) error {
	o := caOpts(opts)
	parent, err := LoadCA(parentDir)
	if err != nil {
		return fmt.Errorf("ca intermediate: %w", err)
	}
	if filepath.Clean(parentDir) == filepath.Clean(outDir) {
		return fmt.Errorf("ca intermediate: -out %s is the parent CA's own directory", outDir)
	}
	if err := refuseExisting(outDir, IntermediateKeyFile, IntermediateCertFile, RootKeyFile); err != nil {
		return fmt.Errorf("ca intermediate: %w", err)
	}
	a, err := parent.NewIntermediate(o.ttl, o.now())
	if err != nil {
		return fmt.Errorf("ca intermediate: %w", err)
	}
	if err := saveAuthority(outDir, a, IntermediateCertFile, IntermediateKeyFile); err != nil {
		return fmt.Errorf("ca intermediate: %w", err)
	}
	return nil
}

// IssueLeaf issues a workload certificate for id from the CA in caDir and
// writes outPrefix.pem (leaf followed by its chain) and outPrefix-key.pem
// (mode 0600). ttl zero means DefaultLeafTTL. Existing files are replaced
// atomically, so a running Source picks the new pair up as a rotation.
func IssueLeaf(caDir string, id ID, ttl time.Duration, outPrefix string, opts ...CAOption) error {
	o := caOpts(opts)
	if outPrefix == "" {
		return errors.New("ca issue: the output prefix is empty")
	}
	a, err := LoadCA(caDir)
	if err != nil {
		return fmt.Errorf("ca issue: %w", err)
	}
	leaf, err := a.Issue(id, ttl, o.now())
	if err != nil {
		return fmt.Errorf("ca issue: %w", err)
	}
	keyPEM, err := leaf.KeyPEM()
	if err != nil {
		return fmt.Errorf("ca issue: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(outPrefix), 0o755); err != nil {
		return fmt.Errorf("ca issue: %w", err)
	}
	// Key first, then the certificate, each by rename: a watching Source
	// waits for the files to settle and reads the pair together; were it
	// to read between the renames, it would refuse the mismatched pair
	// and keep the old one rather than ever serve a wrong key.
	if err := WriteFileAtomic(outPrefix+"-key.pem", keyPEM, 0o600); err != nil {
		return fmt.Errorf("ca issue: %w", err)
	}
	if err := WriteFileAtomic(outPrefix+".pem", leaf.CertPEM(), 0o644); err != nil {
		return fmt.Errorf("ca issue: %w", err)
	}
	return nil
}

// LoadCA reads the CA in dir: the intermediate if dir holds one, else the
// root. It checks that the key matches the certificate and that the
// certificate chains to the bundle, so a mixed-up directory is found before
// it signs anything.
func LoadCA(dir string) (*Authority, error) {
	certFile, keyFile := IntermediateCertFile, IntermediateKeyFile
	if _, err := os.Stat(filepath.Join(dir, certFile)); errors.Is(err, fs.ErrNotExist) {
		certFile, keyFile = RootCertFile, RootKeyFile
	}
	certs, err := readCerts(filepath.Join(dir, certFile))
	if err != nil {
		return nil, fmt.Errorf("loading CA from %s: %w", dir, err)
	}
	roots, err := readCerts(filepath.Join(dir, BundleFile))
	if err != nil {
		return nil, fmt.Errorf("loading CA from %s: %w", dir, err)
	}
	keyData, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return nil, fmt.Errorf("loading CA from %s: %w", dir, err)
	}
	key, err := parseKeyPEM(keyData)
	if err != nil {
		return nil, fmt.Errorf("loading CA from %s: %s: %w", dir, keyFile, err)
	}
	a := &Authority{Cert: certs[0], Key: key, Chain: certs[1:], Roots: roots}
	if !key.PublicKey.Equal(a.Cert.PublicKey) {
		return nil, fmt.Errorf("loading CA from %s: %s does not belong to %s", dir, keyFile, certFile)
	}
	if !a.Cert.IsCA || a.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("loading CA from %s: %s is not a CA certificate", dir, certFile)
	}
	if a.TrustDomain().IsZero() {
		return nil, fmt.Errorf("loading CA from %s: %s carries no spiffe://TRUST_DOMAIN URI", dir, certFile)
	}
	if _, err := a.Cert.Verify(x509.VerifyOptions{
		Roots:         poolOf(roots),
		Intermediates: poolOf(a.Chain),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		CurrentTime:   a.Cert.NotBefore.Add(backdate), // validity is checked when issuing, with the caller's clock
	}); err != nil {
		return nil, fmt.Errorf("loading CA from %s: %s does not chain to %s: %w", dir, certFile, BundleFile, err)
	}
	return a, nil
}

func poolOf(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := parseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

func refuseExisting(dir string, names ...string) error {
	for _, n := range names {
		p := filepath.Join(dir, n)
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists: refusing to overwrite CA material (remove it first)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func saveAuthority(dir string, a *Authority, certName, keyName string) error {
	keyPEM, err := a.KeyPEM()
	if err != nil {
		return err
	}
	// The directory holds a CA key: nobody else needs to list it.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode fs.FileMode
	}{
		{keyName, keyPEM, 0o600},
		{certName, a.CertPEM(), 0o644},
		{BundleFile, a.BundlePEM(), 0o644},
	} {
		if err := WriteFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// WriteFileAtomic writes data to a temporary file beside path and renames it
// over path, so a reader (a Source watching the directory) sees the old or
// the new content, never half of it. The temporary file is created with mode
// 0600 and only then given mode, so a key is never readable by others.
func WriteFileAtomic(path string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	ok = true
	return nil
}

// VerifyFile checks a workload certificate file (leaf followed by its
// chain) against a bundle file at now, with the rules peers apply in a
// handshake, and returns the leaf's ID and the certificates read. It is
// what `causeway ca verify` runs before a certificate is deployed.
func VerifyFile(certFile, bundleFile string, now time.Time) (ID, []*x509.Certificate, error) {
	chain, err := readCerts(certFile)
	if err != nil {
		return ID{}, nil, fmt.Errorf("verifying %s: %w", certFile, err)
	}
	roots, err := readCerts(bundleFile)
	if err != nil {
		return ID{}, chain, fmt.Errorf("verifying %s: %w", certFile, err)
	}
	id, err := IDFromCert(chain[0])
	if err != nil {
		return ID{}, chain, fmt.Errorf("verifying %s: %w", certFile, err)
	}
	if _, err := verifySVID(chain, x509bundle.FromX509Authorities(id.TrustDomain(), roots), now); err != nil {
		return id, chain, fmt.Errorf("verifying %s against %s: %w", certFile, bundleFile, err)
	}
	return id, chain, nil
}
