package test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The admin API's /config shows the running configuration with every
// credential masked, wherever the file put it: in a URL's userinfo or
// query (jwks_url, redis.url) and as a static credential-bearing header in
// a plugin's config. Before the fix only redis.url was masked: the JWKS
// URL's password and query token and the headers plugin's Authorization
// value were shown as written.
func TestConfigShowsNoCredentials(t *testing.T) {
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"keys":[]}`)
	}))
	t.Cleanup(jwks.Close)
	host := strings.TrimPrefix(jwks.URL, "http://")
	e := startEdge(t, header+fmt.Sprintf(`redis: {url: "redis://ops:hunter2-redis@127.0.0.1:1/0", on_error: allow}
authenticators:
  users:
    jwt:
      issuer: https://id.example.com/
      audiences: [api]
      algorithms: [RS256]
      jwks_url: "http://idp:hunter2-jwks@%s/jwks?api_key=hunter2-query&tenant=acme"
plugins:
  creds:
    use: headers
    config:
      request:
        set: {Authorization: "Bearer hunter2-bearer", X-Api-Key: "hunter2-apikey", Cookie: "sid=hunter2-cookie", X-Service-Token: "hunter2-token", X-Plain: "shown"}
upstreams:
  u: {endpoints: ["127.0.0.1:1"]}
routes:
  - {name: r, match: {path_prefix: /}, plugins: [creds], upstream: u}
`, host))
	resp, err := http.Get("http://" + e.Addr("admin") + "/config")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/config: %d %s", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "hunter2") {
		t.Fatalf("/config shows a credential:\n%s", body)
	}
	for _, want := range []string{"idp:REDACTED@", "tenant=acme", `"X-Plain": "shown"`, "REDACTED"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/config lacks %q:\n%s", want, body)
		}
	}
}
