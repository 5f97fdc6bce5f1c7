package auth

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// maxJWKSBytes bounds what a JWKS endpoint may send: a real set is a few KiB.
const maxJWKSBytes = 1 << 20

// firstRetry is the delay after a first failed fetch; it doubles up to the
// configured min so an edge started while the identity provider is down
// becomes ready soon after it comes back, without hammering it meanwhile.
const firstRetry = time.Second

// maxKIDWait bounds how long requests wait for a JWKS fetch that an unknown
// kid (or the lack of any keys) asked for, or found running. It counts from
// the fetch's start: a request arriving later waits only what is left, and
// none once a fetch is that old. Past it the token is refused as signed by
// an unknown key (401) and the fetch goes on in the background, bounded by
// the HTTP client's own timeouts (5 s for the response headers by default),
// for the requests after it. A provider that hangs then costs at most this,
// not the client's timeout; a healthy one answers in milliseconds. The HTTP
// client's overall Timeout, when shorter, is the bound instead.
const maxKIDWait = time.Second

var (
	errNoKeys     = errors.New("no keys fetched yet")
	errUnknownKID = errors.New("no key for the token's kid")
)

// keySet is one fetched JWK set, replaced as a whole on refresh.
type keySet struct {
	byKID   map[string][]pubKey
	all     []pubKey
	digest  [32]byte // of the key material, to tell a real change from a refetch
	version uint64
}

// jwks keeps the keys of one JWKS URL fresh. It is shared by the
// authenticators of a Set that name the same URL and bounds, and handed over
// to the Set that replaces it on reload (see acquire/release), so a reload
// neither refetches nor forgets keys.
type jwks struct {
	url        string
	redacted   string // for logs and errors
	client     *http.Client
	ownsClient bool // built by NewSet rather than given in Options
	log        *slog.Logger
	now        func() time.Time
	min, max   time.Duration
	// kidWait is the bound on a request's wait for a fetch (see maxKIDWait);
	// after starts that wait's timer, replaced by tests to fire it at will.
	kidWait time.Duration
	after   func(time.Duration) <-chan time.Time

	keys atomic.Pointer[keySet]

	mu          sync.Mutex
	inflight    chan struct{} // closed when the running fetch ends
	lastAttempt time.Time
	lastErr     error
	fetches     int  // attempts, for tests and logs
	stopped     bool // no fetch may start: stop has begun

	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{}  // closed when run returns
	bg        sync.WaitGroup // fetches started for a request, which it stopped waiting for
	firstDone chan struct{}  // closed when the start-up fetch has ended, for tests
}

func newJWKS(ctx context.Context, rawURL string, minI, maxI time.Duration, client *http.Client, ownsClient bool, log *slog.Logger, now func() time.Time) *jwks {
	// The URL may carry credentials of the identity provider (userinfo,
	// an API key in the query): logs and errors show it masked.
	red := routes.RedactURL(rawURL)
	j := &jwks{
		url: rawURL, redacted: red, client: client, ownsClient: ownsClient, now: now, min: minI, max: maxI,
		log:       log.With("jwks_url", red),
		kidWait:   maxKIDWait,
		after:     time.After,
		done:      make(chan struct{}),
		firstDone: make(chan struct{}),
	}
	if t := client.Timeout; t > 0 && t < j.kidWait {
		j.kidWait = t
	}
	j.ctx, j.cancel = context.WithCancel(ctx)
	go j.run()
	return j
}

// stop ends the refresher and waits for every fetch it started; the
// JWKSCaches pool calls it when the last Set using the cache is closed.
func (j *jwks) stop() error {
	j.mu.Lock()
	j.stopped = true
	j.mu.Unlock()
	j.cancel()
	<-j.done
	j.bg.Wait()
	if j.ownsClient {
		// The default client is this package's: leave no idle
		// connection (and its goroutines) behind.
		j.client.CloseIdleConnections()
	}
	return nil
}

func (j *jwks) run() {
	defer close(j.done)
	retry := firstRetry
	for first := true; ; first = false {
		next := j.refreshShared(j.ctx)
		if first {
			close(j.firstDone)
		}
		if next == 0 { // failed: back off, but never beyond min
			next = retry
			retry = min(retry*2, max(j.min, firstRetry))
		} else {
			retry = firstRetry
		}
		t := time.NewTimer(next)
		select {
		case <-j.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// refreshShared fetches now, or waits for the fetch already running. It
// returns how long the result may be cached, 0 after a failure.
func (j *jwks) refreshShared(ctx context.Context) time.Duration {
	j.mu.Lock()
	if ch := j.inflight; ch != nil {
		j.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		j.mu.Lock()
		defer j.mu.Unlock()
		if j.lastErr != nil {
			return 0
		}
		return j.min
	}
	return j.fetchLocked()
}

// refreshForKID is the refresh an unknown kid asks for. At most one fetch
// starts per min interval, whatever the tokens say, so random kids cannot
// turn the edge into a load generator against the identity provider.
//
// The fetch runs on a goroutine of its own and requests wait for it until
// kidWait after it started: a provider that hangs must not hold requests
// with a new kid for the HTTP client's whole timeout. A fetch already
// running (the scheduled one, or another request's) is waited for the same
// way.
func (j *jwks) refreshForKID(ctx context.Context) {
	j.mu.Lock()
	ch := j.inflight
	if ch == nil {
		if j.stopped || !j.lastAttempt.IsZero() && j.now().Sub(j.lastAttempt) < j.min {
			j.mu.Unlock()
			return
		}
		ch = j.beginLocked()
		j.bg.Add(1)
		go func() {
			defer j.bg.Done()
			j.complete(ch)
		}()
	}
	wait := j.kidWait - j.now().Sub(j.lastAttempt) // lastAttempt: when ch's fetch started
	j.mu.Unlock()
	if wait <= 0 {
		return
	}
	select {
	case <-ch:
	case <-ctx.Done():
	case <-j.after(wait):
	}
}

// fetchLocked is entered with j.mu held and returns with it released.
func (j *jwks) fetchLocked() time.Duration {
	ch := j.beginLocked()
	j.mu.Unlock()
	return j.complete(ch)
}

// beginLocked records a fetch as running; complete must follow.
func (j *jwks) beginLocked() chan struct{} {
	ch := make(chan struct{})
	j.inflight = ch
	j.lastAttempt = j.now()
	j.fetches++
	return ch
}

// complete runs the fetch begun by beginLocked and publishes its outcome.
func (j *jwks) complete(ch chan struct{}) time.Duration {
	// The refresher's context, not a request's: a client hanging up must
	// not cancel a fetch that other requests are waiting for.
	ttl, err := j.fetch(j.ctx)

	j.mu.Lock()
	j.lastErr = err
	j.inflight = nil
	close(ch)
	j.mu.Unlock()
	if err != nil {
		if j.keys.Load() != nil {
			j.log.Warn("auth: JWKS refresh failed; keeping the last good keys", "err", err)
		} else {
			j.log.Error("auth: JWKS fetch failed; tokens of this authenticator are refused until it succeeds", "err", err)
		}
		return 0
	}
	return ttl
}

func (j *jwks) fetch(ctx context.Context) (ttl time.Duration, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic while fetching: %v", p)
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return 0, fmt.Errorf("jwks %s: %w", j.redacted, err)
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := j.client.Do(req)
	if err != nil {
		// net/http's error quotes the URL with its query.
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = j.redacted
		}
		return 0, fmt.Errorf("jwks %s: %w", j.redacted, err)
	}
	defer resp.Body.Close()
	// An https jwks_url followed to plain http (a redirect) would hand the
	// keys to anyone on that path, which routes refuses for an http
	// jwks_url without allow_insecure_http: keys that came so are not taken.
	if strings.EqualFold(req.URL.Scheme, "https") && !strings.EqualFold(resp.Request.URL.Scheme, "https") {
		return 0, fmt.Errorf("jwks %s: redirected to plain http", j.redacted)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return 0, fmt.Errorf("jwks %s: reading body: %w", j.redacted, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("jwks %s: status %d", j.redacted, resp.StatusCode)
	}
	if len(body) > maxJWKSBytes {
		return 0, fmt.Errorf("jwks %s: larger than %d bytes", j.redacted, maxJWKSBytes)
	}
	keys, skipped, err := parseJWKS(body)
	for _, s := range skipped {
		j.log.Debug("auth: JWKS key skipped", "key", s)
	}
	if err != nil {
		return 0, fmt.Errorf("jwks %s: %w", j.redacted, err)
	}
	j.store(keys, body)
	return j.cacheFor(resp.Header.Values("Cache-Control")), nil
}

// store installs keys unless they are the same as the current ones; only a
// real change gets a new version, which is what invalidates the token
// caches (a key removed must stop verifying cached tokens too).
func (j *jwks) store(keys []pubKey, body []byte) {
	digest := keysDigest(keys)
	old := j.keys.Load()
	if old != nil && old.digest == digest {
		return
	}
	ks := &keySet{byKID: map[string][]pubKey{}, all: keys, digest: digest}
	for _, k := range keys {
		ks.byKID[k.kid] = append(ks.byKID[k.kid], k)
	}
	if old != nil {
		ks.version = old.version + 1
	}
	j.keys.Store(ks)
	j.log.Info("auth: JWKS keys loaded", "keys", len(keys), "bytes", len(body))
}

func keysDigest(keys []pubKey) [32]byte {
	h := sha256.New()
	for _, k := range keys {
		der, _ := x509.MarshalPKIXPublicKey(k.key)
		fmt.Fprintf(h, "%q|%q|%x\n", k.kid, k.alg, der)
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// cacheFor reads max-age from Cache-Control and bounds it: an identity
// provider saying "no-store" still gets min between fetches, one saying
// "a year" still gets its rotations noticed within max.
func (j *jwks) cacheFor(cc []string) time.Duration {
	ttl := j.max
	for _, line := range cc {
		for d := range strings.SplitSeq(line, ",") {
			d = strings.TrimSpace(strings.ToLower(d))
			switch {
			case d == "no-store" || d == "no-cache":
				ttl = 0
			case strings.HasPrefix(d, "max-age="):
				if n, err := strconv.ParseInt(strings.Trim(d[len("max-age="):], `"`), 10, 64); err == nil && n >= 0 {
					ttl = min(time.Duration(n)*time.Second, j.max)
				}
			}
		}
	}
	return min(max(ttl, j.min), j.max)
}

// lookup returns the keys that may verify a token with kid and alg. An
// unknown kid, or no keys at all, asks for a (rate-limited) refresh first:
// that is how a rotation is picked up before the scheduled refresh.
func (j *jwks) lookup(ctx context.Context, kid, alg string) ([]pubKey, uint64, error) {
	keys, v, err := j.find(kid, alg)
	if err == nil {
		return keys, v, nil
	}
	j.refreshForKID(ctx)
	return j.find(kid, alg)
}

func (j *jwks) find(kid, alg string) ([]pubKey, uint64, error) {
	ks := j.keys.Load()
	if ks == nil {
		return nil, 0, errNoKeys
	}
	cands := ks.all
	if kid != "" {
		cands = ks.byKID[kid]
	}
	var out []pubKey
	for _, k := range cands {
		if k.fits(alg) {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, ks.version, errUnknownKID
	}
	return out, ks.version, nil
}

// version is the current key set's version, for cache entries to compare.
func (j *jwks) version() (uint64, bool) {
	ks := j.keys.Load()
	if ks == nil {
		return 0, false
	}
	return ks.version, true
}

// status says why the keys are not there, for Ready.
func (j *jwks) status() error {
	if j.keys.Load() != nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.lastErr != nil {
		return fmt.Errorf("no keys yet: %w", j.lastErr)
	}
	return fmt.Errorf("jwks %s: no keys yet: first fetch still running", j.redacted)
}

// fetchCount is how many fetches were attempted.
func (j *jwks) fetchCount() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.fetches
}

// kids lists the key ids currently held, for logs and tests.
func (j *jwks) kids() []string {
	ks := j.keys.Load()
	if ks == nil {
		return nil
	}
	out := make([]string, 0, len(ks.byKID))
	for k := range ks.byKID {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
