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
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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

// The callback the edge sends the provider (redirect_uri) is built from
// what the client addressed, and only a trusted proxy may say what that
// was: behind a load balancer that terminates TLS, X-Forwarded-Proto and
// X-Forwarded-Host from a peer in trusted_proxies give https and the public
// host; the same headers from anyone else are ignored, as are values that
// are not a plain scheme or host; redirect_url, when set, is the only
// redirect_uri ever sent. Then a whole sign-in behind such a proxy: the
// browser speaks https to the proxy, the proxy plain http to the edge.
func TestOIDCCallbackOrigin(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + l.Addr().String() + "/"
	op := &httptest.Server{Listener: l, Config: &http.Server{Handler: exampleop.SetupServer(issuer, storage.NewStorage(storage.NewUserStore(issuer)), nil, false), ReadHeaderTimeout: 10 * time.Second}}
	op.Start()
	t.Cleanup(op.Close)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "app "+r.URL.Path) }))
	t.Cleanup(up.Close)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	t.Setenv("CW_EDGE_OIDC_KEYS", base64.StdEncoding.EncodeToString(key))
	t.Setenv("CW_EDGE_OIDC_SECRET", "secret")

	edgeWith := func(trusted, extra string) *edge {
		return startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
trusted_proxies: [%s]
authenticators:
  sso:
    oidc: {issuer: %q, client_id: origin-web, client_secret_env: CW_EDGE_OIDC_SECRET, allow_insecure_http: true, session: {keys_env: CW_EDGE_OIDC_KEYS}%s}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: app, match: {path_prefix: /}, auth: sso, upstream: u}
`, trusted, issuer, extra, strings.TrimPrefix(up.URL, "http://")))
	}
	trustedEdge := edgeWith("127.0.0.1/32", "")
	untrustedEdge := edgeWith("10.0.0.0/8", "")
	fixedEdge := edgeWith("127.0.0.1/32", ", redirect_url: https://sso.example.com/sso/cb")
	// A route held to *.example.com, behind a trusted proxy.
	hostedEdge := startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
trusted_proxies: [127.0.0.1/32]
authenticators:
  sso:
    oidc: {issuer: %q, client_id: origin-web, client_secret_env: CW_EDGE_OIDC_SECRET, allow_insecure_http: true, session: {keys_env: CW_EDGE_OIDC_KEYS}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: app, match: {host: "*.example.com", path_prefix: /}, auth: sso, upstream: u}
`, issuer, strings.TrimPrefix(up.URL, "http://")))

	// navigate returns the edge's answer to a browser's navigation and
	// the redirect_uri it sends the provider ("" when it sends none).
	navigate := func(e *edge, host string, hdr map[string]string) (int, string, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+e.Addr("http")+"/page", nil)
		req.Host = host
		req.Header.Set("Accept", "text/html")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			return 0, "", err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		loc, err := url.Parse(res.Header.Get("Location"))
		if err != nil {
			return res.StatusCode, "", err
		}
		return res.StatusCode, loc.Query().Get("redirect_uri"), nil
	}
	redirectURI := func(e *edge, host string, hdr map[string]string) string {
		t.Helper()
		code, uri, err := navigate(e, host, hdr)
		if err != nil || code != http.StatusFound {
			t.Fatalf("navigation: %d %v", code, err)
		}
		return uri
	}
	lb := map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.com"}
	for _, tc := range []struct {
		name string
		e    *edge
		host string
		hdr  map[string]string
		want string
	}{
		{"plain request", trustedEdge, "app.internal", nil, "http://app.internal/oauth2/callback"},
		{"behind a trusted proxy", trustedEdge, "edge.internal:8080", lb, "https://app.example.com/oauth2/callback"},
		// The last value is the nearest trusted proxy's: one that
		// appends its own after a client's value is believed.
		{"last hop of a list", trustedEdge, "edge.internal", map[string]string{"X-Forwarded-Proto": "http, https", "X-Forwarded-Host": "evil.example, App.Example.com"}, "https://app.example.com/oauth2/callback"},
		{"a client's values in front of the proxy's", trustedEdge, "edge.internal", map[string]string{"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "evil.example, app.internal"}, "http://app.internal/oauth2/callback"},
		{"from an untrusted peer", untrustedEdge, "app.internal", lb, "http://app.internal/oauth2/callback"},
		{"a host that is a URL", trustedEdge, "app.internal", map[string]string{"X-Forwarded-Host": "evil.example/x?", "X-Forwarded-Proto": "javascript"}, "http://app.internal/oauth2/callback"},
		{"a host with credentials", trustedEdge, "app.internal", map[string]string{"X-Forwarded-Host": "user@evil.example"}, "http://app.internal/oauth2/callback"},
		{"redirect_url, plain", fixedEdge, "app.internal", nil, "https://sso.example.com/sso/cb"},
		{"redirect_url, spoofed host and headers", fixedEdge, "evil.example", lb, "https://sso.example.com/sso/cb"},
		{"redirect_url from an untrusted peer", fixedEdge, "app.internal", map[string]string{"X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.example"}, "https://sso.example.com/sso/cb"},
		{"spoofed Host on a route for any host", untrustedEdge, "evil.example", nil, "http://evil.example/oauth2/callback"},
		{"hosted route behind a trusted proxy", hostedEdge, "app.example.com", lb, "https://app.example.com/oauth2/callback"},
		{"hosted route, another host it serves", hostedEdge, "app.example.com", map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "Login.Example.com:8443"}, "https://login.example.com:8443/oauth2/callback"},
		{"hosted route, forwarded host it does not serve", hostedEdge, "app.example.com", map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}, "https://app.example.com/oauth2/callback"},
		{"hosted route, forwarded suffix lookalike", hostedEdge, "app.example.com", map[string]string{"X-Forwarded-Host": "evilexample.com"}, "http://app.example.com/oauth2/callback"},
		{"hosted route, forwarded bare parent", hostedEdge, "app.example.com", map[string]string{"X-Forwarded-Host": "example.com"}, "http://app.example.com/oauth2/callback"},
		// RFC 7239 Forwarded, from a proxy that writes only it: read as the
		// X- headers are, never from an untrusted peer, and ignored with
		// them when the two disagree.
		{"Forwarded behind a trusted proxy", trustedEdge, "edge.internal:8080", map[string]string{"Forwarded": `for=203.0.113.1;host="app.example.com";proto=https`}, "https://app.example.com/oauth2/callback"},
		{"Forwarded, the client-facing hop's element", trustedEdge, "edge.internal", map[string]string{"Forwarded": `for=198.51.100.1;host=evil.example;proto=http, for=203.0.113.1;host=app.example.com;proto=https, for=127.0.0.1;host=edge.internal;proto=http`}, "https://app.example.com/oauth2/callback"},
		{"Forwarded from an untrusted peer", untrustedEdge, "app.internal", map[string]string{"Forwarded": `for=203.0.113.1;host=evil.example;proto=https`}, "http://app.internal/oauth2/callback"},
		{"Forwarded disagrees with X-Forwarded-Proto", trustedEdge, "app.internal", map[string]string{"Forwarded": `for=203.0.113.1;host=app.example.com;proto=http`, "X-Forwarded-Proto": "https"}, "http://app.example.com/oauth2/callback"},
		{"Forwarded host that is a URL", trustedEdge, "app.internal", map[string]string{"Forwarded": `for=203.0.113.1;host="evil.example/x?";proto=https`}, "https://app.internal/oauth2/callback"},
		{"Forwarded unreadable", trustedEdge, "app.internal", map[string]string{"Forwarded": `for=203.0.113.1;host="app.example.com;proto=https`}, "http://app.internal/oauth2/callback"},
		{"hosted route, Forwarded host it does not serve", hostedEdge, "app.example.com", map[string]string{"Forwarded": `for=203.0.113.1;host=evil.example;proto=https`}, "https://app.example.com/oauth2/callback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := redirectURI(tc.e, tc.host, tc.hdr); got != tc.want {
				t.Fatalf("redirect_uri %q, want %q", got, tc.want)
			}
		})
	}
	// A spoofed Host outside a hosted route reaches no route at all, so
	// no sign-in starts with it.
	if code, uri, err := navigate(hostedEdge, "evil.example", lb); err != nil || code != http.StatusNotFound || uri != "" {
		t.Fatalf("spoofed Host on a hosted route: %d %q %v, want 404 and no redirect_uri", code, uri, err)
	}

	// Concurrent sign-ins from trusted and untrusted peers, each with its
	// own host, must each get their own callback: the origin is decided
	// per request, never shared (run with -race).
	t.Run("concurrent", func(t *testing.T) {
		const workers, each = 16, 40
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					h := fmt.Sprintf("h%d-%d.example.com", w, i)
					e, want := trustedEdge, "https://"+h+"/oauth2/callback"
					switch i % 3 {
					case 1:
						e, want = untrustedEdge, "http://direct-"+h+"/oauth2/callback"
					case 2:
						e, want = fixedEdge, "https://sso.example.com/sso/cb"
					}
					code, got, err := navigate(e, "direct-"+h, map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": h})
					if err != nil || code != http.StatusFound || got != want {
						errs <- fmt.Errorf("worker %d request %d: %d %q, want %q: %w", w, i, code, got, want, err)
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	// A whole sign-in through a TLS-terminating proxy in front of the edge
	// (on loopback, so trusted): the provider sends the browser back to
	// the https callback, the proxy hands it to the edge, and the session
	// works on the next request. Then the same behind a proxy the edge
	// does not trust, with redirect_url: the callback is redirect_url
	// (https, though the edge sees plain http and ignores the forwarded
	// headers) and is served at its path.
	const host = "app.example.com"
	certFile, keyFile, pool := serverCert(t, t.TempDir(), host)
	var target atomic.Pointer[url.URL]
	proxy := httptest.NewUnstartedServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target.Load())
		pr.Out.Host = pr.In.Host
		pr.Out.Header.Set("X-Forwarded-Proto", "https")
		pr.Out.Header.Set("X-Forwarded-Host", pr.In.Host)
	}})
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	proxy.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	proxy.StartTLS()
	t.Cleanup(proxy.Close)
	_, port, _ := net.SplitHostPort(proxy.Listener.Addr().String())
	base := "https://" + host + ":" + port
	storage.RegisterClients(storage.WebClient("origin-web", "secret", base+"/oauth2/callback", base+"/sso/cb"))
	pinnedEdge := edgeWith("10.0.0.0/8", fmt.Sprintf(", redirect_url: %q", base+"/sso/cb"))
	dialer := &net.Dialer{}
	for _, sc := range []struct {
		name     string
		e        *edge
		callback string
	}{
		{"trusted proxy", trustedEdge, "/oauth2/callback"},
		{"untrusted proxy, redirect_url", pinnedEdge, "/sso/cb"},
	} {
		t.Run("sign-in behind a proxy, "+sc.name, func(t *testing.T) {
			u, _ := url.Parse("http://" + sc.e.Addr("http"))
			target.Store(u)
			jar, _ := cookiejar.New(nil)
			var visited []string
			browser := &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: pool},
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					if strings.HasPrefix(addr, host+":") {
						addr = proxy.Listener.Addr().String()
					}
					return dialer.DialContext(ctx, network, addr)
				},
			}, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
				visited = append(visited, req.URL.Scheme+"://"+req.URL.Host+req.URL.Path)
				return nil
			}}
			req, _ := http.NewRequest(http.MethodGet, base+"/app", nil)
			req.Header.Set("Accept", "text/html")
			res, err := browser.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			m := oidcLoginID.FindStringSubmatch(string(body))
			if res.StatusCode != http.StatusOK || m == nil {
				t.Fatalf("expected the provider's login form, got %d at %s: %.300s", res.StatusCode, res.Request.URL, body)
			}
			res, err = browser.PostForm(issuer+"login/username", url.Values{"id": {html.UnescapeString(m[1])}, "username": {"test-user@127.0.0.1"}, "password": {"verysecure"}})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || string(b) != "app /app" || res.Request.URL.Scheme != "https" {
				t.Fatalf("after signing in: %d at %s: %q", res.StatusCode, res.Request.URL, b)
			}
			if !slices.Contains(visited, base+sc.callback) {
				t.Fatalf("the browser never went through %s: %v", base+sc.callback, visited)
			}
		})
	}
}
