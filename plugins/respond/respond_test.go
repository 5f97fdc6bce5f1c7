package respond

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/plugins/plugintest"
)

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.html")
	if err := os.WriteFile(big, make([]byte, MaxBodyBytes+1), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ desc, config, want string }{
		{"1xx status", "status: 101", "plugins.p.config.status: 101 is not a final HTTP status"},
		{"status too large", "status: 600", "not a final HTTP status"},
		{"body and body_file", "body: x\nbody_file: /etc/hostname", "plugins.p.config.body_file: body and body_file are exclusive"},
		{"missing body_file", "body_file: " + filepath.Join(dir, "nope.html"), "plugins.p.config.body_file: reading body_file: open"},
		{"oversize body_file", "body_file: " + big, "is larger than 1024 KiB"},
		{"body on 204", "status: 204\nbody: x", "a 204 response has no body"},
		{"bad header name", "headers: { \"Retry After\": \"60\" }", "plugins.p.config.headers.Retry After"},
		{"header injection", "headers: { X-A: \"a\\nb\" }", "cannot contain CR, LF or NUL"},
		{"content-length header", "headers: { Content-Length: \"5\" }", "set by the plugin itself"},
		{"status not a number", "status: ok", "expected an integer"},
		{"error with a body", "error: down\nbody: x", "plugins.p.config.error: error answers with the edge's error body"},
		{"error with a 2xx status", "error: down\nstatus: 200", "an error answer needs a 4xx or 5xx status"},
		{"error injection", "error: \"a\\nb\"", "cannot contain CR, LF or NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if got := plugintest.ConfigError(t, "respond", tt.config); !strings.Contains(got, tt.want) {
				t.Fatalf("error %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRespond(t *testing.T) {
	dir := t.TempDir()
	page := filepath.Join(dir, "maintenance.html")
	if err := os.WriteFile(page, []byte("<h1>Back soon</h1>"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc, config, method string
		wantStatus           int
		wantBody             string
		wantHeaders          map[string]string
	}{
		{"defaults", "", "GET", 200, "", map[string]string{"Content-Length": "0"}},
		{"health", "body: ok\n", "GET", 200, "ok", map[string]string{"Content-Type": "text/plain; charset=utf-8", "Content-Length": "2"}},
		{"HEAD has no body but the length", "body: ok\n", "HEAD", 200, "", map[string]string{"Content-Length": "2"}},
		{"maintenance from a file", "status: 503\nbody_file: " + page + "\ncontent_type: text/html; charset=utf-8\nheaders: { Retry-After: \"120\" }", "POST", 503, "<h1>Back soon</h1>",
			map[string]string{"Content-Type": "text/html; charset=utf-8", "Retry-After": "120", "X-Content-Type-Options": "nosniff"}},
		{"no content", "status: 204", "DELETE", 204, "", map[string]string{"Content-Length": ""}},
		{"error body", "error: no backend\n", "GET", 500, `{"error":"no backend","status":500,"request_id":"req-1"}` + "\n",
			map[string]string{"Content-Type": "application/json", "Content-Length": "57"}},
		{"error with its status", "error: gone\nstatus: 410\nheaders: { Cache-Control: no-store }", "GET", 410, `{"error":"gone","status":410,"request_id":"req-1"}` + "\n",
			map[string]string{"Cache-Control": "no-store"}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			inst := plugintest.MustNew(t, "respond", tt.config)
			h := inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				t.Fatal("respond called the upstream")
			}))
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(tt.method, "/anything", nil)
			req.Header.Set("X-Request-Id", "req-1")
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus || rec.Body.String() != tt.wantBody {
				t.Fatalf("got %d %q, want %d %q", rec.Code, rec.Body, tt.wantStatus, tt.wantBody)
			}
			for k, v := range tt.wantHeaders {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

// TestErrorGRPC checks that a gRPC call to an error answer gets a gRPC
// status, which is all a gRPC client reads.
func TestErrorGRPC(t *testing.T) {
	inst := plugintest.MustNew(t, "respond", "error: no backend\nstatus: 500")
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/pkg.Svc/Call", nil)
	req.Header.Set("Content-Type", "application/grpc")
	inst.Wrap(nil).ServeHTTP(rec, req)
	if got := rec.Header().Get("Grpc-Status"); got != "13" {
		t.Fatalf("grpc-status %q (headers %v), want 13 (INTERNAL)", got, rec.Header())
	}
}

// TestBodyFileRelative checks that body_file is found next to the routes
// file, wherever the edge was started.
func TestBodyFileRelative(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "page.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	routesFile := filepath.Join(dir, "causeway.yaml")
	if err := os.WriteFile(routesFile, []byte(plugintest.Routes("respond", "body_file: page.txt")), 0o644); err != nil {
		t.Fatal(err)
	}
	inst, s, err := plugintest.Load(routesFile)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec := httptest.NewRecorder()
	inst.Wrap(nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Body.String() != "hello" {
		t.Fatalf("body %q", rec.Body)
	}
}
