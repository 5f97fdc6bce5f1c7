package plugins

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHookHeader(t *testing.T) {
	tests := []struct {
		desc       string
		handler    func(w http.ResponseWriter)
		wantStatus int
		wantCalls  int
	}{
		{"explicit WriteHeader", func(w http.ResponseWriter) { w.WriteHeader(http.StatusNotFound) }, 404, 1},
		{"implicit 200 by Write", func(w http.ResponseWriter) { io.WriteString(w, "hi") }, 200, 1},
		{"Flush sends the header", func(w http.ResponseWriter) { w.(http.Flusher).Flush() }, 200, 1},
		{"1xx passes, final runs the hook once", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusCreated)
			w.WriteHeader(http.StatusAccepted) // superfluous: ignored by net/http, must not re-run the hook
		}, 201, 1},
		{"nothing written: Done runs the hook", func(w http.ResponseWriter) {}, 200, 1},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls := 0
				hw := HookHeader(w, func(status int, h http.Header) {
					calls++
					h.Set("X-Hooked", "yes")
					h.Set("X-Calls", strings.Repeat("I", calls))
				})
				hw.Header().Set("X-Hooked", "upstream")
				tt.handler(hw)
				hw.Done()
				if calls != tt.wantCalls {
					t.Errorf("hook ran %d times, want %d", calls, tt.wantCalls)
				}
			}))
			defer srv.Close()
			res, err := http.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if tt.wantCalls > 0 && res.Header.Get("X-Hooked") != "yes" {
				t.Fatalf("X-Hooked = %q: the hook must override the handler's header", res.Header.Get("X-Hooked"))
			}
		})
	}
}

func TestHookHeaderHijack(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hw := HookHeader(w, func(int, http.Header) { t.Error("hook ran on a hijacked connection") })
		conn, buf, err := http.NewResponseController(hw).Hijack()
		if err != nil {
			t.Errorf("Hijack through the hook writer: %v", err)
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nraw")
		buf.Flush()
	}))
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(bufio.NewReader(res.Body))
	if string(b) != "raw" {
		t.Fatalf("body %q", b)
	}
}
