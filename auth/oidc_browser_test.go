package auth

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"
)

func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found: install Debian's chromium or set CHROMIUM")
	return ""
}

// TestOIDCInChromium drives the whole sign-in in headless Chromium against
// the example provider: the redirect, its login form typed into and
// submitted, the callback, the session cookie as the browser keeps it
// (HttpOnly, Secure, SameSite=Lax, invisible to scripts), a refresh, and
// logout at the edge and the provider, with the session in the cookie and
// in Redis. It needs a browser, so it runs only with
// CAUSEWAY_BROWSER_TEST=1 (as `make test` sets it).
func TestOIDCInChromium(t *testing.T) {
	if os.Getenv("CAUSEWAY_BROWSER_TEST") == "" {
		t.Skip("browser test: set CAUSEWAY_BROWSER_TEST=1")
	}
	for _, store := range []string{"cookie", "redis"} {
		t.Run(store, func(t *testing.T) { chromiumSignIn(t, store) })
	}
}

func chromiumSignIn(t *testing.T, store string) {
	bin := chromiumPath(t)
	op := startOP(t)
	const settings = "scopes: [openid, profile, email, offline_access], forward_access_token: true"
	var e *testEdge
	var rdb *redis.Client
	if store == "redis" {
		e, _, rdb = startRedisEdge(t, op, settings, "")
	} else {
		e = startEdge(t, op, settings)
	}

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// The edge's certificate is httptest's own.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.UserDataDir(t.TempDir()),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	// The first Run starts the browser and must not carry a timeout.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	cookies := func() map[string]*network.Cookie {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		res, err := chromedp.Run(ctx, func(ctx context.Context, tg *chromedp.Target) (network.GetCookiesResult, error) {
			return cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{e.srv.URL + "/"}})
		})
		if err != nil {
			t.Fatalf("reading cookies: %v", err)
		}
		m := map[string]*network.Cookie{}
		for _, c := range res.Cookies {
			m[c.Name] = c
		}
		return m
	}
	// waitLocation waits for the browser to arrive at want; while it is
	// being redirected, the page it is asked about may be gone.
	waitLocation := func(want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		var loc string
		for time.Now().Before(deadline) {
			ctx, cancel := context.WithTimeout(bctx, 5*time.Second)
			got, err := chromedp.Run(ctx, chromedp.Location())
			cancel()
			if loc = got; err == nil && got == want {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("the browser is at %q, not %q", loc, want)
	}

	// A page of the app: the provider's login form.
	run("opening the app", chromedp.Navigate(e.srv.URL+"/app/page?x=1"), chromedp.WaitVisible(chromedp.CSS(`#username`)))
	if c := cookies()["__Host-causeway-sso-login"]; c == nil || !c.HTTPOnly || !c.Secure || c.SameSite != network.CookieSameSiteLax {
		t.Fatalf("state cookie %+v", c)
	}
	run("signing in",
		chromedp.SendKeys(chromedp.CSS(`#username`), opUser),
		chromedp.SendKeys(chromedp.CSS(`#password`), opPassword),
		chromedp.Click(chromedp.CSS(`button[type=submit]`)),
	)
	waitLocation(e.srv.URL + "/app/page?x=1")
	if got := text("body"); got != "upstream /app/page" {
		t.Fatalf("page after sign-in: %q", got)
	}
	cs := cookies()
	sess := cs["__Host-causeway-sso"]
	if sess == nil || !sess.HTTPOnly || !sess.Secure || sess.SameSite != network.CookieSameSiteLax || sess.Path != "/" {
		t.Fatalf("session cookie %+v", sess)
	}
	if cs["__Host-causeway-sso-login"] != nil {
		t.Fatal("the state cookie outlived the sign-in")
	}
	docCookie, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.cookie`))
	if err != nil || strings.Contains(docCookie, "causeway") {
		t.Fatalf("document.cookie %q (%v)", docCookie, err)
	}
	h, claims, _ := e.seen.last()
	firstAT := h.Get("Authorization")
	if h.Get("X-User-Id") != "id1" || claims["sub"] != "id1" || !strings.HasPrefix(firstAT, "Bearer ") || strings.Contains(h.Get("Cookie"), "causeway") {
		t.Fatalf("upstream: X-User-Id %q Authorization %q Cookie %q", h.Get("X-User-Id"), firstAT, h.Get("Cookie"))
	}

	// Within a minute of the access token's expiry, the next page refreshes
	// the tokens.
	e.clock.advance(4*time.Minute + 30*time.Second)
	run("a page after 4.5 minutes", chromedp.Navigate(e.srv.URL+"/orders"))
	if got := text("body"); got != "upstream /orders" {
		t.Fatalf("page after the refresh: %q", got)
	}
	if h, _, _ := e.seen.last(); h.Get("Authorization") == firstAT || !strings.HasPrefix(h.Get("Authorization"), "Bearer ") {
		t.Fatalf("access token not refreshed: %q", h.Get("Authorization"))
	}
	// A cookie session is re-sealed with the refreshed tokens; a Redis
	// one keeps its cookie (the id), the tokens changing in Redis.
	if c := cookies()["__Host-causeway-sso"]; c == nil || (c.Value == sess.Value) != (store == "redis") {
		t.Fatalf("session cookie after the refresh (store %s): %+v", store, c)
	}

	// A page of another site cannot log the user out: not with an <img>
	// of the logout path, and not with a link the user follows (a
	// top-level navigation, which carries the SameSite=Lax cookie).
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = fmt.Fprintf(w, `<img id="img" src="%[1]s/oauth2/logout"><a id="go" href="%[1]s/oauth2/logout">win a prize</a>`, e.srv.URL)
	}))
	defer evil.Close()
	run("a page of another site", chromedp.Navigate(evil.URL+"/"), chromedp.WaitReady(chromedp.CSS(`#go`)))
	run("following its link", chromedp.Click(chromedp.CSS(`#go`)))
	waitLocation(e.srv.URL + "/oauth2/logout")
	if got := text("body"); !strings.Contains(got, `"status":403`) {
		t.Fatalf("cross-site logout: %q", got)
	}
	run("a page after the cross-site logout", chromedp.Navigate(e.srv.URL+"/orders"))
	if got := text("body"); got != "upstream /orders" {
		t.Fatalf("a page after the cross-site logout: %q", got)
	}
	if rdb != nil {
		if left := storedSessions(t, rdb); len(left) != 1 {
			t.Fatalf("sessions in Redis after the cross-site logout: %v", left)
		}
	}

	// Logout: the edge, then the provider.
	run("logging out", chromedp.Navigate(e.srv.URL+"/oauth2/logout"))
	waitLocation(op.issuer + "logged-out")
	if got := text("body"); !strings.Contains(got, "signed out") {
		t.Fatalf("after logout: %q", got)
	}
	if rdb != nil {
		if left := storedSessions(t, rdb); len(left) != 0 {
			t.Fatalf("sessions left in Redis after logout: %v", left)
		}
	}
	// The app asks to sign in again. The browser may still hold a seal of
	// the session: a subresource (the favicon) of the last page, refreshed
	// by the edge while the logout was under way, can have its Set-Cookie
	// stored after the logout's expiry. The edge refuses that seal and
	// clears it.
	run("the app again", chromedp.Navigate(e.srv.URL+"/app"), chromedp.WaitVisible(chromedp.CSS(`#username`)))
	// Chromium commits a Set-Cookie to its cookie store apart from the
	// navigation that carried it, so the store is read until it has.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c := cookies()["__Host-causeway-sso"]
		if c == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session cookie after logout and a page: %+v", c)
		}
	}
}
