package headers

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/plugins/plugintest"
)

func TestConfigErrors(t *testing.T) {
	tests := []struct{ desc, config, want string }{
		{"nothing to do", "", "plugins.p.config: nothing to do"},
		{"empty sections", "request: {}\nresponse: {}", "nothing to do"},
		{"unknown op", "request: { replace: { A: b } }", "plugins.p.config.request.replace: unknown key"},
		{"bad name", "request: { set: { \"X A\": b } }", `set "X A": not a header name`},
		{"framing header", "response: { remove: [content-length] }", "framing and connection headers"},
		{"host", "request: { set: { Host: evil } }", "framing and connection headers"},
		{"CRLF in value", "response: { set: { X-A: \"a\\r\\nSet-Cookie: x=1\" } }", "cannot contain CR, LF or NUL"},
		{"wrong type", "request: { remove: X-A }", "expected a list"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if got := plugintest.ConfigError(t, "headers", tt.config); !strings.Contains(got, tt.want) {
				t.Fatalf("error %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHeaders(t *testing.T) {
	inst := plugintest.MustNew(t, "headers", `request:
  set: { x-env: prod, X-Forwarded-Proto: https }
  add: { X-Tag: edge }
  remove: [Cookie, x-debug]
response:
  set: { Strict-Transport-Security: "max-age=63072000", Server: causeway }
  add: { Vary: Accept-Language }
  remove: [X-Powered-By]`)
	var seen http.Header
	h := inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		w.Header().Set("X-Powered-By", "php")
		w.Header().Set("Server", "apache")
		w.Header().Set("Vary", "Accept")
		w.WriteHeader(http.StatusCreated)
	}))
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("X-Env", "dev")
	r.Header.Set("X-Tag", "client")
	r.Header.Set("Cookie", "session=1")
	r.Header.Set("X-Debug", "1")
	r.Header.Set("X-Keep", "1")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)

	reqWant := map[string][]string{
		"X-Env":             {"prod"},
		"X-Forwarded-Proto": {"https"},
		"X-Tag":             {"client", "edge"},
		"Cookie":            nil,
		"X-Debug":           nil,
		"X-Keep":            {"1"},
	}
	for k, v := range reqWant {
		t.Run("request "+k, func(t *testing.T) {
			if got := seen.Values(k); !slices.Equal(got, v) {
				t.Fatalf("%s = %q, want %q", k, got, v)
			}
		})
	}
	if r.Header.Get("X-Env") != "dev" || r.Header.Get("Cookie") == "" {
		t.Fatal("the caller's request was modified in place")
	}
	resWant := map[string][]string{
		"Strict-Transport-Security": {"max-age=63072000"},
		"Server":                    {"causeway"},
		"Vary":                      {"Accept", "Accept-Language"},
		"X-Powered-By":              nil,
	}
	for k, v := range resWant {
		t.Run("response "+k, func(t *testing.T) {
			if got := rec.Header().Values(k); !slices.Equal(got, v) {
				t.Fatalf("%s = %q, want %q", k, got, v)
			}
		})
	}
	if rec.Code != 201 {
		t.Fatalf("status %d", rec.Code)
	}
}
