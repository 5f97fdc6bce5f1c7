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
		{"grpc-status not a code", "status: 503\nheaders: { grpc-status: \"17\" }", "plugins.p.config.headers.grpc-status: grpc-status must be a gRPC status code, 0 to 16"},
		{"grpc-status not a number", "headers: { Grpc-Status: \"x\" }", "plugins.p.config.headers.Grpc-Status: grpc-status must be"},
		{"grpc-message badly encoded", "headers: { grpc-message: \"100%\" }", "grpc-message is percent-encoded"},
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

// TestGRPCCaller checks what a gRPC call gets from each kind of answer: a
// gRPC status (trailers-only: HTTP 200, no body) mapped from the HTTP
// status as for every refusal of the edge, unless the answer is already
// written for gRPC (a gRPC content type) or is content served with a 200.
// Before the fix only error answers were converted: a 403 with a text body
// went out as it was, which a gRPC client reports as "unexpected HTTP
// status code".
func TestGRPCCaller(t *testing.T) {
	long := strings.Repeat("x", 1025)
	tests := []struct {
		desc, config, ct string
		wantStatus       int
		wantGRPC         string // grpc-status; "" means none
		wantMsg          string // raw grpc-message
		wantBody         string
		wantCT           string
	}{
		{"error answer", "error: no backend\nstatus: 500", "application/grpc", 200, "13", "no backend", "", "application/grpc"},
		{"forbidden with a text body", "status: 403\nbody: \"forbidden here\\n\"", "application/grpc", 200, "7", "forbidden here", "", "application/grpc"},
		{"maintenance, message escaped", "status: 503\nbody: \"50% down\"\nheaders: { Retry-After: \"60\" }", "application/grpc+proto", 200, "14", "50%25 down", "", "application/grpc"},
		{"gone without a body", "status: 410", "application/grpc", 200, "2", "Gone", "", "application/grpc"},
		{"HTML page: the reason phrase", "status: 503\nbody: \"<h1>Back soon</h1>\"\ncontent_type: text/html", "application/grpc", 200, "14", "Service Unavailable", "", "application/grpc"},
		{"long body: the reason phrase", "status: 429\nbody: " + long, "application/grpc", 200, "8", "Too Many Requests", "", "application/grpc"},
		{"empty 200", "", "application/grpc", 200, "2", "OK", "", "application/grpc"},
		{"grpc-web caller", "status: 401\nbody: sign in", "application/grpc-web-text", 200, "16", "sign in", "", "application/grpc-web"},
		{"grpc-status under headers wins", "status: 503\nbody: later\nheaders: { grpc-status: \"9\" }", "application/grpc", 200, "9", "later", "", "application/grpc"},
		{"grpc-message under headers", "status: 403\nheaders: { Grpc-Message: \"no%20way\" }", "application/grpc", 200, "7", "no way", "", "application/grpc"},
		{"a 200 with a body is content", "body: ok", "application/grpc", 200, "", "", "ok", "text/plain; charset=utf-8"},
		{"hand-written trailers-only", "content_type: application/grpc\nheaders: { grpc-status: \"14\", grpc-message: down }", "application/grpc", 200, "14", "down", "", "application/grpc"},
		{"hand-written gRPC body", "status: 503\nbody: raw\ncontent_type: application/grpc+proto", "application/grpc", 503, "", "", "raw", "application/grpc+proto"},
		{"not a gRPC caller", "status: 403\nbody: forbidden", "application/json", 403, "", "", "forbidden", "text/plain; charset=utf-8"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			inst := plugintest.MustNew(t, "respond", tt.config)
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, "/pkg.Svc/Call", nil)
			req.Header.Set("Content-Type", tt.ct)
			inst.Wrap(nil).ServeHTTP(rec, req)
			h := rec.Header()
			if rec.Code != tt.wantStatus || rec.Body.String() != tt.wantBody {
				t.Fatalf("got %d %q, want %d %q", rec.Code, rec.Body, tt.wantStatus, tt.wantBody)
			}
			if h.Get("Grpc-Status") != tt.wantGRPC || h.Get("Grpc-Message") != tt.wantMsg {
				t.Fatalf("grpc-status %q grpc-message %q, want %q %q", h.Get("Grpc-Status"), h.Get("Grpc-Message"), tt.wantGRPC, tt.wantMsg)
			}
			if h.Get("Content-Type") != tt.wantCT {
				t.Fatalf("content-type %q, want %q", h.Get("Content-Type"), tt.wantCT)
			}
			if tt.wantGRPC != "" && !strings.Contains(tt.config, "content_type: application/grpc") && h.Get("Content-Length") != "" {
				t.Fatalf("a trailers-only answer with content-length %q", h.Get("Content-Length"))
			}
		})
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
