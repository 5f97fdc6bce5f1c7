package httperr

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		name   string
		status int
		msg    string
		id     string
	}{
		{"plain", 404, "no route matches", "abc"},
		{"quotes and control characters", 502, "bad \"upstream\"\n\t<x>&", ""},
		{"invalid utf-8", 400, "bad \xff byte", "id-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.id != "" {
				r.Header.Set(RequestIDHeader, tt.id)
			}
			w := httptest.NewRecorder()
			Write(w, r, tt.status, tt.msg)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("content type %q", ct)
			}
			var body struct {
				Error     string `json:"error"`
				Status    int    `json:"status"`
				RequestID string `json:"request_id"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q is not JSON: %v", w.Body.String(), err)
			}
			want := tt.msg
			if tt.name == "invalid utf-8" {
				want = "bad \ufffd byte"
			}
			if body.Error != want || body.Status != tt.status || body.RequestID != tt.id {
				t.Fatalf("body %+v", body)
			}
		})
	}
	_ = http.StatusOK
}

// TestWriteHead: a HEAD answer keeps its status and names no body type,
// whatever a handler had set before.
func TestWriteHead(t *testing.T) {
	r := httptest.NewRequest(http.MethodHead, "/", nil)
	w := httptest.NewRecorder()
	w.Header().Set("Content-Type", "text/html")
	Write(w, r, http.StatusNotFound, "no route matches")
	if w.Code != http.StatusNotFound || w.Header().Get("Content-Type") != "" || w.Body.Len() != 0 ||
		w.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("HEAD answer: %d %v %q", w.Code, w.Header(), w.Body.String())
	}
}
