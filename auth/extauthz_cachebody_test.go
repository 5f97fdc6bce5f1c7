package auth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// TestExtAuthzCacheNeverServesABody: with body and cache both set, a
// cached allow served every later request of the same key without the
// server seeing its body: a policy that reads the body allowed one "ok"
// and then let any body through (no cache key can cover a body). Requests
// carrying a body are checked every time; those without one still use
// the cache.
func TestExtAuthzCacheNeverServesABody(t *testing.T) {
	srv := newAuthzServer(t, func(req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		if b := req.GetAttributes().GetRequest().GetHttp().GetRawBody(); len(b) > 0 && string(b) != "ok" {
			return deniedResponse(typev3.StatusCode_Forbidden, "bad body"), nil
		}
		return okResponse(nil, nil, nil), nil
	})
	f := parse(t, extAuthzYAML(grpcTarget(srv), "\n      body: {max_bytes: 64}\n      cache: {ttl: 1m, key: [header:Authorization]}"),
		`{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
	h, up := handler(t, testSet(t, f, Options{}), f, 0)
	for _, step := range []struct {
		name, method, body string
		status             int
		calls              int64 // the server's calls so far
	}{
		{"allowed body", http.MethodPost, "ok", 204, 1},
		{"another body, same key", http.MethodPost, "evil", 403, 2},
		{"the allowed body again", http.MethodPost, "ok", 204, 3},
		{"no body", http.MethodGet, "", 204, 4},
		{"no body, from the cache", http.MethodGet, "", 204, 4},
		{"a body after a cached bodiless allow", http.MethodPost, "evil", 403, 5},
	} {
		t.Run(step.name, func(t *testing.T) {
			up.calls = 0
			var r *http.Request
			if step.body == "" {
				r = httptest.NewRequest(step.method, "/", nil)
			} else {
				r = httptest.NewRequest(step.method, "/", strings.NewReader(step.body))
			}
			r.Header.Set("Authorization", "Bearer t")
			w := recorder(h, r)
			if w.Code != step.status || srv.calls.Load() != step.calls {
				t.Fatalf("status %d after %d checks, want %d after %d", w.Code, srv.calls.Load(), step.status, step.calls)
			}
			if step.status != 204 && up.calls != 0 {
				t.Fatal("the refused request reached the upstream")
			}
		})
	}
}
