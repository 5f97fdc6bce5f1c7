package mesh

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// SourceOptions configures NewSource. The zero value works.
type SourceOptions struct {
	// Logger receives reloads, refused files and expiry warnings
	// (default slog.Default()). Keys are never logged.
	Logger *slog.Logger
	// Expiry, if set, is called after every successful load with the
	// workload's ID and its certificate's NotAfter, e.g. to set the
	// certificate_expiry_timestamp_seconds gauge.
	Expiry func(id string, notAfter time.Time)
	// Now is the clock for validity checks and expiry warnings
	// (default time.Now).
	Now func() time.Time
	// TrustDomain, if set, refuses a certificate from another trust domain
	// (the routes file's mesh.trust_domain).
	TrustDomain string
	// Settle is how long the files must be quiet before a change is loaded
	// (default 100ms): a rotation replaces the key and the certificate one
	// after the other, and loading between the two would see a mismatched
	// pair.
	Settle time.Duration
	// FederatedBundles, for a source on files, maps other trust domains to
	// their bundle files: peers of those domains verify against them. The
	// files are watched like the other three. (A Workload API source gets
	// federated bundles from the agent.)
	FederatedBundles map[string]string
	// SPIFFEID, for a Workload API source, picks the SVID with this ID
	// when the agent hands out several (several registration entries match
	// the process); empty: the agent's first, with a warning when there are
	// several.
	SPIFFEID string
	// Connected, if set, is called with false when the SPIFFE Workload API
	// becomes unreachable and with true when it answers again (SPIRE
	// sources only), e.g. to set a gauge.
	Connected func(bool)
}

// defaultSettle coalesces the renames of one rotation (microseconds apart
// from `causeway ca issue`, cert-manager or a Secret update).
const defaultSettle = 100 * time.Millisecond

// Source holds a workload's current certificate, key and trust bundles,
// from files (NewSource) or from the SPIFFE Workload API (NewWorkloadAPISource),
// and replaces them when they change. TLS configurations built on it read
// the current material at every handshake, so a rotation needs no restart
// and leaves established connections alone. Nothing outside this package
// needs to know where the material comes from.
type Source struct {
	certFile, keyFile, bundleFile string
	// federated are other trust domains' bundle files (files only).
	federated map[spiffeid.TrustDomain]string
	// origin names where the material comes from in log lines: the
	// certificate file, or the Workload API socket.
	origin string
	log    *slog.Logger
	expiry func(string, time.Time)
	now    func() time.Time
	td     TrustDomain
	settle time.Duration
	// api is the Workload API side of a SPIRE source; nil for files.
	api *workloadAPI

	reloadMu sync.Mutex // serialises reloads, so an older read never overwrites a newer one
	cur      atomic.Pointer[material]

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// material is one consistent identity: the three files, or one update of
// the Workload API.
type material struct {
	id   ID
	svid *x509svid.SVID
	cert *tls.Certificate
	// bundles are the trust bundles peers are verified against: the own
	// trust domain's, and from the Workload API those of federated ones.
	bundles  *x509bundle.Set
	notAfter time.Time
	// warnAt is when less than a third of the certificate's lifetime is left:
	// by then whatever renews it should have done so.
	warnAt        time.Time
	warned        atomic.Bool
	expiredLogged atomic.Bool
}

// NewSource loads the certificate (leaf followed by its chain), key and
// trust bundle files, and watches their directories so that a change,
// including an atomic rename or a Kubernetes secret update, is picked up.
// A changed set of files that fails to load is logged and the previous
// material stays in use. Watching stops when ctx is done or Close is called.
func NewSource(ctx context.Context, certFile, keyFile, bundleFile string, opts SourceOptions) (*Source, error) {
	for name, v := range map[string]string{"certificate": certFile, "key": keyFile, "bundle": bundleFile} {
		if v == "" {
			return nil, fmt.Errorf("mesh source: the %s file is not set", name)
		}
	}
	s := &Source{
		certFile:   filepath.Clean(certFile),
		keyFile:    filepath.Clean(keyFile),
		bundleFile: filepath.Clean(bundleFile),
	}
	if err := s.init(opts); err != nil {
		return nil, err
	}
	s.origin = s.certFile
	if len(opts.FederatedBundles) > 0 {
		s.federated = map[spiffeid.TrustDomain]string{}
		for name, f := range opts.FederatedBundles {
			td, err := spiffeid.TrustDomainFromString(name)
			if err != nil {
				return nil, fmt.Errorf("mesh source: federated bundle %q: %w", name, err)
			}
			if f == "" {
				return nil, fmt.Errorf("mesh source: the bundle file of %s is not set", td)
			}
			s.federated[td] = filepath.Clean(f)
		}
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("mesh source: watching files: %w", err)
	}
	// Directories, not files: a watch on a file follows the inode, which an
	// atomic rename or a Kubernetes ..data swap replaces.
	dirs := map[string]bool{}
	for _, f := range []string{s.certFile, s.keyFile, s.bundleFile} {
		dirs[filepath.Dir(f)] = true
	}
	for _, f := range s.federated {
		dirs[filepath.Dir(f)] = true
	}
	for d := range dirs {
		if err := w.Add(d); err != nil {
			w.Close()
			return nil, fmt.Errorf("mesh source: watching %s: %w", d, err)
		}
	}
	// The first load comes after the watches are in place, so a file
	// replaced in between is not missed: its event is waiting.
	if err := s.Reload(); err != nil {
		w.Close()
		return nil, err
	}
	go s.watch(ctx, w)
	return s, nil
}

// init sets what both kinds of source share.
func (s *Source) init(opts SourceOptions) error {
	s.log, s.expiry, s.now, s.settle = opts.Logger, opts.Expiry, opts.Now, opts.Settle
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	if s.settle <= 0 {
		s.settle = defaultSettle
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if opts.TrustDomain != "" {
		td, err := ParseTrustDomain(opts.TrustDomain)
		if err != nil {
			return fmt.Errorf("mesh source: %w", err)
		}
		s.td = td
	}
	return nil
}

// reloadRetries is how many more times a failed reload is tried, after
// quiet periods of 2, 4, 8... settles, before it is reported.
const reloadRetries = 3

func (s *Source) watch(ctx context.Context, w *fsnotify.Watcher) {
	defer close(s.done)
	defer func() {
		if err := w.Close(); err != nil {
			s.closeErr = fmt.Errorf("mesh source: closing watcher: %w", err)
		}
	}()
	// A change is loaded once the files have been quiet for s.settle. A
	// load that fails is tried again, after quiet periods that double
	// (reloadRetries of them, 1.5 s in all at the default settle), before
	// it is reported: a rotation whose second file lands late (a slow
	// writer, a disk busy with fsyncs, a descheduled `causeway ca issue`)
	// is then still not an error, while a pair that stays mismatched is.
	// One retry after one settle was not enough on a loaded machine.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	trigger, retries := "", 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stop:
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if !s.relevant(ev.Name) {
				continue
			}
			trigger, retries = ev.Name, 0
			timer.Reset(s.settle)
		case <-timer.C:
			err := s.reloadRecovering()
			switch {
			case err == nil:
			case retries < reloadRetries:
				retries++
				timer.Reset(s.settle << retries)
			default:
				s.log.Warn("mesh: reload refused, keeping the current identity", "id", s.ID().String(), "trigger", trigger, "error", err)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			s.log.Error("mesh: watching identity files", "error", err)
		}
	}
}

// reloadRecovering keeps the watcher alive through a panic while parsing a
// file: a watcher that died would silently stop every later rotation.
func (s *Source) reloadRecovering() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("mesh source: panic while reloading: %v", r)
		}
	}()
	return s.Reload()
}

// relevant reports whether a change to name may change the material: one
// of the three files, or a Kubernetes-style "..data" symlink swap.
func (s *Source) relevant(name string) bool {
	name = filepath.Clean(name)
	if name == s.certFile || name == s.keyFile || name == s.bundleFile {
		return true
	}
	for _, f := range s.federated {
		if name == f {
			return true
		}
	}
	return strings.HasPrefix(filepath.Base(name), "..")
}

// Close stops watching the files or the Workload API. The last material
// stays usable, so connections still being drained keep working.
func (s *Source) Close() error {
	s.closeOnce.Do(func() { close(s.stop) })
	<-s.done
	return s.closeErr
}

// Reload reads the three files now and, if they form a valid identity,
// makes them current. NewSource and the file watcher call it; a SIGHUP
// handler may too.
func (s *Source) Reload() error {
	if s.api != nil {
		return nil // the Workload API pushes every change itself
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	m, err := s.load()
	if err != nil {
		return err
	}
	s.publish(m)
	return nil
}

// publish makes m current; the caller holds reloadMu.
func (s *Source) publish(m *material) {
	prev := s.cur.Swap(m)
	if prev == nil || !prev.cert.Leaf.Equal(m.cert.Leaf) || !sameBundles(prev.bundles, m.bundles) {
		tds := []string{}
		roots := 0
		for _, b := range m.bundles.Bundles() {
			tds = append(tds, b.TrustDomain().Name())
			roots += len(b.X509Authorities())
		}
		s.log.Info("mesh: identity loaded", "id", m.id.String(), "serial", m.cert.Leaf.SerialNumber.Text(16),
			"not_after", m.notAfter, "from", s.origin, "trust_domains", tds, "bundle_roots", roots)
	}
	if s.expiry != nil {
		s.expiry(m.id.String(), m.notAfter)
	}
	s.checkExpiry(m)
}

// sameBundles reports whether two bundle sets hold the same trust domains
// with the same roots.
func sameBundles(a, b *x509bundle.Set) bool {
	if a.Len() != b.Len() {
		return false
	}
	for _, ba := range a.Bundles() {
		bb, ok := b.Get(ba.TrustDomain())
		if !ok || !ba.Equal(bb) {
			return false
		}
	}
	return true
}

func (s *Source) load() (*material, error) {
	certPEM, err := os.ReadFile(s.certFile)
	if err != nil {
		return nil, fmt.Errorf("mesh source: reading certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(s.keyFile)
	if err != nil {
		return nil, fmt.Errorf("mesh source: reading key: %w", err)
	}
	bundlePEM, err := os.ReadFile(s.bundleFile)
	if err != nil {
		return nil, fmt.Errorf("mesh source: reading bundle: %w", err)
	}
	if _, err := parseCertsPEM(certPEM); err != nil {
		return nil, fmt.Errorf("mesh source: %s: %w", s.certFile, err)
	}
	// x509svid.Parse checks what makes a certificate an X509-SVID (one
	// SPIFFE URI with a path, not a CA, digitalSignature only, CA-flagged
	// intermediates) and that the key belongs to the leaf.
	svid, err := x509svid.Parse(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("mesh source: %s with %s: %w", s.certFile, s.keyFile, err)
	}
	if !s.td.IsZero() && !svid.ID.MemberOf(s.td) {
		return nil, fmt.Errorf("mesh source: %s is %s, outside the trust domain %s", s.certFile, svid.ID, s.td)
	}
	roots, err := parseCertsPEM(bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("mesh source: %s: %w", s.bundleFile, err)
	}
	bundles := x509bundle.NewSet(x509bundle.FromX509Authorities(svid.ID.TrustDomain(), roots))
	for td, f := range s.federated {
		if td == svid.ID.TrustDomain() {
			return nil, fmt.Errorf("mesh source: %s names the own trust domain %s among the federated bundles: its roots go in %s", f, td, s.bundleFile)
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("mesh source: reading the bundle of %s: %w", td, err)
		}
		fr, err := parseCertsPEM(data)
		if err != nil {
			return nil, fmt.Errorf("mesh source: %s (bundle of %s): %w", f, td, err)
		}
		bundles.Add(x509bundle.FromX509Authorities(td, fr))
	}
	m, err := s.materialOf(svid, bundles)
	if err != nil {
		// Our own certificate must pass the check peers will apply to it; a
		// certificate from another CA than the bundle's would fail every
		// handshake, so it is better refused here, with the file named.
		return nil, fmt.Errorf("mesh source: %s does not verify against %s: %w", s.certFile, s.bundleFile, err)
	}
	return m, nil
}

// materialOf checks that svid verifies against its own trust domain's
// bundle in bundles now, and builds the material for handshakes.
func (s *Source) materialOf(svid *x509svid.SVID, bundles *x509bundle.Set) (*material, error) {
	if _, _, err := x509svid.Verify(svid.Certificates, bundles, x509svid.WithTime(s.now())); err != nil {
		return nil, err
	}
	cert := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	leaf := svid.Certificates[0]
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return &material{
		id:       svid.ID,
		svid:     svid,
		cert:     cert,
		bundles:  bundles,
		notAfter: leaf.NotAfter,
		warnAt:   leaf.NotAfter.Add(-life / 3),
	}, nil
}

// checkExpiry logs, once per certificate, that it is near its end or past
// it. It runs at every load and every handshake, so no timer is needed and
// an injected clock drives it exactly.
func (s *Source) checkExpiry(m *material) {
	now := s.now()
	if now.Before(m.warnAt) {
		return
	}
	if !now.Before(m.notAfter) {
		if m.expiredLogged.CompareAndSwap(false, true) {
			s.log.Error("mesh: own certificate has expired; peers refuse it", "id", m.id.String(), "not_after", m.notAfter, "from", s.origin)
		}
		return
	}
	if m.warned.CompareAndSwap(false, true) {
		s.log.Warn("mesh: own certificate expires soon and has not been renewed", "id", m.id.String(),
			"not_after", m.notAfter, "remaining", m.notAfter.Sub(now).Round(time.Second).String(), "from", s.origin)
	}
}

// ErrNoIdentity is returned while a source has no identity yet: a SPIRE
// source before the agent's first answer for this workload.
var ErrNoIdentity = errors.New("mesh: no workload identity yet")

// ID is this workload's own SPIFFE ID; the zero ID while it has none.
func (s *Source) ID() ID {
	if m := s.cur.Load(); m != nil {
		return m.id
	}
	return ID{}
}

// NotAfter is when the current certificate expires; zero while there is
// none.
func (s *Source) NotAfter() time.Time {
	if m := s.cur.Load(); m != nil {
		return m.notAfter
	}
	return time.Time{}
}

// Ready is nil when the source holds an identity that is valid now; else it
// says why not (none yet, or expired), for a readiness check.
func (s *Source) Ready() error {
	m := s.cur.Load()
	if m == nil {
		if s.api != nil {
			return fmt.Errorf("%w: waiting for an X.509-SVID from the Workload API at %s: %s", ErrNoIdentity, s.origin, s.api.lastProblem())
		}
		return ErrNoIdentity
	}
	if !s.now().Before(m.notAfter) {
		return fmt.Errorf("mesh: the certificate of %s expired at %s", m.id, m.notAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Certificate is the current certificate, chain and key for a handshake.
// Without an identity it fails: a handshake never goes on with none.
func (s *Source) Certificate() (*tls.Certificate, error) {
	m := s.cur.Load()
	if m == nil {
		return nil, s.Ready()
	}
	s.checkExpiry(m)
	return m.cert, nil
}

// Verify checks a peer's certificate chain (leaf first) the SPIFFE way
// against the current bundle: exactly one SPIFFE ID in the leaf's URI SAN,
// with a path, the leaf not a CA, a chain to a root of the bundle of the peer's trust
// domain, every certificate valid now. No host name is checked: the SPIFFE
// ID is the identity.
func (s *Source) Verify(chain []*x509.Certificate) (ID, error) {
	if len(chain) == 0 {
		return ID{}, errors.New("mesh: peer presented no certificate")
	}
	m := s.cur.Load()
	if m == nil {
		return ID{}, s.Ready()
	}
	id, err := verifySVID(chain, m.bundles, s.now())
	if err != nil {
		return ID{}, fmt.Errorf("mesh: verifying peer certificate: %w", err)
	}
	return id, nil
}

// verifySVID is the one place the peer rules live: go-spiffe's X509-SVID
// verification at now, plus a path in the ID.
func verifySVID(chain []*x509.Certificate, bundles x509bundle.Source, now time.Time) (ID, error) {
	id, _, _, err := verifyChain(chain, bundles, now)
	return id, err
}

// verifyChain is verifySVID that also says from when until when the
// verification holds: the latest NotBefore and the earliest NotAfter of
// the verified chain (leaf to root), of the chain that holds longest when
// more than one does.
func verifyChain(chain []*x509.Certificate, bundles x509bundle.Source, now time.Time) (id ID, from, until time.Time, err error) {
	id, chains, err := x509svid.Verify(chain, bundles, x509svid.WithTime(now))
	if err != nil {
		return ID{}, from, until, err
	}
	if err := writtenAs(chain[0], id); err != nil {
		return ID{}, from, until, err
	}
	if id.Path() == "" {
		// The X509-SVID specification reserves the bare trust domain ID for
		// the trust domain itself (its CAs); a workload's has a path.
		return ID{}, from, until, fmt.Errorf("%s names the trust domain, not a workload", id)
	}
	for _, c := range chains {
		f, u := c[0].NotBefore, c[0].NotAfter
		for _, cert := range c[1:] {
			if cert.NotBefore.After(f) {
				f = cert.NotBefore
			}
			if cert.NotAfter.Before(u) {
				u = cert.NotAfter
			}
		}
		if u.After(until) {
			from, until = f, u
		}
	}
	return id, from, until, nil
}

// GetX509SVID returns the current certificate as a go-spiffe SVID, so a
// Source can feed go-spiffe's own tlsconfig helpers.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	m := s.cur.Load()
	if m == nil {
		return nil, s.Ready()
	}
	return m.svid, nil
}

// GetX509BundleForTrustDomain returns the current bundle for td: a Source
// is a go-spiffe x509bundle.Source. A trust domain without a bundle (not
// the own one, not federated) is an error, so its IDs never verify.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	m := s.cur.Load()
	if m == nil {
		return nil, s.Ready()
	}
	return m.bundles.GetX509BundleForTrustDomain(td)
}

var (
	_ x509svid.Source   = (*Source)(nil)
	_ x509bundle.Source = (*Source)(nil)
)
