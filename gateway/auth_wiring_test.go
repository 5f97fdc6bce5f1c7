package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Auth, rate limits and readiness as wired into the edge: a JWT route, a
// JWKS-backed authenticator whose endpoint is down (the edge starts, /readyz
// says why), and a reload that fails after the authenticators were built
// (the active ones stay in charge).
func TestEdgeAuthWiring(t *testing.T) {
	up := echoUpstream(t, "a")
	t.Setenv("CAUSEWAY_TEST_HMAC", strings.Repeat("k", 32))
	down := freeAddr(t)
	cfg := listenHeader + fmt.Sprintf(`authenticators:
  users:
    jwt: {issuer: https://id.test/, audiences: [api], hmac_secret_env: CAUSEWAY_TEST_HMAC, algorithms: [HS256], forward_claims: {sub: X-User-Id}}
  idp:
    jwt: {jwks_url: "http://%s/jwks.json", algorithms: [RS256]}
rate_limits:
  per-user: {key: "claim:sub", limit: 2, per: 1m}
upstreams:
  a: {endpoints: [%q]}
routes:
  - {name: api, match: {path_prefix: /api}, auth: users, require_claims: {scope: read}, rate_limit: per-user, upstream: a}
  - {name: sso, match: {path_prefix: /sso}, auth: idp, upstream: a}
`, down, hostPort(up))
	te := startEdge(t, cfg)

	token := func(scope string) string {
		return "Bearer " + signHS256(t, strings.Repeat("k", 32), jwt.MapClaims{
			"iss": "https://id.test/", "aud": "api", "sub": "user-7", "scope": scope,
			"exp": time.Now().Add(time.Hour).Unix(),
		})
	}

	resp, _ := get(t, te.url+"/api/x")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("no token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if resp, _ := get(t, te.url+"/api/x", "Authorization", token("write")); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("missing scope: %d", resp.StatusCode)
	}
	resp, body := get(t, te.url+"/api/x", "Authorization", token("read other"), "X-User-Id", "admin")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("valid token: %d %s", resp.StatusCode, body)
	}
	e := decodeEcho(t, body)
	if e.Header.Get("X-User-Id") != "user-7" || e.Header.Get("Authorization") != "" {
		t.Fatalf("upstream saw X-User-Id %q, Authorization %q", e.Header.Get("X-User-Id"), e.Header.Get("Authorization"))
	}
	// The limit is per subject: the third request of user-7 in a minute is refused.
	get(t, te.url+"/api/x", "Authorization", token("read"))
	if resp, _ := get(t, te.url+"/api/x", "Authorization", token("read")); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third request: %d", resp.StatusCode)
	}

	resp, body = get(t, te.admin+"/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "idp") {
		t.Fatalf("readyz with the JWKS down: %d %s", resp.StatusCode, body)
	}

	// A file whose authenticators build but whose routes do not.
	writeFile(t, te.path, cfg+"  - {name: bad, match: {path_prefix: /bad}, upstream: nope}\n")
	waitFor(t, func() bool { return !te.LastReload().OK })
	if resp, _ := get(t, te.url+"/api/x", "Authorization", token("read"), "X-Forwarded-For", "1"); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("after a refused reload the active limits changed: %d", resp.StatusCode)
	}
	if resp, _ := get(t, te.admin+"/readyz"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readiness no longer reports the active authenticators: %d", resp.StatusCode)
	}
	_, metrics := get(t, te.admin+"/metrics")
	for _, want := range []string{`causeway_auth_failures_total{authenticator="users"`, `causeway_ratelimit_decisions_total{decision="limited",limit="per-user"} 2`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// signHS256 signs claims with secret (HS256), as the test routes' JWT
// authenticators expect.
func signHS256(t testing.TB, secret string, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
