package gateway

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/causewayhq/causeway/mesh/meshtest"
)

// TestCallerTokenCarriesEveryAuthenticatorsHeaders: the caller token
// carries the headers the edge forwards for the principal whichever
// authenticator found it: a JWT's forward_claims, basic auth's
// forward_user, ext_authz's upstream_headers and forward_claims, an API
// key's forward_name. A sidecar whose inbound.callers.headers lists them
// removes every copy it did not read from a verified token, so a header
// left out of the token never reached the service: the user of a basic or
// ext_authz route arrived as nobody. A client's own copy never counts.
func TestCallerTokenCarriesEveryAuthenticatorsHeaders(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	svcSeen := &seen{}
	svc := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		svcSeen.add(r)
		_, _ = io.WriteString(w, "ok\n")
	})
	ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
	sc := startSidecar(t, fmt.Sprintf(`version: 1
identity: {cert_file: %q, key_file: %q, bundle_file: %q}
access_log: {output: "off"}
admin: "127.0.0.1:0"
inbound:
  listen: "127.0.0.1:0"
  forward_to: %q
  allow: [%q]
  callers: {issuers: [%q], headers: [X-User-Id, X-Tenant, X-Staff, X-Sso-User, X-Sso-Tenant, X-Partner]}
`, ordersFiles.Cert, ordersFiles.Key, ordersFiles.Bundle, svc, edgeID, edgeID))

	authz := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		if user, ok := strings.CutPrefix(r.Header.Get("Cookie"), "session="); ok {
			w.Header().Set("X-Sso-User", user)
			w.Header().Set("X-Sso-T", "t-"+user)
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
	})
	secret := strings.Repeat("k", 32)
	t.Setenv("CAUSEWAY_TEST_HMAC", secret)
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir+"/htpasswd", "bob:"+string(hash)+"\n")
	writeFile(t, dir+"/keys", "carol:"+sha("carol-key")+"\n")
	edgeFiles := ca.IssueFiles(t.TempDir(), edgeID)
	e := startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
mesh: {trust_domain: example.org, cert_file: %q, key_file: %q, bundle_file: %q, caller_token: {}}
authenticators:
  users:
    jwt: {issuer: https://id.test/, audiences: [api], hmac_secret_env: CAUSEWAY_TEST_HMAC, algorithms: [HS256], forward_claims: {sub: X-User-Id, tenant: X-Tenant}}
  staff:
    basic: {htpasswd_file: %q, forward_user: X-Staff}
  sso:
    ext_authz: {http_url: %q, timeout: 10s, headers: [Cookie], upstream_headers: [X-Sso-User], claims_from_headers: {X-Sso-User: sub, X-Sso-T: tenant}, forward_claims: {tenant: X-Sso-Tenant}}
  partners:
    api_key: {keys_file: %q, forward_name: X-Partner}
upstreams:
  orders: {endpoints: [%q], mesh_identity: %q}
routes:
  - {name: jwt, match: {path_prefix: /jwt}, upstream: orders, auth: users}
  - {name: basic, match: {path_prefix: /basic}, upstream: orders, auth: staff}
  - {name: sso, match: {path_prefix: /sso}, upstream: orders, auth: sso}
  - {name: key, match: {path_prefix: /key}, upstream: orders, auth: partners}
`, edgeFiles.Cert, edgeFiles.Key, edgeFiles.Bundle, dir+"/htpasswd", "http://"+authz+"/verify", dir+"/keys", sc.Addr("inbound"), ordersID))

	tok := signHS256(t, secret, jwt.MapClaims{
		"iss": "https://id.test/", "aud": "api", "sub": "alice", "tenant": "t-alice", "exp": time.Now().Add(time.Hour).Unix(),
	})
	owned := []string{"X-User-Id", "X-Tenant", "X-Staff", "X-Sso-User", "X-Sso-Tenant", "X-Partner"}
	for _, tc := range []struct {
		name, path string
		header     []string
		want       map[string]string // of owned: the rest must be absent
	}{
		{"jwt", "/jwt/1", []string{"Authorization", "Bearer " + tok}, map[string]string{"X-User-Id": "alice", "X-Tenant": "t-alice"}},
		{"basic", "/basic/1", []string{"Authorization", "Basic " + basic("bob", "pw")}, map[string]string{"X-Staff": "bob"}},
		{"ext_authz", "/sso/1", []string{"Cookie", "session=dave"}, map[string]string{"X-Sso-User": "dave", "X-Sso-Tenant": "t-dave"}},
		{"api key", "/key/1", []string{"X-API-Key", "carol-key"}, map[string]string{"X-Partner": "carol"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, e.url+tc.path, nil)
			req.Header.Set(tc.header[0], tc.header[1])
			for _, k := range owned {
				req.Header.Set(k, "forged") // a client's copy never counts
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			got := svcSeen.last(t)
			for _, k := range owned {
				if got.Get(k) != tc.want[k] {
					t.Errorf("the service got %s %q, want %q", k, got.Get(k), tc.want[k])
				}
			}
		})
	}
}

func basic(user, pw string) string {
	req, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	req.SetBasicAuth(user, pw)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}
