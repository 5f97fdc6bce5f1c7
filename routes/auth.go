package routes

import (
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/causewayhq/causeway/internal/edgeheader"
)

// JWTAlgorithms are the signing algorithms an authenticator may allow.
var JWTAlgorithms = []string{"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Defaults of the authenticators section, documented in docs/auth.md.
const (
	DefaultMaxTokenBytes  = 8 << 10
	DefaultTokenCache     = 4096
	DefaultJWKSRefreshMin = 30 * time.Second
	DefaultJWKSRefreshMax = time.Hour
	DefaultAPIKeyHeader   = "X-API-Key"
	// A verified basic credential is remembered this long: long enough that
	// a browser's burst of requests pays one hash verification, short
	// enough that a password removed from the file stops working soon even
	// without the reload that clears the cache.
	DefaultBasicCacheTTL = 30 * time.Second
	maxBasicCacheTTL     = 5 * time.Minute
	// Ten wrong passwords a minute per client: a person mistyping is never
	// stopped, a guesser gets 14,400 tries a day instead of millions.
	DefaultBasicFailureLimit = 10
	DefaultBasicFailurePer   = time.Minute
	// Envoy's ext_authz default is 200 ms; a policy server on another
	// host under load needs more, and a request waits at most this long.
	DefaultExtAuthzTimeout       = time.Second
	DefaultExtAuthzStatusOnError = 403
	DefaultExtAuthzCacheSize     = 4096
	maxExtAuthzBody              = 1 << 20
	maxExtAuthzCacheTTL          = 5 * time.Minute
	maxTokenBytesCeiling         = 1 << 20
	// A sign-in through the provider: the callback on the edge's own host,
	// a session that ends after an hour unused or a working day, tokens
	// refreshed a minute before they expire.
	DefaultOIDCRedirectPath    = "/oauth2/callback"
	DefaultOIDCIdleTimeout     = time.Hour
	DefaultOIDCAbsoluteTimeout = 12 * time.Hour
	DefaultOIDCRefreshBefore   = time.Minute
	DefaultOIDCStatusOnError   = 503
	DefaultOIDCSessionStore    = "cookie"
	// DefaultOIDCCookiePrefix: a __Host- cookie is Secure, Path=/ and
	// bound to the exact host, which browsers enforce.
	DefaultOIDCCookiePrefix = "__Host-causeway-"
	maxOIDCAbsoluteTimeout  = 30 * 24 * time.Hour
	minJWKSRefreshInterval  = time.Second
)

// DefaultOIDCScopes are requested when an oidc authenticator lists none.
var DefaultOIDCScopes = []string{"openid", "profile", "email"}

func (f *File) defaultAuthenticators() {
	for name, a := range f.Authenticators {
		if o := a.OIDC; o != nil {
			if o.Realm == "" {
				o.Realm = name
			}
			if o.RedirectPath == "" {
				o.RedirectPath = DefaultOIDCRedirectPath
				if u, err := url.Parse(o.RedirectURL); err == nil && o.RedirectURL != "" {
					o.RedirectPath = u.Path
				}
			}
			if len(o.Scopes) == 0 {
				o.Scopes = slices.Clone(DefaultOIDCScopes)
			}
			setDuration(&o.RefreshBefore, DefaultOIDCRefreshBefore)
			if o.OnError == "" {
				o.OnError = "deny"
			}
			if o.StatusOnError == 0 {
				o.StatusOnError = DefaultOIDCStatusOnError
			}
			if o.Session == nil {
				o.Session = &OIDCSession{}
			}
			if o.Session.Cookie == "" {
				o.Session.Cookie = DefaultOIDCCookiePrefix + strings.ReplaceAll(name, ".", "-")
			}
			setDuration(&o.Session.IdleTimeout, DefaultOIDCIdleTimeout)
			setDuration(&o.Session.AbsoluteTimeout, DefaultOIDCAbsoluteTimeout)
			if o.Session.Store == "" {
				o.Session.Store = DefaultOIDCSessionStore
			}
		}
		if j := a.JWT; j != nil {
			if j.Realm == "" {
				j.Realm = name
			}
			if j.MaxTokenBytes == 0 {
				j.MaxTokenBytes = DefaultMaxTokenBytes
			}
			if j.TokenCache == nil {
				n := DefaultTokenCache
				j.TokenCache = &n
			}
			if j.JWKSURL != "" {
				if j.JWKSRefresh == nil {
					j.JWKSRefresh = &Bounds{}
				}
				b := j.JWKSRefresh
				setDuration(&b.Max, DefaultJWKSRefreshMax)
				// A max set below the default min means "refresh at least
				// this often": the min follows it rather than contradicting it.
				setDuration(&b.Min, min(DefaultJWKSRefreshMin, b.Max.D()))
			}
		}
		if k := a.APIKey; k != nil && k.Header == "" && k.Query == "" {
			k.Header = DefaultAPIKeyHeader
		}
		if x := a.ExtAuthz; x != nil {
			setDuration(&x.Timeout, DefaultExtAuthzTimeout)
			if x.OnError == "" {
				x.OnError = "deny"
			}
			if x.StatusOnError == 0 {
				x.StatusOnError = DefaultExtAuthzStatusOnError
			}
			if x.Cache != nil && x.Cache.Size == 0 {
				x.Cache.Size = DefaultExtAuthzCacheSize
			}
		}
		if b := a.Basic; b != nil {
			if b.Realm == "" {
				b.Realm = name
			}
			if b.CacheTTL == nil {
				d := Duration(DefaultBasicCacheTTL)
				b.CacheTTL = &d
			}
			if b.FailureLimit == nil {
				b.FailureLimit = &FailureLimit{}
			}
			fl := b.FailureLimit
			if fl.Limit == 0 {
				fl.Limit = DefaultBasicFailureLimit
			}
			setDuration(&fl.Per, DefaultBasicFailurePer)
			if fl.Burst == 0 {
				fl.Burst = fl.Limit
			}
		}
	}
}

func (c *checker) checkAuthenticators() {
	cookies := map[string]string{} // oidc session cookie -> authenticator
	for _, name := range slices.Sorted(maps.Keys(c.f.Authenticators)) {
		a := c.f.Authenticators[name]
		p := "authenticators." + name
		c.checkName(p, "authenticator", name)
		kinds := 0
		for _, set := range []bool{a.JWT != nil, a.APIKey != nil, a.Basic != nil, a.ExtAuthz != nil, a.OIDC != nil} {
			if set {
				kinds++
			}
		}
		switch {
		case kinds == 0:
			c.errorf(p, "needs one of jwt, api_key, basic, ext_authz or oidc")
		case kinds > 1:
			c.errorf(p, "jwt, api_key, basic, ext_authz and oidc are exclusive: define one authenticator for each")
		case a.OIDC != nil:
			c.checkOIDC(p+".oidc", a.OIDC)
			cookie := a.OIDC.Session.Cookie
			if prev, dup := cookies[cookie]; dup {
				c.errorf(p+".oidc.session.cookie", "cookie %q is already the session of authenticator %q", cookie, prev)
			}
			cookies[cookie] = name
		case a.ExtAuthz != nil:
			c.checkExtAuthz(p+".ext_authz", a.ExtAuthz)
		case a.JWT != nil:
			c.checkJWT(p+".jwt", a.JWT)
		case a.APIKey != nil:
			c.checkAPIKey(p+".api_key", a.APIKey)
		default:
			c.checkBasic(p+".basic", a.Basic)
		}
	}
}

func (c *checker) checkJWT(p string, j *JWT) {
	sources := 0
	for _, set := range []bool{j.JWKSURL != "", len(j.PublicKeyFiles) > 0, j.HMACSecretEnv != "" || j.HMACSecretFile != "" || len(j.HMACSecret) > 0} {
		if set {
			sources++
		}
	}
	if sources == 0 {
		c.errorf(p, "needs a key source: jwks_url, public_key_files, hmac_secret_env or hmac_secret_file")
	}
	if j.HMACSecretEnv != "" && j.HMACSecretFile != "" {
		c.errorf(p+".hmac_secret_file", "hmac_secret_env and hmac_secret_file are exclusive")
	}
	if j.JWKSURL != "" {
		u, err := url.Parse(j.JWKSURL)
		switch {
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
			c.errorf(p+".jwks_url", "%q is not an http(s) URL", RedactURL(j.JWKSURL))
		case u.Scheme == "http" && !j.AllowInsecureHTTP && !isLoopback(hostPortOf(u)):
			// Whoever is on the path could hand the edge keys of their own
			// and mint tokens it accepts. Loopback (a local key server or
			// agent) has no path to be on.
			c.errorf(p+".jwks_url", "plain http to %s lets anyone on the network path replace the signing keys: use https, or set allow_insecure_http: true", u.Hostname())
		}
		if err == nil && (u.User != nil || RedactURL(j.JWKSURL) != j.JWKSURL) {
			c.warnf(p+".jwks_url", "the URL carries credentials; they are masked in /config and logs, but the file itself holds them: prefer a key server that needs none, or one reached on a private network")
		}
	}
	if len(j.Algorithms) == 0 {
		c.errorf(p+".algorithms", "list the allowed algorithms (e.g. [RS256]): the token's own alg header is never trusted")
	}
	hmac := j.HMACSecretEnv != "" || j.HMACSecretFile != "" || len(j.HMACSecret) > 0
	for i, alg := range j.Algorithms {
		ap := indexPath(p+".algorithms", i)
		if !slices.Contains(JWTAlgorithms, alg) {
			c.errorf(ap, "unknown algorithm %q (one of %s; \"none\" is never allowed)", alg, strings.Join(JWTAlgorithms, ", "))
			continue
		}
		// Mixing shared-secret and public-key algorithms in one authenticator is
		// how algorithm confusion starts: refuse it outright.
		if isHMAC := strings.HasPrefix(alg, "HS"); isHMAC != hmac {
			if isHMAC {
				c.errorf(ap, "%s needs hmac_secret_env or hmac_secret_file; HMAC and public-key algorithms cannot share an authenticator", alg)
			} else {
				c.errorf(ap, "%s needs jwks_url or public_key_files; HMAC and public-key algorithms cannot share an authenticator", alg)
			}
		}
	}
	for claim, header := range j.ForwardClaims {
		if !httpTokenRe.MatchString(header) {
			c.errorf(p+".forward_claims."+claim, "%q is not a header name", header)
		}
	}
	c.checkTokenSource(p+".from", j.From)
	if b := j.JWKSRefresh; b != nil {
		if j.JWKSURL == "" {
			c.errorf(p+".jwks_refresh", "only applies to jwks_url")
		}
		// A refetch more often than once a second is an identity provider
		// hammered by every edge instance, whatever its Cache-Control says.
		switch {
		case b.Max > 0 && b.Max.D() < minJWKSRefreshInterval:
			c.errorf(p+".jwks_refresh.max", "must be at least %s (found %s)", minJWKSRefreshInterval, b.Max.D())
		case b.Min > 0 && b.Min.D() < minJWKSRefreshInterval:
			c.errorf(p+".jwks_refresh.min", "must be at least %s (found %s)", minJWKSRefreshInterval, b.Min.D())
		}
		if b.Max != 0 && b.Min > b.Max {
			c.errorf(p+".jwks_refresh.min", "min (%s) exceeds max (%s)", b.Min.D(), b.Max.D())
		}
	}
	if j.MaxTokenBytes < 0 || j.MaxTokenBytes > maxTokenBytesCeiling {
		c.errorf(p+".max_token_bytes", "must be between 1 and %d (found %d)", maxTokenBytesCeiling, j.MaxTokenBytes)
	}
	if j.TokenCache != nil && *j.TokenCache < 0 {
		c.errorf(p+".token_cache", "must not be negative (0 turns the cache off)")
	}
	seen := map[string]string{}
	for _, claim := range slices.Sorted(maps.Keys(j.ForwardClaims)) {
		h := http.CanonicalHeaderKey(j.ForwardClaims[claim])
		if prev, dup := seen[h]; dup {
			c.errorf(p+".forward_claims."+claim, "header %q already carries claim %q", h, prev)
		}
		seen[h] = claim
		if h == "Authorization" || h == "Host" || h == "Cookie" {
			c.errorf(p+".forward_claims."+claim, "%q cannot carry a claim", h)
		}
	}
}

func (c *checker) checkTokenSource(p string, s *TokenSource) {
	if s == nil {
		return
	}
	n := 0
	for _, v := range []string{s.Header, s.Cookie, s.Query} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		c.errorf(p, "set exactly one of header, cookie or query")
	}
	if s.Header != "" && !httpTokenRe.MatchString(s.Header) {
		c.errorf(p+".header", "%q is not a header name", s.Header)
	}
}

func (c *checker) checkAPIKey(p string, k *APIKey) {
	if k.KeysFile == "" && len(k.Keys) == 0 {
		c.errorf(p+".keys_file", "is required (lines of name:sha256hex)")
	}
	if k.Header != "" && k.Query != "" {
		c.errorf(p+".query", "header and query are exclusive")
	}
	if k.Header != "" && !httpTokenRe.MatchString(k.Header) {
		c.errorf(p+".header", "%q is not a header name", k.Header)
	}
	if k.ForwardName != "" {
		// The edge drops a client's copy of every forwarded header on
		// every route: forwarding into Authorization or Cookie would strip
		// them from all of them.
		switch h := http.CanonicalHeaderKey(k.ForwardName); {
		case !httpTokenRe.MatchString(k.ForwardName):
			c.errorf(p+".forward_name", "%q is not a header name", k.ForwardName)
		case h == "Authorization" || h == "Host" || h == "Cookie" || ForbiddenAuthzHeader(h):
			c.errorf(p+".forward_name", "%q cannot carry the key's name", h)
		}
	}
}

func (c *checker) checkBasic(p string, b *Basic) {
	if b.HtpasswdFile == "" && len(b.Htpasswd) == 0 {
		c.errorf(p+".htpasswd_file", "is required (lines of user:hash, bcrypt or argon2id)")
	}
	if b.ForwardUser != "" {
		switch h := http.CanonicalHeaderKey(b.ForwardUser); {
		case !httpTokenRe.MatchString(b.ForwardUser):
			c.errorf(p+".forward_user", "%q is not a header name", b.ForwardUser)
		case h == "Authorization" || h == "Host" || h == "Cookie":
			c.errorf(p+".forward_user", "%q cannot carry the user name", h)
		}
	}
	if t := b.CacheTTL; t != nil && (t.D() < 0 || t.D() > maxBasicCacheTTL) {
		c.errorf(p+".cache_ttl", "must be between 0s (no cache) and %s (found %s)", maxBasicCacheTTL, t.D())
	}
	if fl := b.FailureLimit; fl != nil {
		if fl.Limit < 0 {
			c.errorf(p+".failure_limit.limit", "must be positive (found %d)", fl.Limit)
		}
		if fl.Per < 0 {
			c.errorf(p+".failure_limit.per", "must be positive (found %s)", fl.Per.D())
		}
		if fl.Burst < 0 {
			c.errorf(p+".failure_limit.burst", "must be positive (found %d)", fl.Burst)
		}
	}
}

// ExtAuthzCacheKeys are the fixed parts of an ext_authz cache key; header:NAME
// is the other.
var ExtAuthzCacheKeys = []string{"method", "host", "path", "client_ip"}

func (c *checker) checkExtAuthz(p string, x *ExtAuthz) {
	n := 0
	for _, set := range []bool{x.GRPCAddress != "", x.HTTPURL != "", x.OPAURL != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		c.errorf(p, "set exactly one of grpc_address, http_url or opa_url")
	}
	if a := x.GRPCAddress; a != "" {
		host, port, err := net.SplitHostPort(a)
		switch {
		case err != nil || host == "" || port == "":
			c.errorf(p+".grpc_address", "%q is not host:port", RedactValue(a))
		case !x.GRPCTLS && !x.AllowInsecure && !isLoopback(a):
			c.errorf(p+".grpc_address", "plaintext gRPC to %s lets anyone on the network path read credentials and forge decisions: set grpc_tls: true, or allow_insecure: true", host)
		}
	}
	if x.GRPCTLS && x.GRPCAddress == "" {
		c.errorf(p+".grpc_tls", "only applies to grpc_address")
	}
	for key, raw := range map[string]string{"http_url": x.HTTPURL, "opa_url": x.OPAURL} {
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		switch {
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
			c.errorf(p+"."+key, "%q is not an http(s) URL", RedactURL(raw))
		case u.Scheme == "http" && !x.AllowInsecure && !isLoopback(hostPortOf(u)):
			c.errorf(p+"."+key, "plain http to %s lets anyone on the network path read credentials and forge decisions: use https, or set allow_insecure: true", u.Hostname())
		}
	}
	if x.Timeout < 0 {
		c.errorf(p+".timeout", "must be positive (found %s)", x.Timeout.D())
	}
	for i, h := range x.Headers {
		if !httpTokenRe.MatchString(h) {
			c.errorf(indexPath(p+".headers", i), "%q is not a header name", h)
		}
	}
	if b := x.Body; b != nil && (b.MaxBytes <= 0 || b.MaxBytes > maxExtAuthzBody) {
		c.errorf(p+".body.max_bytes", "must be between 1 and %d (found %d)", maxExtAuthzBody, b.MaxBytes)
	}
	if x.OnError != "" && x.OnError != "allow" && x.OnError != "deny" {
		c.errorf(p+".on_error", "must be allow or deny (found %q)", x.OnError)
	}
	if s := x.StatusOnError; s != 0 && (s < 400 || s > 599) {
		c.errorf(p+".status_on_error", "must be a 4xx or 5xx status (found %d)", s)
	}
	if len(x.ClaimsFromHeaders) > 0 && x.HTTPURL == "" {
		c.errorf(p+".claims_from_headers", "only applies to http_url: gRPC servers and OPA policies give claims as dynamic_metadata")
	}
	for i, h := range x.UpstreamHeaders {
		if !httpTokenRe.MatchString(h) {
			c.errorf(indexPath(p+".upstream_headers", i), "%q is not a header name", h)
		} else if EdgeStatedHeader(h) {
			c.errorf(indexPath(p+".upstream_headers", i), "%q is set by the edge itself and cannot come from an authorization server", http.CanonicalHeaderKey(h))
		}
	}
	for _, h := range slices.Sorted(maps.Keys(x.ClaimsFromHeaders)) {
		if !httpTokenRe.MatchString(h) {
			c.errorf(p+".claims_from_headers."+h, "%q is not a header name", h)
		}
		if x.ClaimsFromHeaders[h] == "" {
			c.errorf(p+".claims_from_headers."+h, "names no claim")
		}
	}
	c.checkForwardClaims(p, x.ForwardClaims)
	if ca := x.Cache; ca != nil {
		if ca.TTL <= 0 || ca.TTL.D() > maxExtAuthzCacheTTL {
			c.errorf(p+".cache.ttl", "must be between 1ms and %s (found %s)", maxExtAuthzCacheTTL, ca.TTL.D())
		}
		if len(ca.Key) == 0 {
			c.errorf(p+".cache.key", "list what identifies a decision (e.g. [header:Authorization, method, path]): a decision cached for one client must not serve another")
		}
		for i, k := range ca.Key {
			name, isHeader := strings.CutPrefix(k, "header:")
			if isHeader && httpTokenRe.MatchString(name) || slices.Contains(ExtAuthzCacheKeys, k) {
				continue
			}
			c.errorf(indexPath(p+".cache.key", i), "%q is not one of %s or header:NAME", k, strings.Join(ExtAuthzCacheKeys, ", "))
		}
		if ca.Size < 0 {
			c.errorf(p+".cache.size", "must be positive (found %d)", ca.Size)
		}
	}
}

// ForbiddenAuthzHeader reports whether an authorization server may not set
// the request header name upstream: the edge's own (hop-by-hop, framing,
// client address and forwarding headers), which a compromised or buggy
// server must not forge.
func ForbiddenAuthzHeader(name string) bool {
	h := http.CanonicalHeaderKey(name)
	switch h {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length", "Forwarded",
		"X-Real-Ip", "X-Request-Id", "Traceparent", "Tracestate", "Expect":
		return true
	}
	return strings.HasPrefix(h, "X-Forwarded-") || strings.HasPrefix(h, ":")
}

// EdgeStatedHeader reports whether the edge states name for the upstream,
// so that an authorization server may neither set nor remove it:
// ForbiddenAuthzHeader (framing, X-Forwarded-*, the request id and trace),
// and the edge's table of client-address, URL-override and Causeway-owned
// headers (True-Client-Ip, X-Original-Url, X-Causeway-Peer-Id,
// X-Causeway-Caller-*, ...), which it drops from every client as a request
// enters: a server's copy, set after that, would be the only one an
// upstream sees. Names are compared folded ('_' as '-'), as a CGI-style
// upstream reads them: X_Forwarded_For is HTTP_X_FORWARDED_FOR to it. The
// routes file's upstream_headers are checked against it when the file
// loads, and an authorization server's answers on every request.
func EdgeStatedHeader(name string) bool {
	folded := http.CanonicalHeaderKey(strings.ReplaceAll(name, "_", "-"))
	return ForbiddenAuthzHeader(folded) || edgeheader.Of(name) != edgeheader.Plain ||
		strings.HasPrefix(folded, "X-Causeway-") || strings.HasPrefix(folded, "Causeway-")
}

func indexPath(p string, i int) string { return fmt.Sprintf("%s[%d]", p, i) }

// hostPortOf is u's host with a port, for isLoopback.
func hostPortOf(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

func (c *checker) checkOIDC(p string, o *OIDC) {
	if o.Issuer == "" {
		c.errorf(p+".issuer", "is required (the provider's issuer URL)")
	} else {
		u, err := url.Parse(o.Issuer)
		switch {
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
			c.errorf(p+".issuer", "%q is not an http(s) URL without query, fragment or credentials", RedactURL(o.Issuer))
		case u.Scheme == "http" && !o.AllowInsecureHTTP && !isLoopback(hostPortOf(u)):
			c.errorf(p+".issuer", "plain http to %s lets anyone on the network path replace the signing keys and mint sessions: use https, or set allow_insecure_http: true", u.Hostname())
		}
	}
	if o.ClientID == "" {
		c.errorf(p+".client_id", "is required")
	}
	if o.ClientSecretEnv != "" && !envNameRe.MatchString(o.ClientSecretEnv) {
		c.errorf(p+".client_secret_env", "%q is not an environment variable name", o.ClientSecretEnv)
	}
	if o.PrivateKeyFile != "" && o.ClientSecretEnv != "" {
		c.errorf(p+".private_key_file", "and client_secret_env are two ways to authenticate the client: set one")
	}
	if o.PrivateKeyID != "" && o.PrivateKeyFile == "" {
		c.errorf(p+".private_key_id", "needs private_key_file")
	}
	if strings.ContainsAny(o.PrivateKeyID, "\"\\\x00\r\n") {
		c.errorf(p+".private_key_id", "%q is not a key id", o.PrivateKeyID)
	}
	for i, sc := range o.Scopes {
		if sc == "" || strings.ContainsAny(sc, " \t\r\n\"\\") {
			c.errorf(indexPath(p+".scopes", i), "%q is not a scope (RFC 6749 3.3)", sc)
		}
	}
	if v := o.RedirectURL; v != "" {
		u, err := url.Parse(v)
		switch {
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Opaque != "":
			c.errorf(p+".redirect_url", "%q is not an http(s) URL without query, fragment or credentials", RedactURL(v))
		case u.Scheme == "http" && !o.AllowInsecureHTTP && !isLoopback(hostPortOf(u)):
			c.errorf(p+".redirect_url", "plain http to %s sends the authorization code in the clear: use https, or set allow_insecure_http: true", u.Hostname())
		case !strings.HasPrefix(u.Path, "/"):
			c.errorf(p+".redirect_url", "%q needs a path: the callback the edge serves (e.g. /oauth2/callback)", RedactURL(v))
		case u.Path != o.RedirectPath:
			c.errorf(p+".redirect_path", "%q differs from redirect_url's path %q: leave redirect_path out", o.RedirectPath, u.Path)
		}
	}
	paths := map[string]string{"redirect_path": o.RedirectPath, "logout_path": o.LogoutPath}
	for _, key := range []string{"redirect_path", "logout_path"} {
		v := paths[key]
		if v == "" {
			continue
		}
		if !strings.HasPrefix(v, "/") || strings.HasPrefix(v, "//") || strings.ContainsAny(v, "?#\\ ") {
			c.errorf(p+"."+key, "%q is not an absolute path (e.g. /oauth2/callback)", v)
		}
	}
	if o.LogoutPath != "" && o.LogoutPath == o.RedirectPath {
		c.errorf(p+".logout_path", "is the same as redirect_path")
	}
	if v := o.PostLogoutRedirectURL; v != "" {
		u, err := url.Parse(v)
		if err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
			if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(v, "/") || strings.HasPrefix(v, "//") {
				c.errorf(p+".post_logout_redirect_url", "%q is neither an http(s) URL nor a path on this host", v)
			}
		}
	}
	if o.RefreshBefore < 0 {
		c.errorf(p+".refresh_before", "must not be negative (found %s)", o.RefreshBefore.D())
	}
	if o.OnError != "" && o.OnError != "allow" && o.OnError != "deny" {
		c.errorf(p+".on_error", "must be allow or deny (found %q)", o.OnError)
	}
	if s := o.StatusOnError; s != 0 && (s < 400 || s > 599) {
		c.errorf(p+".status_on_error", "must be a 4xx or 5xx status (found %d)", s)
	}
	c.checkForwardClaims(p, o.ForwardClaims)
	s := o.Session
	if s == nil || s.KeysEnv == "" && s.Keys == "" {
		c.errorf(p+".session.keys_env", "is required: the environment variable holding the session keys (openssl rand -base64 32)")
	} else if s.KeysEnv != "" && !envNameRe.MatchString(s.KeysEnv) {
		c.errorf(p+".session.keys_env", "%q is not an environment variable name", s.KeysEnv)
	}
	if s == nil {
		return
	}
	if s.Cookie != "" && (!httpTokenRe.MatchString(s.Cookie) || strings.Contains(s.Cookie, ".")) {
		c.errorf(p+".session.cookie", "%q is not a cookie name without dots (the session's chunks are NAME.0, NAME.1, ...)", s.Cookie)
	}
	if s.IdleTimeout < 0 {
		c.errorf(p+".session.idle_timeout", "must be positive (found %s)", s.IdleTimeout.D())
	}
	if s.AbsoluteTimeout < 0 || s.AbsoluteTimeout.D() > maxOIDCAbsoluteTimeout {
		c.errorf(p+".session.absolute_timeout", "must be between 1s and %s (found %s)", maxOIDCAbsoluteTimeout, s.AbsoluteTimeout.D())
	}
	switch s.Store {
	case "", "cookie":
	case "redis":
		if c.f.Redis == nil {
			c.errorf(p+".session.store", "store: redis keeps the sessions in the redis section's Redis: add a redis section")
		}
	default:
		c.errorf(p+".session.store", "must be cookie or redis (found %q)", s.Store)
	}
	if s.IdleTimeout > 0 && s.AbsoluteTimeout > 0 && s.IdleTimeout > s.AbsoluteTimeout {
		c.errorf(p+".session.idle_timeout", "idle_timeout (%s) exceeds absolute_timeout (%s)", s.IdleTimeout.D(), s.AbsoluteTimeout.D())
	}
}

// checkForwardClaims checks an authenticator's forward_claims (claim to
// header): a valid header name, not one the edge owns, one claim a header.
func (c *checker) checkForwardClaims(p string, fc map[string]string) {
	seen := map[string]string{}
	for _, claim := range slices.Sorted(maps.Keys(fc)) {
		h := fc[claim]
		switch ch := http.CanonicalHeaderKey(h); {
		case !httpTokenRe.MatchString(h):
			c.errorf(p+".forward_claims."+claim, "%q is not a header name", h)
		case ch == "Authorization" || ch == "Host" || ch == "Cookie" || ForbiddenAuthzHeader(ch):
			c.errorf(p+".forward_claims."+claim, "%q cannot carry a claim", ch)
		case seen[ch] != "":
			c.errorf(p+".forward_claims."+claim, "header %q already carries claim %q", ch, seen[ch])
		}
		seen[http.CanonicalHeaderKey(h)] = claim
	}
}
