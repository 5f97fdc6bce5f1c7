package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/causewayhq/causeway/internal/edgeheader"
	"github.com/causewayhq/causeway/internal/redisclient"
	"github.com/causewayhq/causeway/internal/refpool"
	"github.com/causewayhq/causeway/ratelimit"
	"github.com/causewayhq/causeway/routes"
)

// authenticator is one named way of authenticating a request. It is
// declared here, by its only consumer, the route middleware.
type authenticator interface {
	name() string
	scheme() string // of the WWW-Authenticate challenge
	realm() string
	// authenticate returns the principal, or why not: ReasonMissing when
	// the request carries no credential for this authenticator.
	authenticate(r *http.Request) (*Principal, Reason)
	source() source
	keepToken() bool
	// forwardedHeaders are the upstream headers forwardTo may set; client
	// copies of them are removed on every route using the authenticator.
	forwardedHeaders() []string
	forwardTo(h http.Header, p *Principal)
	jwksCache() *jwks
}

// JWKSCaches shares JWKS caches, and their refreshers, between the Sets of
// successive configurations: a Set takes the cache of an unchanged jwks_url
// setting instead of fetching anew (a reload neither refetches nor loses
// keys), and the last Set using a cache stops its refresher. A server keeps
// one for its lifetime.
type JWKSCaches struct {
	pool *refpool.Pool[string, *jwks]
}

// NewJWKSCaches returns an empty set of caches.
func NewJWKSCaches() *JWKSCaches {
	return &JWKSCaches{pool: refpool.New[string]((*jwks).stop)}
}

// Options are the runtime dependencies of a Set.
type Options struct {
	// JWKS shares JWKS caches with other Sets (nil: prev's, else a set of
	// this Set's own).
	JWKS       *JWKSCaches
	Failures   *prometheus.CounterVec // labels: authenticator, reason; may be nil
	HTTPClient *http.Client           // for JWKS; nil: a client with sane timeouts
	Logger     *slog.Logger           // nil: slog.Default()
	Now        func() time.Time       // nil: time.Now
	// FailureLimiter counts basic authenticators' failed attempts per
	// client (nil: an in-memory limiter of this Set's own, so counts
	// restart with each configuration: pass one that outlives reloads).
	FailureLimiter FailureLimiter
	// ClientIP is the client address a failure is counted against (nil:
	// the connection's peer).
	ClientIP func(*http.Request) string
	// Origin is the scheme and host ("https://app.example.com") the client
	// addressed, which an oidc authenticator without redirect_url builds
	// its callback on (nil: RequestOrigin, the connection's own).
	Origin func(*http.Request) string
	// Verifiers bounds concurrent password-hash checks (0: GOMAXPROCS).
	Verifiers int
	// Metrics are the ext_authz metrics (nil: not counted).
	Metrics *Metrics
	// ExtAuthzTransport wraps the http.Transport an HTTP or OPA ext_authz
	// client is built on (its timeouts and TLS settings) in a RoundTripper
	// for the server's URL scheme ("http" or "https", lower case) that
	// reuses HTTP/1.1 connections only when no byte past an answer can be
	// read as the next check's (nil: no connection is reused). It is
	// called once per client, when the configuration is built; an error
	// refuses the configuration.
	ExtAuthzTransport func(scheme string, t *http.Transport) (http.RoundTripper, error)
	// Redis keeps the sessions of oidc authenticators with session.store:
	// redis (nil: NewSet builds a client from the file's redis section
	// when one needs it, and Close closes it). RedisKeyPrefix and
	// RedisTimeout go with it (from the redis section when NewSet builds
	// the client).
	Redis          redis.UniversalClient
	RedisKeyPrefix string
	RedisTimeout   time.Duration
}

func (o Options) verifiers() int {
	if o.Verifiers > 0 {
		return o.Verifiers
	}
	return runtime.GOMAXPROCS(0)
}

// Set is the authenticators of one routes file.
type Set struct {
	auths     map[string]authenticator
	files     []string // read while building, sorted: see Files
	caches    *JWKSCaches
	jwks      map[string]*jwks // by jwksKey; one reference each in caches, released by Close
	failures  *prometheus.CounterVec
	log       *slog.Logger
	forwarded []string // every header any authenticator forwards, sorted
	// forwardedFolded is forwarded folded as CGI-style servers fold
	// names (case, '_' as '-'): see dropForwarded.
	forwardedFolded map[string]bool
	sessions        []string              // every oidc authenticator's session cookie name
	redis           redis.UniversalClient // built by NewSet for session stores; closed by Close
	closeOnce       sync.Once
}

// defaultHTTPClient fetches JWKS and talks to OIDC providers: bounded in
// every phase, since a stuck identity provider must not pin a refresher
// forever, and never led from https to plain http by a redirect.
func defaultHTTPClient() *http.Client {
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: noDowngrade,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: 5 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   2,
			ForceAttemptHTTP2:     true,
		},
	}
}

// maxRedirects is net/http's own bound, kept.
const maxRedirects = 10

// noDowngrade follows a redirect unless it leaves https for plain http:
// what comes back then (signing keys, a discovery document, tokens), and
// what a 307 or 308 sends again (a token request's client secret and
// code), would cross the network in clear, which the routes file refuses
// for an http URL without allow_insecure_http.
func noDowngrade(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	if strings.EqualFold(via[0].URL.Scheme, "https") && !strings.EqualFold(req.URL.Scheme, "https") {
		return errors.New("refused a redirect from https to plain http")
	}
	return nil
}

func jwksKey(j *routes.JWT) string {
	var minI, maxI time.Duration
	if b := j.JWKSRefresh; b != nil {
		minI, maxI = b.Min.D(), b.Max.D()
	}
	return fmt.Sprintf("%s|%d|%d", j.JWKSURL, minI, maxI)
}

// NewSet builds every authenticator of f. JWKS caches for unchanged jwks_url
// settings come from opts.JWKS, or when that is nil from prev (may be nil),
// the set of the configuration being replaced by a reload.
// JWKS fetching starts in the background; NewSet does not fail when a JWKS
// endpoint is down. Errors name the authenticator: `authenticator "users": ...`.
//
// ctx's values reach the JWKS fetches, but its end does not stop the
// refreshers: a reload's context may well end before the configuration it
// built does, and a refresher taken over by later sets must outlive it.
// They stop when the last Set using them is closed.
func NewSet(ctx context.Context, f *routes.File, prev *Set, opts Options) (*Set, error) {
	if f == nil {
		return nil, errors.New("auth: no routes file")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	// ownRedis is a client NewSet built: closed unless the Set takes it.
	var ownRedis redis.UniversalClient
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.FailureLimiter == nil {
		opts.FailureLimiter = ratelimit.NewMemory(opts.Now)
	}
	if opts.ClientIP == nil {
		opts.ClientIP = ratelimit.ClientIPFunc(nil)
	}
	ownsClient := opts.HTTPClient == nil
	if ownsClient {
		opts.HTTPClient = defaultHTTPClient()
	}
	caches := opts.JWKS
	if caches == nil && prev != nil {
		caches = prev.caches
	}
	if caches == nil {
		caches = NewJWKSCaches()
	}
	// Without a redis section the authenticator refuses itself, at its
	// session.store.
	if opts.Redis == nil && needsRedis(f) && f.Redis != nil {
		c, err := redisclient.New(f.Redis)
		if err != nil {
			return nil, &routes.Error{File: f.Path, Pos: f.At("redis"), Path: "redis", Msg: err.Error()}
		}
		opts.Redis, opts.RedisKeyPrefix, opts.RedisTimeout = c, f.Redis.KeyPrefix, redisclient.Timeout(f.Redis)
		defer func() {
			if ownRedis != nil {
				_ = ownRedis.Close()
			}
		}()
		ownRedis = c
	}
	s := &Set{
		caches:   caches,
		auths:    make(map[string]authenticator, len(f.Authenticators)),
		jwks:     map[string]*jwks{},
		failures: opts.Failures,
		log:      opts.Logger,
	}
	names := make([]string, 0, len(f.Authenticators))
	for n := range f.Authenticators {
		names = append(names, n)
	}
	sort.Strings(names)
	forwarded := map[string]bool{}
	for _, name := range names {
		a, err := s.build(ctx, name, f.Authenticators[name], opts, ownsClient)
		if err != nil {
			s.Close()
			// Located at the authenticator, or at the key within it that
			// names the file at fault, as every other refusal of the file.
			p := "authenticators." + name
			var ke *keyError
			if errors.As(err, &ke) {
				p += "." + ke.key
			}
			return nil, &routes.Error{File: f.Path, Pos: f.At(p), Path: p, Msg: err.Error()}
		}
		s.auths[name] = a
		s.files = append(s.files, filesOf(f.Authenticators[name])...)
		for _, h := range a.forwardedHeaders() {
			forwarded[h] = true
		}
		if o, ok := a.(*oidcAuth); ok {
			s.sessions = append(s.sessions, o.sess.Name())
			if prev != nil {
				o.takeOver(prev.auths[name])
			}
		}
	}
	s.forwardedFolded = make(map[string]bool, len(forwarded))
	for h := range forwarded {
		s.forwarded = append(s.forwarded, h)
		s.forwardedFolded[foldName(h)] = true
	}
	sort.Strings(s.forwarded)
	slices.Sort(s.files)
	s.files = slices.Compact(s.files)
	s.redis, ownRedis = ownRedis, nil
	return s, nil
}

// needsRedis reports whether an authenticator of f keeps its sessions in
// Redis.
func needsRedis(f *routes.File) bool {
	for _, a := range f.Authenticators {
		if a.OIDC != nil && a.OIDC.Session != nil && a.OIDC.Session.Store == "redis" {
			return true
		}
	}
	return false
}

// Files lists the files the set's authenticators were built from (keys
// files, PEM keys, HMAC secret files, ext_authz CA bundles). They are read once, by NewSet: a
// caller that wants edits to take effect without a routes-file change
// watches these and builds a new Set.
func (s *Set) Files() []string { return slices.Clone(s.files) }

// ForwardedHeaders are the headers the set's authenticators state for the
// upstream (forward_claims, forward_name, ext_authz upstream_headers...),
// sorted: a client's copies of them are never passed on, in the header
// (Middleware removes them) nor after the body, where the gateway, which
// forwards trailers, must leave them out.
func (s *Set) ForwardedHeaders() []string { return slices.Clone(s.forwarded) }

// CredentialHeaders are the headers route's authenticators read a
// credential from (Authorization, a named header, Cookie for a token or
// session cookie), sorted. The gateway, which forwards trailers, leaves
// trailers of these names out on the route: the edge verified the
// header's copy, and a second one after the body would reach a service
// that merges trailers into the header as a credential nobody verified.
// An unknown authenticator name is skipped (Middleware refuses it).
func (s *Set) CredentialHeaders(route routes.Route) []string {
	var out []string
	for _, name := range route.Auth {
		a, ok := s.auths[name]
		if !ok {
			continue
		}
		switch src := a.source(); src.kind {
		case fromBearer, fromBasic:
			out = append(out, "Authorization")
		case fromHeader:
			out = append(out, src.name)
		case fromCookie, fromSession:
			out = append(out, "Cookie")
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// keyError is an authenticator's error caused by one of its keys (a path
// below authenticators.NAME), so that NewSet can point at that key.
type keyError struct {
	key string
	err error
}

func (e *keyError) Error() string { return e.err.Error() }
func (e *keyError) Unwrap() error { return e.err }

func filesOf(a routes.Authenticator) []string {
	var out []string
	if j := a.JWT; j != nil {
		out = append(out, j.PublicKeyFiles...)
		if j.HMACSecretFile != "" {
			out = append(out, j.HMACSecretFile)
		}
	}
	if k := a.APIKey; k != nil && k.KeysFile != "" {
		out = append(out, k.KeysFile)
	}
	if b := a.Basic; b != nil && b.HtpasswdFile != "" {
		out = append(out, b.HtpasswdFile)
	}
	if o := a.OIDC; o != nil && o.PrivateKeyFile != "" {
		out = append(out, o.PrivateKeyFile)
	}
	// The roots that verify the authorization server: a rotated private CA
	// is taken up as a rotated key is, and one that does not parse refuses
	// the rebuild while the server in use keeps being verified as before.
	if x := a.ExtAuthz; x != nil && x.CAFile != "" {
		out = append(out, x.CAFile)
	}
	return out
}

func (s *Set) build(ctx context.Context, name string, c routes.Authenticator, opts Options, ownsClient bool) (authenticator, error) {
	kinds := 0
	for _, set := range []bool{c.JWT != nil, c.APIKey != nil, c.Basic != nil, c.ExtAuthz != nil, c.OIDC != nil} {
		if set {
			kinds++
		}
	}
	switch {
	case kinds > 1:
		return nil, errors.New("jwt, api_key, basic, ext_authz and oidc are exclusive")
	case c.OIDC != nil:
		return newOIDCAuth(name, c.OIDC, opts)
	case c.APIKey != nil:
		return newAPIKeyAuth(name, c.SecretsFrom, c.APIKey)
	case c.Basic != nil:
		return newBasicAuth(name, c.SecretsFrom, c.Basic, opts)
	case c.ExtAuthz != nil:
		return newExtAuthz(name, c.ExtAuthz, opts)
	case c.JWT == nil:
		return nil, errors.New("needs one of jwt, api_key, basic, ext_authz or oidc")
	}
	a, err := newJWTAuth(name, c.JWT, opts.Now)
	if err != nil {
		return nil, err
	}
	if c.JWT.JWKSURL == "" {
		return a, nil
	}
	key := jwksKey(c.JWT)
	if j := s.jwks[key]; j != nil { // another authenticator of this set
		a.jwks = j
		return a, nil
	}
	j, _, _ := s.caches.pool.Acquire(key, func() (*jwks, error) {
		minI, maxI := routes.DefaultJWKSRefreshMin, routes.DefaultJWKSRefreshMax
		if b := c.JWT.JWKSRefresh; b != nil {
			if b.Max > 0 {
				maxI = b.Max.D()
			}
			if b.Min > 0 {
				minI = b.Min.D()
			}
		}
		minI = min(minI, maxI)
		return newJWKS(context.WithoutCancel(ctx), c.JWT.JWKSURL, minI, maxI, opts.HTTPClient, ownsClient, opts.Logger.With("authenticator", name), opts.Now), nil
	})
	s.jwks[key] = j
	a.jwks = j
	return a, nil
}

// Middleware authenticates for one route (route.Auth, route.RequireClaims);
// returns a pass-through when the route has no auth. On success it puts the
// Principal on the request context, strips the credential unless keep_token,
// removes client-sent copies of every forwarded header then sets them.
//
// A route without auth still loses client-sent copies of the headers the
// set's authenticators forward: an upstream shared with authenticated
// routes must never see a spoofed X-User-Id.
func (s *Set) Middleware(route routes.Route) (func(http.Handler) http.Handler, error) {
	if len(route.Auth) == 0 {
		if len(route.RequireClaims) > 0 {
			return nil, fmt.Errorf("route %q: require_claims needs auth", route.Name)
		}
		if len(s.forwarded) == 0 && len(s.sessions) == 0 {
			return func(next http.Handler) http.Handler { return next }, nil
		}
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if s.hasForwarded(r.Header) || s.hasSessionCookie(r.Header) {
					r2 := r.WithContext(r.Context())
					r2.Header = r.Header.Clone()
					s.dropForwarded(r2.Header)
					s.stripSessions(r2.Header)
					r = r2
				}
				next.ServeHTTP(w, r)
			})
		}, nil
	}
	m := &middleware{set: s, route: route.Name}
	seen := map[string]bool{}
	for _, name := range route.Auth {
		a, ok := s.auths[name]
		if !ok {
			return nil, fmt.Errorf("route %q: authenticator %q is not defined", route.Name, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("route %q: authenticator %q is listed twice", route.Name, name)
		}
		seen[name] = true
		m.auths = append(m.auths, a)
	}
	for claim, want := range route.RequireClaims {
		m.require = append(m.require, requirement{claim: claim, want: want})
	}
	sort.Slice(m.require, func(i, j int) bool { return m.require[i].claim < m.require[j].claim })
	return m.wrap, nil
}

// hasSessionCookie reports whether h carries a cookie of any oidc
// authenticator's session.
func (s *Set) hasSessionCookie(h http.Header) bool {
	if len(s.sessions) == 0 {
		return false
	}
	for _, line := range h["Cookie"] {
		for _, name := range s.sessions {
			if strings.Contains(line, name) {
				return true
			}
		}
	}
	return false
}

// stripSessions removes the cookies of every oidc session of the set: a
// browser sends them to every path of the host, and no upstream, behind
// an authenticated route or not, gets a session it could replay.
func (s *Set) stripSessions(h http.Header) {
	if len(s.sessions) == 0 {
		return
	}
	stripCookies(h, func(n string) bool {
		for _, name := range s.sessions {
			if isSessionCookie(name, n) {
				return true
			}
		}
		return false
	})
}

// hasForwarded reports whether h carries a client copy of a header the
// set's authenticators state, under any name dropForwarded removes.
func (s *Set) hasForwarded(h http.Header) bool {
	if hasAny(h, s.forwarded) {
		return true
	}
	for k := range h {
		if strings.IndexByte(k, '_') >= 0 && s.forwardedFolded[foldName(k)] {
			return true
		}
	}
	return false
}

// dropForwarded removes the client's copies of the headers the set's
// authenticators state (forward_claims, forward_name, ...): by name, and
// under every name a CGI-style upstream (CGI, WSGI, PHP) reads as the
// same variable, "X_User_Id" for X-User-Id. The edge keeps names with '_'
// only under server.allow_underscore_headers; there, such a copy would
// otherwise reach the upstream beside the authenticated value (or alone,
// on a route without auth) as HTTP_X_USER_ID, as the forwarded and
// client-address headers do not (edgeheader folds them the same way).
func (s *Set) dropForwarded(h http.Header) {
	for _, n := range s.forwarded {
		delete(h, n)
	}
	if len(s.forwardedFolded) == 0 {
		return
	}
	for k := range h {
		if strings.IndexByte(k, '_') >= 0 && s.forwardedFolded[foldName(k)] {
			delete(h, k)
		}
	}
}

// foldName is name as a CGI-style server reads it: case and '_' versus
// '-' do not count.
func foldName(name string) string {
	b := []byte(name)
	for i := range b {
		b[i] = edgeheader.FoldByte(b[i])
	}
	return string(b)
}

func hasAny(h http.Header, names []string) bool {
	for _, n := range names {
		if _, ok := h[n]; ok {
			return true
		}
	}
	return false
}

// requirement is one require_claims entry.
type requirement struct {
	claim, want string
}

// spaceSeparated claims hold a set as one string (RFC 8693 scope; scp as
// some providers spell it): require_claims tests membership in them.
var spaceSeparated = map[string]bool{"scope": true, "scp": true}

// met reports whether p carries the claim with the wanted value: equal, or
// a member of an array claim or of a space-separated scope.
func (q requirement) met(p *Principal) bool {
	if p.Claims == nil {
		v, ok := p.Claim(q.claim)
		return ok && v == q.want
	}
	v, ok := lookupClaim(p.Claims, q.claim)
	if !ok {
		return false
	}
	switch v := v.(type) {
	case string:
		if v == q.want {
			return true
		}
		// RFC 6749 §3.3: scope tokens are separated by ASCII spaces (0x20)
		// only; a tab, a newline or a Unicode space is part of a token,
		// never a separator, so "orders:read\tadmin" grants neither.
		return spaceSeparated[q.claim] && slices.Contains(strings.Split(v, " "), q.want)
	case []any:
		// Members are compared one by one and only as scalars: a nested
		// array ([["orders:read"]]) or an object is not a member equal to
		// the wanted value, however it would print.
		for _, e := range v {
			switch e.(type) {
			case []any, map[string]any, nil:
				continue
			}
			if s, ok := claimString(e); ok && s == q.want {
				return true
			}
		}
		return false
	case map[string]any:
		return false
	}
	s, ok := claimString(v)
	return ok && s == q.want
}

// interceptor is an authenticator that serves paths of its own on every
// route using it (an OIDC callback and logout).
type interceptor interface {
	intercept(w http.ResponseWriter, r *http.Request) bool
}

// checker is an authenticator whose refusals may carry a response of
// their own (a 429 with Retry-After) in place of the 401 challenge.
type checker interface {
	check(r *http.Request) (*Principal, Reason, refusal)
}

func authenticate(a authenticator, r *http.Request) (*Principal, Reason, refusal) {
	if c, ok := a.(checker); ok {
		return c.check(r)
	}
	p, reason := a.authenticate(r)
	return p, reason, nil
}

// middleware is one route's authentication.
type middleware struct {
	set     *Set
	route   string
	auths   []authenticator
	require []requirement
}

func (m *middleware) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var (
			p          *Principal
			winner     authenticator
			failed     = m.auths[0]
			failReason = ReasonMissing
			failResp   refusal
			// signIn answers a request with no credential at all: the
			// first OIDC authenticator's (a navigation is sent to sign in).
			signIn     refusal
			signInAuth authenticator
		)
		for _, a := range m.auths {
			if i, ok := a.(interceptor); ok && i.intercept(w, r) {
				return
			}
		}
		for _, a := range m.auths {
			got, reason, resp := authenticate(a, r)
			if got != nil {
				p, winner = got, a
				break
			}
			// The first credential that was there but wrong is the one to
			// report; "missing" only when none was there at all.
			if failReason == ReasonMissing && reason != ReasonMissing {
				failed, failReason, failResp = a, reason, resp
			}
			if reason == ReasonMissing && resp != nil && signIn == nil {
				signIn, signInAuth = resp, a
			}
		}
		if p == nil {
			if failReason == ReasonMissing && signIn != nil {
				failed, failResp = signInAuth, signIn
			}
			m.fail(w, r, failed, failReason, failResp)
			return
		}
		for _, q := range m.require {
			if !q.met(p) {
				m.fail(w, r, winner, ReasonMissingClaim, nil)
				return
			}
		}
		r2 := r.WithContext(newContextBy(r.Context(), p, winner))
		r2.Header = r.Header.Clone()
		if r2.Header == nil {
			r2.Header = http.Header{}
		}
		for _, a := range m.auths {
			if a.keepToken() || (winner.keepToken() && a.source().sameSlot(winner.source())) {
				continue
			}
			src := a.source()
			if src.kind == fromQuery && r2.URL == r.URL && r.URL != nil {
				u := *r.URL
				r2.URL = &u
			}
			src.strip(r2)
			if src.kind == fromQuery && r2.RequestURI != "" {
				// Whatever logs or reads RequestURI downstream must not
				// see the credential either.
				r2.RequestURI = r2.URL.RequestURI()
			}
		}
		// Every header any authenticator of the set forwards, not only
		// this route's: see Middleware.
		m.set.dropForwarded(r2.Header)
		m.set.stripSessions(r2.Header)
		winner.forwardTo(r2.Header, p)
		if p.respond != nil {
			p.respond(w)
		}
		next.ServeHTTP(w, r2)
	})
}

func (m *middleware) fail(w http.ResponseWriter, r *http.Request, a authenticator, reason Reason, resp refusal) {
	if m.set.failures != nil {
		m.set.failures.WithLabelValues(a.name(), string(reason)).Inc()
	}
	m.set.log.Debug("auth: request refused", "route", m.route, "authenticator", a.name(), "reason", string(reason))
	if resp != nil {
		resp(w, r)
		return
	}
	refuse(w, r, m.auths, a, reason)
}

// Ready is nil when every JWKS-backed authenticator has keys; else it names
// the ones still waiting and why.
func (s *Set) Ready() error {
	var errs []error
	names := make([]string, 0, len(s.auths))
	for n := range s.auths {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if j := s.auths[n].jwksCache(); j != nil {
			if err := j.status(); err != nil {
				errs = append(errs, fmt.Errorf("authenticator %q: %w", n, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Close stops the background refreshers not handed to a successor set. It
// is safe to call more than once.
func (s *Set) Close() error {
	s.closeOnce.Do(func() {
		for key := range s.jwks {
			_, _ = s.caches.pool.Release(key)
		}
		for _, a := range s.auths {
			if c, ok := a.(interface{ close() }); ok {
				c.close()
			}
		}
		if s.redis != nil {
			_ = s.redis.Close()
		}
	})
	return nil
}
