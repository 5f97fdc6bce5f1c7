package auth

import (
	"context"
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
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"

	"github.com/causewayhq/causeway/auth/session"
	"github.com/causewayhq/causeway/routes"
)

// The provider of these tests is zitadel/oidc's example OpenID Provider
// (exampleop, in-memory storage), started in-process on loopback: a real
// discovery document, JWKS, authorization endpoint with its login form,
// token endpoint (PKCE S256, refresh-token rotation) and end_session.
// Its user "test-user@127.0.0.1" / "verysecure" has sub id1; its ID
// tokens carry amr [pwd] (profile claims such as email only come from its
// userinfo endpoint); access tokens live 5 minutes, ID tokens an hour.

const (
	opUser     = "test-user@127.0.0.1"
	opPassword = "verysecure"
	opSecret   = "secret"
)

var clientSeq atomic.Int64

// testOP is one provider.
type testOP struct {
	issuer string
	srv    *httptest.Server
	// refreshes counts the refresh_token grants the provider received;
	// refused, those it did not answer 200 (a refresh token used twice:
	// the provider rotates them).
	refreshes, refused atomic.Int64
	// discoveryGate, when set, holds each discovery request until it is
	// closed (or the request ends), after saying so on discoveryHeld.
	discoveryGate atomic.Pointer[chan struct{}]
	discoveryHeld chan struct{}
	// discoveryDropped says a held discovery request ended before the gate
	// opened: its client gave up.
	discoveryDropped chan struct{}
	// stall, when set, holds every request to a path ending in its
	// suffix, unanswered, until the stall is thawed or the client gives
	// up: the provider frozen in the middle of one step.
	stall atomic.Pointer[opStall]
	// authMethods, when set, replaces token_endpoint_auth_methods_supported
	// in the discovery document (an empty list: the member left out).
	authMethods atomic.Pointer[[]string]
	// tokenStatus, when set, is the status every token request is answered
	// with, before the provider sees it.
	tokenStatus atomic.Int64
	tokenMu     sync.Mutex
	tokenReqs   []tokenReq // every token request received, in order
}

// tokenReq is one request the token endpoint received: its grant and how
// the client authenticated (basic, post, or none).
type tokenReq struct {
	grant, auth string
}

// tokenRequests returns the token requests received since the n-th.
func (op *testOP) tokenRequests(since int) []tokenReq {
	op.tokenMu.Lock()
	defer op.tokenMu.Unlock()
	return append([]tokenReq(nil), op.tokenReqs[since:]...)
}

func (op *testOP) tokenCount() int {
	op.tokenMu.Lock()
	defer op.tokenMu.Unlock()
	return len(op.tokenReqs)
}

// opStall is a step of the provider that does not answer.
type opStall struct {
	suffix string
	thawed chan struct{}
	held   atomic.Int64 // requests that arrived while frozen
}

// statusWriter keeps the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func startOP(t *testing.T) *testOP {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + l.Addr().String() + "/"
	store := storage.NewStorage(storage.NewUserStore(issuer))
	op := &testOP{issuer: issuer}
	h := exampleop.SetupServer(issuer, store, nil, false)
	op.discoveryHeld = make(chan struct{}, 16)
	op.discoveryDropped = make(chan struct{}, 16)
	count := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gate := op.discoveryGate.Load(); gate != nil && strings.HasSuffix(r.URL.Path, "/.well-known/openid-configuration") {
			op.discoveryHeld <- struct{}{}
			select {
			case <-*gate:
			case <-r.Context().Done():
				op.discoveryDropped <- struct{}{}
				return
			}
		}
		if st := op.stall.Load(); st != nil && strings.HasSuffix(r.URL.Path, st.suffix) {
			st.held.Add(1)
			select {
			case <-st.thawed:
			case <-r.Context().Done():
				return
			}
		}
		if m := op.authMethods.Load(); m != nil && strings.HasSuffix(r.URL.Path, "/.well-known/openid-configuration") {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			var doc map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			delete(doc, "token_endpoint_auth_methods_supported")
			if len(*m) > 0 {
				doc["token_endpoint_auth_methods_supported"] = *m
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(doc)
			return
		}
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/token") {
			b, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(strings.NewReader(string(b)))
			q, _ := url.ParseQuery(string(b))
			tr := tokenReq{grant: q.Get("grant_type"), auth: "none"}
			if _, _, ok := r.BasicAuth(); ok {
				tr.auth = "basic"
			} else if q.Has("client_secret") {
				tr.auth = "post"
			}
			op.tokenMu.Lock()
			op.tokenReqs = append(op.tokenReqs, tr)
			op.tokenMu.Unlock()
			if st := op.tokenStatus.Load(); st != 0 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(int(st))
				_, _ = io.WriteString(w, `{"error":"temporarily_unavailable"}`)
				return
			}
			if q.Get("grant_type") == "refresh_token" {
				op.refreshes.Add(1)
				sw := &statusWriter{ResponseWriter: w}
				h.ServeHTTP(sw, r)
				if sw.status != 0 && sw.status != http.StatusOK {
					op.refused.Add(1)
				}
				return
			}
		}
		h.ServeHTTP(w, r)
	})
	op.srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: count, ReadHeaderTimeout: 10 * time.Second}}
	op.srv.Start()
	t.Cleanup(op.srv.Close)
	return op
}

// offsetClock is the edge's clock: real time plus an offset the test moves
// (the provider keeps real time).
type offsetClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *offsetClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

// set puts the clock d ahead of real time.
func (c *offsetClock) set(d time.Duration) {
	c.mu.Lock()
	c.off = d
	c.mu.Unlock()
}

func (c *offsetClock) advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// upstreamSeen is what the upstream received.
type upstreamSeen struct {
	mu     sync.Mutex
	header http.Header
	claims map[string]any
	n      int
	auths  []string // every request's Authorization, in order
}

// authorizations returns the Authorization headers received since the
// n-th request.
func (u *upstreamSeen) authorizations(since int) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.auths[since:]...)
}

func (u *upstreamSeen) last() (http.Header, map[string]any, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.header, u.claims, u.n
}

// testEdge is a Set's middleware for a few routes behind a TLS server
// (session cookies are Secure: a cookie jar sends them over https only).
type testEdge struct {
	srv      *httptest.Server
	set      *Set
	seen     *upstreamSeen
	clock    *offsetClock
	clientID string
	keys     [][]byte
	file     *routes.File
	log      *slog.Logger           // of the replicas built from now on (nil: slog.Default())
	failures *prometheus.CounterVec // counts the refusals of the replicas built from now on (nil: not counted)
	// handler is what srv serves: one replica's Set at a time, which a
	// test switches as a load balancer would (the browser sees one site).
	handler atomic.Pointer[http.Handler]
}

// edgeConfig is the oidc settings (a YAML flow mapping without braces)
// besides issuer, client and session keys.
func startEdge(t *testing.T, op *testOP, extra string) *testEdge {
	t.Helper()
	return startEdgeWith(t, op, extra, "")
}

// startEdgeWith is startEdge with top-level sections (a redis section) put
// before the authenticators.
func startEdgeWith(t *testing.T, op *testOP, extra, top string) *testEdge {
	t.Helper()
	key := make([]byte, session.KeySize)
	_, _ = rand.Read(key)
	t.Setenv("CW_TEST_OIDC_KEYS", base64.StdEncoding.EncodeToString(key))
	t.Setenv("CW_TEST_OIDC_SECRET", opSecret)
	e := &testEdge{seen: &upstreamSeen{}, clock: &offsetClock{}, keys: [][]byte{key}}
	e.clientID = fmt.Sprintf("web%d", clientSeq.Add(1))

	e.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*e.handler.Load()).ServeHTTP(w, r)
	}))
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	storage.RegisterClients(storage.WebClient(e.clientID, opSecret, e.srv.URL+"/oauth2/callback"))

	settings := fmt.Sprintf("issuer: %q, client_id: %s, logout_path: /oauth2/logout, forward_claims: {sub: X-User-Id, amr: X-User-Amr}", op.issuer, e.clientID)
	if !strings.Contains(extra, "private_key_file:") {
		settings += ", client_secret_env: CW_TEST_OIDC_SECRET"
	}
	if extra != "" {
		settings += ", " + extra
	}
	if !strings.Contains(extra, "session:") {
		settings += ", session: {keys_env: CW_TEST_OIDC_KEYS}"
	}
	file := fmt.Sprintf(`version: 1
%sauthenticators:
  sso:
    oidc: {%s}
upstreams:
  app: {endpoints: ["127.0.0.1:1"]}
routes:
  - name: app
    match: {path_prefix: /}
    auth: sso
    upstream: app
  - name: mail
    match: {path_prefix: /mail}
    auth: sso
    require_claims: {amr: pwd}
    upstream: app
  - name: public
    match: {path_prefix: /public}
    upstream: app
  - name: admins
    match: {path_prefix: /admin}
    auth: sso
    require_claims: {amr: otp}
    upstream: app
`, top, settings)
	f, err := routes.Parse("t.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	e.file = f
	var h http.Handler
	e.set, h = e.replica(t)
	e.serve(h)
	return e
}

// serve makes h the replica answering the edge's requests.
func (e *testEdge) serve(h http.Handler) { e.handler.Store(&h) }

// replica builds another edge instance from the same file, keys and
// clock: a replica behind the same load balancer, or the edge after a
// restart. It keeps nothing of the others' but what they share outside
// the process (Redis).
func (e *testEdge) replica(t *testing.T) (*Set, http.Handler) {
	t.Helper()
	f := e.file
	set, err := NewSet(context.Background(), f, nil, Options{Now: e.clock.now, Logger: e.log, Failures: e.failures})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = set.Close() })
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var claims map[string]any
		if p := FromContext(r.Context()); p != nil {
			claims = p.Claims
		}
		e.seen.mu.Lock()
		e.seen.header = r.Header.Clone()
		e.seen.claims = claims
		e.seen.n++
		e.seen.auths = append(e.seen.auths, r.Header.Get("Authorization"))
		e.seen.mu.Unlock()
		_, _ = io.WriteString(w, "upstream "+r.URL.Path)
	})
	mux := http.NewServeMux()
	for _, rt := range f.Routes {
		mw, err := set.Middleware(rt)
		if err != nil {
			t.Fatal(err)
		}
		prefix := rt.Match.PathPrefix
		if prefix != "/" {
			mux.Handle(prefix+"/", mw(up))
			mux.Handle(prefix, mw(up))
		} else {
			mux.Handle("/", mw(up))
		}
	}
	return set, mux
}

// browser is an http.Client with a cookie jar that trusts the edge.
func (e *testEdge) browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := e.srv.Client()
	return &http.Client{Transport: c.Transport, Jar: jar, Timeout: 30 * time.Second}
}

func get(t *testing.T, c *http.Client, u string, html bool) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if html {
		req.Header.Set("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")
	} else {
		req.Header.Set("Accept", "application/json")
	}
	return send(t, c, req)
}

// navigate is a browser following a link on the site's own page (the way
// a logout must come: see logoutRefusal).
func navigate(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	return send(t, c, req)
}

func send(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

var loginID = regexp.MustCompile(`name="id" value="([^"]+)"`)

// signIn follows the provider's login form: the page of a navigation
// request without a session is the form; posting it comes back through
// the callback to path. It returns the final answer.
func (e *testEdge) signIn(t *testing.T, c *http.Client, op *testOP, path string) (*http.Response, string) {
	t.Helper()
	res, body := get(t, c, e.srv.URL+path, true)
	m := loginID.FindStringSubmatch(body)
	if res.StatusCode != http.StatusOK || m == nil || !strings.HasPrefix(res.Request.URL.String(), op.issuer+"login/username") {
		t.Fatalf("expected the provider's login form, got %d at %s: %.300s", res.StatusCode, res.Request.URL, body)
	}
	form := url.Values{"id": {html.UnescapeString(m[1])}, "username": {opUser}, "password": {opPassword}}
	res, err := c.PostForm(op.issuer+"login/username", form)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func (e *testEdge) sessionCookies(c *http.Client) []*http.Cookie {
	u, _ := url.Parse(e.srv.URL)
	var out []*http.Cookie
	for _, ck := range c.Jar.Cookies(u) {
		if strings.HasPrefix(ck.Name, "__Host-causeway-sso") {
			out = append(out, ck)
		}
	}
	return out
}

func TestOIDCLoginFlow(t *testing.T) {
	op := startOP(t)
	e := startEdge(t, op, "scopes: [openid, profile, email, offline_access], forward_access_token: true")
	c := e.browser(t)

	t.Run("an API request without a session gets the JSON 401, not a redirect", func(t *testing.T) {
		res, body := get(t, c, e.srv.URL+"/orders", false)
		if res.StatusCode != http.StatusUnauthorized || res.Request.URL.Host != strings.TrimPrefix(e.srv.URL, "https://") || !strings.Contains(body, `"status":401`) {
			t.Fatalf("%d at %s: %s", res.StatusCode, res.Request.URL, body)
		}
	})
	t.Run("a POST without a session is not sent to sign in", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/orders", strings.NewReader("x"))
		req.Header.Set("Accept", "text/html")
		if res, _ := send(t, c, req); res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%d", res.StatusCode)
		}
	})

	var firstAT string
	t.Run("sign-in through the provider's form lands on the page asked for", func(t *testing.T) {
		res, body := e.signIn(t, c, op, "/app/page?x=1")
		if res.StatusCode != http.StatusOK || body != "upstream /app/page" || res.Request.URL.RequestURI() != "/app/page?x=1" {
			t.Fatalf("%d at %s: %s", res.StatusCode, res.Request.URL, body)
		}
		cs := e.sessionCookies(c)
		if len(cs) != 1 || cs[0].Name != "__Host-causeway-sso" {
			t.Fatalf("session cookies in the jar: %v", cs)
		}
		h, claims, _ := e.seen.last()
		if h.Get("X-User-Id") != "id1" || h.Get("X-User-Amr") != "pwd" || claims["sub"] != "id1" {
			t.Fatalf("upstream got X-User-Id %q, X-User-Amr %q, claims %v", h.Get("X-User-Id"), h.Get("X-User-Amr"), claims)
		}
		if iss := claims["iss"]; iss != strings.TrimSuffix(op.issuer, "/") && iss != op.issuer {
			t.Fatalf("iss %v", iss)
		}
		firstAT = strings.TrimPrefix(h.Get("Authorization"), "Bearer ")
		if firstAT == "" || firstAT == h.Get("Authorization") {
			t.Fatalf("Authorization upstream %q", h.Get("Authorization"))
		}
	})

	t.Run("what the upstream receives: no session cookie, no client Authorization, no forged claim header", func(t *testing.T) {
		u, _ := url.Parse(e.srv.URL)
		c.Jar.SetCookies(u, []*http.Cookie{{Name: "theme", Value: "dark"}})
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/orders", nil)
		req.Header.Set("Authorization", "Bearer forged")
		req.Header.Set("X-User-Id", "admin")
		res, _ := send(t, c, req)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%d", res.StatusCode)
		}
		h, _, _ := e.seen.last()
		if got := h.Get("Cookie"); got != "theme=dark" {
			t.Fatalf("upstream Cookie %q", got)
		}
		if h.Get("Authorization") != "Bearer "+firstAT || h.Values("X-User-Id")[0] != "id1" || len(h.Values("X-User-Id")) != 1 {
			t.Fatalf("upstream Authorization %q X-User-Id %v", h.Get("Authorization"), h.Values("X-User-Id"))
		}
	})

	t.Run("a route without auth on the same host gets no session cookie either", func(t *testing.T) {
		res, _ := get(t, c, e.srv.URL+"/public/page", false)
		h, _, _ := e.seen.last()
		if res.StatusCode != http.StatusOK || h.Get("Cookie") != "theme=dark" {
			t.Fatalf("%d, upstream Cookie %q", res.StatusCode, h.Get("Cookie"))
		}
	})

	t.Run("a session cookie named with a blank before '=' never reaches an upstream", func(t *testing.T) {
		// net/http, and many upstream frameworks, read "NAME =v" as the
		// cookie NAME. The session store does not open it (a 401 on an
		// authenticated route), and a route without auth must strip it
		// as it strips "NAME=v".
		cs := e.sessionCookies(c)
		if len(cs) != 1 {
			t.Fatalf("session cookies in the jar: %v", cs)
		}
		plain := &http.Client{Transport: c.Transport, Timeout: 30 * time.Second}
		for _, tc := range []struct {
			path   string
			status int
		}{{"/orders", http.StatusUnauthorized}, {"/public/page", http.StatusOK}} {
			_, _, before := e.seen.last()
			req, _ := http.NewRequest(http.MethodGet, e.srv.URL+tc.path, nil)
			req.Header.Set("Accept", "application/json")
			req.Header.Set("Cookie", cs[0].Name+" ="+cs[0].Value+"; theme=dark")
			res, _ := send(t, plain, req)
			if res.StatusCode != tc.status {
				t.Fatalf("%s: %d, want %d", tc.path, res.StatusCode, tc.status)
			}
			h, _, n := e.seen.last()
			if n == before {
				continue
			}
			if h.Get("Cookie") != "theme=dark" {
				t.Fatalf("%s: upstream Cookie %.80q", tc.path, h.Get("Cookie"))
			}
		}
	})

	t.Run("require_claims on ID token claims", func(t *testing.T) {
		if res, body := get(t, c, e.srv.URL+"/mail/inbox", false); res.StatusCode != http.StatusOK {
			t.Fatalf("amr claim met: %d %s", res.StatusCode, body)
		}
		res, body := get(t, c, e.srv.URL+"/admin/users", false)
		if res.StatusCode != http.StatusForbidden || !strings.Contains(body, "lacks a required claim") {
			t.Fatalf("amr claim not met: %d %s", res.StatusCode, body)
		}
	})

	t.Run("refresh shortly before the access token expires", func(t *testing.T) {
		// Access tokens live 5 minutes; refresh_before is 1m.
		e.clock.advance(4*time.Minute + 30*time.Second)
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/orders", nil)
		res, _ := send(t, c, req)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%d", res.StatusCode)
		}
		if len(res.Header.Values("Set-Cookie")) == 0 {
			t.Fatal("no refreshed session cookie")
		}
		h, _, _ := e.seen.last()
		at := strings.TrimPrefix(h.Get("Authorization"), "Bearer ")
		if at == "" || at == firstAT {
			t.Fatalf("access token after the refresh %q (before %q)", at, firstAT)
		}
		// The refreshed session is the one the browser now holds (the
		// provider rotated the refresh token: the old session's would be
		// refused). The edge's clock runs 4.5 minutes ahead of the
		// provider's, so the new token is inside its refresh window too.
		res, _ = get(t, c, e.srv.URL+"/orders", false)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("after the refresh: %d", res.StatusCode)
		}
	})

	t.Run("logout clears the session and signs out at the provider", func(t *testing.T) {
		noFollow := *c
		noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		res, _ := navigate(t, &noFollow, e.srv.URL+"/oauth2/logout")
		loc, _ := url.Parse(res.Header.Get("Location"))
		if res.StatusCode != http.StatusSeeOther || loc == nil || !strings.HasPrefix(loc.String(), op.issuer) || loc.Query().Get("id_token_hint") == "" || loc.Query().Get("client_id") != e.clientID {
			t.Fatalf("%d Location %q", res.StatusCode, res.Header.Get("Location"))
		}
		if cs := e.sessionCookies(c); len(cs) != 0 {
			t.Fatalf("session cookies left: %v", cs)
		}
		res, body := get(t, c, loc.String(), true)
		if res.StatusCode != http.StatusOK || !strings.Contains(body, "signed out") {
			t.Fatalf("provider logout: %d %s", res.StatusCode, body)
		}
		if res, _ := get(t, c, e.srv.URL+"/orders", false); res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("after logout: %d", res.StatusCode)
		}
	})
}

func TestOIDCRefusals(t *testing.T) {
	op := startOP(t)
	e := startEdge(t, op, "session: {keys_env: CW_TEST_OIDC_KEYS, idle_timeout: 30m, absolute_timeout: 2h}")
	noFollow := func(c *http.Client) *http.Client {
		n := *c
		n.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		return &n
	}

	t.Run("tampered session cookie", func(t *testing.T) {
		c := e.browser(t)
		if res, _ := e.signIn(t, c, op, "/"); res.StatusCode != http.StatusOK {
			t.Fatalf("sign-in: %d", res.StatusCode)
		}
		u, _ := url.Parse(e.srv.URL)
		ck := e.sessionCookies(c)[0]
		v := []byte(ck.Value)
		v[len(v)/2] ^= 1 // still base64url: '-'/'_' aside, flipping the low bit stays in the alphabet
		if v[len(v)/2] == '-'^1 || v[len(v)/2] == '_'^1 {
			v[len(v)/2] = 'A'
		}
		c.Jar.SetCookies(u, []*http.Cookie{{Name: ck.Name, Value: string(v), Path: "/"}})
		n0 := e.seen.n
		res, body := get(t, c, e.srv.URL+"/orders", false)
		if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "malformed") || strings.Contains(body, ck.Value[:20]) {
			t.Fatalf("API request: %d %s", res.StatusCode, body)
		}
		if e.seen.n != n0 {
			t.Fatal("the upstream was reached")
		}
		// A navigation request starts a new sign-in, expiring the bad cookie.
		c.Jar.SetCookies(u, []*http.Cookie{{Name: ck.Name, Value: string(v), Path: "/"}})
		res, _ = get(t, noFollow(c), e.srv.URL+"/page", true)
		if res.StatusCode != http.StatusFound || !strings.HasPrefix(res.Header.Get("Location"), op.issuer) {
			t.Fatalf("navigation: %d %q", res.StatusCode, res.Header.Get("Location"))
		}
		loc, _ := url.Parse(res.Header.Get("Location"))
		q := loc.Query()
		if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") == "" || q.Get("nonce") == "" || q.Get("redirect_uri") != e.srv.URL+"/oauth2/callback" {
			t.Fatalf("authorization request %v", q)
		}
	})

	t.Run("replayed state", func(t *testing.T) {
		c := e.browser(t)
		// Stop at the callback to keep its URL and the state cookie.
		var callback *url.URL
		c.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
			if req.URL.Path == "/oauth2/callback" && callback == nil {
				callback = req.URL
			}
			return nil
		}
		res, _ := get(t, c, e.srv.URL+"/page", true)
		u, _ := url.Parse(e.srv.URL)
		var login *http.Cookie
		for _, ck := range c.Jar.Cookies(u) {
			if ck.Name == "__Host-causeway-sso-login" {
				login = ck
			}
		}
		if login == nil || res.StatusCode != http.StatusOK {
			t.Fatalf("no state cookie (%d)", res.StatusCode)
		}
		m := loginID.FindStringSubmatch(func() string { _, b := get(t, c, res.Request.URL.String(), true); return b }())
		if m == nil {
			t.Fatal("no login form")
		}
		pr, err := c.PostForm(op.issuer+"login/username", url.Values{"id": {html.UnescapeString(m[1])}, "username": {opUser}, "password": {opPassword}})
		if err != nil {
			t.Fatal(err)
		}
		pr.Body.Close()
		if pr.StatusCode != http.StatusOK || callback == nil {
			t.Fatalf("first callback: %d %v", pr.StatusCode, callback)
		}
		// An attacker holding both the callback URL and the state cookie
		// replays them.
		r2 := e.browser(t)
		r2.Jar.SetCookies(u, []*http.Cookie{{Name: login.Name, Value: login.Value, Path: "/"}})
		res, body := get(t, noFollow(r2), callback.String(), true)
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(body, "sign-in could not be completed") || len(e.sessionCookies(r2)) != 0 {
			t.Fatalf("replay: %d %s", res.StatusCode, body)
		}
	})

	t.Run("callback the edge did not start (no state cookie, or another state)", func(t *testing.T) {
		c := e.browser(t)
		res, body := get(t, noFollow(c), e.srv.URL+"/oauth2/callback?code=abc&state=xyz", true)
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(body, "sign-in could not be completed") {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
		// A state cookie of a sign-in this browser started, with another
		// state in the URL (login CSRF: the attacker's code and state).
		get(t, noFollow(c), e.srv.URL+"/page", true)
		res, _ = get(t, noFollow(c), e.srv.URL+"/oauth2/callback?code=abc&state=xyz", true)
		if res.StatusCode != http.StatusBadRequest {
			t.Fatalf("%d", res.StatusCode)
		}
	})

	t.Run("two sign-ins under way in one browser both complete, in either order", func(t *testing.T) {
		c := e.browser(t)
		form := func(path string) string {
			_, body := get(t, c, e.srv.URL+path, true)
			m := loginID.FindStringSubmatch(body)
			if m == nil {
				t.Fatalf("no login form for %s", path)
			}
			return html.UnescapeString(m[1])
		}
		idA, idB := form("/tab-a"), form("/tab-b")
		for _, x := range []struct{ id, want string }{{idB, "upstream /tab-b"}, {idA, "upstream /tab-a"}} {
			res, err := c.PostForm(op.issuer+"login/username", url.Values{"id": {x.id}, "username": {opUser}, "password": {opPassword}})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || string(b) != x.want {
				t.Fatalf("%d %s, want %s", res.StatusCode, b, x.want)
			}
		}
	})

	t.Run("mismatched nonce", func(t *testing.T) {
		c := e.browser(t)
		res, body := get(t, c, e.srv.URL+"/page", true)
		m := loginID.FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no login form: %d", res.StatusCode)
		}
		// Reseal the state cookie with another nonce, as if the ID token
		// had been minted for another sign-in.
		u, _ := url.Parse(e.srv.URL)
		ls, err := session.New(session.Config{Name: "__Host-causeway-sso-login", Keys: e.keys, Absolute: loginTTL})
		if err != nil {
			t.Fatal(err)
		}
		var ck *http.Cookie
		for _, x := range c.Jar.Cookies(u) {
			if x.Name == "__Host-causeway-sso-login" {
				ck = x
			}
		}
		s, err := ls.OpenValue(ck.Value, e.clock.now())
		if err != nil {
			t.Fatal(err)
		}
		var pending []loginData
		_ = json.Unmarshal(s.Data, &pending)
		if len(pending) != 1 {
			t.Fatalf("%d sign-ins under way", len(pending))
		}
		pending[0].Nonce = "another-nonce"
		data, _ := json.Marshal(pending)
		cs, err := ls.Seal(data, s.Created, e.clock.now())
		if err != nil {
			t.Fatal(err)
		}
		c.Jar.SetCookies(u, cs)
		pr, err := c.PostForm(op.issuer+"login/username", url.Values{"id": {html.UnescapeString(m[1])}, "username": {opUser}, "password": {opPassword}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(pr.Body)
		pr.Body.Close()
		if pr.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), "sign-in could not be completed") || len(e.sessionCookies(c)) != 0 {
			t.Fatalf("%d %s", pr.StatusCode, b)
		}
	})

	t.Run("idle and absolute timeouts", func(t *testing.T) {
		c := e.browser(t)
		if res, _ := e.signIn(t, c, op, "/"); res.StatusCode != http.StatusOK {
			t.Fatalf("sign-in: %d", res.StatusCode)
		}
		// Used after a quarter of the idle timeout, the session is
		// re-sealed with its new last use: the idle timeout slides.
		e.clock.advance(10 * time.Minute)
		res, _ := get(t, c, e.srv.URL+"/orders", false)
		if res.StatusCode != http.StatusOK || len(res.Header.Values("Set-Cookie")) != 1 {
			t.Fatalf("10m: %d %v", res.StatusCode, res.Header.Values("Set-Cookie"))
		}
		e.clock.advance(25 * time.Minute) // 35m after sign-in, 25m after the last use
		if res, _ := get(t, c, e.srv.URL+"/orders", false); res.StatusCode != http.StatusOK {
			t.Fatalf("35m: %d", res.StatusCode)
		}
		e.clock.advance(31 * time.Minute)
		res, body := get(t, c, e.srv.URL+"/orders", false)
		if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "session has expired") {
			t.Fatalf("idle: %d %s", res.StatusCode, body)
		}
	})
}

func TestOIDCProviderDown(t *testing.T) {
	t.Run("no provider at sign-in: status_on_error, API requests still 401", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := &testOP{issuer: "http://" + l.Addr().String() + "/"}
		l.Close()
		e := startEdge(t, dead, "")
		c := e.browser(t)
		res, body := get(t, c, e.srv.URL+"/page", true)
		if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "could not be authorized") || strings.Contains(body, l.Addr().String()) {
			t.Fatalf("navigation: %d %s", res.StatusCode, body)
		}
		if res, _ := get(t, c, e.srv.URL+"/api", false); res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("API: %d", res.StatusCode)
		}
	})
	for _, tc := range []struct {
		onError string
		want    int
	}{{"deny", http.StatusServiceUnavailable}, {"allow", http.StatusOK}} {
		t.Run("provider gone when the tokens expire, on_error "+tc.onError, func(t *testing.T) {
			op := startOP(t)
			e := startEdge(t, op, "on_error: "+tc.onError+", scopes: [openid, email, offline_access], session: {keys_env: CW_TEST_OIDC_KEYS, idle_timeout: 2h}")
			c := e.browser(t)
			if res, _ := e.signIn(t, c, op, "/"); res.StatusCode != http.StatusOK {
				t.Fatalf("sign-in: %d", res.StatusCode)
			}
			op.srv.Close()
			// Inside the refresh window, not yet expired: the failed refresh
			// is not the client's problem.
			e.clock.advance(59*time.Minute + 30*time.Second)
			if res, _ := get(t, c, e.srv.URL+"/orders", false); res.StatusCode != http.StatusOK {
				t.Fatalf("before expiry: %d", res.StatusCode)
			}
			e.clock.advance(time.Minute)
			res, body := get(t, c, e.srv.URL+"/orders", false)
			if res.StatusCode != tc.want {
				t.Fatalf("after expiry: %d %s", res.StatusCode, body)
			}
		})
	}
}

func TestOIDCConfig(t *testing.T) {
	t.Setenv("CW_TEST_OIDC_KEYS", base64.StdEncoding.EncodeToString(make([]byte, 32)))
	dir := t.TempDir()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	writeKey(t, dir, "ec.pem", ec, false)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	writeKey(t, dir, "rsa1024.pem", rsa1024, true)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	b, _ := x509.MarshalECPrivateKey(p224)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKCS8PrivateKey(ed)
	for name, data := range map[string][]byte{
		"junk.pem": []byte("not a key\n"),
		"cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		"p224.pem": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b}),
		"ed.pem":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		desc, settings, want string
	}{
		{"keys unset", "issuer: https://id.example.com/, client_id: web, session: {keys_env: CW_TEST_OIDC_UNSET}", "authenticators.sso.oidc.session.keys_env: environment variable CW_TEST_OIDC_UNSET is unset"},
		{"short key", "issuer: https://id.example.com/, client_id: web, session: {keys_env: CW_TEST_OIDC_SHORT}", "key 0: 16 bytes"},
		{"secret unset", "issuer: https://id.example.com/, client_id: web, client_secret_env: CW_TEST_OIDC_UNSET, session: {keys_env: CW_TEST_OIDC_KEYS}", "authenticators.sso.oidc.client_secret_env: environment variable CW_TEST_OIDC_UNSET is unset"},
		{"provider down is not a load error", "issuer: \"http://127.0.0.1:1/\", client_id: web, session: {keys_env: CW_TEST_OIDC_KEYS}", ""},
		{"private key", "issuer: https://id.example.com/, client_id: web, private_key_file: DIR/ec.pem, session: {keys_env: CW_TEST_OIDC_KEYS}", ""},
		{"private key missing", "issuer: https://id.example.com/, client_id: web, private_key_file: DIR/none.pem, session: {keys_env: CW_TEST_OIDC_KEYS}", "t.yaml:4:79: authenticators.sso.oidc.private_key_file: open DIR/none.pem: no such file"},
		{"private key not PEM", "issuer: https://id.example.com/, client_id: web, private_key_file: DIR/junk.pem, session: {keys_env: CW_TEST_OIDC_KEYS}", "oidc.private_key_file: DIR/junk.pem: no PEM block"},
		{"private key is a certificate", "issuer: https://id.example.com/, client_id: web, private_key_file: DIR/cert.pem, session: {keys_env: CW_TEST_OIDC_KEYS}", `a PEM "CERTIFICATE" block, not a private key`},
		{"private key too short", "issuer: https://id.example.com/, client_id: web, private_key_file: DIR/rsa1024.pem, session: {keys_env: CW_TEST_OIDC_KEYS}", "an RSA key of 1024 bits; at least 2048 are needed"},
		{"private key on P-224", "issuer: https://id.example.com/, client_id: web, private_key_file: DIR/p224.pem, session: {keys_env: CW_TEST_OIDC_KEYS}", "an EC key on an unsupported curve"},
		{"private key ed25519", "issuer: https://id.example.com/, client_id: web, private_key_file: DIR/ed.pem, session: {keys_env: CW_TEST_OIDC_KEYS}", "not an RSA or EC private key"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Setenv("CW_TEST_OIDC_SHORT", base64.StdEncoding.EncodeToString(make([]byte, 16)))
			tc.settings, tc.want = strings.ReplaceAll(tc.settings, "DIR", dir), strings.ReplaceAll(tc.want, "DIR", dir)
			f, err := routes.Parse("t.yaml", []byte("version: 1\nauthenticators:\n  sso:\n    oidc: {"+tc.settings+"}\nupstreams:\n  app: {endpoints: [\"127.0.0.1:1\"]}\nroutes:\n  - {name: app, match: {path_prefix: /}, auth: sso, upstream: app}\n"))
			if err != nil {
				t.Fatal(err)
			}
			s, err := NewSet(context.Background(), f, nil, Options{})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				s.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestIsSessionCookie(t *testing.T) {
	for name, want := range map[string]bool{"s": true, "s.0": true, "s.10": true, "s-login": true, "s.": false, "s.a": false, "sx": false, "s-loginx": false, "t": false} {
		if isSessionCookie("s", name) != want {
			t.Errorf("isSessionCookie(%q) = %v", name, !want)
		}
	}
}

// BenchmarkOIDCSession is the per-request cost of an OIDC session: opening
// the sealed cookie and decoding the ID token's claims into the principal
// (no provider call: the tokens are far from expiry). The session holds an
// ID token, a refresh token and an access token of realistic sizes.
func BenchmarkOIDCSession(b *testing.B) {
	b.Setenv("CW_BENCH_OIDC_KEYS", base64.StdEncoding.EncodeToString(make([]byte, session.KeySize)))
	f, err := routes.Parse("t.yaml", []byte("version: 1\nauthenticators:\n  sso:\n    oidc: {issuer: \"http://127.0.0.1:1/\", client_id: web, forward_access_token: true, session: {keys_env: CW_BENCH_OIDC_KEYS}}\nupstreams:\n  app: {endpoints: [\"127.0.0.1:1\"]}\nroutes:\n  - {name: app, match: {path_prefix: /}, auth: sso, upstream: app}\n"))
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewSet(context.Background(), f, nil, Options{Now: func() time.Time { return t0 }})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	a := s.auths["sso"].(*oidcAuth)
	claims, _ := json.Marshal(map[string]any{
		"iss": "https://id.example.com/realms/main", "sub": "248289761001", "aud": "web", "azp": "web",
		"exp": t0.Add(time.Hour).Unix(), "iat": t0.Unix(), "auth_time": t0.Unix(), "nonce": strings.Repeat("n", 43),
		"email": "jane@example.com", "email_verified": true, "name": "Jane Doe", "groups": []string{"staff", "orders"},
		"amr": []string{"pwd"}, "at_hash": strings.Repeat("h", 22),
	})
	idt := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","kid":"k1","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString(claims) + "." + strings.Repeat("s", 342) // an RS256 signature's length
	data, _ := json.Marshal(sessionData{IDToken: idt, Access: strings.Repeat("a", 800), Refresh: strings.Repeat("r", 300), Expiry: t0.Add(time.Hour).Unix()})
	cs, err := a.sess.Seal(data, t0, t0)
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "/orders", nil)
	r.AddCookie(cs[0])
	b.ReportAllocs()
	for b.Loop() {
		if p, reason, _ := a.check(r); p == nil {
			b.Fatal(reason)
		}
	}
	b.ReportMetric(float64(len(cs[0].Value)), "cookie-bytes")
}
