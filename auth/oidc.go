package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/oauth2"

	"github.com/causewayhq/causeway/auth/session"
	"github.com/causewayhq/causeway/internal/httperr"
	"github.com/causewayhq/causeway/routes"
)

const (
	// loginTTL is how long a started sign-in may take: the state cookie
	// opens no later, and its state is remembered as used this long.
	loginTTL = 10 * time.Minute
	// discoveryRetry is how long a failed discovery is remembered before
	// the provider is asked again: a provider that is down is not asked
	// by every request.
	discoveryRetry = 5 * time.Second
	// providerTimeout bounds one call to the provider (discovery, code
	// exchange, refresh) inside a request.
	providerTimeout = 10 * time.Second
	// maxPendingLogins is how many sign-ins one browser may have under way
	// at once (tabs reloaded together after a session ended each start
	// one); past it the oldest is forgotten.
	maxPendingLogins = 4
	// maxUsedStates bounds the states remembered as used; past it the
	// expired ones are swept, then others dropped (a dropped state's
	// callback is still refused by the provider, whose authorization
	// code is single-use).
	maxUsedStates = 1 << 16
)

// oidcAuth signs browsers in through an OpenID Connect provider and keeps
// the session in a sealed cookie (package session).
type oidcAuth struct {
	authName      string
	realmName     string
	issuer        string
	clientID      string
	clientSecret  string
	scopes        []string
	redirectPath  string
	redirectURL   string // set: the only redirect_uri sent
	origin        func(*http.Request) string
	logoutPath    string
	postLogout    string
	forward       []claimHeader
	forwardAT     bool
	refreshBefore time.Duration
	onErrorAllow  bool
	statusOnError int

	sess *session.Store // the session (with store: redis, its id)
	// store holds the sessions with session.store: redis (nil: in the
	// cookie).
	store *redisSessions
	login *session.Store // a sign-in under way: state, nonce, PKCE verifier

	client *http.Client
	// tokenClient makes the token requests (the client in oauth2's
	// context): client, or with private_key_file, client adding a signed
	// assertion to each.
	tokenClient *http.Client
	assertion   *clientAssertion
	now         func() time.Time
	log         *slog.Logger
	failures    *prometheus.CounterVec

	mu       sync.Mutex
	prov     *provider
	provErr  error
	provWhen time.Time // of the last failed discovery

	// used holds the states of completed sign-ins (sha256 of the state)
	// until their state cookie could no longer open, so a replayed
	// callback is refused even with the cookie it came with.
	used *deadlines[string]
	// ended holds the cookie sessions logged out here (store: cookie;
	// with store: redis, logout deletes the session itself) until they
	// could no longer open: see endCookieSession.
	ended   *deadlines[endedKey]
	refresh flight
	// cache holds the principals of sessions by their seal (session.ID),
	// until the tokens enter their refresh window: a request pays the
	// opening of its cookie, not the decoding of its claims.
	cache *tokenCache
}

var _ authenticator = (*oidcAuth)(nil)

// oidcAlgorithms are the ID token algorithms go-oidc verifies (its
// supportedAlgorithms): the provider's id_token_signing_alg_values_supported
// is kept to these, as go-oidc's Provider.Verifier does.
var oidcAlgorithms = map[string]bool{
	oidc.RS256: true, oidc.RS384: true, oidc.RS512: true,
	oidc.ES256: true, oidc.ES384: true, oidc.ES512: true,
	oidc.PS256: true, oidc.PS384: true, oidc.PS512: true,
	oidc.EdDSA: true,
}

// providerKeys is the provider's signing keys (go-oidc's remote key set,
// fetched again when a token names a key it has not seen). go-oidc
// reports a fetch of the keys that failed and a signature that does not
// verify as one error, flattened to text; a provider that cannot be
// reached, or does not answer in time, is status_on_error and not a
// refused sign-in, so the fetch's failure is recorded in the context of
// the verification (keysUnreachable).
type providerKeys struct {
	remote *oidc.RemoteKeySet
}

var _ oidc.KeySet = providerKeys{}

// keysUnreachableKey holds, in a verification's context, the *bool that
// providerKeys sets when it could not fetch the keys.
type keysUnreachableKey struct{}

func (k providerKeys) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := k.remote.VerifySignature(ctx, jwt)
	if err != nil && unreachable(err) {
		if p, ok := ctx.Value(keysUnreachableKey{}).(*bool); ok {
			*p = true
		}
	}
	return payload, err
}

// unreachable is an error of a request that got no answer: it could not
// be sent, the connection failed, or it timed out (its own deadline or
// the caller's).
func unreachable(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// provider is what discovery found.
type provider struct {
	verifier *oidc.IDTokenVerifier
	// oauth is built once per discovery, its AuthStyle stated: with
	// oauth2's AuthStyleAutoDetect every failed token request (a refused
	// code, a refused refresh, a timeout) is sent a second time with the
	// credentials in the form, and a refresh token sent twice is what a
	// provider's reuse detection punishes. Its RedirectURL is redirect_url
	// or empty: the redirect_uri of a request is added to it (redirectURI).
	oauth      *oauth2.Config
	endSession string
}

// sessionData is what the session cookie holds. The ID token is kept
// whole: its claims are the principal's, and it is the id_token_hint of
// a logout. It was verified when the session was sealed; the seal is what
// vouches for it afterwards.
type sessionData struct {
	IDToken string `json:"id"`
	Access  string `json:"at,omitempty"` // only with forward_access_token
	Refresh string `json:"rt,omitempty"`
	// Expiry is when the tokens the session relies on expire (the ID
	// token, and the access token when it is forwarded): refreshed
	// refresh_before it.
	Expiry int64 `json:"exp"`
}

// loginData is one sign-in under way, as the state cookie holds it (a
// list, newest first) while the browser is at the provider.
type loginData struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	ReturnTo string `json:"r"`
	Started  int64  `json:"t"` // Unix nanoseconds: each entry lives loginTTL
}

func newOIDCAuth(name string, c *routes.OIDC, opts Options) (*oidcAuth, error) {
	a := &oidcAuth{
		authName:      name,
		realmName:     c.Realm,
		issuer:        c.Issuer,
		clientID:      c.ClientID,
		redirectPath:  c.RedirectPath,
		redirectURL:   c.RedirectURL,
		origin:        opts.Origin,
		logoutPath:    c.LogoutPath,
		postLogout:    c.PostLogoutRedirectURL,
		forwardAT:     c.ForwardAccessToken,
		refreshBefore: c.RefreshBefore.D(),
		onErrorAllow:  c.OnError == "allow",
		statusOnError: c.StatusOnError,
		client:        opts.HTTPClient,
		now:           opts.Now,
		log:           opts.Logger.With("authenticator", name),
		failures:      opts.Failures,
		used:          newDeadlines[string](maxUsedStates),
		ended:         newDeadlines[endedKey](maxEndedSessions),
		cache:         newTokenCache(routes.DefaultTokenCache),
	}
	if a.realmName == "" {
		a.realmName = name
	}
	if a.redirectPath == "" {
		a.redirectPath = routes.DefaultOIDCRedirectPath
	}
	if a.origin == nil {
		a.origin = RequestOrigin
	}
	if a.statusOnError == 0 {
		a.statusOnError = routes.DefaultOIDCStatusOnError
	}
	if a.issuer == "" || a.clientID == "" {
		return nil, errors.New("issuer and client_id are required")
	}
	a.scopes = slices.Clone(c.Scopes)
	if len(a.scopes) == 0 {
		a.scopes = slices.Clone(routes.DefaultOIDCScopes)
	}
	if !slices.Contains(a.scopes, oidc.ScopeOpenID) {
		a.scopes = append([]string{oidc.ScopeOpenID}, a.scopes...)
	}
	if c.ClientSecret != "" {
		a.clientSecret = c.ClientSecret
	} else if env := c.ClientSecretEnv; env != "" {
		v, ok := os.LookupEnv(env)
		if !ok || v == "" {
			return nil, &keyError{key: "oidc.client_secret_env", err: fmt.Errorf("environment variable %s is unset or empty", env)}
		}
		a.clientSecret = v
	}
	a.tokenClient = a.client
	if c.PrivateKeyFile != "" {
		if a.clientSecret != "" {
			return nil, &keyError{key: "oidc.private_key_file", err: errors.New("and client_secret_env are two ways to authenticate the client: set one")}
		}
		key, method, err := loadAssertionKey(c.PrivateKeyFile)
		if err != nil {
			return nil, &keyError{key: "oidc.private_key_file", err: err}
		}
		a.assertion = &clientAssertion{clientID: a.clientID, issuer: a.issuer, kid: c.PrivateKeyID, key: key, method: method, now: a.now}
		base := http.DefaultTransport
		if a.client != nil && a.client.Transport != nil {
			base = a.client.Transport
		}
		tc := &http.Client{}
		if a.client != nil {
			*tc = *a.client
		}
		tc.Transport = &assertionTransport{base: base, ca: a.assertion}
		a.tokenClient = tc
	}
	for claim, header := range c.ForwardClaims {
		a.forward = append(a.forward, claimHeader{claim: claim, header: http.CanonicalHeaderKey(header)})
	}
	sort.Slice(a.forward, func(i, j int) bool { return a.forward[i].header < a.forward[j].header })

	sc := c.Session
	if sc == nil || sc.KeysEnv == "" && sc.Keys == "" {
		return nil, &keyError{key: "oidc.session", err: errors.New("session.keys_env is required")}
	}
	var keys [][]byte
	var err error
	if sc.Keys != "" {
		keys, err = session.ParseKeys(sc.Keys)
	} else {
		keys, err = session.KeysFromEnv(sc.KeysEnv)
	}
	if err != nil {
		return nil, &keyError{key: "oidc.session.keys_env", err: err}
	}
	cookie := sc.Cookie
	if cookie == "" {
		cookie = routes.DefaultOIDCCookiePrefix + strings.ReplaceAll(name, ".", "-")
	}
	idle, absolute := sc.IdleTimeout.D(), sc.AbsoluteTimeout.D()
	if idle == 0 {
		idle = routes.DefaultOIDCIdleTimeout
	}
	if absolute == 0 {
		absolute = routes.DefaultOIDCAbsoluteTimeout
	}
	cookieIdle := idle
	switch sc.Store {
	case "", "cookie":
	case "redis":
		if opts.Redis == nil {
			return nil, &keyError{key: "oidc.session.store", err: errors.New("store: redis needs the redis section")}
		}
		a.store = &redisSessions{
			rdb:      opts.Redis,
			prefix:   opts.RedisKeyPrefix + "oidc:" + name + ":",
			timeout:  opts.RedisTimeout,
			idle:     idle,
			absolute: absolute,
		}
		if a.store.timeout <= 0 {
			a.store.timeout = routes.DefaultRedisTimeout
		}
		// The cookie holds the id and is written once, at sign-in: the
		// last use is kept in Redis, which enforces the idle timeout.
		cookieIdle = 0
	default:
		return nil, &keyError{key: "oidc.session.store", err: fmt.Errorf("%q is not a session store (cookie or redis)", sc.Store)}
	}
	if a.sess, err = session.New(session.Config{Name: cookie, Keys: keys, Idle: cookieIdle, Absolute: absolute}); err != nil {
		return nil, &keyError{key: "oidc.session", err: err}
	}
	if a.login, err = session.New(session.Config{Name: cookie + "-login", Keys: keys, Absolute: loginTTL, MaxChunks: 1}); err != nil {
		return nil, &keyError{key: "oidc.session", err: err}
	}
	return a, nil
}

func (a *oidcAuth) name() string     { return a.authName }
func (a *oidcAuth) realm() string    { return a.realmName }
func (a *oidcAuth) scheme() string   { return "" } // a browser session: no HTTP authentication scheme to challenge with
func (a *oidcAuth) source() source   { return source{kind: fromSession, name: a.sess.Name()} }
func (a *oidcAuth) keepToken() bool  { return false } // the session cookies never reach the upstream
func (a *oidcAuth) jwksCache() *jwks { return nil }

func (a *oidcAuth) forwardedHeaders() []string {
	hs := make([]string, len(a.forward))
	for i, f := range a.forward {
		hs[i] = f.header
	}
	return hs
}

// forwardTo sets the forwarded claims and, with forward_access_token, the
// access token. A client's own Authorization never passes a request the
// session authenticated: the upstream would take it for the edge's.
func (a *oidcAuth) forwardTo(h http.Header, p *Principal) {
	h.Del("Authorization")
	if a.forwardAT && p.accessToken != "" {
		h["Authorization"] = []string{"Bearer " + p.accessToken}
	}
	for _, f := range a.forward {
		if v, ok := p.Claim(f.claim); ok && httpguts.ValidHeaderFieldValue(v) {
			h[f.header] = []string{v}
		}
	}
}

func (a *oidcAuth) authenticate(r *http.Request) (*Principal, Reason) {
	p, reason, _ := a.check(r)
	return p, reason
}

// provider discovers the provider once; a failure is remembered for
// discoveryRetry.
func (a *oidcAuth) provider(ctx context.Context) (*provider, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.prov != nil {
		return a.prov, nil
	}
	now := a.now()
	if a.provErr != nil && now.Sub(a.provWhen) < discoveryRetry {
		return nil, a.provErr
	}
	// The discovery is every request's, not the one that happens to run
	// it: a client that hangs up (or a request that ends) while the
	// provider is slow to answer must not be remembered as the provider
	// being down, which answers every sign-in status_on_error and skips
	// the provider's logout for discoveryRetry. providerTimeout bounds it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), providerTimeout)
	defer cancel()
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, a.client), a.issuer)
	if err != nil {
		a.provErr, a.provWhen = fmt.Errorf("discovery at %s: %w", routes.RedactURL(a.issuer), err), now
		return nil, a.provErr
	}
	var meta struct {
		EndSession string   `json:"end_session_endpoint"`
		Methods    []string `json:"code_challenge_methods_supported"`
		JWKSURI    string   `json:"jwks_uri"`
		Algorithms []string `json:"id_token_signing_alg_values_supported"`
		// AuthMethods is how the token endpoint authenticates clients
		// (RFC 8414 section 2).
		AuthMethods []string `json:"token_endpoint_auth_methods_supported"`
	}
	if err := p.Claims(&meta); err != nil {
		a.provErr, a.provWhen = fmt.Errorf("discovery at %s: %w", routes.RedactURL(a.issuer), err), now
		return nil, a.provErr
	}
	if len(meta.Methods) > 0 && !slices.Contains(meta.Methods, "S256") {
		// Refusing here rather than trusting the provider to ignore an
		// unsupported challenge: PKCE is part of the contract.
		a.provErr, a.provWhen = errors.New("the provider does not support PKCE with S256"), now
		return nil, a.provErr
	}
	// The verifier is go-oidc's Provider.Verifier (the same remote key
	// set, fetched with the same client, the same algorithms) with the
	// key set wrapped, so that a fetch of the keys that fails is told from
	// a signature that does not verify.
	cfg := &oidc.Config{ClientID: a.clientID, Now: a.now}
	for _, alg := range meta.Algorithms {
		if oidcAlgorithms[alg] {
			cfg.SupportedSigningAlgs = append(cfg.SupportedSigningAlgs, alg)
		}
	}
	keys := providerKeys{remote: oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), a.client), meta.JWKSURI)}
	ep := p.Endpoint()
	ep.AuthStyle = tokenAuthStyle(meta.AuthMethods, a.clientSecret != "", a.assertion != nil)
	a.prov = &provider{
		verifier: oidc.NewVerifier(a.issuer, keys, cfg),
		oauth: &oauth2.Config{
			ClientID:     a.clientID,
			ClientSecret: a.clientSecret,
			Endpoint:     ep,
			RedirectURL:  a.redirectURL,
			Scopes:       a.scopes,
		},
		endSession: meta.EndSession,
	}
	a.provErr = nil
	return a.prov, nil
}

// tokenAuthStyle is how the client authenticates at the token endpoint,
// decided once from discovery so that no token request is ever sent twice
// (see provider.oauth). With a signed assertion (private_key_jwt) or no
// secret at all (a public client, "none"), the client's id goes in the
// form. With a secret, client_secret_basic when the provider lists it or
// lists nothing (RFC 8414 section 2: the default is client_secret_basic),
// else client_secret_post when it lists that. A provider that lists
// neither gets Basic: its refusal names the problem.
func tokenAuthStyle(methods []string, secret, assertion bool) oauth2.AuthStyle {
	switch {
	case assertion || !secret:
		return oauth2.AuthStyleInParams
	case len(methods) == 0 || slices.Contains(methods, "client_secret_basic"):
		return oauth2.AuthStyleInHeader
	case slices.Contains(methods, "client_secret_post"):
		return oauth2.AuthStyleInParams
	}
	return oauth2.AuthStyleInHeader
}

// redirectURI is the redirect_uri of a sign-in started by r, as an option
// of the provider's config (which has it already with redirect_url).
func (a *oidcAuth) redirectURI(r *http.Request) []oauth2.AuthCodeOption {
	if a.redirectURL != "" {
		return nil
	}
	return []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("redirect_uri", a.callbackURL(r))}
}

// callbackURL is the redirect_uri of a sign-in started by r: redirect_url
// when the file sets one, else the callback path on the scheme and host
// the client addressed (which the edge's Options.Origin decides).
func (a *oidcAuth) callbackURL(r *http.Request) string {
	if a.redirectURL != "" {
		return a.redirectURL
	}
	return a.origin(r) + a.redirectPath
}

// siteOrigin is the scheme and host the edge's pages are at, for a path
// that must become an absolute URL (the post-logout address).
func (a *oidcAuth) siteOrigin(r *http.Request) string {
	if a.redirectURL != "" {
		if u, err := url.Parse(a.redirectURL); err == nil {
			return u.Scheme + "://" + u.Host
		}
	}
	return a.origin(r)
}

// RequestOrigin is the scheme and host of r as this server received it:
// https when the connection is TLS, and the Host header. Behind a proxy
// that terminates TLS it is wrong; the edge passes an Origin that
// believes X-Forwarded-Proto and X-Forwarded-Host, and Forwarded's proto=
// and host=, from trusted proxies.
func RequestOrigin(r *http.Request) string {
	if r.TLS != nil {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

func (a *oidcAuth) providerCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, providerTimeout)
	return context.WithValue(oidc.ClientContext(ctx, a.client), oauth2.HTTPClient, a.tokenClient), cancel
}

// isNavigation reports whether r looks like a browser loading a page: the
// only kind of request sent to the provider to sign in. An API client
// gets the JSON 401 instead of a login page it cannot use.
func isNavigation(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	for _, v := range r.Header["Accept"] {
		if strings.Contains(strings.ToLower(v), "text/html") {
			return true
		}
	}
	return false
}

// check authenticates r by its session, refreshing the tokens when they
// are about to expire. A refused navigation request is sent to sign in.
func (a *oidcAuth) check(r *http.Request) (*Principal, Reason, refusal) {
	now := a.now()
	s, err := a.sess.Open(r, now)
	if err != nil {
		reason := openReason(err)
		return nil, reason, a.signIn(r, reason)
	}
	if a.store != nil {
		return a.checkStored(r, s, now)
	}
	touch := a.sess.Idle() > 0 && now.Sub(s.LastUsed) >= a.sess.Idle()/4
	if p, ok := a.cache.get(s.ID, now, 0); ok {
		if a.ended.live(endedKey{s.Created.UnixNano(), p.Subject}, now) {
			return nil, ReasonSessionExpired, a.signIn(r, ReasonSessionExpired)
		}
		return a.accept(p, r, s.Data, s.Created, now, touch), ReasonNone, nil
	}
	var d sessionData
	claims, err := decodeSession(s.Data, &d)
	if err != nil {
		return nil, ReasonMalformed, a.signIn(r, ReasonMalformed)
	}
	// Before any refresh: a logged-out session's refresh token is not
	// used again.
	if sub, _ := claims["sub"].(string); a.ended.live(endedKey{s.Created.UnixNano(), sub}, now) {
		return nil, ReasonSessionExpired, a.signIn(r, ReasonSessionExpired)
	}
	data := s.Data
	exp := time.Unix(d.Expiry, 0)
	if !now.Before(exp.Add(-a.refreshBefore)) {
		nd, nclaims, err := a.refreshTokens(r.Context(), &d, claims)
		switch {
		case err == nil:
			d, claims, touch = *nd, nclaims, true
			if data, err = json.Marshal(d); err != nil {
				return nil, ReasonMalformed, a.signIn(r, ReasonMalformed)
			}
		case now.Before(exp):
			// Not expired yet: a failed early refresh (another request's
			// rotation won, the provider blinked) is tried again later.
			a.log.Debug("oidc: early refresh failed", "error", err)
		case errors.Is(err, errProviderDown) && a.onErrorAllow:
			a.log.Warn("oidc: refresh failed, session kept (on_error: allow)", "error", err)
		case errors.Is(err, errProviderDown):
			a.log.Warn("oidc: refresh failed", "error", err)
			return nil, ReasonAuthzUnavailable, unavailable(a.statusOnError)
		default:
			a.log.Info("oidc: session ended: its tokens expired and could not be refreshed", "error", err)
			return nil, ReasonSessionExpired, a.signIn(r, ReasonSessionExpired)
		}
	}
	p := &Principal{Authenticator: a.authName, Claims: claims, accessToken: d.Access}
	p.Subject, _ = claims["sub"].(string)
	if until := time.Unix(d.Expiry, 0).Add(-a.refreshBefore); now.Before(until) && bytes.Equal(data, s.Data) {
		// Only a principal decoded from this very seal: a refreshed one is
		// cached under its new seal when it comes back.
		if limit := now.Add(maxCacheTTL); limit.Before(until) {
			until = limit
		}
		a.cache.put(s.ID, cacheEntry{p: p, until: until}, now)
	}
	return a.accept(p, r, data, s.Created, now, touch), ReasonNone, nil
}

// openReason is why a session cookie did not open.
func openReason(err error) Reason {
	switch {
	case errors.Is(err, session.ErrNoSession):
		return ReasonMissing
	case errors.Is(err, session.ErrIdle), errors.Is(err, session.ErrExpired):
		return ReasonSessionExpired
	}
	return ReasonMalformed
}

// accept returns the principal of an accepted session; when the session
// is re-sealed (refreshed tokens, or its last use pushed forward for the
// idle timeout) a copy carrying the cookie to set. p may be shared.
func (a *oidcAuth) accept(p *Principal, r *http.Request, data []byte, created, now time.Time, reseal bool) *Principal {
	if !reseal {
		return p
	}
	cp := *p
	cp.respond = func(w http.ResponseWriter) {
		if err := a.sess.Write(w, r, data, created, now); err != nil {
			a.log.Warn("oidc: session not rewritten", "error", err)
		}
	}
	return &cp
}

// decodeSession reads a session's data and the claims of its ID token,
// numbers as json.Number as for JWTs.
func decodeSession(data []byte, d *sessionData) (map[string]any, error) {
	if err := json.Unmarshal(data, d); err != nil {
		return nil, err
	}
	return idTokenClaims(d.IDToken)
}

func idTokenClaims(raw string) (map[string]any, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	claims := map[string]any{}
	if err := dec.Decode(&claims); err != nil {
		return nil, err
	}
	return claims, nil
}

// signIn is the answer to a request without a valid session: a navigation
// request is sent to the provider; anything else gets the JSON 401 (nil:
// the middleware's, with the route's other challenges), and a session
// cookie that did not open is expired.
func (a *oidcAuth) signIn(r *http.Request, reason Reason) refusal {
	nav := isNavigation(r)
	if !nav && reason == ReasonMissing {
		return nil
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if reason != ReasonMissing {
			a.sess.Clear(w, r)
		}
		if !nav {
			httperr.Write(w, r, http.StatusUnauthorized, reason.description())
			return
		}
		a.startLogin(w, r)
	}
}

// startLogin redirects to the provider's authorization endpoint with a
// fresh state, nonce and PKCE verifier, which a short-lived sealed cookie
// binds to this browser.
func (a *oidcAuth) startLogin(w http.ResponseWriter, r *http.Request) {
	p, err := a.provider(r.Context())
	if err != nil {
		a.log.Warn("oidc: cannot start a sign-in", "error", err)
		httperr.Write(w, r, a.statusOnError, ReasonAuthzUnavailable.description())
		return
	}
	now := a.now()
	ld := loginData{State: randomString(), Nonce: randomString(), Verifier: oauth2.GenerateVerifier(), ReturnTo: r.URL.RequestURI(), Started: now.UnixNano()}
	pending := append([]loginData{ld}, a.pendingLogins(r, now)...)
	if len(pending) > maxPendingLogins {
		pending = pending[:maxPendingLogins]
	}
	if err := a.writeLogins(w, r, pending, now); err != nil {
		// A very long URL does not fit the cookie: come back to the root,
		// and forget the other sign-ins under way.
		ld.ReturnTo = "/"
		if err := a.writeLogins(w, r, []loginData{ld}, now); err != nil {
			a.log.Warn("oidc: cannot start a sign-in", "error", err)
			httperr.Write(w, r, http.StatusInternalServerError, "the sign-in could not be started")
			return
		}
	}
	u := p.oauth.AuthCodeURL(ld.State, append(a.redirectURI(r), oidc.Nonce(ld.Nonce), oauth2.S256ChallengeOption(ld.Verifier))...)
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u, http.StatusFound)
}

// pendingLogins are the sign-ins this browser has under way.
func (a *oidcAuth) pendingLogins(r *http.Request, now time.Time) []loginData {
	ls, err := a.login.Open(r, now)
	if err != nil {
		return nil
	}
	var list []loginData
	if json.Unmarshal(ls.Data, &list) != nil {
		return nil
	}
	out := list[:0]
	for _, ld := range list {
		if ld.State != "" && now.Before(time.Unix(0, ld.Started).Add(loginTTL)) {
			out = append(out, ld)
		}
	}
	return out
}

// writeLogins seals the sign-ins under way into the state cookie, or
// expires it when there are none left.
func (a *oidcAuth) writeLogins(w http.ResponseWriter, r *http.Request, list []loginData, now time.Time) error {
	if len(list) == 0 {
		a.login.Clear(w, r)
		return nil
	}
	data, err := json.Marshal(list)
	if err != nil {
		return err
	}
	return a.login.Write(w, r, data, now, now)
}

func randomString() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// intercept serves the authenticator's own paths on every route using
// it: the callback and the logout.
func (a *oidcAuth) intercept(w http.ResponseWriter, r *http.Request) bool {
	switch r.URL.Path {
	case a.redirectPath:
		a.callback(w, r)
		return true
	case a.logoutPath:
		if a.logoutPath == "" {
			return false
		}
		a.logout(w, r)
		return true
	}
	return false
}

// errLogin is a callback that cannot complete a sign-in; the client is
// told no more than that.
func (a *oidcAuth) loginFailed(w http.ResponseWriter, r *http.Request, status int, why string, reason Reason) {
	if a.failures != nil {
		a.failures.WithLabelValues(a.authName, string(reason)).Inc()
	}
	a.log.Info("oidc: sign-in refused", "why", why)
	w.Header().Set("Cache-Control", "no-store")
	desc := ReasonLoginFailed.description()
	if reason == ReasonAuthzUnavailable {
		desc = reason.description()
	}
	httperr.Write(w, r, status, desc)
}

// callback completes a sign-in the edge started: the state must be the
// one sealed in this browser's state cookie and not used before, the ID
// token must be the provider's, for this client, unexpired, and carry the
// nonce sealed with the state.
func (a *oidcAuth) callback(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		a.loginFailed(w, r, http.StatusMethodNotAllowed, "callback method "+r.Method, ReasonLoginFailed)
		return
	}
	now := a.now()
	if _, err := a.login.Open(r, now); err != nil {
		if !errors.Is(err, session.ErrNoSession) {
			a.login.Clear(w, r)
		}
		a.loginFailed(w, r, http.StatusBadRequest, "state cookie: "+err.Error(), ReasonLoginFailed)
		return
	}
	pending := a.pendingLogins(r, now)
	q := r.URL.Query()
	state := []byte(q.Get("state"))
	found := -1
	for i, p := range pending {
		if subtle.ConstantTimeCompare(state, []byte(p.State)) == 1 {
			found = i
		}
	}
	if found < 0 || len(q["state"]) != 1 {
		a.loginFailed(w, r, http.StatusBadRequest, "the state is not one of the state cookie's", ReasonLoginFailed)
		return
	}
	ld := pending[found]
	// This sign-in is over, whatever comes of it; the others stay.
	rest := slices.Delete(slices.Clone(pending), found, found+1)
	if err := a.writeLogins(w, r, rest, now); err != nil {
		a.login.Clear(w, r)
	}
	if h := sha256.Sum256([]byte(ld.State)); !a.used.claim(string(h[:]), time.Unix(0, ld.Started).Add(loginTTL), now) {
		a.loginFailed(w, r, http.StatusBadRequest, "state replayed", ReasonLoginFailed)
		return
	}
	if e := q.Get("error"); e != "" {
		a.loginFailed(w, r, http.StatusUnauthorized, "the provider answered error "+strings.Map(printable, e), ReasonLoginFailed)
		return
	}
	code := q.Get("code")
	if code == "" || len(q["code"]) != 1 {
		a.loginFailed(w, r, http.StatusBadRequest, "no code", ReasonLoginFailed)
		return
	}
	p, err := a.provider(r.Context())
	if err != nil {
		a.loginFailed(w, r, a.statusOnError, err.Error(), ReasonAuthzUnavailable)
		return
	}
	ctx, cancel := a.providerCtx(r.Context())
	defer cancel()
	tok, err := p.oauth.Exchange(ctx, code, append(a.redirectURI(r), oauth2.VerifierOption(ld.Verifier))...)
	if err != nil {
		if providerDown(err) {
			a.loginFailed(w, r, a.statusOnError, "code exchange: "+err.Error(), ReasonAuthzUnavailable)
		} else {
			a.loginFailed(w, r, http.StatusUnauthorized, "code exchange refused: "+err.Error(), ReasonLoginFailed)
		}
		return
	}
	d, _, err := a.verifyTokens(ctx, p, tok, ld.Nonce, nil)
	if errors.Is(err, errProviderDown) {
		// The provider's signing keys could not be fetched: the token is
		// neither accepted nor refused.
		a.loginFailed(w, r, a.statusOnError, err.Error(), ReasonAuthzUnavailable)
		return
	}
	if err != nil {
		a.loginFailed(w, r, http.StatusUnauthorized, err.Error(), ReasonLoginFailed)
		return
	}
	data, err := json.Marshal(d)
	if err == nil && a.store != nil {
		// A session this browser had is replaced: it ends, so its cookie,
		// copied elsewhere, opens nothing.
		if old, oerr := a.sess.Open(r, now); oerr == nil {
			if derr := a.store.delete(r.Context(), string(old.Data)); derr != nil {
				a.log.Warn("oidc: the replaced session could not be deleted", "error", derr)
			}
			a.cache.remove(old.ID)
		}
		var id string
		if id, err = a.store.create(r.Context(), data, now); err != nil {
			a.loginFailed(w, r, a.statusOnError, "session: "+err.Error(), ReasonAuthzUnavailable)
			return
		}
		data = []byte(id)
	}
	if err == nil {
		err = a.sess.Write(w, r, data, now, now)
	}
	if err != nil {
		a.loginFailed(w, r, http.StatusInternalServerError, "session: "+err.Error(), ReasonLoginFailed)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, safeReturn(ld.ReturnTo), http.StatusSeeOther)
}

func printable(r rune) rune {
	if r < 0x20 || r > 0x7e {
		return -1
	}
	return r
}

// safeReturn keeps a return address on this site: a path, never
// //host or /\host, which browsers read as another host. Browsers also
// drop tabs and newlines anywhere in a URL and read a backslash in the
// path as a slash, so "/\t/host" is //host to them: a control character
// anywhere, or a space or backslash in the path, sends the browser to the
// root instead. A query may carry a backslash (browsers send it raw
// there): it cannot change the host. The address is recorded from the
// request target (its path escaped by net/url, so none of these get
// through today) and sealed; this is the last line all the same.
func safeReturn(to string) string {
	if !strings.HasPrefix(to, "/") || strings.HasPrefix(to, "//") {
		return "/"
	}
	inPath := true
	for i := 0; i < len(to); i++ {
		switch c := to[i]; {
		case c < ' ' || c == 0x7f:
			return "/"
		case c == '?' || c == '#':
			inPath = false
		case inPath && (c == ' ' || c == '\\'):
			return "/"
		}
	}
	return to
}

// verifyTokens checks a token response and turns it into session data:
// the ID token's signature, issuer, audience and expiry (go-oidc), its
// nonce, and, for a refresh (prev set), that it is the same user's.
func (a *oidcAuth) verifyTokens(ctx context.Context, p *provider, tok *oauth2.Token, nonce string, prev map[string]any) (*sessionData, map[string]any, error) {
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		if prev == nil {
			return nil, nil, errors.New("the token response has no id_token")
		}
		return nil, nil, errors.New("the refresh gave no id_token")
	}
	var keysDown bool
	idt, err := p.verifier.Verify(context.WithValue(ctx, keysUnreachableKey{}, &keysDown), raw)
	if err != nil {
		if keysDown {
			return nil, nil, fmt.Errorf("%w: id_token: %w", errProviderDown, err)
		}
		return nil, nil, fmt.Errorf("id_token: %w", err)
	}
	if len(idt.Audience) > 1 {
		// OIDC Core 3.1.3.7: with several audiences, azp names the client.
		var azp struct {
			AZP string `json:"azp"`
		}
		if err := idt.Claims(&azp); err != nil || azp.AZP != a.clientID {
			return nil, nil, errors.New("id_token: several audiences and azp is not this client")
		}
	}
	claims, err := idTokenClaims(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("id_token: %w", err)
	}
	if prev == nil {
		if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
			return nil, nil, errors.New("id_token: the nonce is not the one this sign-in sent")
		}
	} else if prev["sub"] != claims["sub"] {
		// OIDC Core 12.2: a refreshed ID token is the same user's.
		return nil, nil, errors.New("id_token: the refresh is for another subject")
	}
	d := &sessionData{IDToken: raw, Refresh: tok.RefreshToken, Expiry: idt.Expiry.Unix()}
	if a.forwardAT {
		d.Access = tok.AccessToken
		if !tok.Expiry.IsZero() && tok.Expiry.Before(idt.Expiry) {
			d.Expiry = tok.Expiry.Unix()
		}
	}
	return d, claims, nil
}

// errProviderDown marks a failure to reach the provider, as opposed to
// its refusal.
var errProviderDown = errors.New("the provider cannot be reached")

func providerDown(err error) bool {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.Response != nil && re.Response.StatusCode >= 500
	}
	return true
}

// refreshTokens uses the session's refresh token. Requests of one session
// arriving together share one refresh: providers that rotate refresh
// tokens would refuse all but the first.
func (a *oidcAuth) refreshTokens(ctx context.Context, d *sessionData, claims map[string]any) (*sessionData, map[string]any, error) {
	if d.Refresh == "" {
		return nil, nil, errors.New("no refresh token")
	}
	key := sha256.Sum256([]byte(d.Refresh))
	res := a.refresh.do(string(key[:]), func() refreshResult {
		p, err := a.provider(ctx)
		if err != nil {
			return refreshResult{err: fmt.Errorf("%w: %w", errProviderDown, err)}
		}
		pctx, cancel := a.providerCtx(context.WithoutCancel(ctx))
		defer cancel()
		tok, err := p.oauth.TokenSource(pctx, &oauth2.Token{RefreshToken: d.Refresh, Expiry: time.Unix(1, 0)}).Token()
		if err != nil {
			if providerDown(err) {
				return refreshResult{err: fmt.Errorf("%w: %w", errProviderDown, err)}
			}
			return refreshResult{err: fmt.Errorf("refresh refused: %w", err)}
		}
		nd, nclaims, err := a.verifyTokens(pctx, p, tok, "", claims)
		if err != nil {
			return refreshResult{err: err}
		}
		if nd.Refresh == "" {
			nd.Refresh = d.Refresh // not rotated
		}
		return refreshResult{d: nd, claims: nclaims}
	})
	return res.d, res.claims, res.err
}

// logout ends the session here, then at the provider when it offers
// RP-initiated logout.
func (a *oidcAuth) logout(w http.ResponseWriter, r *http.Request) {
	if status, why := a.logoutRefusal(r); status != 0 {
		a.log.Info("oidc: logout refused", "why", why)
		w.Header().Set("Cache-Control", "no-store")
		if status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", "GET, POST")
		}
		httperr.Write(w, r, status, "logout refused: it must come from this site")
		return
	}
	var hint string
	now := a.now()
	if s, err := a.sess.Open(r, now); err == nil {
		data := s.Data
		if a.store != nil {
			data = a.revoke(r, s)
		}
		var d sessionData
		if json.Unmarshal(data, &d) == nil {
			hint = d.IDToken
			if a.store == nil {
				a.endCookieSession(s, d.IDToken, now)
			}
		}
	}
	a.sess.Clear(w, r)
	a.login.Clear(w, r)
	w.Header().Set("Cache-Control", "no-store")
	after := a.postLogout
	if after == "" {
		after = "/"
	}
	if p, err := a.provider(r.Context()); err == nil && p.endSession != "" {
		u, err := url.Parse(p.endSession)
		if err == nil {
			q := u.Query()
			if hint != "" {
				q.Set("id_token_hint", hint)
			}
			q.Set("client_id", a.clientID)
			if strings.HasPrefix(after, "/") {
				after = a.siteOrigin(r) + after
			}
			if a.postLogout != "" {
				q.Set("post_logout_redirect_uri", after)
			}
			u.RawQuery = q.Encode()
			http.Redirect(w, r, u.String(), http.StatusSeeOther)
			return
		}
	}
	http.Redirect(w, r, after, http.StatusSeeOther)
}

// logoutRefusal returns the status and the reason for refusing r at the
// logout path, or 0 to log out. A logout carries no secret, so any page
// could otherwise end a user's session by loading the path in an <img>, a
// link or a form (logout CSRF). A logout is accepted, by GET (a link on
// the site) or POST (a form), only with a positive sign that it comes from
// this origin or from the user: Sec-Fetch-Site same-origin or none (typed,
// bookmarked), or, from a browser older than Fetch Metadata, an Origin or
// a Referer of this origin; and never when Origin or Referer names another
// origin, nor for a speculative prefetch. A request with none of these
// headers is refused: a browser without Fetch Metadata sends none of them
// for a link on another site whose page asks for no referrer, and such a
// browser ignores SameSite too, so the cookie goes with it. A script
// logging out (curl) sends Origin or Sec-Fetch-Site: none.
func (a *oidcAuth) logoutRefusal(r *http.Request) (int, string) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, "method " + r.Method
	}
	site := r.Header.Get("Sec-Fetch-Site")
	if site != "" && site != "same-origin" && site != "none" {
		return http.StatusForbidden, "Sec-Fetch-Site: " + site
	}
	if strings.Contains(r.Header.Get("Sec-Purpose"), "prefetch") || r.Header.Get("Purpose") == "prefetch" {
		return http.StatusForbidden, "a prefetch"
	}
	self := a.origin(r)
	if o := r.Header.Values("Origin"); len(o) > 0 && (len(o) > 1 || !strings.EqualFold(o[0], self)) {
		// "null" (a sandboxed frame, a privacy-sensitive redirect) is
		// another origin too.
		return http.StatusForbidden, "Origin " + strings.Join(o, ", ")
	}
	ref := r.Header.Get("Referer")
	if ref != "" {
		u, err := url.Parse(ref)
		if err != nil || !strings.EqualFold(u.Scheme+"://"+u.Host, self) {
			return http.StatusForbidden, "Referer of another origin"
		}
	}
	if site == "" && len(r.Header.Values("Origin")) == 0 && ref == "" {
		return http.StatusForbidden, "no Sec-Fetch-Site, Origin or Referer"
	}
	return 0, ""
}

// takeOver keeps, across a reload, what the authenticator it replaces
// remembered: the used sign-in states and the ended sessions, while its
// sessions are the same (the same cookie). Without it a reload would
// reopen every cookie session logged out before it.
func (a *oidcAuth) takeOver(prev authenticator) {
	p, ok := prev.(*oidcAuth)
	if !ok || p.sess.Name() != a.sess.Name() {
		return
	}
	a.used, a.ended = p.used, p.ended
}

// endCookieSession remembers a logged-out cookie session until it could
// no longer open: every seal of it (refreshes re-seal it, keeping its
// creation time) is refused from then on by this edge.
func (a *oidcAuth) endCookieSession(s *session.Session, idToken string, now time.Time) {
	claims, err := idTokenClaims(idToken)
	if err != nil {
		return
	}
	sub, _ := claims["sub"].(string)
	absolute := a.sess.Absolute()
	if absolute <= 0 {
		absolute = routes.DefaultOIDCAbsoluteTimeout
	}
	a.ended.set(endedKey{s.Created.UnixNano(), sub}, s.Created.Add(absolute), now)
}

// endedKey names a cookie session. The session lives in the cookie, so
// logout can only expire the cookie of the answer it writes: a copy of
// the cookie, or a fresh seal from a refresh answered to another request
// of the same browser and stored after the logout's expiry, would open
// again. Every seal of a session carries its creation time (Unix
// nanoseconds, kept by every re-seal) and its subject.
type endedKey struct {
	created int64
	sub     string
}

// maxEndedSessions bounds the logouts remembered; past it the expired
// ones are swept, then others dropped (their cookies would open again:
// the documented bound).
const maxEndedSessions = 1 << 16

type refreshResult struct {
	d      *sessionData
	claims map[string]any
	err    error
}

// flight runs one refresh per key at a time; callers arriving during it
// share its result.
type flight struct {
	mu sync.Mutex
	m  map[string]*flightCall
}

type flightCall struct {
	done chan struct{}
	res  refreshResult
}

func (f *flight) do(key string, fn func() refreshResult) refreshResult {
	f.mu.Lock()
	if f.m == nil {
		f.m = map[string]*flightCall{}
	}
	if c, ok := f.m[key]; ok {
		f.mu.Unlock()
		<-c.done
		return c.res
	}
	c := &flightCall{done: make(chan struct{})}
	f.m[key] = c
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.m, key)
		f.mu.Unlock()
		close(c.done)
	}()
	c.res = fn()
	return c.res
}
