package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestAuthForwardedTrailersDropped: a client cannot state, after its body,
// a header the edge's authenticators state for the upstream (here a JWT's
// forward_claims, X-User-Id and X-User-Email). The set removes client
// copies from the header on every route; a trailer of the same name would
// otherwise be the only X-User-Id an upstream sees on a route without auth,
// or on an authenticated one whose token has no email claim, and a service
// or framework merging trailers into the header would take it for the
// edge's. Checked on the wire of the upstream, over HTTP/1.1 and h2c, and
// with server.allow_underscore_headers, where X_User_Id is the same name
// to a CGI-style service.
func TestAuthForwardedTrailersDropped(t *testing.T) {
	u := startTrailerUpstream(t, false)
	secret := strings.Repeat("k", 32)
	t.Setenv("CAUSEWAY_TEST_HMAC", secret)
	cfg := `authenticators:
  users:
    jwt: {issuer: https://id.test/, audiences: [api], hmac_secret_env: CAUSEWAY_TEST_HMAC, algorithms: [HS256], forward_claims: {sub: X-User-Id, email: X-User-Email}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: open, match: {path_prefix: /open}, upstream: u}
  - {name: api, match: {path_prefix: /api}, auth: users, upstream: u}
`
	edges := map[string]*testEdge{
		"default":     startEdge(t, listenHeader+fmt.Sprintf(cfg, u.addr)),
		"underscores": startEdge(t, listenHeader+"server: {allow_underscore_headers: true}\n"+fmt.Sprintf(cfg, u.addr)),
	}
	tok := signHS256(t, secret, jwt.MapClaims{
		"iss": "https://id.test/", "aud": "api", "sub": "user-7", "exp": time.Now().Add(time.Hour).Unix(),
	})
	h2c := trailerH2CClient()
	t.Cleanup(h2c.CloseIdleConnections)

	cases := []struct {
		name, edge, path string
		h1Only           bool
		tc               trailerCase
		// wantHeader is the X-User-Id line the upstream's head must carry
		// ("" for none).
		wantHeader string
	}{
		{name: "route without auth", edge: "default", path: "/open/x",
			tc: trailerCase{announce: "X-User-Id, X-User-Email, X-Check", fields: []string{"X-User-Id: admin", "X-User-Email: root@evil", "X-Check: 1"},
				wantAnnounced: "X-Check", wantSection: "X-Check: 1"}},
		{name: "authenticated, a claim the token lacks", edge: "default", path: "/api/x",
			tc: trailerCase{announce: "X-User-Id, X-User-Email, X-Check", fields: []string{"X-User-Id: admin", "X-User-Email: root@evil", "X-Check: 1"},
				wantAnnounced: "X-Check", wantSection: "X-Check: 1"},
			wantHeader: "X-User-Id: user-7"},
		{name: "other case", edge: "default", path: "/open/x",
			tc: trailerCase{announce: "x-user-email, X-Check", fields: []string{"x-user-email: root@evil", "X-Check: 1"},
				wantAnnounced: "X-Check", wantSection: "X-Check: 1"}},
		{name: "underscored names, allowed by the server", edge: "underscores", path: "/open/x", h1Only: true,
			tc: trailerCase{announce: "X_User_Id, x_user-email, X-Check", fields: []string{"X_User_Id: admin", "x_user-email: root@evil", "X-Check: 1"},
				wantAnnounced: "X-Check", wantSection: "X-Check: 1"}},
	}
	for i, c := range cases {
		for _, front := range []string{"HTTP/1.1", "h2c"} {
			if c.h1Only && front != "HTTP/1.1" {
				continue
			}
			t.Run(c.name+"/"+front, func(t *testing.T) {
				e := edges[c.edge]
				id := fmt.Sprintf("a%d-%s", i, sanitizeID(front))
				got := sendTrailerCase(t, u, e.url, h2c, front, id, c.path, "Authorization: Bearer "+tok, c.tc)
				for _, bad := range []string{"admin", "root@evil"} {
					if strings.Contains(got[0], bad) {
						t.Errorf("the upstream received the client's %q:\n%s", bad, got[0])
					}
				}
				if c.wantHeader != "" && !strings.Contains(got[0], "\r\n"+c.wantHeader+"\r\n") {
					t.Errorf("the upstream's head lacks %q:\n%s", c.wantHeader, got[0])
				}
			})
		}
	}
}

// TestAuthCredentialTrailersDropped: a client that authenticates with a
// credential in a header (an API key) or a cookie (a JWT) cannot send a
// second one after its body. The edge removes the verified credential from
// the header (or, with keep_token, passes that one on); a trailer of the
// same name would reach the upstream as a credential the edge never
// verified, which a service or framework merging trailers into the header
// takes for the client's. Checked on the upstream's wire, over HTTP/1.1
// and h2c, with keep_token on and off, and under a '_' spelling.
func TestAuthCredentialTrailersDropped(t *testing.T) {
	u := startTrailerUpstream(t, false)
	secret := strings.Repeat("k", 32)
	t.Setenv("CAUSEWAY_TEST_HMAC", secret)
	sum := sha256.Sum256([]byte("good-key"))
	keys := filepath.Join(t.TempDir(), "keys.txt")
	writeFile(t, keys, "acme:"+hex.EncodeToString(sum[:])+"\n")
	cfg := `authenticators:
  partners: {api_key: {keys_file: %[2]q}}
  kept: {api_key: {keys_file: %[2]q, header: X-Kept-Key, keep_token: true}}
  users:
    jwt: {issuer: https://id.test/, audiences: [api], hmac_secret_env: CAUSEWAY_TEST_HMAC, algorithms: [HS256], from: {cookie: session}}
upstreams:
  u: {endpoints: [%[1]q]}
routes:
  - {name: keys, match: {path_prefix: /keys}, auth: partners, upstream: u}
  - {name: kept, match: {path_prefix: /kept}, auth: kept, upstream: u}
  - {name: cookie, match: {path_prefix: /cookie}, auth: users, upstream: u}
`
	edges := map[string]*testEdge{
		"default":     startEdge(t, listenHeader+fmt.Sprintf(cfg, u.addr, keys)),
		"underscores": startEdge(t, listenHeader+"server: {allow_underscore_headers: true}\n"+fmt.Sprintf(cfg, u.addr, keys)),
	}
	tok := signHS256(t, secret, jwt.MapClaims{
		"iss": "https://id.test/", "aud": "api", "sub": "user-7", "exp": time.Now().Add(time.Hour).Unix(),
	})
	h2c := trailerH2CClient()
	t.Cleanup(h2c.CloseIdleConnections)

	cases := []struct {
		name, edge, path, header string
		h1Only                   bool
		tc                       trailerCase
	}{
		{name: "api key", edge: "default", path: "/keys/x", header: "X-Api-Key: good-key",
			tc: trailerCase{announce: "X-Api-Key, X-Check", fields: []string{"X-Api-Key: forged-key", "X-Check: 1"},
				wantAnnounced: "X-Check", wantSection: "X-Check: 1"}},
		{name: "api key kept", edge: "default", path: "/kept/x", header: "X-Kept-Key: good-key",
			tc: trailerCase{announce: "X-Kept-Key, X-Check", fields: []string{"X-Kept-Key: forged-key", "X-Check: 1"},
				wantAnnounced: "X-Check", wantSection: "X-Check: 1"}},
		{name: "api key underscored", edge: "underscores", path: "/keys/x", header: "X-Api-Key: good-key", h1Only: true,
			tc: trailerCase{announce: "X_Api_Key, X-Check", fields: []string{"X_Api_Key: forged-key", "X-Check: 1"},
				wantAnnounced: "X-Check", wantSection: "X-Check: 1"}},
		{name: "token cookie", edge: "default", path: "/cookie/x", header: "Cookie: session=" + tok,
			tc: trailerCase{announce: "Cookie, X-Check", fields: []string{"Cookie: session=forged-key", "X-Check: 1"},
				wantAnnounced: "X-Check", wantSection: "X-Check: 1"}},
	}
	for i, c := range cases {
		for _, front := range []string{"HTTP/1.1", "h2c"} {
			if c.h1Only && front != "HTTP/1.1" {
				continue
			}
			t.Run(c.name+"/"+front, func(t *testing.T) {
				e := edges[c.edge]
				id := fmt.Sprintf("c%d-%s", i, sanitizeID(front))
				got := sendTrailerCase(t, u, e.url, h2c, front, id, c.path, c.header, c.tc)
				if strings.Contains(got[0], "forged-key") {
					t.Errorf("the upstream received the client's second credential:\n%s", got[0])
				}
			})
		}
	}
}

// sendTrailerCase sends tc's request to path with one more header field
// ("Name: value") over front (HTTP/1.1 raw, or h2c), checks it was
// answered 200 and reached the upstream once with the trailer tc wants,
// and returns what the upstream received.
func sendTrailerCase(t *testing.T, u *trailerUpstream, url string, h2c *http.Client, front, id, path, header string, tc trailerCase) []string {
	t.Helper()
	var status int
	if front == "HTTP/1.1" {
		raw := h1TrailerRequest(id, tc)
		raw = strings.Replace(raw, "POST /t ", "POST "+path+" ", 1)
		raw = strings.Replace(raw, "\r\n", "\r\n"+header+"\r\n", 1)
		status, _ = trailerExchange(t, strings.TrimPrefix(url, "http://"), raw)
	} else {
		req := h2TrailerRequest(t, url, id, tc, false)
		req.URL.Path = path
		k, v, _ := strings.Cut(header, ": ")
		req.Header.Set(k, v)
		res, err := h2c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		status = res.StatusCode
	}
	return checkTrailerReceived(t, u, id, status, tc)
}

// checkTrailerReceived checks that the request id was answered 200 and
// reached the upstream once, with the Trailer header and trailer section
// tc wants, and returns what the upstream received.
func checkTrailerReceived(t *testing.T, u *trailerUpstream, id string, status int, tc trailerCase) []string {
	t.Helper()
	got := u.received(id)
	if status != http.StatusOK || len(got) != 1 {
		t.Fatalf("status %d, the upstream received %d requests: %q", status, len(got), got)
	}
	announced, section := upstreamTrailer(got[0])
	if announced != tc.wantAnnounced || section != tc.wantSection {
		t.Errorf("upstream's Trailer header %q, trailer section %q; want %q and %q\n%s", announced, section, tc.wantAnnounced, tc.wantSection, got[0])
	}
	return got
}
