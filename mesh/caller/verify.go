package caller

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/causewayhq/causeway/mesh"
)

// Bundles verifies an X.509-SVID chain against the trust bundles (the
// same check as the mTLS handshake) and returns its SPIFFE ID; mesh.Source
// is one.
type Bundles interface {
	Verify(chain []*x509.Certificate) (mesh.ID, error)
}

// VerifyOptions configures a Verifier.
type VerifyOptions struct {
	// Self is this workload's ID: the audience a token must name. A func
	// because a SPIRE identity may arrive after the Verifier is built.
	Self func() mesh.ID
	// Issuers are the workloads allowed to mint a chain's first token (the
	// edges).
	Issuers []mesh.ID
	// MaxHops refuses tokens exchanged through more workloads than this
	// (0: only tokens straight from an issuer).
	MaxHops int
	// Skew is the clock skew allowed on iat, nbf and exp (default 5 s).
	Skew time.Duration
	// MaxLifetime refuses tokens whose exp is further than this from their
	// iat (default 10 minutes), so a misconfigured or hostile issuer cannot
	// hand out long-lived tokens.
	MaxLifetime time.Duration
	// Replay refuses a token id (jti) seen before within its lifetime.
	Replay bool
	// ReplayCache is the memory of token ids Replay checks against (nil:
	// the Verifier's own). A receiver that builds a Verifier for every
	// configuration passes one that outlives them: a fresh memory at each
	// reload would accept once more every token seen before it.
	ReplayCache *ReplayCache
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Defaults of VerifyOptions.
const (
	DefaultSkew        = 5 * time.Second
	DefaultMaxLifetime = 10 * time.Minute
	// MaxTokenBytes refuses larger tokens before parsing anything.
	MaxTokenBytes = 16 << 10
	// maxX5C bounds the chain in a token's header.
	maxX5C = 5
	// maxVerified bounds the cache of verified tokens; when full it starts
	// over, which costs one verification per token, never a wrong answer.
	maxVerified = 4096
)

// Reasons a token is refused, for metrics and logs; each is one label value.
const (
	ReasonMalformed   = "malformed"
	ReasonSignature   = "signature"
	ReasonUntrusted   = "untrusted"
	ReasonAudience    = "audience"
	ReasonExpired     = "expired"
	ReasonNotYetValid = "not_yet_valid"
	ReasonLifetime    = "lifetime"
	ReasonIssuer      = "issuer"
	ReasonPeer        = "peer"
	ReasonHops        = "hops"
	ReasonReplay      = "replay"
)

// Error is a refused token: Reason is one of the Reason constants.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return "caller token refused (" + e.Reason + "): " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func refuse(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Verifier checks caller tokens addressed to this workload.
type Verifier struct {
	bundles Bundles
	o       VerifyOptions
	parser  *jwt.Parser
	replay  *ReplayCache

	mu    sync.Mutex
	cache map[[32]byte]*Verified
}

var algorithms = []string{"ES256", "ES384", "ES512", "RS256", "EdDSA"}

// NewVerifier returns a Verifier trusting b's bundles.
func NewVerifier(b Bundles, o VerifyOptions) *Verifier {
	if o.Skew <= 0 {
		o.Skew = DefaultSkew
	}
	if o.MaxLifetime <= 0 {
		o.MaxLifetime = DefaultMaxLifetime
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	v := &Verifier{bundles: b, o: o, cache: map[[32]byte]*Verified{}}
	// Time and audience are checked here, below, against the cached result
	// too; the parser checks the signature and the token's form.
	v.parser = jwt.NewParser(jwt.WithValidMethods(algorithms), jwt.WithoutClaimsValidation(), jwt.WithJSONNumber())
	if o.Replay {
		v.replay = o.ReplayCache
		if v.replay == nil {
			v.replay = NewReplayCache()
		}
	}
	return v
}

// Verify checks token. With peer set (the mTLS peer that sent it), the
// peer must be the token's signer. Without it (a token the local service
// hands its own sidecar to pass on), only the signature, the audience, the
// time, the issuer and the chain are checked.
func (v *Verifier) Verify(token string, peer mesh.ID) (*Verified, error) {
	if len(token) > MaxTokenBytes {
		return nil, refuse(ReasonMalformed, "token of %d bytes exceeds %d", len(token), MaxTokenBytes)
	}
	key := sha256.Sum256([]byte(token))
	v.mu.Lock()
	got, cached := v.cache[key]
	v.mu.Unlock()
	if !cached {
		var err error
		if got, err = v.verifySignature(token); err != nil {
			return nil, err
		}
		v.mu.Lock()
		if len(v.cache) >= maxVerified {
			clear(v.cache)
		}
		v.cache[key] = got
		v.mu.Unlock()
	}
	if err := v.check(got, peer); err != nil {
		return nil, err
	}
	if v.replay != nil && !v.replay.first(got.ID, v.o.Now(), v.o.MaxLifetime+2*v.o.Skew) {
		return nil, refuse(ReasonReplay, "token id %q was seen before", got.ID)
	}
	return got, nil
}

// check holds what can change between two uses of one verified token: the
// time, this workload's ID, the peer.
func (v *Verifier) check(t *Verified, peer mesh.ID) error {
	now := v.o.Now()
	if !now.Before(t.ExpiresAt.Add(v.o.Skew)) {
		return refuse(ReasonExpired, "expired at %s", t.ExpiresAt.UTC().Format(time.RFC3339))
	}
	// No skew here: the chain's own validity has none in a handshake.
	if !t.certsUntil.IsZero() && now.After(t.certsUntil) {
		return refuse(ReasonExpired, "signing certificate chain expired at %s", t.certsUntil.UTC().Format(time.RFC3339))
	}
	if now.Add(v.o.Skew).Before(t.IssuedAt) {
		return refuse(ReasonNotYetValid, "issued in the future (%s)", t.IssuedAt.UTC().Format(time.RFC3339))
	}
	if self := v.o.Self(); t.Audience != self {
		return refuse(ReasonAudience, "token is for %s, not %s", t.Audience, self)
	}
	if !peer.IsZero() && peer != t.Signer {
		return refuse(ReasonPeer, "token signed by %s was presented by %s", t.Signer, peer)
	}
	if !slices.Contains(v.o.Issuers, t.Origin()) {
		return refuse(ReasonIssuer, "%s is not an allowed issuer", t.Origin())
	}
	if t.Hops() > v.o.MaxHops {
		return refuse(ReasonHops, "%d hops exceed %d", t.Hops(), v.o.MaxHops)
	}
	return nil
}

// verifySignature parses token and checks what never changes for it: the
// x5c chain against the bundles, the signature with the chain's leaf key,
// the signer's ID against iss, the chain's form and the lifetime bound.
func (v *Verifier) verifySignature(token string) (*Verified, error) {
	var signer mesh.ID
	var c claims
	var chainErr error
	var certsUntil time.Time
	_, err := v.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			chainErr = refuse(ReasonMalformed, "crit header is not supported")
			return nil, chainErr
		}
		chain, err := x5c(t.Header["x5c"])
		if err != nil {
			chainErr = refuse(ReasonMalformed, "x5c: %v", err)
			return nil, chainErr
		}
		if signer, err = v.bundles.Verify(chain); err != nil {
			chainErr = refuse(ReasonUntrusted, "%v", err)
			return nil, chainErr
		}
		for _, cert := range chain {
			if certsUntil.IsZero() || cert.NotAfter.Before(certsUntil) {
				certsUntil = cert.NotAfter
			}
		}
		return chain[0].PublicKey, nil
	})
	if chainErr != nil {
		return nil, chainErr
	}
	if err != nil {
		if errors.Is(err, jwt.ErrTokenSignatureInvalid) || errors.Is(err, jwt.ErrInvalidKeyType) {
			return nil, refuse(ReasonSignature, "%v", err)
		}
		return nil, refuse(ReasonMalformed, "%v", err)
	}
	if c.Issuer != signer.String() {
		return nil, refuse(ReasonSignature, "iss %q is not the signer %s", c.Issuer, signer)
	}
	if c.IssuedAt == nil || c.ExpiresAt == nil {
		return nil, refuse(ReasonMalformed, "iat and exp are required")
	}
	iat, exp := c.IssuedAt.Time, c.ExpiresAt.Time
	if c.NotBefore != nil && c.NotBefore.After(iat) {
		iat = c.NotBefore.Time // a future nbf counts as the start
	}
	if exp.Sub(iat) > v.o.MaxLifetime {
		return nil, refuse(ReasonLifetime, "lifetime %s exceeds %s", exp.Sub(iat), v.o.MaxLifetime)
	}
	if len(c.Audience) != 1 {
		return nil, refuse(ReasonAudience, "a token names exactly one audience, not %d", len(c.Audience))
	}
	aud, err := mesh.ParseID(c.Audience[0])
	if err != nil {
		return nil, refuse(ReasonAudience, "%v", err)
	}
	chain, err := chainOf(signer, c.Act)
	if err != nil {
		return nil, err
	}
	if c.ID == "" {
		return nil, refuse(ReasonMalformed, "jti is required")
	}
	return &Verified{
		Principal:  c.Caller.principal(c.Subject),
		Signer:     signer,
		Chain:      chain,
		Audience:   aud,
		ID:         c.ID,
		IssuedAt:   iat,
		ExpiresAt:  exp,
		Token:      token,
		act:        c.Act,
		certsUntil: certsUntil,
	}, nil
}

// chainOf turns the act claim into the chain from the origin to the
// signer. The newest actor must be the signer itself: a workload cannot
// claim to act as another.
func chainOf(signer mesh.ID, act *Actor) ([]mesh.ID, error) {
	if act == nil {
		return []mesh.ID{signer}, nil
	}
	if act.Subject != signer.String() {
		return nil, refuse(ReasonSignature, "act names %q, not the signer %s", act.Subject, signer)
	}
	var rev []mesh.ID
	for a := act; a != nil; a = a.Act {
		if len(rev) == maxChain {
			return nil, refuse(ReasonHops, "delegation chain deeper than %d", maxChain)
		}
		id, err := mesh.ParseID(a.Subject)
		if err != nil {
			return nil, refuse(ReasonMalformed, "act: %v", err)
		}
		rev = append(rev, id)
	}
	slices.Reverse(rev)
	return rev, nil
}

// x5c decodes the certificate chain of a JWS header (RFC 7515 4.1.6:
// standard base64 DER, leaf first).
func x5c(h any) ([]*x509.Certificate, error) {
	list, ok := h.([]any)
	if !ok || len(list) == 0 {
		return nil, errors.New("missing or not a list")
	}
	if len(list) > maxX5C {
		return nil, fmt.Errorf("%d certificates exceed %d", len(list), maxX5C)
	}
	chain := make([]*x509.Certificate, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("entry %d is not a string", i)
		}
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if chain[i], err = x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
	}
	return chain, nil
}

// ReplayCache remembers token ids for at least the window each check
// asks for (a token's longest lifetime and the skew on both sides): two
// maps, the current one and the one before, swapped every window, so an id
// is kept between one and two windows and memory follows the rate of
// tokens. The window is the caller's, not the cache's, so that Verifiers
// of successive configurations can share one while their settings differ.
type ReplayCache struct {
	mu    sync.Mutex
	since time.Time
	cur   map[string]struct{}
	prev  map[string]struct{}
}

// NewReplayCache returns an empty memory of token ids.
func NewReplayCache() *ReplayCache {
	return &ReplayCache{cur: map[string]struct{}{}, prev: map[string]struct{}{}}
}

// first records id and reports whether it was not seen before.
func (c *ReplayCache) first(id string, now time.Time, window time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.since.IsZero() {
		c.since = now
	}
	if now.Sub(c.since) >= window {
		c.prev, c.cur = c.cur, map[string]struct{}{}
		if now.Sub(c.since) >= 2*window {
			c.prev = map[string]struct{}{}
		}
		c.since = now
	}
	if _, ok := c.cur[id]; ok {
		return false
	}
	if _, ok := c.prev[id]; ok {
		return false
	}
	c.cur[id] = struct{}{}
	return true
}
