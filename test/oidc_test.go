package test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
)

var oidcLoginID = regexp.MustCompile(`name="id" value="([^"]+)"`)

// Sign-in through the whole edge: the edge's router, auth stage, session
// cookie and forwarded claims, against zitadel/oidc's example provider
// (as in auth's tests, which drive the middleware alone). A browser asking
// for /app is sent to the provider, signs in with its form, comes back
// through the callback and reaches the upstream as the provider's user,
// with the session cookie stripped; an API request without a session gets
// the JSON 401 and never reaches the upstream.
func TestOIDCSignInThroughTheEdge(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + l.Addr().String() + "/"
	op := &httptest.Server{Listener: l, Config: &http.Server{Handler: exampleop.SetupServer(issuer, storage.NewStorage(storage.NewUserStore(issuer)), nil, false), ReadHeaderTimeout: 10 * time.Second}}
	op.Start()
	t.Cleanup(op.Close)

	var mu sync.Mutex
	var seen []http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		_, _ = io.WriteString(w, "app "+r.URL.Path)
	}))
	t.Cleanup(up.Close)

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	t.Setenv("CW_EDGE_OIDC_KEYS", base64.StdEncoding.EncodeToString(key))
	t.Setenv("CW_EDGE_OIDC_SECRET", "secret")
	const host = "app.example.com"
	certFile, keyFile, pool := serverCert(t, t.TempDir(), host)
	e := startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
tls:
  certificates: [{cert_file: %q, key_file: %q}]
  redirect_http: false
authenticators:
  sso:
    oidc: {issuer: %q, client_id: edge-web, client_secret_env: CW_EDGE_OIDC_SECRET, logout_path: /oauth2/logout, forward_claims: {sub: X-User-Id}, allow_insecure_http: true, session: {keys_env: CW_EDGE_OIDC_KEYS}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: app, match: {path_prefix: /}, auth: sso, upstream: u}
`, certFile, keyFile, issuer, strings.TrimPrefix(up.URL, "http://")))
	_, port, _ := net.SplitHostPort(e.Addr("https"))
	base := "https://" + host + ":" + port
	storage.RegisterClients(storage.WebClient("edge-web", "secret", base+"/oauth2/callback"))

	jar, _ := cookiejar.New(nil)
	dialer := &net.Dialer{}
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if strings.HasPrefix(addr, host+":") {
				addr = e.Addr("https")
			}
			return dialer.DialContext(ctx, network, addr)
		},
	}}
	get := func(u, accept string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Accept", accept)
		res, err := browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}

	// An API request without a session: the JSON 401, nothing upstream.
	res, body := get(base+"/api/orders", "application/json")
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"status":401`) {
		t.Fatalf("API request without a session: %d %q", res.StatusCode, body)
	}

	// A browser: to the provider's form, signed in, back to /app.
	res, body = get(base+"/app", "text/html")
	m := oidcLoginID.FindStringSubmatch(body)
	if res.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("expected the provider's login form, got %d at %s: %.300s", res.StatusCode, res.Request.URL, body)
	}
	res, err = browser.PostForm(issuer+"login/username", url.Values{"id": {html.UnescapeString(m[1])}, "username": {"test-user@127.0.0.1"}, "password": {"verysecure"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(b) != "app /app" {
		t.Fatalf("after signing in: %d at %s: %q", res.StatusCode, res.Request.URL, b)
	}
	// The session carries the next request too.
	if res, body = get(base+"/app/next", "application/json"); res.StatusCode != http.StatusOK || body != "app /app/next" {
		t.Fatalf("with the session: %d %q", res.StatusCode, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("the upstream saw %d requests, want 2 (none before sign-in)", len(seen))
	}
	for _, h := range seen {
		if got := h.Get("X-User-Id"); got != "id1" {
			t.Errorf("X-User-Id at the upstream: %q, want the provider's subject id1", got)
		}
		if c := h.Get("Cookie"); strings.Contains(c, "causeway") {
			t.Errorf("the session cookie reached the upstream: %q", c)
		}
	}
}
