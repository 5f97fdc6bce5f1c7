package cors

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/plugins/plugintest"
)

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		desc, config, want string
	}{
		{"no config", "", "plugins.p.config.allow_origins: allow_origins is required"},
		{"unknown key", "allow_origins: ['*']\nallow_origin: x", "plugins.p.config.allow_origin: unknown key (did you mean \"allow_origins\"?)"},
		{"origin with a path", "allow_origins: ['https://a.example.com/app']", "an origin has no path"},
		{"not an origin", "allow_origins: ['app.example.com']", "not an origin"},
		{"null origin", "allow_origins: ['null']", `origin "null"`},
		{"wildcard in the middle", "allow_origins: ['https://a.*.example.com']", "wildcard must be the first label"},
		{"wildcard over a TLD", "allow_origins: ['https://*.com']", "at least two labels"},
		{"any origin with credentials", "allow_origins: ['*']\nallow_credentials: true", "plugins.p.config.allow_credentials: allow_credentials cannot be combined"},
		{"bad method", "allow_origins: ['*']\nallow_methods: ['GET POST']", "is not an HTTP method"},
		{"bad header", "allow_origins: ['*']\nallow_headers: ['X:Y']", "is not a header name"},
		{"expose * with credentials", "allow_origins: ['https://a.example.com']\nallow_credentials: true\nexpose_headers: ['*']", "literal header name"},
		{"bad max_age", "allow_origins: ['*']\nmax_age: forever", "invalid duration"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			got := plugintest.ConfigError(t, "cors", tt.config)
			if !strings.Contains(got, tt.want) || !strings.Contains(got, plugintest.File+":") {
				t.Fatalf("error %q, want it located and containing %q", got, tt.want)
			}
		})
	}
}

const cfg = `allow_origins: ["https://app.example.com", "https://*.example.org", "http://localhost:3000", "https://x.example.net:443"]
allow_methods: [GET, PUT, DELETE]
allow_headers: [Content-Type, X-Token]
expose_headers: [X-Total]
allow_credentials: true
max_age: 10m`

func TestPreflight(t *testing.T) {
	inst := plugintest.MustNew(t, "cors", cfg)
	reached := false
	h := inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached = true }))
	tests := []struct {
		desc, origin, method, headers string
		wantStatus                    int
		wantAllowHeaders              string
	}{
		{"allowed", "https://app.example.com", "PUT", "content-type, x-token", 204, "content-type, x-token"},
		{"safelisted method is always allowed", "https://app.example.com", "POST", "", 204, ""},
		{"wildcard subdomain", "https://api.example.org", "GET", "", 204, ""},
		{"deep wildcard subdomain", "https://a.b.example.org", "GET", "", 204, ""},
		{"default port in config", "https://x.example.net", "GET", "", 204, ""},
		{"port must match", "http://localhost:3000", "GET", "", 204, ""},
		{"disallowed origin", "https://evil.example.com", "PUT", "", 403, ""},
		{"other port", "http://localhost:3001", "GET", "", 403, ""},
		{"wildcard needs a label", "https://example.org", "GET", "", 403, ""},
		{"wildcard scheme must match", "http://api.example.org", "GET", "", 403, ""},
		{"suffix trick", "https://evilexample.org", "GET", "", 403, ""},
		{"disallowed method", "https://app.example.com", "PATCH", "", 403, ""},
		{"disallowed header", "https://app.example.com", "PUT", "x-other", 403, ""},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			reached = false
			r := httptest.NewRequest(http.MethodOptions, "/orders", nil)
			r.Header.Set("Origin", tt.origin)
			r.Header.Set("Access-Control-Request-Method", tt.method)
			if tt.headers != "" {
				r.Header.Set("Access-Control-Request-Headers", tt.headers)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if reached {
				t.Fatal("a preflight reached the upstream")
			}
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d (body %s)", rec.Code, tt.wantStatus, rec.Body)
			}
			got := rec.Header()
			if tt.wantStatus != 204 {
				if got.Get("Access-Control-Allow-Origin") != "" {
					t.Fatal("refused preflight carries Access-Control-Allow-Origin")
				}
				if !strings.Contains(rec.Body.String(), `"status":403`) {
					t.Fatalf("refusal body %q is not the JSON error", rec.Body)
				}
				return
			}
			want := map[string]string{
				"Access-Control-Allow-Origin":      tt.origin,
				"Access-Control-Allow-Credentials": "true",
				"Access-Control-Allow-Methods":     "GET, PUT, DELETE",
				"Access-Control-Max-Age":           "600",
				"Access-Control-Allow-Headers":     tt.wantAllowHeaders,
			}
			for k, v := range want {
				if got.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, got.Get(k), v)
				}
			}
			if vary := strings.Join(got.Values("Vary"), ","); !strings.Contains(vary, "Origin") || !strings.Contains(vary, "Access-Control-Request-Headers") {
				t.Errorf("Vary = %q", vary)
			}
		})
	}
}

func TestActualRequest(t *testing.T) {
	inst := plugintest.MustNew(t, "cors", cfg)
	h := inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An upstream with its own, contradicting CORS policy.
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("X-Total", "3")
		w.Write([]byte("ok"))
	}))
	tests := []struct {
		desc, method, origin, wantACAO string
	}{
		{"allowed origin", "GET", "https://app.example.com", "https://app.example.com"},
		{"OPTIONS without request method is not a preflight", "OPTIONS", "https://app.example.com", "https://app.example.com"},
		{"no origin: not CORS", "GET", "", "*"},
		{"disallowed origin passes without our headers", "GET", "https://evil.example.com", "*"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "/orders", nil)
			if tt.origin != "" {
				r.Header.Set("Origin", tt.origin)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != 200 || rec.Body.String() != "ok" {
				t.Fatalf("status %d body %q", rec.Code, rec.Body)
			}
			if got := rec.Header().Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != tt.wantACAO {
				t.Fatalf("Access-Control-Allow-Origin = %q, want [%q]", got, tt.wantACAO)
			}
			if !strings.Contains(strings.Join(rec.Header().Values("Vary"), ","), "Origin") {
				t.Fatal("no Vary: Origin on a response that depends on it")
			}
			if tt.wantACAO != "*" && rec.Header().Get("Access-Control-Expose-Headers") != "X-Total" {
				t.Fatalf("Expose-Headers = %q", rec.Header().Get("Access-Control-Expose-Headers"))
			}
		})
	}
}

func TestAnyOrigin(t *testing.T) {
	inst := plugintest.MustNew(t, "cors", "allow_origins: ['*']\nallow_methods: ['*']\nallow_headers: ['*']")
	h := inst.Wrap(http.NotFoundHandler())
	tests := []struct {
		desc, method, headers string
		wantStatus            int
	}{
		{"any method is echoed", "PROPFIND", "x-a", 204},
		{"* does not cover authorization", "GET", "authorization", 403},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodOptions, "/", nil)
			r.Header.Set("Origin", "https://anyone.example")
			r.Header.Set("Access-Control-Request-Method", tt.method)
			r.Header.Set("Access-Control-Request-Headers", tt.headers)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d", rec.Code, tt.wantStatus)
			}
			if tt.wantStatus == 204 {
				if rec.Header().Get("Access-Control-Allow-Origin") != "*" || rec.Header().Get("Access-Control-Allow-Methods") != tt.method {
					t.Fatalf("headers %v", rec.Header())
				}
				if len(rec.Header().Values("Vary")) == 0 {
					t.Fatal("preflight answer without Vary")
				}
			}
		})
	}
}
