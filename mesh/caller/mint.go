package caller

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/causewayhq/causeway/mesh"
)

// SVIDSource gives the workload's current X.509-SVID; mesh.Source is one.
type SVIDSource interface {
	GetX509SVID() (*x509svid.SVID, error)
}

// MintOptions configures a Minter.
type MintOptions struct {
	// Lifetime of a token (default 60 s).
	Lifetime time.Duration
	// CacheFor reuses a token for the same principal and audience for this
	// long (0: a new token per request). It must be shorter than Lifetime;
	// a reused token carries no request id and, with the receiver's replay
	// check on, is refused the second time.
	CacheFor time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DefaultLifetime is a token's lifetime when none is configured.
const DefaultLifetime = 60 * time.Second

// maxCached bounds the token cache; when full it starts over, which costs
// one signature per principal and audience, never a wrong token.
const maxCached = 16384

// Minter signs caller tokens with the workload's SVID key.
type Minter struct {
	src      SVIDSource
	lifetime time.Duration
	cacheFor time.Duration
	now      func() time.Time

	mu    sync.Mutex
	cache map[[32]byte]cachedToken
}

type cachedToken struct {
	token string
	leaf  *x509.Certificate // the SVID it was signed with: a rotation mints anew
	reuse time.Time         // reused until then
}

// NewMinter returns a Minter signing with src's SVID.
func NewMinter(src SVIDSource, o MintOptions) *Minter {
	m := &Minter{src: src, lifetime: o.Lifetime, cacheFor: o.CacheFor, now: o.Now}
	if m.lifetime <= 0 {
		m.lifetime = DefaultLifetime
	}
	if m.cacheFor >= m.lifetime {
		m.cacheFor = m.lifetime / 2
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.cacheFor > 0 {
		m.cache = map[[32]byte]cachedToken{}
	}
	return m
}

// Mint returns a token for p, for the workload aud.
func (m *Minter) Mint(p Principal, aud mesh.ID) (string, error) {
	if m.cache != nil {
		p.RequestID = "" // a reused token belongs to no one request
	}
	return m.sign(p, aud, nil, time.Time{})
}

// Exchange returns a token for aud that carries v's principal on to the
// next workload: the signer is this workload, added to the delegation
// chain, and the new token expires no later than v.
func (m *Minter) Exchange(v *Verified, aud mesh.ID) (string, error) {
	prior := v.act
	if prior == nil {
		prior = &Actor{Subject: v.Signer.String()}
	}
	return m.sign(v.Principal, aud, prior, v.ExpiresAt)
}

func (m *Minter) sign(p Principal, aud mesh.ID, prior *Actor, notAfter time.Time) (string, error) {
	svid, err := m.src.GetX509SVID()
	if err != nil {
		return "", fmt.Errorf("caller token: no identity to sign with: %w", err)
	}
	if len(svid.Certificates) == 0 {
		return "", errors.New("caller token: the identity has no certificate")
	}
	leaf := svid.Certificates[0]
	now := m.now()
	var key [32]byte
	if m.cache != nil {
		key = cacheKey(p, aud, prior, notAfter)
		m.mu.Lock()
		c, ok := m.cache[key]
		m.mu.Unlock()
		if ok && c.leaf == leaf && now.Before(c.reuse) {
			return c.token, nil
		}
	}
	method, signer, err := signingMethod(svid)
	if err != nil {
		return "", err
	}
	exp := now.Add(m.lifetime)
	if !notAfter.IsZero() && notAfter.Before(exp) {
		exp = notAfter
	}
	if leaf.NotAfter.Before(exp) {
		// A token outliving the certificate that vouches for it could not
		// be verified to its end anyway.
		exp = leaf.NotAfter
	}
	if !exp.After(now) {
		return "", errors.New("caller token: nothing left of the lifetime to hand on")
	}
	jti, err := newID()
	if err != nil {
		return "", err
	}
	self := svid.ID.String()
	var act *Actor
	if prior != nil {
		act = &Actor{Subject: self, Act: prior}
	}
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    self,
			Subject:   p.Subject,
			Audience:  jwt.ClaimStrings{aud.String()},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        jti,
		},
		Act:    act,
		Caller: callerOf(p),
	}
	t := jwt.NewWithClaims(method, c)
	x5c := make([]string, len(svid.Certificates))
	for i, cert := range svid.Certificates {
		x5c[i] = base64.StdEncoding.EncodeToString(cert.Raw)
	}
	t.Header["x5c"] = x5c
	s, err := t.SignedString(signer)
	if err != nil {
		return "", fmt.Errorf("caller token: signing: %w", err)
	}
	if m.cache != nil {
		m.mu.Lock()
		if len(m.cache) >= maxCached {
			clear(m.cache)
		}
		// Reused for at most half of what is left of it, so a reused
		// token never arrives with its last seconds.
		reuse := now.Add(min(m.cacheFor, exp.Sub(now)/2))
		m.cache[key] = cachedToken{token: s, leaf: leaf, reuse: reuse}
		m.mu.Unlock()
	}
	return s, nil
}

// signingMethod picks the JWS algorithm for the SVID's key.
func signingMethod(svid *x509svid.SVID) (jwt.SigningMethod, any, error) {
	switch k := svid.PrivateKey.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return jwt.SigningMethodES256, k, nil
		case elliptic.P384():
			return jwt.SigningMethodES384, k, nil
		case elliptic.P521():
			return jwt.SigningMethodES512, k, nil
		}
	case *rsa.PrivateKey:
		return jwt.SigningMethodRS256, k, nil
	case ed25519.PrivateKey:
		return jwt.SigningMethodEdDSA, k, nil
	}
	return nil, nil, fmt.Errorf("caller token: unsupported key type %T", svid.PrivateKey)
}

// cacheKey identifies what a token says, so equal requests share one.
func cacheKey(p Principal, aud mesh.ID, prior *Actor, notAfter time.Time) [32]byte {
	b, _ := json.Marshal(struct {
		C   callerClaims
		S   string
		A   string
		P   *Actor
		Exp int64
	}{callerOf(p), p.Subject, aud.String(), prior, notAfter.Unix()})
	return sha256.Sum256(b)
}

func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("caller token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
