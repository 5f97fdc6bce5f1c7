package auth

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestOIDCLogoutCrossSite: a logout needs no secret, so a page of another
// site must not be able to end a user's session by loading the logout path
// (an <img>, a link, a form posted to it). Each refused request leaves the
// session working (and, with store: redis, stored); a logout from the site
// itself still ends it and signs out at the provider.
func TestOIDCLogoutCrossSite(t *testing.T) {
	op := startOP(t)
	for _, store := range []string{"cookie", "redis"} {
		t.Run(store, func(t *testing.T) {
			var e *testEdge
			var rdb *redis.Client
			if store == "redis" {
				e, _, rdb = startRedisEdge(t, op, "", "")
			} else {
				e = startEdge(t, op, "")
			}
			c := e.browser(t)
			if res, body := e.signIn(t, c, op, "/orders"); res.StatusCode != http.StatusOK {
				t.Fatalf("sign-in: %d %s", res.StatusCode, body)
			}
			noFollow := noRedirects(c)
			logout := func(method string, h map[string]string) (*http.Response, string) {
				t.Helper()
				req, err := http.NewRequest(method, e.srv.URL+"/oauth2/logout", nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Accept", "text/html")
				for k, v := range h {
					req.Header.Set(k, v)
				}
				return send(t, noFollow, req)
			}
			for _, tc := range []struct {
				desc    string
				method  string
				headers map[string]string
				status  int
			}{
				{"an <img> on another site", http.MethodGet, map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}, http.StatusForbidden},
				{"a link on another site", http.MethodGet, map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Referer": "https://evil.example/page"}, http.StatusForbidden},
				{"a sibling subdomain", http.MethodGet, map[string]string{"Sec-Fetch-Site": "same-site"}, http.StatusForbidden},
				{"a form posted from another site", http.MethodPost, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, http.StatusForbidden},
				{"a form posted by a browser without Fetch Metadata", http.MethodPost, map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
				{"Origin null (a sandboxed frame)", http.MethodPost, map[string]string{"Origin": "null"}, http.StatusForbidden},
				{"a link from another site, browser without Fetch Metadata", http.MethodGet, map[string]string{"Referer": "https://evil.example/"}, http.StatusForbidden},
				{"a Referer that only starts like the site", http.MethodGet, map[string]string{"Referer": e.srv.URL + ".evil.example/"}, http.StatusForbidden},
				{"a speculative prefetch of the site's own link", http.MethodGet, map[string]string{"Sec-Fetch-Site": "same-origin", "Sec-Purpose": "prefetch"}, http.StatusForbidden},
				// A browser without Fetch Metadata following a link on a page
				// that asks for no referrer (<meta name="referrer"
				// content="no-referrer">) sends none of the headers, and
				// ignores SameSite: nothing tells it from a same-site link.
				{"a link from another site with no referrer, browser without Fetch Metadata", http.MethodGet, nil, http.StatusForbidden},
				{"a form from another site with no referrer, browser without Fetch Metadata", http.MethodPost, nil, http.StatusForbidden},
				{"a Referer that does not parse", http.MethodGet, map[string]string{"Referer": "%zz"}, http.StatusForbidden},
				{"another method", http.MethodDelete, nil, http.StatusMethodNotAllowed},
			} {
				t.Run(tc.desc, func(t *testing.T) {
					res, body := logout(tc.method, tc.headers)
					if res.StatusCode != tc.status || !strings.Contains(body, `"status":`) || res.Header.Get("Set-Cookie") != "" {
						t.Fatalf("%d (want %d), Set-Cookie %q: %s", res.StatusCode, tc.status, res.Header.Get("Set-Cookie"), body)
					}
					if res, _ := get(t, c, e.srv.URL+"/orders", false); res.StatusCode != http.StatusOK {
						t.Fatalf("the session ended: %d", res.StatusCode)
					}
					if rdb != nil && len(storedSessions(t, rdb)) != 1 {
						t.Fatalf("sessions in Redis: %v", storedSessions(t, rdb))
					}
				})
			}

			// The site's own logout: a link (GET) or a form (POST), each
			// after signing in again.
			for _, tc := range []struct {
				desc    string
				method  string
				headers map[string]string
			}{
				{"a link on the site", http.MethodGet, map[string]string{"Sec-Fetch-Site": "same-origin", "Referer": e.srv.URL + "/orders"}},
				{"a form on the site", http.MethodPost, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": e.srv.URL}},
				{"typed into the address bar", http.MethodGet, map[string]string{"Sec-Fetch-Site": "none"}},
				{"a link on the site, browser without Fetch Metadata", http.MethodGet, map[string]string{"Referer": e.srv.URL + "/orders"}},
				{"a form on the site, browser without Fetch Metadata", http.MethodPost, map[string]string{"Origin": e.srv.URL}},
				{"a script stating its origin", http.MethodGet, map[string]string{"Origin": e.srv.URL}},
			} {
				t.Run(tc.desc, func(t *testing.T) {
					if len(e.sessionCookies(c)) == 0 {
						if res, body := e.signIn(t, c, op, "/orders"); res.StatusCode != http.StatusOK {
							t.Fatalf("sign-in: %d %s", res.StatusCode, body)
						}
					}
					res, _ := logout(tc.method, tc.headers)
					loc, _ := url.Parse(res.Header.Get("Location"))
					if res.StatusCode != http.StatusSeeOther || loc == nil || !strings.HasPrefix(loc.String(), op.issuer) || loc.Query().Get("id_token_hint") == "" {
						t.Fatalf("%d Location %q", res.StatusCode, res.Header.Get("Location"))
					}
					if cs := e.sessionCookies(c); len(cs) != 0 {
						t.Fatalf("session cookies left: %v", cs)
					}
					if rdb != nil && len(storedSessions(t, rdb)) != 0 {
						t.Fatalf("sessions left in Redis: %v", storedSessions(t, rdb))
					}
					if res, _ := get(t, c, e.srv.URL+"/orders", false); res.StatusCode != http.StatusUnauthorized {
						t.Fatalf("after logout: %d", res.StatusCode)
					}
				})
			}
		})
	}
}
