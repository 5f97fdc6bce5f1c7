package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// assertionTTL is how long a client assertion is valid: one token
// request, with room for clock skew, and never reusable for long.
const assertionTTL = time.Minute

// clientAssertion authenticates the client at the token endpoint with a
// JWT signed by its private key (private_key_jwt, OIDC Core 9; RFC 7523
// 2.2), in place of a client secret.
type clientAssertion struct {
	clientID string
	issuer   string
	kid      string
	key      crypto.Signer
	method   jwt.SigningMethod
	now      func() time.Time
}

// loadAssertionKey reads a PEM private key (PKCS#8, PKCS#1 RSA or SEC 1
// EC) and picks the signing algorithm its type implies.
func loadAssertionKey(path string) (crypto.Signer, jwt.SigningMethod, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, nil, fmt.Errorf("%s: no PEM block", path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, nil, fmt.Errorf("%s: a PEM %q block, not a private key", path, block.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, nil, fmt.Errorf("%s: an RSA key of %d bits; at least 2048 are needed", path, k.N.BitLen())
		}
		return k, jwt.SigningMethodRS256, nil
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return k, jwt.SigningMethodES256, nil
		case elliptic.P384():
			return k, jwt.SigningMethodES384, nil
		case elliptic.P521():
			return k, jwt.SigningMethodES512, nil
		}
		return nil, nil, fmt.Errorf("%s: an EC key on an unsupported curve", path)
	}
	return nil, nil, fmt.Errorf("%s: a %T, not an RSA or EC private key", path, key)
}

// sign makes one assertion for a request to tokenURL. Its audience is the
// token endpoint (OIDC Core 9) and the issuer, which some providers expect
// instead; jti is fresh so a provider that remembers them accepts each.
func (c *clientAssertion) sign(tokenURL string) (string, error) {
	now := c.now()
	aud := jwt.ClaimStrings{tokenURL}
	if c.issuer != tokenURL {
		aud = append(aud, c.issuer)
	}
	tok := jwt.NewWithClaims(c.method, jwt.RegisteredClaims{
		Issuer:    c.clientID,
		Subject:   c.clientID,
		Audience:  aud,
		ID:        randomString(),
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(assertionTTL)),
	})
	if c.kid != "" {
		tok.Header["kid"] = c.kid
	}
	return tok.SignedString(c.key)
}

// assertionTransport adds a fresh client assertion to every token request
// (the code exchange and each refresh). It sits in the HTTP client that
// golang.org/x/oauth2 is handed for token requests only: oauth2 sends the
// refresh itself, with no way to add parameters to it, so the body is
// completed here rather than in two places.
type assertionTransport struct {
	base http.RoundTripper
	ca   *clientAssertion
}

// maxTokenRequest bounds the form read back from oauth2's own request.
const maxTokenRequest = 1 << 16

func (t *assertionTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || req.Body == nil {
		return t.base.RoundTrip(req)
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxTokenRequest+1))
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	if len(body) > maxTokenRequest {
		return nil, errors.New("token request too large")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("token request: %w", err)
	}
	u := *req.URL
	u.RawQuery, u.Fragment = "", ""
	assertion, err := t.ca.sign(u.String())
	if err != nil {
		return nil, fmt.Errorf("client assertion: %w", err)
	}
	// The assertion is the only credential: no secret goes with it.
	form.Del("client_secret")
	form.Set("client_id", t.ca.clientID)
	form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
	form.Set("client_assertion", assertion)
	enc := form.Encode()
	out := req.Clone(req.Context())
	out.Header.Del("Authorization") // never a Basic header beside the assertion
	out.Body = io.NopCloser(strings.NewReader(enc))
	out.ContentLength = int64(len(enc))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader([]byte(enc))), nil }
	return t.base.RoundTrip(out)
}
