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

// headerOnly is a ResponseWriter that keeps one header map, cleared between
// requests, so that what a request allocates is the plugin's alone.
type headerOnly struct {
	h      http.Header
	status int
}

func (w *headerOnly) Header() http.Header         { return w.h }
func (w *headerOnly) Write(b []byte) (int, error) { return len(b), nil }
func (w *headerOnly) WriteHeader(code int)        { w.status = code }

// The response edit is one function for every request, not a closure per
// request: a response-only instance allocates the hook's writer and the
// set value's slice, nothing more. Instances serving concurrently still
// each edit only their own response.
func TestResponseEditPerRequest(t *testing.T) {
	inst := plugintest.MustNew(t, "headers", `response:
  set: { Server: causeway }`)
	h := inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Req", r.Header.Get("X-Req"))
		w.Header()["Server"] = []string{"upstream"}
		w.WriteHeader(http.StatusOK)
	}))
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	w := &headerOnly{h: http.Header{"X-Req": nil, "Server": nil}}
	allocs := testing.AllocsPerRun(200, func() {
		clear(w.h)
		h.ServeHTTP(w, r)
	})
	// The plugin's: the HeaderHook and the slice of Server's value; the
	// handler's: the slices of its X-Req and Server.
	if allocs > 4 {
		t.Fatalf("%v allocations per request, want 4 (the hook, Server's value, the handler's X-Req and Server)", allocs)
	}
	if got := w.h.Get("Server"); got != "causeway" {
		t.Fatalf("Server = %q", got)
	}

	const workers, each = 8, 300
	errs := make(chan string, workers)
	done := make(chan struct{})
	for g := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range each {
				id := strings.Repeat("x", g+1) + string(rune('a'+i%26))
				r := httptest.NewRequest(http.MethodGet, "/", nil)
				r.Header.Set("X-Req", id)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				if rec.Header().Get("X-Req") != id || rec.Header().Values("Server")[0] != "causeway" || len(rec.Header().Values("Server")) != 1 {
					errs <- "request " + id + ": " + strings.Join(rec.Header().Values("X-Req"), ",") + " " + strings.Join(rec.Header().Values("Server"), ",")
					return
				}
			}
		}()
	}
	for range workers {
		<-done
	}
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
