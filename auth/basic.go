package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/causewayhq/causeway/internal/httperr"
	"github.com/causewayhq/causeway/ratelimit"
	"github.com/causewayhq/causeway/routes"
)

// maxBasicHeaderBytes refuses absurd Authorization headers before decoding.
const maxBasicHeaderBytes = 4096

// basicCacheSize bounds the verified-credential cache of one authenticator.
const basicCacheSize = 4096

// maxBlockedClients bounds the clients remembered as over their failure
// limit. Past it, expired entries are swept, then arbitrary ones dropped: a
// dropped client gets one more attempt before being blocked again, which
// the limiter still counts.
const maxBlockedClients = 1 << 16

// FailureLimiter counts failed attempts; ratelimit.Memory is one, and what
// NewSet uses when Options leaves it nil.
type FailureLimiter interface {
	Allow(ctx context.Context, key string, l ratelimit.Limit) (ratelimit.Decision, error)
}

// basicAuth authenticates by HTTP Basic credentials (RFC 7617) against an
// htpasswd file of bcrypt or argon2id hashes.
type basicAuth struct {
	authName    string
	authRealm   string
	keep        bool
	forwardUser string
	users       map[string]*htpasswdUser
	// decoy is checked for an unknown user, so that an unknown name costs
	// what a wrong password of a real user costs: timing does not say
	// which names exist.
	decoy passwordHash

	now      func() time.Time
	cacheTTL time.Duration
	cache    *tokenCache
	salt     [32]byte // keys the cache: a memory dump holds no fast hash of a password

	limiter  FailureLimiter
	limit    ratelimit.Limit
	clientIP func(*http.Request) string
	blocked  *deadlines[string] // client -> refused until

	// verifying bounds concurrent hash checks: each one is tens of
	// milliseconds of CPU (and, for argon2id, its memory), so a flood of
	// guesses queues instead of taking every core and the memory with it.
	verifying chan struct{}
}

var _ authenticator = (*basicAuth)(nil)

func newBasicAuth(name, from string, c *routes.Basic, opts Options) (*basicAuth, error) {
	var (
		users map[string]*htpasswdUser
		order []string
		err   error
	)
	switch {
	case len(c.Htpasswd) > 0:
		users, order, err = htpasswdFrom(from, c.Htpasswd, name)
	case c.HtpasswdFile == "":
		return nil, fmt.Errorf("htpasswd_file is required")
	default:
		users, order, err = loadHtpasswd(c.HtpasswdFile, name)
	}
	if err != nil {
		return nil, &keyError{key: "basic.htpasswd_file", err: err}
	}
	a := &basicAuth{
		authName:  name,
		authRealm: c.Realm,
		keep:      c.KeepToken,
		users:     users,
		decoy:     users[order[0]].hash,
		now:       opts.Now,
		limiter:   opts.FailureLimiter,
		clientIP:  opts.ClientIP,
		blocked:   newDeadlines[string](maxBlockedClients),
		verifying: make(chan struct{}, opts.verifiers()),
	}
	if a.authRealm == "" {
		a.authRealm = name
	}
	if c.ForwardUser != "" {
		a.forwardUser = http.CanonicalHeaderKey(c.ForwardUser)
	}
	ttl := routes.DefaultBasicCacheTTL
	if c.CacheTTL != nil {
		ttl = c.CacheTTL.D()
	}
	if ttl > 0 {
		a.cacheTTL = ttl
		a.cache = newTokenCache(basicCacheSize)
		if _, err := rand.Read(a.salt[:]); err != nil {
			return nil, fmt.Errorf("seeding the credential cache: %w", err)
		}
	}
	fl := routes.FailureLimit{Limit: routes.DefaultBasicFailureLimit, Per: routes.Duration(routes.DefaultBasicFailurePer)}
	if c.FailureLimit != nil {
		fl = *c.FailureLimit
	}
	if fl.Limit <= 0 || fl.Per <= 0 || fl.Burst < 0 {
		return nil, fmt.Errorf("failure_limit needs a positive limit and per")
	}
	a.limit = ratelimit.Limit{Name: "auth-failures/" + name, Rate: fl.Limit, Per: fl.Per.D(), Burst: fl.Burst}
	return a, nil
}

func (a *basicAuth) name() string     { return a.authName }
func (a *basicAuth) realm() string    { return a.authRealm }
func (a *basicAuth) scheme() string   { return "Basic" }
func (a *basicAuth) source() source   { return source{kind: fromBasic} }
func (a *basicAuth) keepToken() bool  { return a.keep }
func (a *basicAuth) jwksCache() *jwks { return nil }

func (a *basicAuth) forwardedHeaders() []string {
	if a.forwardUser == "" {
		return nil
	}
	return []string{a.forwardUser}
}

func (a *basicAuth) forwardTo(h http.Header, p *Principal) {
	if a.forwardUser != "" {
		h[a.forwardUser] = []string{p.Subject}
	}
}

func (a *basicAuth) authenticate(r *http.Request) (*Principal, Reason) {
	p, reason, _ := a.check(r)
	return p, reason
}

// check is authenticate with the response of a refusal of its own: 429
// with Retry-After for a client over its failure limit.
func (a *basicAuth) check(r *http.Request) (*Principal, Reason, refusal) {
	user, password, reason := basicCredentials(r.Header["Authorization"])
	if reason != ReasonNone {
		return nil, reason, nil
	}
	client := a.clientIP(r)
	now := a.now()
	// A blocked client is refused before its credential is looked at: were
	// a right guess still let through, the limit would only slow the
	// guessing down, not hide its success.
	if wait := a.blockedFor(client, now); wait > 0 {
		return nil, ReasonTooManyFailures, retryAfter(wait)
	}
	var key string
	if a.cache != nil {
		key = a.cacheKey(user, password)
		if p, ok := a.cache.get(key, now, 0); ok {
			return p, ReasonNone, nil
		}
	}
	u := a.users[user]
	ok, err := a.verify(r.Context(), u, password)
	if err != nil {
		// The client went away while waiting for a verifier.
		return nil, ReasonBadCredentials, nil
	}
	if ok {
		if a.cache != nil {
			a.cache.put(key, cacheEntry{p: u.p, until: now.Add(a.cacheTTL)}, now)
		}
		return u.p, ReasonNone, nil
	}
	d, err := a.limiter.Allow(r.Context(), client, a.limit)
	if err == nil && !d.Allowed {
		a.blocked.set(client, now.Add(d.RetryAfter), now)
		return nil, ReasonTooManyFailures, retryAfter(d.RetryAfter)
	}
	return nil, ReasonBadCredentials, nil
}

// verify checks password against u's hash, or against the decoy when the
// user is unknown, so both cost the same.
func (a *basicAuth) verify(ctx context.Context, u *htpasswdUser, password string) (bool, error) {
	select {
	case a.verifying <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-a.verifying }()
	if u == nil {
		a.decoy.verify([]byte(password))
		return false, nil
	}
	return u.hash.verify([]byte(password)), nil
}

func (a *basicAuth) cacheKey(user, password string) string {
	h := sha256.New()
	h.Write(a.salt[:])
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(password))
	return string(h.Sum(nil))
}

func (a *basicAuth) blockedFor(client string, now time.Time) time.Duration {
	if until, ok := a.blocked.until(client, now); ok {
		return until.Sub(now)
	}
	return 0
}

// basicCredentials reads an RFC 7617 Authorization header. Another scheme
// is not a credential for a basic authenticator: missing.
func basicCredentials(vs []string) (user, password string, reason Reason) {
	switch {
	case len(vs) == 0:
		return "", "", ReasonMissing
	case len(vs) > 1:
		return "", "", ReasonMalformed
	}
	scheme, rest, _ := strings.Cut(vs[0], " ")
	if !strings.EqualFold(scheme, "Basic") {
		return "", "", ReasonMissing
	}
	if len(rest) > maxBasicHeaderBytes {
		return "", "", ReasonOversized
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(strings.Trim(rest, " "))
	if err != nil {
		return "", "", ReasonMalformed
	}
	user, password, ok := strings.Cut(string(raw), ":")
	if !ok || user == "" {
		return "", "", ReasonMalformed
	}
	return user, password, ReasonNone
}

// refusal writes an authenticator's own answer to a refused request, in
// place of the 401 challenge.
type refusal func(w http.ResponseWriter, r *http.Request)

func retryAfter(d time.Duration) refusal {
	secs := int64((d + time.Second - 1) / time.Second)
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
		httperr.Write(w, r, http.StatusTooManyRequests, ReasonTooManyFailures.description())
	}
}
