package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/causewayhq/causeway/routes"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// t0 is the tests' "now": tokens are minted around it and the set's clock
// starts there, so no test depends on the wall clock.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// signer is a private key and what an authenticator needs to know of it.
type signer struct {
	alg    string
	method jwt.SigningMethod
	priv   any // what jwt signs with
	pub    crypto.PublicKey
}

var (
	keysOnce sync.Once
	rsaKeys  [3]*rsa.PrivateKey
	ecKeys   map[string]*ecdsa.PrivateKey
	edKeys   [2]ed25519.PrivateKey
)

// testKeys generates the keys once per test binary: RSA generation is the
// slow part of this package's tests.
func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		for i := range rsaKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys[i] = k
		}
		ecKeys = map[string]*ecdsa.PrivateKey{}
		for name, c := range map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521(), "P-256b": elliptic.P256()} {
			k, err := ecdsa.GenerateKey(c, rand.Reader)
			if err != nil {
				panic(err)
			}
			ecKeys[name] = k
		}
		for i := range edKeys {
			_, k, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				panic(err)
			}
			edKeys[i] = k
		}
	})
}

// signerFor returns a signer for alg; n picks one of several keys of the
// same kind (for "another key" cases).
func signerFor(t testing.TB, alg string, n int) signer {
	t.Helper()
	testKeys(t)
	m := jwt.GetSigningMethod(alg)
	switch {
	case strings.HasPrefix(alg, "HS"):
		secret := []byte(strings.Repeat(fmt.Sprintf("secret-%d-", n), 10))
		return signer{alg: alg, method: m, priv: secret}
	case strings.HasPrefix(alg, "RS"), strings.HasPrefix(alg, "PS"):
		return signer{alg: alg, method: m, priv: rsaKeys[n], pub: &rsaKeys[n].PublicKey}
	case alg == "EdDSA":
		return signer{alg: alg, method: m, priv: edKeys[n], pub: edKeys[n].Public()}
	}
	curve := map[string]string{"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg]
	if n > 0 {
		curve = "P-256b"
	}
	k := ecKeys[curve]
	return signer{alg: alg, method: m, priv: k, pub: &k.PublicKey}
}

// claims is a valid claim set around t0 for the test issuer and audience.
func claims(extra map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{
		"iss": "https://id.test/",
		"aud": "api",
		"sub": "user-1",
		"iat": t0.Add(-time.Minute).Unix(),
		"nbf": t0.Add(-time.Minute).Unix(),
		"exp": t0.Add(time.Hour).Unix(),
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func (s signer) sign(t testing.TB, c jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	out, err := tok.SignedString(s.priv)
	if err != nil {
		t.Fatalf("signing %s: %v", s.alg, err)
	}
	return out
}

// pemFile writes pub as a PKIX PEM file.
func pemFile(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "key.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// jwkOf is the JWK of pub, as an identity provider publishes it.
func jwkOf(pub crypto.PublicKey, kid string) map[string]any {
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		raw, err := k.Bytes()
		if err != nil {
			panic(err)
		}
		return map[string]any{"kty": "EC", "kid": kid, "crv": k.Curve.Params().Name, "x": b64(raw[1 : 1+size]), "y": b64(raw[1+size:])}
	case ed25519.PublicKey:
		return map[string]any{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(k)}
	}
	panic(fmt.Sprintf("jwkOf %T", pub))
}

// idp is a real HTTP JWKS endpoint whose keys, status and Cache-Control
// the test changes while it runs.
type idp struct {
	*httptest.Server
	mu           sync.Mutex
	keys         []map[string]any
	status       int
	cacheControl string
	hits         atomic.Int64
	fetched      chan int // when set, receives each answered status
}

func newIDP(t testing.TB, keys ...map[string]any) *idp {
	t.Helper()
	p := &idp{keys: keys, status: http.StatusOK}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		p.mu.Lock()
		status, body, cc := p.status, map[string]any{"keys": p.keys}, p.cacheControl
		fetched := p.fetched
		p.mu.Unlock()
		if fetched != nil {
			defer func() { fetched <- status }()
		}
		if cc != "" {
			w.Header().Set("Cache-Control", cc)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if status == http.StatusOK {
			_ = json.NewEncoder(w).Encode(body)
		}
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *idp) set(status int, keys ...map[string]any) {
	p.mu.Lock()
	p.status, p.keys = status, keys
	p.mu.Unlock()
}

// parse loads a routes file made of the given authenticators section (YAML
// indented by two spaces) and routes, with one upstream for the routes.
func parse(t testing.TB, authenticators string, routeLines ...string) *routes.File {
	t.Helper()
	f, err := parseErr(authenticators, routeLines...)
	if err != nil {
		t.Fatalf("routes file: %v", err)
	}
	return f
}

func parseErr(authenticators string, routeLines ...string) (*routes.File, error) {
	var b strings.Builder
	b.WriteString("version: 1\nupstreams:\n  up: {endpoints: [\"127.0.0.1:9\"]}\n")
	if authenticators != "" {
		b.WriteString("authenticators:\n")
		b.WriteString(authenticators)
		b.WriteString("\n")
	}
	b.WriteString("routes:\n")
	if len(routeLines) == 0 {
		routeLines = []string{`{name: r, match: {path_prefix: /}, upstream: up}`}
	}
	for _, r := range routeLines {
		b.WriteString("  - " + r + "\n")
	}
	return routes.Parse("test.yaml", []byte(b.String()))
}

// testSet builds a set and closes it when the test ends.
func testSet(t testing.TB, f *routes.File, opts Options) *Set {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	s, err := NewSet(context.Background(), f, nil, opts)
	if err != nil {
		t.Fatalf("NewSet: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// upstream records what reached it.
type upstream struct {
	mu     sync.Mutex
	header http.Header
	query  string
	// requestURI is what a server-side reader (an access log) would see.
	requestURI string
	p          *Principal
	calls      int
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.header, u.query, u.requestURI, u.p = r.Header.Clone(), r.URL.RawQuery, r.RequestURI, FromContext(r.Context())
	u.calls++
	u.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// handler is route i's middleware around a recording upstream.
func handler(t testing.TB, s *Set, f *routes.File, i int) (http.Handler, *upstream) {
	t.Helper()
	mw, err := s.Middleware(f.Routes[i])
	if err != nil {
		t.Fatalf("Middleware: %v", err)
	}
	u := &upstream{}
	return mw(u), u
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func do(h http.Handler, target string, hdr http.Header) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	for k, vs := range hdr {
		r.Header[k] = vs
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func failuresVec() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causeway_auth_failures_total", Help: "refused requests"}, []string{"authenticator", "reason"})
}

// logBuffer captures the set's log at debug level, to prove no secret or
// token is ever written to it.
func logBuffer() (*slog.Logger, *testutil.Buffer) {
	b := &testutil.Buffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

func recorder(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// counter reads one counter of vec (prometheus/testutil would add a module
// to go.sum for one function).
func counter(vec *prometheus.CounterVec, labels ...string) float64 {
	var m dto.Metric
	if err := vec.WithLabelValues(labels...).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// started waits until every JWKS refresher of s has made its start-up
// fetch, so the test's own fetch counts and clock steps are not raced by it.
func started(t testing.TB, s *Set) {
	t.Helper()
	for _, j := range s.jwks {
		<-j.firstDone
	}
}

// quiet drops the log of sets whose log the test does not read.
var quiet = slog.New(slog.DiscardHandler)
