// Package caller carries the caller's identity through the mesh: the user
// the edge authenticated travels with each request as a short-lived signed
// token, next to the workload identity that mTLS proves.
//
// A caller token is a JWT signed with the X.509-SVID key of the workload
// that issued it, with the SVID's chain in the "x5c" header. A receiver
// verifies the chain against the same trust bundle its mTLS handshakes use,
// so a token needs no second key distribution: files from the mesh CA and
// SPIRE's Workload API both work unchanged, rotation included. (JWT-SVIDs
// would need a JWT bundle next to the X.509 one and, from SPIRE, one fetch
// per audience; the file-based CA has no JWT signing keys at all.)
//
// The claims:
//
//	iss  the SPIFFE ID of the signer (must equal the x5c leaf and, at the
//	     receiver, the mTLS peer)
//	sub  the principal's subject ("" when anonymous)
//	aud  the SPIFFE ID of the one workload the token is for
//	iat, nbf, exp, jti
//	act  RFC 8693 delegation: the workloads the request passed through,
//	     newest first; the innermost names the edge that minted the first
//	     token
//	cwy  the principal: its issuer, the authenticator's name, anonymous,
//	     the forwarded claims and headers, the request id
package caller

import (
	"encoding/json"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/causewayhq/causeway/mesh"
)

// Header is the default request header a caller token travels in.
const Header = "Causeway-Caller"

// Principal is the user on whose behalf a request travels, as the edge
// verified it.
type Principal struct {
	// Subject is the JWT "sub" or the API key's name; empty when Anonymous.
	Subject string
	// Issuer is the issuer of the user's credential (the JWT's "iss");
	// empty for API keys.
	Issuer string
	// Authenticator names the edge's authenticator that succeeded.
	Authenticator string
	// Anonymous marks a request that passed the edge on a route without
	// authentication: a service can tell it from one that bypassed the edge.
	Anonymous bool
	// Claims are the claims the edge forwards (forward_claims), by claim
	// name, for rules' require_claims.
	Claims map[string]any
	// Headers are the headers the edge forwarded for this principal (for
	// example X-User-Id), so a sidecar hands the same names to its service.
	Headers map[string]string
	// RequestID is the edge's request id, when the token was minted for one
	// request (no token cache).
	RequestID string
}

// Actor is one workload in a delegation chain (RFC 8693 "act"), newest
// first: Act is the one before it.
type Actor struct {
	Subject string `json:"sub"`
	Act     *Actor `json:"act,omitempty"`
}

// maxChain bounds a delegation chain's depth however rules are set, so a
// hostile token cannot make the receiver walk without end.
const maxChain = 16

// Verified is a token that passed every check.
type Verified struct {
	Principal Principal
	// Signer is the workload that signed the token (its iss).
	Signer mesh.ID
	// Chain lists the workloads the request went through, from the edge
	// that minted the first token to the signer: [edge] for a token straight
	// from the edge, [edge, A] after service A's sidecar exchanged it.
	Chain []mesh.ID
	// Audience is the workload the token is for.
	Audience  mesh.ID
	ID        string // jti
	IssuedAt  time.Time
	ExpiresAt time.Time
	// Token is the token as received.
	Token string
	act   *Actor
	// certsUntil is the earliest NotAfter of the token's x5c chain: past
	// it a first verification would fail on the chain, so a cached one
	// must fail too.
	certsUntil time.Time
}

// Origin is the workload that minted the first token of the chain.
func (v *Verified) Origin() mesh.ID { return v.Chain[0] }

// Hops is the number of workloads the token was exchanged through after
// the edge: 0 for a token straight from the edge.
func (v *Verified) Hops() int { return len(v.Chain) - 1 }

// claims is the token's JSON body.
type claims struct {
	jwt.RegisteredClaims
	Act    *Actor       `json:"act,omitempty"`
	Caller callerClaims `json:"cwy"`
}

type callerClaims struct {
	Anonymous bool              `json:"anon,omitempty"`
	Issuer    string            `json:"iss,omitempty"`
	Authn     string            `json:"authn,omitempty"`
	Claims    map[string]any    `json:"claims,omitempty"`
	Headers   map[string]string `json:"hdr,omitempty"`
	RequestID string            `json:"rid,omitempty"`
}

func (c *callerClaims) principal(sub string) Principal {
	return Principal{Subject: sub, Issuer: c.Issuer, Authenticator: c.Authn, Anonymous: c.Anonymous,
		Claims: c.Claims, Headers: c.Headers, RequestID: c.RequestID}
}

func callerOf(p Principal) callerClaims {
	return callerClaims{Anonymous: p.Anonymous, Issuer: p.Issuer, Authn: p.Authenticator,
		Claims: p.Claims, Headers: p.Headers, RequestID: p.RequestID}
}

// Claim returns claim name of the principal as a string: "sub" and "iss"
// are the principal's subject and issuer, anything else comes from the
// forwarded claims (numbers in their JSON form, lists never match).
func (p Principal) Claim(name string) (string, bool) {
	switch name {
	case "sub":
		return p.Subject, p.Subject != ""
	case "iss":
		return p.Issuer, p.Issuer != ""
	}
	v, ok := p.Claims[name]
	if !ok {
		return "", false
	}
	switch v := v.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case bool:
		if v {
			return "true", true
		}
		return "false", true
	case float64:
		b, _ := json.Marshal(v)
		return string(b), true
	}
	return "", false
}
