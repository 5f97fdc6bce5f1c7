package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// assertionStorage is the example provider's storage with one client
// registered for private_key_jwt: its public key under a kid, and a
// secret the edge is never told, so only a valid assertion gets a token.
type assertionStorage struct {
	*storage.Storage
	mu       sync.Mutex
	clientID string
	kid      string
	pub      crypto.PublicKey
	verified int // assertions whose key the provider looked up
}

func (s *assertionStorage) set(clientID, kid string, pub crypto.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clientID, s.kid, s.pub = clientID, kid, pub
}

func (s *assertionStorage) lookups() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.verified
}

func (s *assertionStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || id != s.clientID {
		return c, err
	}
	return keyClient{c}, nil
}

func (s *assertionStorage) GetKeyByIDAndClientID(_ context.Context, kid, clientID string) (*jose.JSONWebKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if clientID != s.clientID || kid != s.kid {
		return nil, errors.New("key not found")
	}
	s.verified++
	return &jose.JSONWebKey{KeyID: kid, Use: "sig", Key: s.pub}, nil
}

// keyClient is a client that authenticates with private_key_jwt.
type keyClient struct{ op.Client }

func (keyClient) AuthMethod() oidc.AuthMethod { return oidc.AuthMethodPrivateKeyJWT }

func startKeyOP(t *testing.T) (*testOP, *assertionStorage) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + l.Addr().String() + "/"
	st := &assertionStorage{Storage: storage.NewStorage(storage.NewUserStore(issuer))}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: exampleop.SetupServer(issuer, st, nil, false), ReadHeaderTimeout: 10 * time.Second}}
	srv.Start()
	t.Cleanup(srv.Close)
	return &testOP{issuer: issuer, srv: srv}, st
}

func writeKey(t *testing.T, dir, name string, key crypto.Signer, pkcs8 bool) string {
	t.Helper()
	var block *pem.Block
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if pkcs8 {
			b, _ := x509.MarshalPKCS8PrivateKey(k)
			block = &pem.Block{Type: "PRIVATE KEY", Bytes: b}
		} else {
			block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
		}
	case *ecdsa.PrivateKey:
		if pkcs8 {
			b, _ := x509.MarshalPKCS8PrivateKey(k)
			block = &pem.Block{Type: "PRIVATE KEY", Bytes: b}
		} else {
			b, _ := x509.MarshalECPrivateKey(k)
			block = &pem.Block{Type: "EC PRIVATE KEY", Bytes: b}
		}
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// private_key_jwt against the real provider: the edge signs an assertion
// for the code exchange and for each refresh, the provider checks it with
// the registered public key; the client's secret, which the edge is never
// given, would not do. A key the provider does not hold, or another kid,
// is refused at the callback.
func TestOIDCPrivateKeyJWT(t *testing.T) {
	dir := t.TempDir()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rs, _ := rsa.GenerateKey(rand.Reader, 2048)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name     string
		file     string
		kid      string // the kid the edge sends
		regKey   crypto.PublicKey
		signedIn bool
	}{
		{"EC P-256, SEC 1", writeKey(t, dir, "ec.pem", ec, false), "k1", &ec.PublicKey, true},
		{"EC P-256, PKCS#8", writeKey(t, dir, "ec8.pem", ec, true), "k1", &ec.PublicKey, true},
		{"RSA, PKCS#1", writeKey(t, dir, "rsa.pem", rs, false), "k1", &rs.PublicKey, true},
		{"RSA, PKCS#8", writeKey(t, dir, "rsa8.pem", rs, true), "k1", &rs.PublicKey, true},
		{"a key the provider does not hold", writeKey(t, dir, "other.pem", other, false), "k1", &ec.PublicKey, false},
		{"another kid", writeKey(t, dir, "ec-kid.pem", ec, false), "k2", &ec.PublicKey, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op, st := startKeyOP(t)
			// refresh_before at the access token's whole life: every
			// request after the sign-in refreshes, with a new assertion.
			e := startEdge(t, op, fmt.Sprintf("private_key_file: %q, private_key_id: %s, scopes: [openid, offline_access], forward_access_token: true, refresh_before: 5m", tc.file, tc.kid))
			// The client's secret is one the edge was never given.
			storage.RegisterClients(storage.WebClient(e.clientID, randomString(), e.srv.URL+"/oauth2/callback"))
			st.set(e.clientID, "k1", tc.regKey)
			c := e.browser(t)
			res, body := e.signIn(t, c, op, "/app")
			if !tc.signedIn {
				if res.StatusCode != http.StatusUnauthorized || len(e.sessionCookies(c)) != 0 {
					t.Fatalf("signed in with a key the provider does not hold: %d %q", res.StatusCode, body)
				}
				return
			}
			if res.StatusCode != http.StatusOK || body != "upstream /app" {
				t.Fatalf("sign-in: %d %q", res.StatusCode, body)
			}
			// The landing request after the callback refreshed already
			// (refresh_before covers the token's whole life): the code
			// exchange and that refresh each sent an assertion.
			if n := st.lookups(); n != 2 {
				t.Fatalf("the provider checked %d assertions, want 2 (the code exchange, the landing request's refresh)", n)
			}
			h, _, _ := e.seen.last()
			first := h.Get("Authorization")
			res, _ = get(t, c, e.srv.URL+"/app/next", false)
			h, _, _ = e.seen.last()
			if res.StatusCode != http.StatusOK || st.lookups() != 3 || h.Get("Authorization") == first || !strings.HasPrefix(h.Get("Authorization"), "Bearer ") {
				t.Fatalf("refresh: %d, %d assertions checked, token %q (before %q)", res.StatusCode, st.lookups(), h.Get("Authorization"), first)
			}
		})
	}
}

// Every key type signs an assertion that verifies with its public key and
// carries what the provider checks; the curves the example provider does
// not accept are covered here only.
func TestClientAssertionSign(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		curve elliptic.Curve
		alg   string
	}{
		{nil, "RS256"}, {elliptic.P256(), "ES256"}, {elliptic.P384(), "ES384"}, {elliptic.P521(), "ES512"},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			var key crypto.Signer
			if tc.curve == nil {
				key, _ = rsa.GenerateKey(rand.Reader, 2048)
			} else {
				key, _ = ecdsa.GenerateKey(tc.curve, rand.Reader)
			}
			signer, method, err := loadAssertionKey(writeKey(t, dir, tc.alg+".pem", key, true))
			if err != nil || method.Alg() != tc.alg {
				t.Fatalf("load: %v, %v", method, err)
			}
			ca := &clientAssertion{clientID: "web", issuer: "https://id.example.com/", kid: "k1", key: signer, method: method, now: func() time.Time { return now }}
			seen := map[string]bool{}
			for range 50 {
				raw, err := ca.sign("https://id.example.com/token")
				if err != nil {
					t.Fatal(err)
				}
				var claims jwt.RegisteredClaims
				tok, err := jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return key.Public(), nil },
					jwt.WithValidMethods([]string{tc.alg}), jwt.WithTimeFunc(func() time.Time { return now }))
				if err != nil || tok.Header["kid"] != "k1" {
					t.Fatalf("verify: %v, header %v", err, tok.Header)
				}
				if claims.Issuer != "web" || claims.Subject != "web" || len(claims.Audience) != 2 || claims.Audience[0] != "https://id.example.com/token" || claims.Audience[1] != "https://id.example.com/" ||
					!claims.IssuedAt.Equal(now) || !claims.ExpiresAt.Equal(now.Add(assertionTTL)) || claims.ID == "" || seen[claims.ID] {
					t.Fatalf("claims %+v", claims)
				}
				seen[claims.ID] = true
			}
		})
	}
}

// Concurrent sign-ins and refreshes with one key: every token request gets
// its own assertion and each browser its own session (run with -race).
func TestOIDCPrivateKeyJWTConcurrent(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	file := writeKey(t, t.TempDir(), "ec.pem", ec, false)
	op, st := startKeyOP(t)
	e := startEdge(t, op, fmt.Sprintf("private_key_file: %q, private_key_id: k1, scopes: [openid, offline_access], forward_access_token: true, refresh_before: 5m", file))
	storage.RegisterClients(storage.WebClient(e.clientID, randomString(), e.srv.URL+"/oauth2/callback"))
	st.set(e.clientID, "k1", &ec.PublicKey)

	const browsers, requests = 12, 5
	flow := func(c *http.Client) error {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/app", nil)
		req.Header.Set("Accept", "text/html")
		res, err := c.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		m := loginID.FindStringSubmatch(string(b))
		if m == nil {
			return fmt.Errorf("no login form: %d", res.StatusCode)
		}
		res, err = c.PostForm(op.issuer+"login/username", url.Values{"id": {html.UnescapeString(m[1])}, "username": {opUser}, "password": {opPassword}})
		if err != nil {
			return err
		}
		b, _ = io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || string(b) != "upstream /app" {
			return fmt.Errorf("sign-in: %d %q", res.StatusCode, b)
		}
		for i := range requests {
			req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/app/%d", e.srv.URL, i), nil)
			res, err := c.Do(req)
			if err != nil {
				return err
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if want := fmt.Sprintf("upstream /app/%d", i); res.StatusCode != http.StatusOK || string(b) != want {
				return fmt.Errorf("request %d: %d %q", i, res.StatusCode, b)
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, browsers)
	for range browsers {
		c := e.browser(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := flow(c); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Each browser: the code exchange, the landing request's refresh and
	// one per request after it.
	if got, want := st.lookups(), browsers*(2+requests); got != want {
		t.Errorf("the provider checked %d assertions, want %d", got, want)
	}
}
