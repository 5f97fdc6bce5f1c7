package edgetls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/routes"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// acmeIssuer obtains certificates with autocert and adds what autocert lacks:
// a per-name order lock shared through Redis, the on-demand ask and its rate
// limit, and a count of real orders.
type acmeIssuer struct {
	ac        *autocert.Manager
	cache     autocert.Cache
	redis     *RedisCache // nil for cache: dir
	hosts     map[string]bool
	onDemand  *onDemand // nil without tls.acme.on_demand
	transport *closableTransport

	// ready holds cache keys autocert already has in memory: their
	// handshakes go straight to autocert with no cache look-up.
	ready sync.Map // string -> struct{}
	// keyMu serialises the first issuance of one name in this process.
	keyMu   sync.Mutex
	keyLock map[string]*sync.Mutex

	orders  atomic.Int64     // orders this process started (tests and metrics)
	now     func() time.Time // the rate limit's clock and cache validity
	onOrder func(result string)
}

func newACMEIssuer(cfg *routes.ACME, opts *Options) (*acmeIssuer, error) {
	iss := &acmeIssuer{
		now:     opts.now,
		hosts:   map[string]bool{},
		keyLock: map[string]*sync.Mutex{},
	}
	for _, h := range cfg.Hosts {
		iss.hosts[normalizeSNI(h)] = true
	}
	switch cfg.Cache {
	case "", "dir":
		if cfg.CacheDir == "" {
			return nil, errors.New("tls.acme.cache_dir: required with cache: dir")
		}
		if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("tls.acme.cache_dir: creating %s: %w", cfg.CacheDir, err)
		}
		iss.cache = autocert.DirCache(cfg.CacheDir)
	case "redis":
		prefix := opts.RedisKeyPrefix
		if prefix == "" {
			prefix = "causeway:"
		}
		rc, err := NewRedisCache(opts.Redis, prefix+"acme:")
		if err != nil {
			return nil, fmt.Errorf("tls.acme.cache: redis: %w", err)
		}
		iss.redis, iss.cache = rc, rc
	default:
		return nil, fmt.Errorf("tls.acme.cache: unknown cache %q (dir or redis)", cfg.Cache)
	}
	u, err := url.Parse(cfg.DirectoryURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("tls.acme.directory_url: %q is not an https URL", cfg.DirectoryURL)
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CARootsFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		data, err := os.ReadFile(cfg.CARootsFile)
		if err != nil {
			return nil, fmt.Errorf("tls.acme.ca_roots_file: reading %s: %w", cfg.CARootsFile, err)
		}
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("tls.acme.ca_roots_file: %s holds no PEM certificate", cfg.CARootsFile)
		}
		base.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	iss.transport = &closableTransport{next: base}
	if od := cfg.OnDemand; od != nil {
		iss.onDemand, err = newOnDemand(od, opts.HTTPClient, opts.now)
		if err != nil {
			return nil, err
		}
	}
	iss.ac = &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      iss.cache,
		HostPolicy: iss.hostPolicy,
		Email:      cfg.Email,
		Client: &acme.Client{
			DirectoryURL: cfg.DirectoryURL,
			HTTPClient:   &http.Client{Transport: iss.transport, Timeout: 2 * time.Minute},
			UserAgent:    "causeway-edge",
		},
	}
	return iss, nil
}

// hostPolicy is autocert's own gate. Our certificate path decides before
// autocert is asked (listed host, or on-demand approval), so here it only has
// to keep the HTTP-01 handler from answering for arbitrary names. With on-demand
// TLS any replica may be asked for a token of a name another replica approved,
// and the token is unguessable, so every name is served then.
func (iss *acmeIssuer) hostPolicy(_ context.Context, host string) error {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = normalizeSNI(host)
	if iss.hosts[host] || iss.onDemand != nil {
		return nil
	}
	return fmt.Errorf("acme: host %q is not in tls.acme.hosts", host)
}

// allowed reports whether name may have an ACME certificate, asking the
// on-demand endpoint for names outside tls.acme.hosts.
func (iss *acmeIssuer) allowed(ctx context.Context, name string) (onDemand bool, err error) {
	if iss.hosts[name] {
		return false, nil
	}
	if iss.onDemand == nil {
		return false, errNoCertificate
	}
	if err := iss.onDemand.approve(ctx, name); err != nil {
		return true, err
	}
	return true, nil
}

// certificate returns the ACME certificate for name, ordering it if neither
// autocert's memory nor the cache holds one.
func (iss *acmeIssuer) certificate(hello *tls.ClientHelloInfo, name string, onDemand bool) (*tls.Certificate, error) {
	ck := name
	if !supportsECDSA(hello) {
		ck += "+rsa" // autocert's cache key for the RSA variant
	}
	if _, ok := iss.ready.Load(ck); ok {
		return iss.ac.GetCertificate(hello)
	}
	mu := iss.lockFor(ck)
	mu.Lock()
	defer mu.Unlock()
	if _, ok := iss.ready.Load(ck); ok {
		return iss.ac.GetCertificate(hello)
	}
	// The handshake's context has no deadline of its own (the server bounds
	// the connection with I/O deadlines): bound the ask, the cache look-up
	// and any wait for another replica's order.
	ctx, cancel := context.WithTimeout(helloContext(hello), orderTimeout)
	defer cancel()
	data, err := iss.cache.Get(ctx, ck)
	if err == nil && !leafValidAt(data, iss.now()) {
		// autocert would treat an expired entry as a miss and order on its
		// own, outside the rate limit and the replicas' lock: treat it so here.
		err = autocert.ErrCacheMiss
	}
	switch {
	case err == nil:
		// Cached (by us before a restart, or by another replica): autocert
		// loads it and orders nothing.
	case errors.Is(err, autocert.ErrCacheMiss):
		if onDemand && !iss.onDemand.limiter.allow() {
			iss.count("rate_limited")
			return nil, fmt.Errorf("acme on-demand %q: %w", name, errRateLimited)
		}
		if iss.redis != nil {
			var cert *tls.Certificate
			ordered, err := iss.redis.orderOnce(ctx, ck, func() error {
				var oerr error
				cert, oerr = iss.ac.GetCertificate(hello)
				return oerr
			})
			if ordered {
				iss.finishOrder(ck, err)
				if err != nil {
					return nil, fmt.Errorf("acme %q: ordering: %w", name, err)
				}
				return cert, nil
			}
			if err != nil {
				return nil, err
			}
			break // another replica ordered it; autocert reads it from Redis
		}
		cert, err := iss.ac.GetCertificate(hello)
		iss.finishOrder(ck, err)
		if err != nil {
			return nil, fmt.Errorf("acme %q: ordering: %w", name, err)
		}
		return cert, nil
	default:
		return nil, fmt.Errorf("acme %q: reading cache: %w", name, err)
	}
	cert, err := iss.ac.GetCertificate(hello)
	if err != nil {
		return nil, fmt.Errorf("acme %q: loading cached certificate: %w", name, err)
	}
	iss.ready.Store(ck, struct{}{})
	return cert, nil
}

// helloContext is the handshake's context; a ClientHelloInfo built by hand
// (tests, a caller's own GetCertificate) has none.
func helloContext(hello *tls.ClientHelloInfo) context.Context {
	if ctx := hello.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// orderTimeout bounds one handshake's wait for a certificate, ordering
// included; a client has long given up by then, but the order goes on for the
// next handshake's benefit (autocert runs it under its own 5-minute bound).
const orderTimeout = 2 * time.Minute

// leafValidAt reports whether the first certificate in a cache entry (key
// PEM, then the chain) is still valid at now.
func leafValidAt(data []byte, now time.Time) bool {
	leaf := firstCertificate(data)
	return leaf != nil && now.Before(leaf.NotAfter)
}

func firstCertificate(data []byte) *x509.Certificate {
	for rest := data; len(rest) > 0; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return nil
		}
		if b.Type == "CERTIFICATE" {
			leaf, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil
			}
			return leaf
		}
	}
	return nil
}

// cachedExpiry reads the listed hosts' certificates from the cache, so the
// expiry metric covers them from the start, not from their first handshake.
func (iss *acmeIssuer) cachedExpiry(ctx context.Context) map[string]time.Time {
	out := map[string]time.Time{}
	for host := range iss.hosts {
		data, err := iss.cache.Get(ctx, host)
		if err != nil {
			continue
		}
		if leaf := firstCertificate(data); leaf != nil {
			out[host] = leaf.NotAfter
		}
	}
	return out
}

func (iss *acmeIssuer) finishOrder(ck string, err error) {
	iss.orders.Add(1)
	if err != nil {
		iss.count("error")
		return
	}
	iss.count("ok")
	iss.ready.Store(ck, struct{}{})
}

func (iss *acmeIssuer) count(result string) {
	if iss.onOrder != nil {
		iss.onOrder(result)
	}
}

func (iss *acmeIssuer) lockFor(ck string) *sync.Mutex {
	iss.keyMu.Lock()
	defer iss.keyMu.Unlock()
	mu := iss.keyLock[ck]
	if mu == nil {
		mu = &sync.Mutex{}
		iss.keyLock[ck] = mu
	}
	return mu
}

func (iss *acmeIssuer) close() { iss.transport.close() }

// closableTransport refuses requests once closed. autocert has no Stop: its
// renewal timers outlive the Manager, and a replaced Manager must not keep
// ordering certificates in the background.
type closableTransport struct {
	next   http.RoundTripper
	closed atomic.Bool
}

var (
	errClosed      = errors.New("edgetls: manager closed")
	errRateLimited = errors.New("order rate limit reached")
)

func (t *closableTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.closed.Load() {
		return nil, errClosed
	}
	return t.next.RoundTrip(r)
}

func (t *closableTransport) close() {
	t.closed.Store(true)
	if tr, ok := t.next.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
}

// isALPNChallenge reports a TLS-ALPN-01 validation connection from the CA
// (RFC 8737: it offers acme-tls/1 and nothing else).
func isALPNChallenge(hello *tls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto
}

// supportsECDSA mirrors autocert's choice between its ECDSA and RSA
// certificates, so we look up the same cache key autocert will use.
func supportsECDSA(hello *tls.ClientHelloInfo) bool {
	if hello.SignatureSchemes != nil {
		ok := false
		for _, s := range hello.SignatureSchemes {
			switch s {
			case 0x0203, tls.ECDSAWithP256AndSHA256, tls.ECDSAWithP384AndSHA384, tls.ECDSAWithP521AndSHA512:
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	if hello.SupportedCurves != nil {
		ok := false
		for _, c := range hello.SupportedCurves {
			if c == tls.CurveP256 {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	for _, suite := range hello.CipherSuites {
		switch suite {
		case tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305:
			return true
		}
	}
	return false
}

// onDemand decides whether a name outside tls.acme.hosts may get a
// certificate: the ask endpoint must answer 200 for it, and orders are
// rate limited so a flood of new names cannot exhaust the CA's limits.
type onDemand struct {
	ask      *url.URL
	client   *http.Client
	limiter  *tokenBucket
	now      func() time.Time
	approved sync.Map // name -> struct{}: asked once per process

	// denied remembers refusals for deniedFor, so a client retrying a refused
	// name does not turn every handshake into a call to the ask endpoint.
	deniedMu sync.Mutex
	denied   map[string]time.Time // name -> when the refusal expires
}

// deniedFor is how long a refusal is remembered; maxDenied bounds the memory
// that random names can take (when full, all refusals are forgotten).
const (
	deniedFor = time.Minute
	maxDenied = 10000
)

func newOnDemand(cfg *routes.OnDemand, client *http.Client, now func() time.Time) (*onDemand, error) {
	u, err := url.Parse(cfg.Ask)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("tls.acme.on_demand.ask: %q is not an http(s) URL", cfg.Ask)
	}
	if cfg.Interval <= 0 {
		return nil, fmt.Errorf("tls.acme.on_demand.interval: must be positive (found %s)", cfg.Interval.D())
	}
	if cfg.Burst <= 0 {
		return nil, fmt.Errorf("tls.acme.on_demand.burst: must be positive (found %d)", cfg.Burst)
	}
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	return &onDemand{ask: u, client: client, limiter: newTokenBucket(cfg.Burst, cfg.Interval.D(), now), now: now, denied: map[string]time.Time{}}, nil
}

// sniRe accepts host names an ACME CA could issue for: at least two labels,
// letters, digits and hyphens. It keeps junk SNI away from the ask endpoint.
var sniRe = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (od *onDemand) approve(ctx context.Context, name string) error {
	if _, ok := od.approved.Load(name); ok {
		return nil
	}
	if len(name) > 253 || !sniRe.MatchString(name) || net.ParseIP(name) != nil {
		return fmt.Errorf("acme on-demand: %q is not a host name a certificate can be ordered for", name)
	}
	if od.recentlyDenied(name) {
		return fmt.Errorf("acme on-demand %q: refused by the ask endpoint within the last %s", name, deniedFor)
	}
	u := *od.ask
	q := u.Query()
	q.Set("domain", name)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("acme on-demand %q: ask: %w", name, err)
	}
	resp, err := od.client.Do(req)
	if err != nil {
		return fmt.Errorf("acme on-demand %q: ask: %w", name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Only an answer is remembered; a failed call is retried next time.
		od.deny(name)
		return fmt.Errorf("acme on-demand %q: ask endpoint answered %d", name, resp.StatusCode)
	}
	od.approved.Store(name, struct{}{})
	return nil
}

func (od *onDemand) recentlyDenied(name string) bool {
	od.deniedMu.Lock()
	defer od.deniedMu.Unlock()
	until, ok := od.denied[name]
	if ok && od.now().Before(until) {
		return true
	}
	delete(od.denied, name)
	return false
}

func (od *onDemand) deny(name string) {
	od.deniedMu.Lock()
	defer od.deniedMu.Unlock()
	if len(od.denied) >= maxDenied {
		clear(od.denied)
	}
	od.denied[name] = od.now().Add(deniedFor)
}

// tokenBucket allows burst events at once, then one per interval. Time comes
// from now so tests can step it.
type tokenBucket struct {
	mu       sync.Mutex
	now      func() time.Time
	burst    float64
	interval time.Duration
	tokens   float64
	last     time.Time
}

func newTokenBucket(burst int, interval time.Duration, now func() time.Time) *tokenBucket {
	return &tokenBucket{now: now, burst: float64(burst), interval: interval, tokens: float64(burst), last: now()}
}

func (b *tokenBucket) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.now()
	if el := t.Sub(b.last); el > 0 {
		b.tokens = min(b.burst, b.tokens+float64(el)/float64(b.interval))
	}
	b.last = t
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// hostOnly strips a port from a Host header value.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}
