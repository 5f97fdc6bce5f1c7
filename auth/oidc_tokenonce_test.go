package auth

import (
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// TestOIDCTokenRequestsSentOnce checks, against the real provider, that
// every token request reaches the token endpoint exactly once, whatever
// comes of it. oauth2's AuthStyleAutoDetect sends a failed request a
// second time with the credentials in the form; with a config built per
// request it never learns the style, so a refused code, a provider error
// and a refused refresh were each sent twice, and a refresh token sent
// twice is what a provider's reuse detection punishes (it may revoke the
// whole grant). The style comes from discovery instead.
func TestOIDCTokenRequestsSentOnce(t *testing.T) {
	for _, tc := range []struct {
		name    string
		methods []string // token_endpoint_auth_methods_supported (nil: the provider's own)
		auth    string   // how the edge must authenticate
	}{
		{"provider's own list (none, basic)", nil, "basic"},
		{"member absent: RFC 8414 default client_secret_basic", []string{}, "basic"},
		{"post listed first, basic too: basic preferred", []string{"client_secret_post", "client_secret_basic"}, "basic"},
		{"only client_secret_post", []string{"client_secret_post"}, "post"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := startOP(t)
			if tc.methods != nil {
				op.authMethods.Store(&tc.methods)
			}
			e := startEdge(t, op, "scopes: [openid, offline_access], forward_access_token: true")
			h := *e.handler.Load()

			// sent checks the token requests since n: one, of grant, with
			// the expected client authentication.
			sent := func(t *testing.T, n int, grant string) {
				t.Helper()
				got := op.tokenRequests(n)
				if len(got) != 1 || got[0] != (tokenReq{grant: grant, auth: tc.auth}) {
					t.Fatalf("the token endpoint received %v, want exactly [{%s %s}]", got, grant, tc.auth)
				}
			}

			c := e.browser(t)
			n := op.tokenCount()
			if res, _ := e.signIn(t, c, op, "/"); res.StatusCode != http.StatusOK {
				t.Fatalf("sign-in: %d", res.StatusCode)
			}
			sent(t, n, "authorization_code")
			ck := e.sessionCookies(c)[0]

			t.Run("refused code", func(t *testing.T) {
				b := e.browser(t)
				cb := e.stopAtCallback(t, b, op)
				q := cb.Query()
				q.Set("code", q.Get("code")+"x")
				cb.RawQuery = q.Encode()
				n, up := op.tokenCount(), e.seen.n
				res, body := get(t, b, cb.String(), true)
				if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"status":401`) || len(e.sessionCookies(b)) != 0 || e.seen.n != up {
					t.Fatalf("%d %s", res.StatusCode, body)
				}
				sent(t, n, "authorization_code")
			})

			t.Run("provider error at the code exchange", func(t *testing.T) {
				b := e.browser(t)
				cb := e.stopAtCallback(t, b, op)
				op.tokenStatus.Store(http.StatusServiceUnavailable)
				defer op.tokenStatus.Store(0)
				n := op.tokenCount()
				res, body := get(t, b, cb.String(), true)
				if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"status":503`) {
					t.Fatalf("%d %s", res.StatusCode, body)
				}
				sent(t, n, "authorization_code")
			})

			// Access tokens live 5 minutes: 5.5 minutes on, every request
			// needs a refresh.
			e.clock.set(5*time.Minute + 30*time.Second)

			t.Run("provider error at a refresh", func(t *testing.T) {
				op.tokenStatus.Store(http.StatusServiceUnavailable)
				defer op.tokenStatus.Store(0)
				n, up := op.tokenCount(), e.seen.n
				if rec := e.call(h, "/orders", ck, false); rec.Code != http.StatusServiceUnavailable || e.seen.n != up {
					t.Fatalf("%d %s", rec.Code, rec.Body)
				}
				sent(t, n, "refresh_token")
			})

			t.Run("refused refresh", func(t *testing.T) {
				// The browser's request refreshes, and the provider rotates
				// the refresh token; the copy of the old cookie then
				// presents the used one, which the provider refuses.
				n := op.tokenCount()
				if rec := e.call(h, "/orders", ck, false); rec.Code != http.StatusOK {
					t.Fatalf("refresh: %d %s", rec.Code, rec.Body)
				}
				sent(t, n, "refresh_token")
				n, up := op.tokenCount(), e.seen.n
				rec := e.call(h, "/orders", ck, false)
				if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), `"status":401`) || e.seen.n != up {
					t.Fatalf("the old cookie: %d %s", rec.Code, rec.Body)
				}
				sent(t, n, "refresh_token")
			})
		})
	}
}

// TestTokenAuthStyle is the rule that picks the client authentication
// from discovery.
func TestTokenAuthStyle(t *testing.T) {
	for _, tc := range []struct {
		name              string
		methods           []string
		secret, assertion bool
		want              oauth2.AuthStyle
	}{
		{"absent: client_secret_basic (RFC 8414)", nil, true, false, oauth2.AuthStyleInHeader},
		{"basic only", []string{"client_secret_basic"}, true, false, oauth2.AuthStyleInHeader},
		{"both: basic preferred", []string{"client_secret_post", "client_secret_basic"}, true, false, oauth2.AuthStyleInHeader},
		{"post only", []string{"client_secret_post"}, true, false, oauth2.AuthStyleInParams},
		{"neither: basic, the default", []string{"private_key_jwt"}, true, false, oauth2.AuthStyleInHeader},
		{"private_key_jwt: id in the form beside the assertion", []string{"client_secret_basic", "private_key_jwt"}, false, true, oauth2.AuthStyleInParams},
		{"public client: id in the form", []string{"none", "client_secret_basic"}, false, false, oauth2.AuthStyleInParams},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tokenAuthStyle(tc.methods, tc.secret, tc.assertion); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestOIDCCodeFromAnotherSession: two browsers start sign-ins; each stops
// before its callback. Browser B's callback is sent with A's code (an
// attacker who got a victim's code, or a victim given an attacker's code
// with its own state): the state is B's, so the edge exchanges A's code
// with B's PKCE verifier, and the provider refuses it: no session, nothing
// upstream, one token request. (Whether A's code is spent by the refused
// exchange is the provider's choice: zitadel's example OP keeps it.)
func TestOIDCCodeFromAnotherSession(t *testing.T) {
	op := startOP(t)
	e := startEdge(t, op, "")
	a, b := e.browser(t), e.browser(t)
	cbA, cbB := e.stopAtCallback(t, a, op), e.stopAtCallback(t, b, op)
	swapped := *cbB
	q := swapped.Query()
	q.Set("code", cbA.Query().Get("code"))
	swapped.RawQuery = q.Encode()
	n, up := op.tokenCount(), e.seen.n
	res, body := get(t, b, swapped.String(), true)
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"status":401`) || len(e.sessionCookies(b)) != 0 {
		t.Fatalf("B with A's code: %d %s", res.StatusCode, body)
	}
	if got := op.tokenRequests(n); len(got) != 1 {
		t.Fatalf("token requests %v, want one", got)
	}
	if e.seen.n != up {
		t.Fatal("the upstream was reached")
	}
}

// stopAtCallback starts a sign-in in c, logs in at the provider and stops
// before the callback, returning its URL (with its code).
func (e *testEdge) stopAtCallback(t *testing.T, c *http.Client, op *testOP) *url.URL {
	t.Helper()
	_, body := get(t, c, e.srv.URL+"/page", true)
	m := loginID.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no login form: %.200s", body)
	}
	var cb *url.URL
	stop := *c
	stop.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if req.URL.Path == "/oauth2/callback" {
			cb = req.URL
			return http.ErrUseLastResponse
		}
		return nil
	}
	res, err := stop.PostForm(op.issuer+"login/username", url.Values{"id": {html.UnescapeString(m[1])}, "username": {opUser}, "password": {opPassword}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if cb == nil || cb.Query().Get("code") == "" {
		t.Fatalf("no callback with a code: %d", res.StatusCode)
	}
	return cb
}
