package httperr

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
)

func TestIsGRPC(t *testing.T) {
	tests := []struct {
		ct   string
		want bool
	}{
		{"application/grpc", true},
		{"application/grpc+proto", true},
		{"Application/GRPC+json", true},
		{"application/grpc-web", true},
		{"application/grpc-web-text+proto", true},
		{"application/grpc; charset=utf-8", true},
		{"application/grpcx", false},
		{"application/json", false},
		{"", false},
		{"application/grp", false},
	}
	for _, tt := range tests {
		t.Run(tt.ct, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			r.Header.Set("Content-Type", tt.ct)
			if got := IsGRPC(r); got != tt.want {
				t.Fatalf("IsGRPC(%q) = %v", tt.ct, got)
			}
		})
	}
}

func TestWriteGRPC(t *testing.T) {
	tests := []struct {
		name   string
		ct     string
		status int
		msg    string
		code   int
		wantCT string
	}{
		{"unauthenticated", "application/grpc", 401, "missing credentials", grpcUnauthenticated, "application/grpc"},
		{"permission denied", "application/grpc+proto", 403, "caller identity not allowed", grpcPermissionDenied, "application/grpc"},
		{"no route", "application/grpc", 404, "no route matches this request", grpcUnimplemented, "application/grpc"},
		{"rate limited", "application/grpc", 429, "too many requests", grpcResourceExhausted, "application/grpc"},
		{"body too large", "application/grpc", 413, "too large", grpcResourceExhausted, "application/grpc"},
		{"bad request", "application/grpc", 400, "bad", grpcInternal, "application/grpc"},
		{"bad gateway", "application/grpc", 502, "upstream refused", grpcUnavailable, "application/grpc"},
		{"unavailable", "application/grpc", 503, "no healthy upstream endpoint", grpcUnavailable, "application/grpc"},
		{"gateway timeout", "application/grpc", 504, "upstream timed out", grpcDeadlineExceeded, "application/grpc"},
		{"body stalled", "application/grpc", 408, "stalled", grpcDeadlineExceeded, "application/grpc"},
		{"teapot", "application/grpc", 418, "?", grpcUnknown, "application/grpc"},
		{"grpc-web", "application/grpc-web+proto", 401, "x", grpcUnauthenticated, "application/grpc-web"},
		{"message needs escaping", "application/grpc", 400, "50% \"bad\"\nline ünï", grpcInternal, "application/grpc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/svc/M", nil)
			r.Header.Set("Content-Type", tt.ct)
			w := httptest.NewRecorder()
			w.Header().Set("Content-Length", "99")
			Write(w, r, tt.status, tt.msg)
			if w.Code != http.StatusOK || w.Body.Len() != 0 {
				t.Fatalf("status %d, body %q: want 200 and no body", w.Code, w.Body.String())
			}
			h := w.Header()
			if got := h.Get("Grpc-Status"); got != strconv.Itoa(tt.code) {
				t.Fatalf("grpc-status %q, want %d", got, tt.code)
			}
			raw := h.Get("Grpc-Message")
			for i := 0; i < len(raw); i++ {
				if raw[i] < 0x20 || raw[i] > 0x7e {
					t.Fatalf("grpc-message %q has a byte outside printable ASCII", raw)
				}
			}
			if got, err := url.PathUnescape(raw); err != nil || got != tt.msg {
				t.Fatalf("grpc-message %q decodes to %q (%v), want %q", raw, got, err, tt.msg)
			}
			if got := h.Get("Content-Type"); got != tt.wantCT {
				t.Fatalf("content-type %q, want %q", got, tt.wantCT)
			}
			if h.Get("Content-Length") != "" {
				t.Fatalf("a stale content-length stays: %q", h.Get("Content-Length"))
			}
		})
	}
}
