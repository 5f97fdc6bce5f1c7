package gateway

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

func TestDashboardPage(t *testing.T) {
	up := echoUpstream(t, "up")
	te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  up: {endpoints: [%q]}
routes:
  - {name: orders, match: {path_prefix: /orders}, upstream: up}
`, hostPort(up)))
	tests := []struct {
		path   string
		status int
	}{
		{"/", 200},
		{"/dashboard", 404},
		{"/index.html", 404},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, _ := get(t, te.admin+tt.path)
			if resp.StatusCode != tt.status {
				t.Fatalf("GET %s: %d, want %d", tt.path, resp.StatusCode, tt.status)
			}
		})
	}
	t.Run("self-contained", func(t *testing.T) {
		resp, body := get(t, te.admin+"/")
		if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("Content-Security-Policy %q", csp)
		}
		page := string(body)
		// No asset from anywhere else: no absolute URLs, no src/href at all.
		for _, re := range []string{`(?i)https?://`, `(?i)\bsrc\s*=`, `(?i)<link\b`, `(?i)@import`} {
			if m := regexp.MustCompile(re).FindString(page); m != "" {
				t.Errorf("page has %q (%s)", m, re)
			}
		}
		if !strings.Contains(page, "<title>Causeway edge</title>") || strings.Contains(page, "{{ROLE}}") {
			t.Error("role not filled in")
		}
		for _, endpoint := range []string{`fetch("routes"`, `fetch("upstreams"`} {
			if !strings.Contains(page, endpoint) {
				t.Errorf("page does not poll %s", endpoint)
			}
		}
	})
}

// chromium finds the browser for the dashboard test: CHROMIUM, or Debian's
// chromium package (make test-browser installs it).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found: run `make test-browser` (installs Debian's chromium) or set CHROMIUM")
	return ""
}

// TestDashboardInChromium loads the dashboard in headless Chromium: it shows
// the configured routes and upstreams, and its counts and rates follow the
// traffic sent afterwards. It needs a browser (~100 MB), so it runs under
// `make test-browser` (CAUSEWAY_BROWSER_TEST=1), not in `make test`.
func TestDashboardInChromium(t *testing.T) {
	if os.Getenv("CAUSEWAY_BROWSER_TEST") == "" {
		t.Skip("browser test: run `make test-browser` (sets CAUSEWAY_BROWSER_TEST=1)")
	}
	bin := chromium(t)
	up := echoUpstream(t, "up")
	te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  up: {endpoints: [%q]}
  dead: {endpoints: [%q]}
routes:
  - {name: orders-read, match: {path_prefix: /orders, methods: [GET]}, upstream: up}
  - {name: payments, match: {host: pay.example.com, path: "/pay/{id}"}, upstream: dead}
`, hostPort(up), freeAddr(t)))

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

	if err := chromedp.Do(bctx,
		chromedp.Navigate(te.admin+"/?interval=200"),
		chromedp.WaitVisible(chromedp.CSS(`#routes tbody tr[data-route="orders-read"]`)),
	); err != nil {
		t.Fatalf("loading the dashboard: %v", err)
	}
	title, err := chromedp.Run(bctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	routesText, upstreamsText := text(`#routes tbody`), text(`#upstreams tbody`)
	if title != "Causeway edge" {
		t.Errorf("title %q", title)
	}
	for _, want := range []string{"orders-read", "prefix /orders", "GET", "payments", "host pay.example.com", "path /pay/{id}"} {
		if !strings.Contains(routesText, want) {
			t.Errorf("routes table lacks %q:\n%s", want, routesText)
		}
	}
	for _, want := range []string{"up", "dead", hostPort(up)} {
		if !strings.Contains(upstreamsText, want) {
			t.Errorf("upstreams table lacks %q:\n%s", want, upstreamsText)
		}
	}

	cell := text
	// The page polls every 200ms: wait for a poll that shows want. The
	// rows come from the configuration, their counts from the first poll
	// of the metrics, which a loaded machine may not have made yet.
	waitText := func(sel, want string) {
		t.Helper()
		if _, err := chromedp.Run(bctx, chromedp.Poll[bool](fmt.Sprintf(`(document.querySelector(%q)||{}).textContent === %q`, sel, want),
			chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			t.Fatalf("%s never showed %q (now %q): %v", sel, want, cell(sel), err)
		}
	}
	waitText(`tr[data-route="orders-read"] td.requests`, "0")

	for range 12 {
		get(t, te.url+"/orders/1")
	}
	for range 3 {
		get(t, te.url+"/pay/7", "Host", "pay.example.com")
	}
	waitText(`tr[data-route="orders-read"] td.requests`, "12")
	waitText(`tr[data-route="payments"] td.requests`, "3")
	waitText(`tr[data-upstream="up"] td.requests`, "12")
	if got := cell(`tr[data-route="payments"] td.errpct`); got != "100.0" {
		t.Errorf("payments error %% = %q, want 100.0", got)
	}
	// Rates are computed from two polls; some poll saw the jump unless the
	// traffic landed between two polls that both missed it, which the
	// counts above rule out: check the number parses.
	if _, err := strconv.ParseFloat(cell(`tr[data-route="orders-read"] td.rps`), 64); err != nil {
		t.Errorf("req/s cell: %v", err)
	}
	// The upstream reports its endpoints' health: a green dot.
	if ok, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`!!document.querySelector('tr[data-upstream="up"] span.dot.ok')`)); err != nil || !ok {
		t.Errorf("no healthy dot for upstream up (%v)", err)
	}
	if s := cell(`#status`); !strings.HasPrefix(s, "updated") {
		t.Errorf("status %q", s)
	}
}
