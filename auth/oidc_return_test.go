package auth

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/zitadel/oidc/v3/example/server/storage"

	"github.com/causewayhq/causeway/auth/session"
	"github.com/causewayhq/causeway/routes"
)

// After a sign-in the browser goes back to the page it first asked for,
// which a hostile link chooses: the address must stay on the edge's own
// origin whatever the request target was. The middleware is served bare
// (no ServeMux, no path cleaning, which would redirect //x before the
// authenticator saw it), each target is sent raw on the wire, and the
// whole sign-in runs against the real provider; the callback's Location is
// then read as a browser would.
func TestOIDCReturnToStaysOnSite(t *testing.T) {
	op := startOP(t)
	key := make([]byte, session.KeySize)
	_, _ = rand.Read(key)
	t.Setenv("CW_TEST_OIDC_KEYS", base64.StdEncoding.EncodeToString(key))
	t.Setenv("CW_TEST_OIDC_SECRET", opSecret)
	clientID := fmt.Sprintf("web%d", clientSeq.Add(1))
	f, err := routes.Parse("t.yaml", []byte(fmt.Sprintf(`version: 1
authenticators:
  sso:
    oidc: {issuer: %q, client_id: %s, client_secret_env: CW_TEST_OIDC_SECRET, session: {keys_env: CW_TEST_OIDC_KEYS}}
upstreams:
  app: {endpoints: ["127.0.0.1:1"]}
routes:
  - {name: app, match: {path_prefix: /}, auth: sso, upstream: app}
`, op.issuer, clientID)))
	if err != nil {
		t.Fatal(err)
	}
	set, err := NewSet(context.Background(), f, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = set.Close() })
	mw, err := set.Middleware(f.Routes[0])
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "upstream "+r.URL.Path)
	})))
	t.Cleanup(srv.Close)
	site, _ := url.Parse(srv.URL)
	storage.RegisterClients(storage.WebClient(clientID, opSecret, srv.URL+"/oauth2/callback"))

	for _, target := range []string{
		"//evil.example/x",
		"///evil.example",
		"/\\evil.example",
		"/\\/evil.example",
		`\\evil.example`,
		"/%5Cevil.example",
		"/%5C%5Cevil.example",
		"/%2F%2Fevil.example",
		"/%2f/evil.example",
		"//%2Fevil.example",
		"/.//evil.example",
		"/..//evil.example",
		"/%2e%2e//evil.example",
		"/%09/evil.example",
		"/%0d%0aLocation:%20https://evil.example",
		"/@evil.example",
		"/?next=//evil.example",
		// Absolute form: its host becomes the request's Host (a spoofed
		// Host, which the route's match.host and the provider's
		// registered redirect URIs hold), so the edge's own here, with a
		// hostile path.
		"https://SITE//evil.example/x",
		"https://SITE/\\evil.example",
		"https://SITE",
		"/page?a=1#//evil.example",
		"/page?q=a\\b",
	} {
		t.Run(target, func(t *testing.T) {
			jar, _ := cookiejar.New(nil)
			var last *url.URL
			browser := &http.Client{Jar: jar, Transport: srv.Client().Transport, CheckRedirect: func(req *http.Request, via []*http.Request) error {
				// Stop at the callback's redirect: its Location is
				// what is under test.
				if prev := via[len(via)-1]; prev.URL.Host == site.Host && prev.URL.Path == "/oauth2/callback" {
					last = req.URL
					return http.ErrUseLastResponse
				}
				return nil
			}}

			status, loc, cookies := rawNavigate(t, srv, strings.Replace(target, "SITE", site.Host, 1))
			if status == http.StatusBadRequest {
				t.Logf("the server refused %q: no sign-in started", target)
				return
			}
			if status != http.StatusFound || !strings.HasPrefix(loc, op.issuer) {
				t.Fatalf("navigation to %q: %d %q", target, status, loc)
			}
			jar.SetCookies(site, cookies)
			res, err := browser.Get(loc)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			m := loginID.FindStringSubmatch(string(body))
			if m == nil {
				t.Fatalf("no login form: %d %.200s", res.StatusCode, body)
			}
			res, err = browser.PostForm(op.issuer+"login/username", url.Values{"id": {html.UnescapeString(m[1])}, "username": {opUser}, "password": {opPassword}})
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusSeeOther || last == nil {
				t.Fatalf("the callback answered %d (%s), want 303", res.StatusCode, res.Request.URL)
			}
			raw := res.Header.Get("Location")
			path, _, _ := strings.Cut(raw, "?")
			if !strings.HasPrefix(raw, "/") || strings.HasPrefix(raw, "//") || strings.ContainsAny(path, "\\ ") || strings.ContainsAny(raw, "\t\r\n") {
				t.Fatalf("Location %q is not a plain path on this site", raw)
			}
			if last.Scheme != site.Scheme || last.Host != site.Host {
				t.Fatalf("Location %q leads to %s", raw, last)
			}
			// A harmless query comes back as it was sent.
			if strings.HasPrefix(target, "/page?q=") && raw != target {
				t.Fatalf("Location %q, want %q", raw, target)
			}
		})
	}
}

// rawNavigate sends target as the request line's target, untouched by
// net/url, and returns the status, Location and cookies set.
func rawNavigate(t *testing.T, srv *httptest.Server, target string) (int, string, []*http.Cookie) {
	t.Helper()
	conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), srv.Client().Transport.(*http.Transport).TLSClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/html\r\nConnection: close\r\n\r\n", target, host); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	defer res.Body.Close()
	return res.StatusCode, res.Header.Get("Location"), res.Cookies()
}

func TestSafeReturn(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/", "/"},
		{"/app/page?x=1", "/app/page?x=1"},
		{"/a%2F%2Fb", "/a%2F%2Fb"},
		{"/?next=//evil.example", "/?next=//evil.example"},
		{"", "/"},
		{"page", "/"},
		{"//evil.example", "/"},
		{"/\\evil.example", "/"},
		{"\\\\evil.example", "/"},
		{"https://evil.example/", "/"},
		{"javascript:alert(1)", "/"},
		// Browsers drop tabs and newlines anywhere in a URL: these
		// become //evil.example.
		{"/\t/evil.example", "/"},
		{"/\n/evil.example", "/"},
		{"/\r\n/evil.example", "/"},
		{"/\x00/evil.example", "/"},
		{"/\x7f", "/"},
		// and read a backslash as a slash.
		{"/a\\..\\..\\/evil.example", "/"},
		{"/ /evil.example", "/"},
		{"/x?\t/evil.example", "/"},
		// A query is data: a backslash there stays.
		{"/search?q=a\\b", "/search?q=a\\b"},
		{"/search?q=\\\\evil.example", "/search?q=\\\\evil.example"},
	} {
		if got := safeReturn(tc.in); got != tc.want {
			t.Errorf("safeReturn(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
