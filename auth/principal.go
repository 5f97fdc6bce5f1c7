// Package auth authenticates clients at the edge: JSON Web Tokens verified
// with static keys, HMAC secrets or a JWKS endpoint, and API keys checked
// against a file of hashes. A route's middleware puts the authenticated
// Principal on the request context, where rate limits and plugins read it.
//
// Nothing here logs or returns a token, a key or a secret: errors name the
// authenticator and what failed, never the credential.
package auth

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// Principal is who a request was authenticated as.
type Principal struct {
	Authenticator string         // name of the authenticator that succeeded
	Subject       string         // JWT or ID token "sub", the API key's name, the basic user, or an ext_authz server's "sub"
	KeyName       string         // API key name ("" for JWT)
	Claims        map[string]any // JWT or OIDC ID token claims (nil for API keys); shared, read-only; numbers are json.Number
	// authz is an ext_authz server's allow: the headers it sets on and
	// removes from the upstream request. Shared by cached requests; read-only.
	authz *decision
	// accessToken is an OIDC session's access token, for
	// forward_access_token.
	accessToken string
	// respond writes what the authenticator has to add to the response of
	// an accepted request (an OIDC session's refreshed cookie).
	respond func(http.ResponseWriter)
}

type principalKey struct{}

// authenticated is what the auth stage puts on a request's context: the
// principal, and the authenticator that accepted it (nil through
// NewContext).
type authenticated struct {
	p  *Principal
	by authenticator
}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p *Principal) context.Context {
	return newContextBy(ctx, p, nil)
}

// authContext is context.WithValue for the one key, holding both values
// in the one allocation WithValue would make.
type authContext struct {
	context.Context
	a authenticated
}

func (c *authContext) Value(key any) any {
	if key == (principalKey{}) {
		return &c.a
	}
	return c.Context.Value(key)
}

func newContextBy(ctx context.Context, p *Principal, by authenticator) context.Context {
	return &authContext{Context: ctx, a: authenticated{p: p, by: by}}
}

// FromContext returns the principal on ctx, or nil when the request was not
// authenticated.
func FromContext(ctx context.Context) *Principal {
	if a, _ := ctx.Value(principalKey{}).(*authenticated); a != nil {
		return a.p
	}
	return nil
}

// ForwardedFromContext returns the upstream headers the authenticator that
// accepted the request on ctx sets from its principal (forward_claims,
// forward_name, an ext_authz server's headers), made again from the
// principal. A later stage may have changed the request's own copies (a
// route's headers plugin, a Kubernetes route's filter): what vouches for a
// caller beyond this hop (the mesh's caller token) reads these instead.
func ForwardedFromContext(ctx context.Context) http.Header {
	a, _ := ctx.Value(principalKey{}).(*authenticated)
	if a == nil || a.by == nil || len(a.by.forwardedHeaders()) == 0 {
		return nil
	}
	h := http.Header{}
	a.by.forwardTo(h, a.p)
	return h
}

// Claim returns the string form of a claim, for rate-limit keys
// ("claim:sub") and forwarded headers. A name with dots ("realm.roles") that
// is not itself a claim walks nested objects. Arrays are joined with ",",
// objects written as compact JSON. For an API key, "sub" is the key's name.
func (p *Principal) Claim(name string) (string, bool) {
	if p == nil {
		return "", false
	}
	if p.Claims == nil {
		if name == "sub" && p.Subject != "" {
			return p.Subject, true
		}
		return "", false
	}
	v, ok := lookupClaim(p.Claims, name)
	if !ok {
		return "", false
	}
	return claimString(v)
}

// lookupClaim finds name in claims, first as a key of its own (claim names
// such as "https://example.com/roles" hold dots), then as a dotted path.
func lookupClaim(claims map[string]any, name string) (any, bool) {
	if v, ok := claims[name]; ok {
		return v, v != nil
	}
	if !strings.Contains(name, ".") {
		return nil, false
	}
	var cur any = claims
	for part := range strings.SplitSeq(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, cur != nil
}

func claimString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case bool:
		return strconv.FormatBool(v), true
	case float64:
		// JSON numbers decode as float64; an integral id must not become
		// "1.234567e+06".
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return strconv.FormatInt(int64(v), 10), true
		}
		return strconv.FormatFloat(v, 'g', -1, 64), true
	case json.Number:
		return v.String(), true
	case []any:
		parts := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := claimString(e)
			if !ok {
				return "", false
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), true
	case nil:
		return "", false
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return "", false
		}
		return string(b), true
	}
}
