package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/net/http/httpguts"

	"github.com/causewayhq/causeway/routes"
)

// errAlgorithm marks a token whose alg is not on the authenticator's list;
// "none" never is (routes refuses to list it), and neither is an HMAC alg
// on a public-key authenticator, which is what defeats algorithm confusion.
var errAlgorithm = errors.New("signing algorithm not allowed")

// errCritical marks a token whose "crit" header names extensions: RFC 7515
// 4.1.11 says a verifier that does not understand them must refuse it, and
// Causeway understands none.
var errCritical = errors.New("critical header extensions are not supported")

// minHMACBytes is RFC 7518 3.2: a key at least as long as the hash output.
var minHMACBytes = map[string]int{"HS256": 32, "HS384": 48, "HS512": 64}

// claimHeader is one forward_claims entry.
type claimHeader struct {
	claim, header string
}

// jwtAuth verifies JSON Web Tokens.
type jwtAuth struct {
	authName  string
	realmName string
	src       source
	keep      bool
	maxBytes  int
	forward   []claimHeader // sorted by header, for a stable order
	allowed   []string
	parser    *jwt.Parser
	leeway    time.Duration
	// issuer and audiences are checked here rather than by golang-jwt, which
	// reports a missing iss or aud as a generic missing claim.
	issuer    string
	audiences []string
	now       func() time.Time
	secret    []byte   // HMAC
	static    []pubKey // public_key_files
	jwks      *jwks    // jwks_url
	cache     *tokenCache
}

var _ authenticator = (*jwtAuth)(nil)

func newJWTAuth(name string, c *routes.JWT, now func() time.Time) (*jwtAuth, error) {
	a := &jwtAuth{
		authName:  name,
		realmName: c.Realm,
		src:       source{kind: fromBearer},
		keep:      c.KeepToken,
		maxBytes:  c.MaxTokenBytes,
		allowed:   slices.Clone(c.Algorithms),
		leeway:    c.Leeway.D(),
		now:       now,
	}
	if a.realmName == "" {
		a.realmName = name
	}
	if a.maxBytes <= 0 {
		a.maxBytes = routes.DefaultMaxTokenBytes
	}
	if len(a.allowed) == 0 {
		return nil, errors.New("no algorithms allowed")
	}
	for _, alg := range a.allowed {
		if !slices.Contains(routes.JWTAlgorithms, alg) {
			return nil, fmt.Errorf("algorithm %q is not supported", alg)
		}
	}
	if s := c.From; s != nil {
		switch {
		case s.Header != "":
			a.src = source{kind: fromHeader, name: http.CanonicalHeaderKey(s.Header)}
			if a.src.name == "Authorization" {
				a.src = source{kind: fromBearer}
			}
		case s.Cookie != "":
			a.src = source{kind: fromCookie, name: s.Cookie}
		case s.Query != "":
			a.src = source{kind: fromQuery, name: s.Query}
		}
	}
	for claim, header := range c.ForwardClaims {
		a.forward = append(a.forward, claimHeader{claim: claim, header: http.CanonicalHeaderKey(header)})
	}
	sort.Slice(a.forward, func(i, j int) bool { return a.forward[i].header < a.forward[j].header })
	size := routes.DefaultTokenCache
	if c.TokenCache != nil {
		size = *c.TokenCache
	}
	a.cache = newTokenCache(size)

	hmacAlgs := 0
	for _, alg := range a.allowed {
		if strings.HasPrefix(alg, "HS") {
			hmacAlgs++
		}
	}
	switch {
	case hmacAlgs > 0 && hmacAlgs < len(a.allowed):
		return nil, errors.New("HMAC and public-key algorithms cannot share an authenticator")
	case hmacAlgs > 0:
		secret, err := loadSecret(c)
		if err != nil {
			return nil, err
		}
		for _, alg := range a.allowed {
			if len(secret) < minHMACBytes[alg] {
				return nil, fmt.Errorf("the HMAC secret has %d bytes; %s needs at least %d", len(secret), alg, minHMACBytes[alg])
			}
		}
		a.secret = secret
	default:
		if c.HMACSecretEnv != "" || c.HMACSecretFile != "" {
			return nil, errors.New("an HMAC secret is set but no HS algorithm is allowed")
		}
		for i, path := range c.PublicKeyFiles {
			keys, err := loadPEMKeys(path)
			if err != nil {
				return nil, fmt.Errorf("public_key_files[%d] %q: %w", i, path, err)
			}
			a.static = append(a.static, keys...)
		}
		if len(c.PublicKeyFiles) == 0 && c.JWKSURL == "" {
			return nil, errors.New("needs jwks_url or public_key_files")
		}
		for _, alg := range a.allowed {
			if c.JWKSURL != "" || slices.ContainsFunc(a.static, func(k pubKey) bool { return k.fits(alg) }) {
				continue
			}
			return nil, fmt.Errorf("algorithm %s is allowed but no key in public_key_files can verify it", alg)
		}
	}

	opts := []jwt.ParserOption{
		jwt.WithLeeway(a.leeway),
		jwt.WithTimeFunc(now),
		jwt.WithIssuedAt(),
		// A token without exp would be valid forever, and cached as long.
		jwt.WithExpirationRequired(),
		// Non-canonical base64 would let one token have many spellings,
		// each a separate cache entry and a separate signature check.
		jwt.WithStrictDecoding(),
		// Numbers stay as written: a 64-bit user id forwarded as a header or
		// used as a rate-limit key must not lose digits to float64.
		jwt.WithJSONNumber(),
	}
	a.issuer = c.Issuer
	a.audiences = slices.Clone(c.Audiences)
	a.parser = jwt.NewParser(opts...)
	return a, nil
}

// loadSecret reads the HMAC secret. The error names where it was looked
// for, never what was found.
func loadSecret(c *routes.JWT) ([]byte, error) {
	switch {
	case len(c.HMACSecret) > 0:
		return c.HMACSecret, nil
	case c.HMACSecretEnv != "":
		v, ok := os.LookupEnv(c.HMACSecretEnv)
		if !ok || v == "" {
			return nil, fmt.Errorf("hmac_secret_env: environment variable %s is unset or empty", c.HMACSecretEnv)
		}
		return []byte(v), nil
	case c.HMACSecretFile != "":
		b, err := os.ReadFile(c.HMACSecretFile)
		if err != nil {
			return nil, fmt.Errorf("hmac_secret_file: %w", err)
		}
		// Editors and `echo` add a final newline that is not part of the secret.
		b = []byte(strings.TrimRight(string(b), "\r\n"))
		if len(b) == 0 {
			return nil, fmt.Errorf("hmac_secret_file %q is empty", c.HMACSecretFile)
		}
		return b, nil
	}
	return nil, errors.New("an HS algorithm needs hmac_secret_env or hmac_secret_file")
}

func (a *jwtAuth) name() string     { return a.authName }
func (a *jwtAuth) realm() string    { return a.realmName }
func (a *jwtAuth) scheme() string   { return "Bearer" }
func (a *jwtAuth) source() source   { return a.src }
func (a *jwtAuth) keepToken() bool  { return a.keep }
func (a *jwtAuth) jwksCache() *jwks { return a.jwks }
func (a *jwtAuth) forwardedHeaders() []string {
	hs := make([]string, len(a.forward))
	for i, f := range a.forward {
		hs[i] = f.header
	}
	return hs
}

// forwardTo sets the forwarded claims on h. A claim whose string form is not
// a valid header value (a newline in it) is left out rather than sent
// half-escaped.
func (a *jwtAuth) forwardTo(h http.Header, p *Principal) {
	for _, f := range a.forward {
		if v, ok := p.Claim(f.claim); ok && httpguts.ValidHeaderFieldValue(v) {
			h[f.header] = []string{v}
		}
	}
}

func (a *jwtAuth) authenticate(r *http.Request) (*Principal, Reason) {
	tok, reason := a.src.extract(r)
	if reason != ReasonNone {
		return nil, reason
	}
	return a.verify(r.Context(), tok)
}

// verify checks one token. ctx bounds the wait for a JWKS refresh that an
// unknown kid may trigger.
func (a *jwtAuth) verify(ctx context.Context, tok string) (*Principal, Reason) {
	if len(tok) > a.maxBytes {
		return nil, ReasonOversized
	}
	if !compactJWS(tok) {
		return nil, ReasonMalformed
	}
	now := a.now()
	var ver uint64
	if a.jwks != nil {
		ver, _ = a.jwks.version()
	}
	if p, ok := a.cache.get(tok, now, ver); ok {
		return p, ReasonNone
	}
	claims := jwt.MapClaims{}
	kf := keyfunc{a: a, ctx: ctx, version: ver}
	if _, err := a.parser.ParseWithClaims(tok, claims, kf.key); err != nil {
		return nil, reasonOf(err)
	}
	if r := checkTimeClaims(claims); r != ReasonNone {
		return nil, r
	}
	if r := a.checkIssuerAudience(claims); r != ReasonNone {
		return nil, r
	}
	p := &Principal{Authenticator: a.authName, Claims: claims}
	p.Subject, _ = claims["sub"].(string)
	if a.cache != nil {
		// ParseWithClaims required exp, so it is there.
		exp, _ := claims.GetExpirationTime()
		until := now.Add(maxCacheTTL)
		if exp != nil && exp.Add(a.leeway).Before(until) {
			until = exp.Add(a.leeway)
		}
		a.cache.put(tok, cacheEntry{p: p, until: until, version: kf.version}, now)
	}
	return p, ReasonNone
}

// compactJWS reports whether tok is made only of base64url characters and
// dots. Go's base64 decoders skip CR and LF even in strict mode, so a
// token with newlines in a segment (possible in a query or a cookie)
// would verify as the same token under endless spellings, each its own
// cache entry.
func compactJWS(tok string) bool {
	for i := 0; i < len(tok); i++ {
		switch c := tok[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// maxNumericDate bounds exp, nbf and iat (about 146 billion years either
// way). golang-jwt turns a NumericDate into a time through float64 and
// int64 without a range check: past int64 (1e19, 1e400, the largest
// int64, which float64 rounds up) the conversion wraps to the far past, so
// an nbf the issuer put out of reach was taken as long passed and the
// token accepted. Within this bound the conversion is exact enough and
// time.Unix cannot overflow.
const maxNumericDate = 1 << 62

// checkTimeClaims refuses a token whose exp, nbf or iat is a number out of
// range. The parser has checked their types already.
func checkTimeClaims(claims jwt.MapClaims) Reason {
	for _, k := range []string{"exp", "nbf", "iat"} {
		n, ok := claims[k].(json.Number)
		if !ok {
			continue
		}
		f, err := n.Float64()
		if err != nil || math.IsNaN(f) || f > maxNumericDate || f < -maxNumericDate {
			return ReasonClaims
		}
	}
	return ReasonNone
}

func (a *jwtAuth) checkIssuerAudience(claims jwt.MapClaims) Reason {
	if a.issuer != "" {
		if iss, _ := claims["iss"].(string); iss != a.issuer {
			return ReasonIssuer
		}
	}
	if len(a.audiences) > 0 {
		aud, err := claims.GetAudience()
		if err != nil || !slices.ContainsFunc(aud, func(s string) bool { return slices.Contains(a.audiences, s) }) {
			return ReasonAudience
		}
	}
	return ReasonNone
}

// keyfunc hands golang-jwt the keys for one token, only of the type the
// token's (allowed) algorithm needs.
type keyfunc struct {
	a       *jwtAuth
	ctx     context.Context
	version uint64 // of the JWKS keys used, for the cache entry
}

func (kf *keyfunc) key(t *jwt.Token) (any, error) {
	a := kf.a
	alg := t.Method.Alg()
	if hdr, _ := t.Header["alg"].(string); hdr != alg || !slices.Contains(a.allowed, alg) {
		return nil, errAlgorithm
	}
	if _, ok := t.Header["crit"]; ok {
		return nil, errCritical
	}
	if a.secret != nil {
		if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok {
			return nil, errAlgorithm
		}
		return a.secret, nil
	}
	if _, ok := t.Method.(*jwt.SigningMethodHMAC); ok {
		return nil, errAlgorithm
	}
	kid, _ := t.Header["kid"].(string)
	var keys []pubKey
	for _, k := range a.static {
		if k.fits(alg) {
			keys = append(keys, k)
		}
	}
	if a.jwks != nil && (len(keys) == 0 || kid != "") {
		fetched, v, err := a.jwks.lookup(kf.ctx, kid, alg)
		switch {
		case err == nil:
			keys = append(keys, fetched...)
			kf.version = v
		case len(keys) == 0:
			return nil, err
		}
	}
	switch len(keys) {
	case 0:
		return nil, errUnknownKID
	case 1:
		return keys[0].key, nil
	}
	set := jwt.VerificationKeySet{Keys: make([]jwt.VerificationKey, len(keys))}
	for i, k := range keys {
		set.Keys[i] = k.key
	}
	return set, nil
}

// reasonOf maps golang-jwt's errors onto the bounded reason set. Several
// claim errors may be joined; the first in this order is reported.
func reasonOf(err error) Reason {
	switch {
	case errors.Is(err, errAlgorithm):
		return ReasonAlgorithm
	case errors.Is(err, errUnknownKID):
		return ReasonUnknownKID
	case errors.Is(err, errNoKeys):
		return ReasonNoKeys
	case errors.Is(err, errCritical):
		return ReasonMalformed
	case errors.Is(err, jwt.ErrTokenMalformed):
		return ReasonMalformed
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// golang-jwt says unverifiable for an alg it does not know.
		return ReasonAlgorithm
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return ReasonSignature
	case errors.Is(err, jwt.ErrTokenExpired):
		return ReasonExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return ReasonNotYetValid
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return ReasonIssuer
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return ReasonAudience
	}
	return ReasonClaims
}
