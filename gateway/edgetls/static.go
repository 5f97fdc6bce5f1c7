package edgetls

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// staticSet is one immutable generation of the static certificates, indexed
// by the names the certificates themselves carry. A rotation builds a new set
// and swaps it in whole, so a handshake sees either the old or the new
// certificates, never a mix.
type staticSet struct {
	certs []*tls.Certificate // file order, then the providers'
	// def is served when no certificate matches the server name (or there
	// is none): the file's first, else the first provider pair marked
	// Default, else none (defaultCert).
	def      *tls.Certificate
	exact    map[string]*tls.Certificate // "api.example.com"
	wildcard map[string]*tls.Certificate // "example.com" for "*.example.com"
	// fromFile are the file's certificates: the one that names a host
	// exactly wins it over every provider's.
	fromFile map[*tls.Certificate]bool
	// scopedExact and scopedWild are the provider pairs with Hosts (a
	// Gateway listener's hostname), by that hostname: "shop.example.com",
	// and "example.com" for "*.example.com". Those pairs are served only
	// for the names their hostname matches, never by their own names.
	scopedExact map[string][]*tls.Certificate
	scopedWild  map[string][]*tls.Certificate
	expiry      map[string]time.Time // metric label -> NotAfter
	clientCA    *x509.CertPool       // nil without client_ca_file
	sources     map[string][32]byte  // every file read -> SHA-256 of what was read
}

// loadStatic reads every certificate, key and client CA file named in cfg.
// Errors name the file so an operator can find the culprit.
func loadStatic(cfg *routes.TLS) (*staticSet, error) {
	s := &staticSet{
		exact:       map[string]*tls.Certificate{},
		wildcard:    map[string]*tls.Certificate{},
		fromFile:    map[*tls.Certificate]bool{},
		scopedExact: map[string][]*tls.Certificate{},
		scopedWild:  map[string][]*tls.Certificate{},
		expiry:      map[string]time.Time{},
		sources:     map[string][32]byte{},
	}
	for i, c := range cfg.Certificates {
		certPEM, err := s.read(c.CertFile)
		if err != nil {
			return nil, fmt.Errorf("tls.certificates[%d]: reading cert_file %s: %w", i, c.CertFile, err)
		}
		keyPEM, err := s.read(c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.certificates[%d]: reading key_file %s: %w", i, c.KeyFile, err)
		}
		if err := s.add(certPEM, keyPEM, c.CertFile+" with "+c.KeyFile, nil); err != nil {
			return nil, fmt.Errorf("tls.certificates[%d]: %w", i, err)
		}
		s.fromFile[s.certs[len(s.certs)-1]] = true
	}
	// A provider's certificates come after the file's, so the file's win a
	// name both have, and the file's first stays the default.
	if len(s.certs) > 0 {
		s.def = s.certs[0]
	}
	for _, c := range cfg.FromProviders {
		if err := s.add(c.CertPEM, c.KeyPEM, c.Source, c.Hosts); err != nil {
			return nil, err
		}
		if c.Default && s.def == nil {
			s.def = s.certs[len(s.certs)-1]
		}
	}
	if cfg.ClientCAFile != "" {
		data, err := s.read(cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.client_ca_file: reading %s: %w", cfg.ClientCAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("tls.client_ca_file: %s holds no PEM certificate", cfg.ClientCAFile)
		}
		s.clientCA = pool
	}
	return s, nil
}

// CheckPair says whether the manager would serve the pair: a certificate
// and key that match, and a certificate that names a DNS host. A provider
// checks what it hands over with it, so that one bad source is reported
// where it is, not as a refused configuration.
func CheckPair(certPEM, keyPEM []byte) error {
	s := &staticSet{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}, expiry: map[string]time.Time{}}
	return s.add(certPEM, keyPEM, "tls.crt with tls.key", nil)
}

// add parses a pair and serves it for the names its certificate gives,
// or, with hosts, for the names those hostnames match (routes.
// InlineCertificate.Hosts). what names the pair in errors (files, or a
// provider's source); the key itself never appears in one.
func (s *staticSet) add(certPEM, keyPEM []byte, what string, hosts []string) error {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("loading %s: %w", what, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("parsing %s: %w", what, err)
		}
		cert.Leaf = leaf
	}
	names := certNames(leaf)
	if len(names) == 0 {
		return fmt.Errorf("%s names no DNS host (no DNS SAN and no common name)", what)
	}
	s.certs = append(s.certs, &cert)
	if _, dup := s.expiry[names[0]]; !dup {
		s.expiry[names[0]] = leaf.NotAfter
	}
	if len(hosts) > 0 {
		for _, h := range hosts {
			h = normalizeSNI(h)
			if base, ok := strings.CutPrefix(h, "*."); ok {
				s.scopedWild[base] = append(s.scopedWild[base], &cert)
			} else {
				s.scopedExact[h] = append(s.scopedExact[h], &cert)
			}
		}
		return nil
	}
	for _, n := range names {
		// The first certificate that names a host wins, so the order of
		// the list is the operator's way of breaking ties.
		if base, ok := strings.CutPrefix(n, "*."); ok {
			if _, dup := s.wildcard[base]; !dup {
				s.wildcard[base] = &cert
			}
		} else if _, dup := s.exact[n]; !dup {
			s.exact[n] = &cert
		}
	}
	return nil
}

func (s *staticSet) read(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s.sources[path] = sha256.Sum256(data)
	return data, nil
}

// unchanged reports whether every file s was built from still holds what it
// held then. Content, not size and time: a renewed certificate often has the
// same size, and copy tools may keep modification times.
func (s *staticSet) unchanged() bool {
	for path, old := range s.sources {
		data, err := os.ReadFile(path)
		if err != nil || sha256.Sum256(data) != old {
			return false
		}
	}
	return true
}

// match returns the certificate for an SNI name: a file's certificate
// naming it exactly first; then the pairs of the most specific listener
// hostname that matches it (scoped); then any other certificate naming it,
// exactly and then by a wildcard covering exactly one more label (as RFC
// 6125 allows). It returns nil when none does; the caller decides on the
// default.
func (s *staticSet) match(name string) *tls.Certificate {
	if c := s.exact[name]; c != nil && s.fromFile[c] {
		return c
	}
	if c := s.scoped(name); c != nil {
		return c
	}
	if c := s.exact[name]; c != nil {
		return c
	}
	if _, base, ok := strings.Cut(name, "."); ok && base != "" {
		if c := s.wildcard[base]; c != nil {
			return c
		}
	}
	return nil
}

// scoped returns a pair whose listener hostname matches name: the exact
// hostname, else the wildcard with the longest suffix (the Gateway API's
// listener precedence). Among that hostname's pairs, the first whose
// certificate names name, else the first: the listener's certificate is
// what its hostname is served with, whatever names it carries.
func (s *staticSet) scoped(name string) *tls.Certificate {
	if name == "" {
		return nil
	}
	list := s.scopedExact[name]
	for rest := name; list == nil; {
		_, base, ok := strings.Cut(rest, ".")
		if !ok || base == "" {
			return nil
		}
		list, rest = s.scopedWild[base], base
	}
	for _, c := range list {
		if validFor(c.Leaf, name) {
			return c
		}
	}
	return list[0]
}

// validFor reports whether leaf is valid for name: an exact name or a
// wildcard covering exactly one more label.
func validFor(leaf *x509.Certificate, name string) bool {
	_, base, _ := strings.Cut(name, ".")
	for _, n := range certNames(leaf) {
		if n == name || base != "" && n == "*."+base {
			return true
		}
	}
	return false
}

// defaultCert is the certificate for a handshake no certificate matches
// (no SNI, or an unknown name): the file's first, else a provider pair
// marked Default; nil when there is neither. A provider's other pairs
// are never the default: their order is the Gateways' age, which a
// tenant allowed to create a Gateway decides.
func (s *staticSet) defaultCert() *tls.Certificate {
	return s.def
}

// certNames returns the DNS names a certificate is valid for, lower-cased;
// the common name counts only when there is no DNS SAN, as in browsers.
func certNames(leaf *x509.Certificate) []string {
	names := make([]string, 0, len(leaf.DNSNames))
	for _, n := range leaf.DNSNames {
		names = append(names, strings.ToLower(strings.TrimSuffix(n, ".")))
	}
	if len(names) == 0 && leaf.Subject.CommonName != "" && !strings.ContainsAny(leaf.Subject.CommonName, " /") {
		names = append(names, strings.ToLower(leaf.Subject.CommonName))
	}
	return names
}

// normalizeSNI lower-cases a server name and drops a trailing dot, so that
// lookups agree with certNames.
func normalizeSNI(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

var errNoCertificate = errors.New("no certificate for this server name")
