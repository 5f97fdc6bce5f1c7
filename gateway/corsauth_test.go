package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	_ "github.com/causewayhq/causeway/plugins/cors"
)

const corsOrigin = "https://app.example.com"

// corsAuthEdge serves /api behind an API key on Authorization, a rate limit
// of two requests an hour and a cors instance; hits counts what the
// upstream received.
func corsAuthEdge(t *testing.T, origin string) (te *testEdge, key string, hits *atomic.Int64) {
	t.Helper()
	hits = new(atomic.Int64)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "hello %s", r.Method)
	}))
	t.Cleanup(up.Close)
	key = "k-cors-0123456789abcdef"
	keys := writeKeys(t, map[string]string{"app": key})
	te = startEdge(t, listenHeader+fmt.Sprintf(`authenticators:
  partners: {api_key: {header: Authorization, keys_file: %q}}
rate_limits:
  two: {key: client_ip, limit: 2, per: 1h}
plugins:
  app-cors: {use: cors, config: {allow_origins: [%q], allow_methods: [GET, PUT], allow_headers: [Authorization]}}
upstreams:
  up: {endpoints: [%q]}
routes:
  - {name: api, match: {path_prefix: /api}, auth: partners, rate_limit: two, plugins: [app-cors], upstream: up}
`, keys, origin, hostPort(up)))
	return te, key, hits
}

// A browser's CORS preflight carries no credentials: on a route with auth
// and a rate limit it must get the cors plugin's answer, not 401, and must
// not cost a rate-limit token. The real request still needs its key, and
// the edge's own refusals carry the CORS headers so that a script can read
// them.
func TestCORSPreflightBeforeAuth(t *testing.T) {
	te, key, hits := corsAuthEdge(t, corsOrigin)
	do := func(method string, hdr ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, te.url+"/api/items", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	preflight := []string{"Origin", corsOrigin, "Access-Control-Request-Method", "PUT", "Access-Control-Request-Headers", "authorization"}

	// Far more preflights than the limit allows requests.
	for i := range 20 {
		resp := do("OPTIONS", preflight...)
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != corsOrigin ||
			resp.Header.Get("Access-Control-Allow-Headers") != "authorization" {
			t.Fatalf("preflight %d: %d %v", i, resp.StatusCode, resp.Header)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the upstream received %d preflights", n)
	}
	// A refused preflight is refused by cors, still without credentials.
	if resp := do("OPTIONS", "Origin", "https://evil.example", "Access-Control-Request-Method", "PUT"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("preflight from another origin: %d", resp.StatusCode)
	}

	tests := []struct {
		name   string
		method string
		hdr    []string
		status int
		cors   bool // Access-Control-Allow-Origin expected
	}{
		{"actual request without key", "GET", []string{"Origin", corsOrigin}, 401, true},
		{"OPTIONS that is not a preflight needs auth", "OPTIONS", []string{"Origin", corsOrigin}, 401, true},
		{"actual request with a wrong key", "PUT", []string{"Origin", corsOrigin, "Authorization", "nope"}, 401, true},
		// The limit of two is intact: no preflight took a token.
		{"first allowed request", "PUT", []string{"Origin", corsOrigin, "Authorization", key}, 200, true},
		{"second allowed request", "GET", []string{"Authorization", key}, 200, false},
		{"over the limit", "GET", []string{"Origin", corsOrigin, "Authorization", key}, 429, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := do(tt.method, tt.hdr...)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin") == corsOrigin; got != tt.cors {
				t.Fatalf("Access-Control-Allow-Origin %q, want it: %v", resp.Header.Get("Access-Control-Allow-Origin"), tt.cors)
			}
		})
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("the upstream received %d requests, want the 2 allowed ones", n)
	}
}

// TestCORSPreflightInChromium has a page on one origin fetch an
// authenticated route of the edge on another origin with an Authorization
// header: Chromium sends the preflight, then the real request, and the
// script reads the upstream's answer. Like the dashboard test it needs
// CAUSEWAY_BROWSER_TEST=1, which `make test` and `make test-browser` set.
func TestCORSPreflightInChromium(t *testing.T) {
	if os.Getenv("CAUSEWAY_BROWSER_TEST") == "" {
		t.Skip("browser test: run `make test-browser` (sets CAUSEWAY_BROWSER_TEST=1)")
	}
	bin := chromium(t)
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<!doctype html><title>app</title>")
	}))
	t.Cleanup(page.Close)
	te, key, hits := corsAuthEdge(t, page.URL)

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	if err := chromedp.Do(bctx, chromedp.Navigate(page.URL)); err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	fetch := func(auth string) string {
		t.Helper()
		js := fmt.Sprintf(`fetch(%q, {method: "PUT", headers: {"Authorization": %q}})
			.then(r => r.text().then(b => r.status + " " + b), e => "failed: " + e)`, te.url+"/api/items", auth)
		got, err := chromedp.Run(bctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := fetch(key); got != "200 hello PUT" {
		t.Fatalf("cross-origin fetch with a key: %q", got)
	}
	// The 401 is readable by the script too: it carries the CORS headers.
	if got := fetch("wrong"); len(got) < 4 || got[:4] != "401 " {
		t.Fatalf("cross-origin fetch with a wrong key: %q", got)
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("the upstream received %d requests, want 1", n)
	}
}
