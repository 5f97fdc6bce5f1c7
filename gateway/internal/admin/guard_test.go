package admin

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/causewayhq/causeway/routes"
)

func TestHostAllowed(t *testing.T) {
	t.Parallel()
	allowed := []string{"admin.internal", "*.ops.example"}
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"127.0.0.1:9901", true},
		{"[::1]:9901", true},
		{"localhost:9901", true},
		{"LOCALHOST.", true},
		{"admin.internal:9901", true},
		{"Admin.Internal", true},
		{"a.ops.example", true},
		{"ops.example", false}, // the wildcard needs a label before it
		{"evil.example:9901", false},
		{"admin.internal.evil.example", false},
		{"", false},
		{":9901", false},
	} {
		if got := hostAllowed(tc.host, allowed); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.host, got, tc.want)
		}
	}
}

func TestGuardToken(t *testing.T) {
	t.Setenv("CW_TEST_ADMIN_TOKEN", "tok")
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	for _, tc := range []struct {
		name, env, path, auth string
		want                  int
	}{
		{"no token configured", "", "/config", "", 200},
		{"token given", "CW_TEST_ADMIN_TOKEN", "/config", "Bearer tok", 200},
		{"token missing", "CW_TEST_ADMIN_TOKEN", "/config", "", 401},
		{"token wrong", "CW_TEST_ADMIN_TOKEN", "/config", "Bearer nope", 401},
		{"probe open", "CW_TEST_ADMIN_TOKEN", "/readyz", "", 200},
		{"unset variable opens nothing", "CW_TEST_UNSET_ADMIN_TOKEN", "/config", "Bearer ", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := Guard(ok, func() routes.AdminAccess { return routes.AdminAccess{TokenEnv: tc.env} })
			r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:9901"+tc.path, nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d", w.Code, tc.want)
			}
		})
	}
}
