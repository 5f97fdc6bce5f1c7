package h1server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"
)

type deadlineTestKey struct{}

// WriteDeadlineCleared holds only where the engine really cleared the write
// deadline as the request started: a deadline in the past that the first
// response on a keep-alive connection left does not cut the second one.
// With a WriteTimeout the engine sets that instead (not cleared); outside
// the engine's requests nothing is known.
func TestWriteDeadlineCleared(t *testing.T) {
	for _, tc := range []struct {
		desc         string
		writeTimeout time.Duration
		want         bool
	}{
		{"no write timeout", 0, true},
		{"a write timeout", time.Minute, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			seen := make(chan [2]bool, 2)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				derived := context.WithValue(r.Context(), deadlineTestKey{}, 1)
				seen <- [2]bool{WriteDeadlineCleared(r.Context()), WriteDeadlineCleared(derived)}
				body := r.URL.Path
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				_, _ = io.WriteString(w, body)
				rc := http.NewResponseController(w)
				_ = rc.Flush()
				// Whatever the handler leaves on the connection.
				_ = rc.SetWriteDeadline(time.Now().Add(-time.Second))
			})
			_, addr := serveOurs(t, h, func(s *Server) { s.WriteTimeout = tc.writeTimeout })
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			for _, path := range []string{"/first", "/second"} {
				if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				b, err := io.ReadAll(resp.Body)
				if err != nil || string(b) != path {
					t.Fatalf("%s: body %q %v", path, b, err)
				}
				if got := <-seen; got != [2]bool{tc.want, tc.want} {
					t.Errorf("%s: WriteDeadlineCleared (request's, derived) = %v, want %v", path, got, tc.want)
				}
			}
		})
	}
	if WriteDeadlineCleared(context.Background()) {
		t.Error("WriteDeadlineCleared(context.Background()) = true")
	}
}
