package gateway

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

func adminGet(t *testing.T, base, path, host, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+path, nil)
	if host != "" {
		req.Host = host
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The admin API answers only requests addressed to it (DNS rebinding: a
// page from another name resolved to the admin address is refused) and,
// with a token, only requests that carry it; the probes stay open. Before
// the fix any Host and no token were answered.
func TestAdminGuard(t *testing.T) {
	t.Setenv("CW_ADMIN_TOKEN", "s3cret-admin-token")
	up := echoUpstream(t, "a")
	cfg := func(admin string) string {
		return listenHeader + admin + fmt.Sprintf("upstreams:\n  a: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: a}\n", hostPort(up))
	}
	te := startEdge(t, cfg("admin: {allowed_hosts: [admin.internal, \"*.ops.example\"]}\n"))
	port := te.admin[strings.LastIndex(te.admin, ":"):]
	for _, tt := range []struct {
		name, host string
		want       int
	}{
		{"IP literal", "", 200},
		{"localhost", "localhost" + port, 200},
		{"LOCALHOST, trailing dot", "LOCALHOST." + port, 200},
		{"IPv6 literal", "[::1]" + port, 200},
		{"listed name", "admin.internal" + port, 200},
		{"listed wildcard", "a.ops.example", 200},
		{"rebinding name", "evil.example" + port, 403},
		{"wildcard apex is not a subdomain", "ops.example", 403},
		{"suffix trick", "admin.internal.evil.example", 403},
		{"empty host", " ", 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, path := range []string{"/config", "/metrics", "/healthz"} {
				if code, body := adminGet(t, te.admin, path, tt.host, ""); code != tt.want {
					t.Fatalf("%s with Host %q: %d %.200s", path, tt.host, code, body)
				}
			}
		})
	}

	t.Run("token", func(t *testing.T) {
		writeFile(t, te.path, cfg("admin: {token_env: CW_ADMIN_TOKEN}\n"))
		waitFor(t, func() bool { c, _ := adminGet(t, te.admin, "/config", "", ""); return c == 401 })
		for _, tt := range []struct {
			path, token string
			want        int
		}{
			{"/config", "", 401},
			{"/config", "wrong", 401},
			{"/config", "s3cret-admin-token-and-more", 401},
			{"/config", "s3cret-admin-token", 200},
			{"/metrics", "", 401},
			{"/metrics", "s3cret-admin-token", 200},
			{"/healthz", "", 200},
			{"/readyz", "", 200},
		} {
			code, body := adminGet(t, te.admin, tt.path, "", tt.token)
			if code != tt.want {
				t.Fatalf("%s token %q: %d %.200s", tt.path, tt.token, code, body)
			}
			if code == 401 && !strings.Contains(body, `"status": 401`) && !strings.Contains(body, `"status":401`) {
				t.Fatalf("401 without the JSON error body: %s", body)
			}
		}
		if _, body := adminGet(t, te.admin, "/config", "", "s3cret-admin-token"); strings.Contains(body, "s3cret") {
			t.Fatal("/config shows the token")
		}
	})

	t.Run("token variable unset opens nothing", func(t *testing.T) {
		writeFile(t, te.path, cfg("admin: {token_env: CW_ADMIN_TOKEN_UNSET}\n"))
		waitFor(t, func() bool { c, _ := adminGet(t, te.admin, "/config", "", "s3cret-admin-token"); return c == 401 })
		if code, _ := adminGet(t, te.admin, "/config", "", ""); code != 401 {
			t.Fatalf("empty token accepted: %d", code)
		}
	})
}
