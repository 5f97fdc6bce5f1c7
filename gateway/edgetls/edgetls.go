// Package edgetls terminates north-south TLS for the edge: static certificates
// chosen by SNI and re-read when their files change, certificates obtained by
// ACME (golang.org/x/crypto/acme; autocert answers the challenges), renewed
// here, with a directory or Redis cache and on-demand issuance,
// client-certificate authentication, the HTTP listener's redirect to HTTPS,
// and HSTS.
//
// The gateway builds a Manager from the routes file's tls section, gives
// TLSConfig to its https listener and HTTPHandler to its http listener, and
// builds a new Manager when a reload changes the section.
package edgetls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/routes"
	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/acme"
)

// Options are the Manager's collaborators; zero values work except where noted.
type Options struct {
	Logger *slog.Logger
	// Expiry is causeway_certificate_expiry_timestamp_seconds{name}; may be nil.
	Expiry *prometheus.GaugeVec
	// HoldExpiry keeps the Manager from writing Expiry until PublishExpiry:
	// a Manager built for a configuration that may yet be refused must not
	// change the metrics of the one being served.
	HoldExpiry bool
	// ACMEOrders counts certificate orders by result (ok, error,
	// rate_limited), e.g. causeway_acme_orders_total{result}; may be nil.
	ACMEOrders *prometheus.CounterVec
	// CertReloads counts re-reads of the certificate files (on a file
	// change, the poll, or Reload) by result, success or failure:
	// causeway_tls_certificate_reloads_total{result}; may be nil. A failure
	// means the previous certificates are still served, which a log line
	// alone lets go unnoticed until they expire.
	CertReloads *prometheus.CounterVec
	// Redis is required when tls.acme.cache is redis.
	Redis redis.UniversalClient
	// RedisKeyPrefix prefixes every Redis key (the routes file's
	// redis.key_prefix); default "causeway:".
	RedisKeyPrefix string
	// HTTPClient calls the on-demand ask endpoint; nil: a client with a 5s timeout.
	HTTPClient *http.Client
	// PollInterval is how often files are checked for changes in case a
	// file-system event was missed (network file systems); default 1m.
	PollInterval time.Duration
	// OnReload, if set, is called after every reload that file changes
	// triggered, with its error (nil: the new certificates are served).
	OnReload func(error)
	// ACMEWait is how long a handshake waits for an ACME certificate being
	// ordered before it fails (the order goes on); default 30s.
	ACMEWait time.Duration
	// ACMERenewBefore is how long before expiry an ACME certificate is
	// renewed; 0: when a third of its lifetime is left, at most 30 days.
	ACMERenewBefore time.Duration
	// ACMERenewRetry is the wait before a failed renewal is tried again;
	// default 10m.
	ACMERenewRetry time.Duration
	// Now is the clock for the on-demand rate limit, certificate validity
	// and renewal; nil: time.Now.
	Now func() time.Time
	// ProviderCertificates allows a tls section with no certificate of its
	// own: a provider (Gateway HTTPS listeners) brings them. Until it does,
	// handshakes find no certificate.
	ProviderCertificates bool
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// Manager serves certificates for the https listener.
type Manager struct {
	cfg    *routes.TLS
	log    *slog.Logger
	expiry *prometheus.GaugeVec

	static atomic.Pointer[staticSet]
	acme   *acmeIssuer // nil without tls.acme

	minVersion uint16
	clientAuth tls.ClientAuthType
	hsts       string                     // the header value; "" without hsts
	clientCfg  atomic.Pointer[tls.Config] // with client authentication and the current CA pool
	base       *tls.Config                // without; shared by handshakes, never modified

	expMu     sync.Mutex
	expirySet map[string]time.Time // labels this Manager has set
	held      bool                 // under expMu: expirySet is not yet written to expiry
	// acmeExpiry reads the ACME certificates' expiry from the cache once
	// the Manager is published (HoldExpiry): a configuration that may
	// yet be refused must not reach a cache (a Redis) it names. Nil once
	// done.
	acmeExpiry func()

	reloadMu sync.Mutex
	onReload func(error)
	reloads  *prometheus.CounterVec // nil: not counted

	watcher   *fsnotify.Watcher
	done      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
}

// Modern cipher suites only: AEADs with forward secrecy. TLS 1.3's suites are
// fixed by Go and all qualify.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,
}

// New loads certificates (errors name the file), sets up ACME, and starts
// watching the files for certificate rotation. ctx bounds nothing after New
// returns but, with HoldExpiry and ACME, the read of the cached
// certificates' expiry that PublishExpiry does; Close stops the watcher.
func New(ctx context.Context, cfg *routes.TLS, opts Options) (*Manager, error) {
	if cfg == nil {
		return nil, errors.New("tls: no tls section")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if len(cfg.Certificates) == 0 && len(cfg.FromProviders) == 0 && cfg.ACME == nil && !opts.ProviderCertificates {
		return nil, errors.New("tls: needs certificates or acme")
	}
	m := &Manager{
		cfg:       cfg,
		log:       opts.Logger,
		expiry:    opts.Expiry,
		expirySet: map[string]time.Time{},
		held:      opts.HoldExpiry,
		onReload:  opts.OnReload,
		reloads:   opts.CertReloads,
		done:      make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.reloads != nil {
		// Both series exist from the start, so increase() and alerts on
		// failures work before the first one.
		m.reloads.WithLabelValues(reloadSuccess)
		m.reloads.WithLabelValues(reloadFailure)
	}
	switch cfg.MinVersion {
	case "", "1.2":
		m.minVersion = tls.VersionTLS12
	case "1.3":
		m.minVersion = tls.VersionTLS13
	default:
		return nil, fmt.Errorf("tls.min_version: must be \"1.2\" or \"1.3\" (found %q)", cfg.MinVersion)
	}
	switch cfg.ClientAuth {
	case "":
		if cfg.ClientCAFile != "" {
			m.clientAuth = tls.RequireAndVerifyClientCert
		}
	case "require":
		m.clientAuth = tls.RequireAndVerifyClientCert
	case "verify_if_given":
		m.clientAuth = tls.VerifyClientCertIfGiven
	default:
		return nil, fmt.Errorf("tls.client_auth: must be require or verify_if_given (found %q)", cfg.ClientAuth)
	}
	if m.clientAuth != tls.NoClientCert && cfg.ClientCAFile == "" {
		return nil, errors.New("tls.client_auth: needs tls.client_ca_file")
	}
	if h := cfg.HSTS; h != nil {
		if h.MaxAge < 0 {
			return nil, errors.New("tls.hsts.max_age: must not be negative")
		}
		m.hsts = fmt.Sprintf("max-age=%d", int64(h.MaxAge.D()/time.Second))
		if h.IncludeSubdomains {
			m.hsts += "; includeSubDomains"
		}
		if h.Preload {
			m.hsts += "; preload"
		}
	}
	set, err := loadStatic(cfg)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if cfg.ACME != nil {
		m.acme, err = newACMEIssuer(cfg.ACME, &opts)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		if c := opts.ACMEOrders; c != nil {
			m.acme.onOrder = func(result string) { c.WithLabelValues(result).Inc() }
		}
	}
	// After ACME is set up: the configurations built here offer acme-tls/1.
	m.base = m.baseConfig()
	m.install(set)
	if m.acme != nil && m.expiry != nil {
		m.acmeExpiry = func() {
			for name, t := range m.acme.cachedExpiry(ctx) {
				m.setExpiry(name, t)
			}
		}
		if !m.held {
			m.expMu.Lock()
			m.acmeExpiry()
			m.acmeExpiry = nil
			m.expMu.Unlock()
		}
	}
	if err := m.startWatching(set, opts.PollInterval); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// TLSConfig returns the configuration for the https listener: certificates by
// SNI, ALPN h2 then http/1.1 (and acme-tls/1 with ACME), the minimum version,
// modern suites, and client authentication.
func (m *Manager) TLSConfig() *tls.Config {
	cfg := m.baseConfig()
	if m.clientAuth != tls.NoClientCert {
		cfg.GetConfigForClient = m.configForClient
	}
	return cfg
}

// GetConfigForClient returns the complete configuration for one handshake.
// A listener that outlives Managers (a routes reload builds a new one) sets
// its own tls.Config.GetConfigForClient to call the current Manager's: Go
// ignores GetConfigForClient on a returned config, so returning TLSConfig()
// from there would lose client authentication.
func (m *Manager) GetConfigForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if m.clientAuth != tls.NoClientCert {
		if cfg, err := m.configForClient(hello); cfg != nil || err != nil {
			return cfg, err
		}
	}
	return m.base, nil
}

func (m *Manager) baseConfig() *tls.Config {
	protos := []string{"h2", "http/1.1"}
	if m.acme != nil {
		protos = append(protos, acme.ALPNProto)
	}
	return &tls.Config{
		MinVersion:     m.minVersion,
		CipherSuites:   cipherSuites,
		NextProtos:     protos,
		GetCertificate: m.getCertificate,
	}
}

// configForClient applies client authentication with the client CA pool of
// the current file generation, except to the CA's TLS-ALPN-01 validation,
// which has no client certificate and must still get through.
func (m *Manager) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if m.acme != nil && isALPNChallenge(hello) {
		return nil, nil // the base config: no client authentication
	}
	return m.clientCfg.Load(), nil
}

// getCertificate picks the certificate for a handshake: the ACME challenge
// certificate for a CA's validation, then a static certificate for the host
// (staticSet.match: the file's exact name, a provider listener hostname's, then
// exact and wildcard names), then ACME, then the default (staticSet.
// defaultCert), else none: the handshake is refused.
func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if m.acme != nil && isALPNChallenge(hello) {
		return m.acme.ac.GetCertificate(hello)
	}
	name := normalizeSNI(hello.ServerName)
	set := m.static.Load()
	if c := set.match(name); c != nil {
		return c, nil
	}
	if m.acme != nil && name != "" {
		onDemand, err := m.acme.allowed(helloContext(hello), name)
		switch {
		case err == nil:
			cert, err := m.acme.certificate(hello, name, onDemand)
			if err != nil {
				level := slog.LevelWarn
				if errors.Is(err, errRateLimited) {
					level = slog.LevelDebug // counted in ACMEOrders; clients control how often
				}
				m.log.Log(helloContext(hello), level, "tls: acme certificate", "server_name", name, "error", err)
				return nil, err
			}
			m.noteACME(name, cert)
			return cert, nil
		case !errors.Is(err, errNoCertificate):
			// Debug: any client can send any SNI, so this must not flood the log.
			m.log.Debug("tls: on-demand certificate refused", "server_name", name, "error", err)
			if c := set.defaultCert(); c != nil {
				return c, nil
			}
			return nil, err
		}
	}
	// No certificate and no error: crypto/tls then refuses the handshake
	// with an unrecognized_name alert (RFC 6066), which says what is
	// wrong, where an error would send internal_error.
	return set.defaultCert(), nil
}

// install makes set the one served and updates the expiry metric.
func (m *Manager) install(set *staticSet) {
	if m.clientAuth != tls.NoClientCert {
		cfg := m.baseConfig()
		cfg.ClientAuth = m.clientAuth
		cfg.ClientCAs = set.clientCA
		m.clientCfg.Store(cfg)
	}
	old := m.static.Swap(set)
	if m.expiry == nil {
		return
	}
	m.expMu.Lock()
	defer m.expMu.Unlock()
	if old != nil {
		for name := range old.expiry {
			if _, still := set.expiry[name]; !still {
				if !m.held {
					m.expiry.DeleteLabelValues(name)
				}
				delete(m.expirySet, name)
			}
		}
	}
	for name, t := range set.expiry {
		m.setExpiry(name, t)
	}
}

func (m *Manager) noteACME(name string, cert *tls.Certificate) {
	if m.expiry == nil || cert == nil || cert.Leaf == nil {
		return
	}
	m.expMu.Lock()
	defer m.expMu.Unlock()
	if m.expirySet[name].Equal(cert.Leaf.NotAfter) {
		return
	}
	m.setExpiry(name, cert.Leaf.NotAfter)
}

func (m *Manager) setExpiry(name string, t time.Time) {
	m.expirySet[name] = t
	if !m.held {
		m.expiry.WithLabelValues(name).Set(float64(t.Unix()))
	}
}

// PublishExpiry writes the expiry of every certificate the Manager serves
// (again) and ends HoldExpiry: the Manager is now the one being served.
func (m *Manager) PublishExpiry() {
	if m.expiry == nil {
		return
	}
	m.expMu.Lock()
	defer m.expMu.Unlock()
	m.held = false
	if m.acmeExpiry != nil {
		// Written at once: no longer held.
		m.acmeExpiry()
		m.acmeExpiry = nil
	}
	for name, t := range m.expirySet {
		m.expiry.WithLabelValues(name).Set(float64(t.Unix()))
	}
}

// Reload re-reads the certificate files now (e.g. on SIGHUP). On error the
// certificates being served stay.
func (m *Manager) Reload() error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	set, err := loadStatic(m.cfg)
	if err != nil {
		m.countReload(reloadFailure)
		return fmt.Errorf("tls: reloading: %w", err)
	}
	m.install(set)
	m.countReload(reloadSuccess)
	return nil
}

// Values of the result label of CertReloads.
const (
	reloadSuccess = "success"
	reloadFailure = "failure"
)

func (m *Manager) countReload(result string) {
	if m.reloads != nil {
		m.reloads.WithLabelValues(result).Inc()
	}
}

// reloadIfChanged reloads when a file's content changed since the served
// generation was read; events that changed nothing we read cost a few small reads.
func (m *Manager) reloadIfChanged() {
	if m.static.Load().unchanged() {
		return
	}
	err := m.Reload()
	if err != nil {
		// Typical mid-rotation: the new certificate is written, the key not
		// yet. The next event (the key's write) retries.
		m.log.Warn("tls: certificate files changed but could not be loaded; serving the previous ones", "error", err)
	} else {
		m.log.Info("tls: certificates reloaded")
	}
	if m.onReload != nil {
		m.onReload(err)
	}
}

// startWatching watches the folders of every file read (so atomic renames
// and Kubernetes' symlink swaps are seen) and polls as a fallback.
func (m *Manager) startWatching(set *staticSet, poll time.Duration) error {
	if len(set.sources) == 0 {
		close(m.stopped)
		return nil
	}
	if poll <= 0 {
		poll = time.Minute
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		close(m.stopped)
		return fmt.Errorf("tls: watching certificate files: %w", err)
	}
	dirs := map[string]bool{}
	for path := range set.sources {
		dirs[filepath.Dir(path)] = true
	}
	for dir := range dirs {
		if err := w.Add(dir); err != nil {
			w.Close()
			close(m.stopped)
			return fmt.Errorf("tls: watching %s: %w", dir, err)
		}
	}
	m.watcher = w
	go m.watch(poll)
	return nil
}

func (m *Manager) watch(poll time.Duration) {
	defer close(m.stopped)
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case _, ok := <-m.watcher.Events:
			if !ok {
				return
			}
			m.reloadIfChanged()
		case err, ok := <-m.watcher.Errors:
			if !ok {
				return
			}
			m.log.Warn("tls: watching certificate files", "error", err)
		case <-t.C:
			m.reloadIfChanged()
		}
	}
}

// Close stops the file watcher and stops ACME from ordering or renewing in
// the background. Handshakes and connections in progress are unaffected.
func (m *Manager) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.done)
		if m.watcher != nil {
			err = m.watcher.Close()
		}
		<-m.stopped
		if m.acme != nil {
			m.acme.close()
		}
	})
	return err
}

// ClientSubject returns the subject of the verified client certificate of a
// request on the https listener; ok is false without one.
func ClientSubject(r *http.Request) (string, bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return "", false
	}
	return r.TLS.VerifiedChains[0][0].Subject.String(), true
}
