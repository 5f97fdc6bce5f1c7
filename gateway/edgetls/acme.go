package edgetls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/routes"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// acmeIssuer obtains certificates from an ACME CA (order.go), serves and
// renews them (renew.go), and adds a per-name order lock shared through
// Redis, the on-demand ask and its rate limit, and a count of orders.
// autocert answers the CA's challenges from the shared cache.
type acmeIssuer struct {
	ac        *autocert.Manager // challenges only: it never orders
	cache     autocert.Cache
	redis     *RedisCache // nil for cache: dir
	hosts     map[string]bool
	onDemand  *onDemand // nil without tls.acme.on_demand
	transport *closableTransport
	log       *slog.Logger
	email     string

	// client talks to the CA; under clientMu until registered, then read only.
	clientMu   sync.Mutex
	client     *acme.Client
	registered bool
	// http01 is set once the http listener serves challenges: orders may
	// then fall back to HTTP-01.
	http01 atomic.Bool

	// served holds the certificate served for each cache key: handshakes
	// read it with no cache look-up, until it expires.
	served sync.Map // string -> *servedCert

	// failed remembers a failed first order for failedFor, so that a client
	// retrying a handshake does not start an order at the CA each time.
	failMu sync.Mutex
	failed map[string]failure

	renewal renewal

	// Under flightMu: the certificates being fetched or ordered, by cache
	// key. One goroutine per key does the work; every handshake that needs
	// the key waits for it, for at most wait.
	flightMu sync.Mutex
	flights  map[string]*flight
	closed   bool // under flightMu: no new flight starts
	wait     time.Duration
	work     sync.WaitGroup     // the flights' goroutines (close ends them; tests wait)
	ctx      context.Context    // the flights' context, cancelled by close
	cancel   context.CancelFunc // cancels ctx

	orders  atomic.Int64     // orders this process started (tests and metrics)
	now     func() time.Time // the rate limit's clock and cache validity
	onOrder func(result string)
}

// flight is one cache key's certificate being fetched or ordered; cert and
// err are set before done is closed.
type flight struct {
	done chan struct{}
	cert *tls.Certificate
	err  error
}

func newACMEIssuer(cfg *routes.ACME, opts *Options) (*acmeIssuer, error) {
	iss := &acmeIssuer{
		now:     opts.now,
		hosts:   map[string]bool{},
		flights: map[string]*flight{},
		failed:  map[string]failure{},
		wait:    opts.ACMEWait,
		log:     opts.Logger,
		email:   cfg.Email,
		renewal: renewal{before: opts.ACMERenewBefore, retry: opts.ACMERenewRetry, due: map[string]renewDue{}, kick: make(chan struct{}, 1)},
	}
	if iss.wait <= 0 {
		iss.wait = defaultACMEWait
	}
	if iss.renewal.retry <= 0 {
		iss.renewal.retry = defaultRenewRetry
	}
	if iss.log == nil {
		iss.log = slog.New(slog.DiscardHandler)
	}
	for _, h := range cfg.Hosts {
		iss.hosts[normalizeSNI(h)] = true
	}
	switch cfg.Cache {
	case "", "dir":
		if cfg.CacheDir == "" {
			return nil, errors.New("tls.acme.cache_dir: required with cache: dir")
		}
		// Checked, not created: a Manager is built for every load of the
		// file, also one that is refused later or only validated, and
		// neither may leave a directory behind. autocert's DirCache makes
		// the directory (0700) when it stores the first certificate.
		if err := checkCacheDir(cfg.CacheDir); err != nil {
			return nil, fmt.Errorf("tls.acme.cache_dir: %w", err)
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
	iss.transport = newClosableTransport(base, iss.now)
	if od := cfg.OnDemand; od != nil {
		iss.onDemand, err = newOnDemand(od, opts.HTTPClient, opts.now)
		if err != nil {
			return nil, err
		}
	}
	iss.client = &acme.Client{
		DirectoryURL: cfg.DirectoryURL,
		HTTPClient:   &http.Client{Transport: iss.transport, Timeout: acmeRequestTimeout},
		UserAgent:    "causeway-edge",
		RetryBackoff: iss.retryBackoff,
	}
	// autocert reads the challenge responses order.go writes into the
	// cache. It is only ever asked for challenges, so it never orders; its
	// client (a second one: autocert sets the key of the one it is given)
	// goes to the same CA through the same closable transport regardless.
	iss.ac = &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      iss.cache,
		HostPolicy: iss.hostPolicy,
		Email:      cfg.Email,
		Client: &acme.Client{
			DirectoryURL: cfg.DirectoryURL,
			HTTPClient:   &http.Client{Transport: iss.transport, Timeout: acmeRequestTimeout},
			UserAgent:    "causeway-edge",
		},
	}
	iss.ctx, iss.cancel = context.WithCancel(context.Background())
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
// autocert's memory nor the cache holds one. The handshake waits for at most
// iss.wait: an order stuck at the CA must not hold handshakes (and their
// goroutines) for as long as autocert allows it to run. The order goes on,
// and a later handshake gets its certificate.
func (iss *acmeIssuer) certificate(hello *tls.ClientHelloInfo, name string, onDemand bool) (*tls.Certificate, error) {
	ck := name
	if !supportsECDSA(hello) {
		ck += "+rsa" // autocert's cache key for the RSA variant
	}
	if c := iss.current(ck); c != nil {
		return c, nil
	}
	f, err := iss.join(ck, hello, name, onDemand)
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(iss.wait)
	defer t.Stop()
	select {
	case <-f.done:
		return f.cert, f.err
	case <-t.C:
		return nil, fmt.Errorf("acme %q: %w after %s; the order goes on and a later handshake gets its certificate", name, errStillOrdering, iss.wait)
	case <-helloContext(hello).Done():
		return nil, fmt.Errorf("acme %q: %w", name, helloContext(hello).Err())
	}
}

// join returns the flight for ck, starting it if there is none.
func (iss *acmeIssuer) join(ck string, hello *tls.ClientHelloInfo, name string, onDemand bool) (*flight, error) {
	iss.flightMu.Lock()
	defer iss.flightMu.Unlock()
	if iss.closed {
		return nil, fmt.Errorf("acme %q: %w", name, errClosed)
	}
	if f := iss.flights[ck]; f != nil {
		return f, nil
	}
	f := &flight{done: make(chan struct{})}
	iss.flights[ck] = f
	// close stops the flight: it cancels the requests to the CA and the
	// waits between them, so the goroutine ends at its next step.
	iss.work.Add(1)
	go func() {
		defer iss.work.Done()
		cert, err := iss.obtain(ck, name, onDemand)
		iss.flightMu.Lock()
		delete(iss.flights, ck)
		iss.flightMu.Unlock()
		f.cert, f.err = cert, err
		close(f.done)
	}()
	return f, nil
}

// obtain loads ck from the cache or orders it. It runs in a flight, under
// the issuer's context (cancelled by close), not the handshake's.
func (iss *acmeIssuer) obtain(ck, name string, onDemand bool) (*tls.Certificate, error) {
	if c := iss.current(ck); c != nil {
		return c, nil
	}
	// Bound the cache look-up and any wait for another replica's order.
	ctx, cancel := context.WithTimeout(iss.ctx, orderTimeout)
	defer cancel()
	cert, err := iss.cached(ctx, ck, name)
	switch {
	case err == nil:
		// Cached (by us before a restart, or by another replica).
		iss.serve(ck, name, cert)
		return cert, nil
	case errors.Is(err, autocert.ErrCacheMiss):
		if ferr := iss.recentFailure(ck); ferr != nil {
			iss.count("error")
			return nil, fmt.Errorf("acme %q: ordering: %w (failed within the last %s; not ordered again yet)", name, ferr, failedFor)
		}
		if onDemand && !iss.onDemand.limiter.allow() {
			iss.count("rate_limited")
			return nil, fmt.Errorf("acme on-demand %q: %w", name, errRateLimited)
		}
		order := func() error {
			octx, ocancel := context.WithTimeout(iss.ctx, orderRunTimeout)
			defer ocancel()
			var oerr error
			cert, oerr = iss.order(octx, ck, name)
			iss.finishOrder(ck, name, cert, oerr)
			return oerr
		}
		if iss.redis != nil {
			ordered, err := iss.redis.orderOnce(ctx, ck, order)
			switch {
			case ordered && err != nil:
				return nil, fmt.Errorf("acme %q: ordering: %w", name, err)
			case ordered:
				return cert, nil
			case err != nil:
				return nil, err
			}
			// Another replica ordered it, or the entry there is unusable
			// (expired): use it, or order without the lock.
			if cert, err = iss.cached(ctx, ck, name); err == nil {
				iss.serve(ck, name, cert)
				return cert, nil
			}
		}
		if err := order(); err != nil {
			return nil, fmt.Errorf("acme %q: ordering: %w", name, err)
		}
		return cert, nil
	default:
		return nil, fmt.Errorf("acme %q: reading cache: %w", name, err)
	}
}

// cached reads ck from the cache. An entry that is expired, not yet valid,
// for another name or otherwise unusable is a miss: it is ordered again
// under the rate limit and the replicas' lock.
func (iss *acmeIssuer) cached(ctx context.Context, ck, name string) (*tls.Certificate, error) {
	data, err := iss.cache.Get(ctx, ck)
	if err != nil {
		return nil, err
	}
	cert, err := certFromCache(data, name, iss.now())
	if err != nil {
		return nil, autocert.ErrCacheMiss
	}
	return cert, nil
}

// failure is a failed first order, remembered until until.
type failure struct {
	until time.Time
	err   error
}

// failedFor is how long a failed first order is remembered (autocert's
// own figure): handshakes meanwhile fail at once, counted as errors.
const failedFor = time.Minute

func (iss *acmeIssuer) recentFailure(ck string) error {
	iss.failMu.Lock()
	defer iss.failMu.Unlock()
	f, ok := iss.failed[ck]
	if !ok {
		return nil
	}
	if !iss.now().Before(f.until) {
		delete(iss.failed, ck)
		return nil
	}
	return f.err
}

// helloContext is the handshake's context; a ClientHelloInfo built by hand
// (tests, a caller's own GetCertificate) has none.
func helloContext(hello *tls.ClientHelloInfo) context.Context {
	if ctx := hello.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// orderTimeout bounds a flight's cache look-up and its wait for another
// replica's order; the order itself runs under orderRunTimeout.
const orderTimeout = 2 * time.Minute

// orderRunTimeout bounds one order from the new-order request to the
// certificate (what autocert allowed one).
const orderRunTimeout = 5 * time.Minute

// defaultACMEWait is how long a handshake waits for a certificate being
// ordered (Options.ACMEWait): an order takes seconds when the CA is well, and
// clients give up on a handshake well before autocert gives up on an order.
const defaultACMEWait = 30 * time.Second

// acmeRequestTimeout bounds one request to the CA, so a CA that accepts a
// request and never answers fails the order instead of holding it.
const acmeRequestTimeout = 30 * time.Second

// maxRetryWait and maxRetries bound x/crypto/acme's retries of a request the
// CA answered 429, 5xx or badNonce: by default it sleeps whatever Retry-After
// says (a day, for a hostile or rate-limiting CA) and retries until the
// order's 5-minute context ends.
const (
	maxRetryWait = 10 * time.Second
	maxRetries   = 10
)

// retryBackoff is acme.Client.RetryBackoff. x/crypto/acme calls it before
// each retry and then sleeps what it returns, on a context close cannot
// cancel (autocert's own); so it waits here instead, where close can end
// the wait, and returns 0 (give up with the CA's last error) when it does.
func (iss *acmeIssuer) retryBackoff(n int, r *http.Request, res *http.Response) time.Duration {
	d := backoff(n, res, iss.now())
	if d <= 0 {
		return 0
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return time.Nanosecond // retry now
	case <-iss.ctx.Done():
		return 0
	case <-r.Context().Done():
		return 0
	}
}

// backoff is the wait before the nth retry: none for a rejected nonce,
// Retry-After when the CA sends one, else 1, 2, 4... seconds; never more than
// maxRetryWait, and 0 (no retry) after maxRetries.
func backoff(n int, res *http.Response, now time.Time) time.Duration {
	if n > maxRetries {
		return 0
	}
	if res.StatusCode == http.StatusBadRequest {
		// x/crypto/acme retries a 400 only for badNonce, whose answer
		// carries a fresh nonce: retry at once (RFC 8555, section 6.5).
		return time.Millisecond
	}
	jitter := time.Duration(1+mathrand.IntN(1000)) * time.Millisecond
	if v := res.Header.Get("Retry-After"); v != "" {
		if d := parseRetryAfter(v, now); d > 0 {
			return min(d, maxRetryWait) + jitter
		}
		return jitter
	}
	return min(time.Second<<min(max(n-1, 0), 10), maxRetryWait) + jitter
}

// parseRetryAfter reads a Retry-After value: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if s, err := strconv.Atoi(v); err == nil {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return t.Sub(now)
	}
	return 0
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

// finishOrder counts a first order and serves its certificate, or
// remembers its failure.
func (iss *acmeIssuer) finishOrder(ck, name string, cert *tls.Certificate, err error) {
	iss.orders.Add(1)
	if err != nil {
		iss.count("error")
		iss.failMu.Lock()
		iss.failed[ck] = failure{until: iss.now().Add(failedFor), err: err}
		iss.failMu.Unlock()
		return
	}
	iss.count("ok")
	iss.serve(ck, name, cert)
}

func (iss *acmeIssuer) count(result string) {
	if iss.onOrder != nil {
		iss.onOrder(result)
	}
}

// close stops new flights, cancels the requests in progress to the CA and
// the waits before retrying one. It does not wait for the flights (a reload
// must not stall on a CA): autocert fails each at its next request, and the
// longest it can sleep before one is a Retry-After of a successful answer,
// which the transport caps at maxPollWait.
func (iss *acmeIssuer) close() {
	iss.flightMu.Lock()
	iss.closed = true
	iss.flightMu.Unlock()
	iss.cancel()
	iss.transport.close()
}

// closableTransport refuses requests once closed and cancels those in
// progress. autocert has no Stop: its renewal timers outlive the Manager, and
// a replaced Manager must not keep ordering certificates in the background.
type closableTransport struct {
	next   http.RoundTripper
	now    func() time.Time // reads Retry-After dates
	ctx    context.Context  // done when closed
	cancel context.CancelFunc
}

var (
	errClosed        = errors.New("edgetls: manager closed")
	errRateLimited   = errors.New("order rate limit reached")
	errStillOrdering = errors.New("no certificate yet")
)

func newClosableTransport(next http.RoundTripper, now func() time.Time) *closableTransport {
	ctx, cancel := context.WithCancel(context.Background())
	return &closableTransport{next: next, now: now, ctx: ctx, cancel: cancel}
}

// maxPollWait caps the Retry-After of the CA's successful answers, which
// x/crypto/acme's WaitOrder and WaitAuthorization sleep for with no bound of
// their own: a CA that keeps an order "processing" with Retry-After: 86400
// would otherwise hold the order, and close, until autocert's 5 minutes end.
// A variable so a test need not wait it out.
var maxPollWait = 10 * time.Second

func (t *closableTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.ctx.Err() != nil {
		return nil, errClosed
	}
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(t.ctx, cancel)
	res, err := t.next.RoundTrip(r.WithContext(ctx))
	if err != nil {
		stop()
		cancel()
		if t.ctx.Err() != nil {
			return nil, errClosed
		}
		return nil, err
	}
	if res.StatusCode < 300 {
		if v := res.Header.Get("Retry-After"); v != "" && parseRetryAfter(v, t.now()) > maxPollWait {
			res.Header.Set("Retry-After", strconv.Itoa(int(max(maxPollWait/time.Second, 1))))
		}
	}
	res.Body = &releaseBody{ReadCloser: res.Body, release: func() { stop(); cancel() }}
	return res, nil
}

func (t *closableTransport) close() {
	t.cancel()
	if tr, ok := t.next.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
}

// releaseBody releases the request's context when the body is closed; the
// context must live as long as the body is read.
type releaseBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (b *releaseBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
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
