package test

import (
	"context"
	"fmt"
	"github.com/causewayhq/causeway/internal/testutil"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A routes file replaced by a broken one, an empty one or a 50 MB one is
// refused; the running configuration keeps serving.
func TestBadRoutesFilesKeepTheOldConfig(t *testing.T) {
	up := newRecordingUpstream(t)
	good := header + fmt.Sprintf("upstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", up.addr())
	e := startEdge(t, good)
	url := "http://" + e.Addr("http") + "/"
	huge := good + "# " + strings.Repeat("x", 50<<20) + "\n"
	for _, tt := range []struct{ name, content, wantErr string }{
		{"broken", "version: 1\nroutes: [\n", "YAML syntax"},
		{"empty", "", "file is empty"},
		{"50 MB", huge, "file is larger than"},
		{"valid YAML, wrong file", "hello: world\n", "unknown key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(e.path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			err := e.Reload(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("reload: %v", err)
			}
			if status, _ := get(t, url); status != 200 {
				t.Fatalf("after a refused reload: %d", status)
			}
		})
	}
}

// Upstreams that hang, reset or answer garbage give 504/502 with the JSON
// body, quickly, and leave no goroutine behind (goleak in TestMain).
func TestMisbehavingUpstreams(t *testing.T) {
	serve := func(handle func(net.Conn)) string { return testutil.ServeConns(t, handle) }
	readRequest := func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		_, _ = c.Read(buf)
	}
	hang := serve(func(c net.Conn) { readRequest(c); time.Sleep(2 * time.Second) })
	reset := serve(func(c net.Conn) {
		readRequest(c)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST
		}
	})
	garbage := serve(func(c net.Conn) { readRequest(c); _, _ = io.WriteString(c, "SMTP ready\r\n\r\n") })
	halfBody := serve(func(c net.Conn) {
		readRequest(c)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")
	})
	e := startEdge(t, header+fmt.Sprintf(`upstreams:
  hang: {endpoints: [%q], timeout: 300ms}
  reset: {endpoints: [%q]}
  garbage: {endpoints: [%q]}
  half: {endpoints: [%q]}
routes:
  - {name: hang, match: {path: /hang}, upstream: hang}
  - {name: reset, match: {path: /reset}, upstream: reset}
  - {name: garbage, match: {path: /garbage}, upstream: garbage}
  - {name: half, match: {path: /half}, upstream: half}
`, hang, reset, garbage, halfBody))
	base := "http://" + e.Addr("http")
	for _, tt := range []struct {
		path   string
		status int
	}{{"/hang", 504}, {"/reset", 502}, {"/garbage", 502}} {
		t.Run(tt.path, func(t *testing.T) {
			start := time.Now()
			status, body := get(t, base+tt.path)
			if status != tt.status || !strings.Contains(body, fmt.Sprintf(`"status":%d`, tt.status)) {
				t.Fatalf("status %d body %s", status, body)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("took %s", d)
			}
		})
	}
	t.Run("/half: a truncated body is not passed off as complete", func(t *testing.T) {
		// The edge aborts the response: the client sees an error, either
		// before the headers (still buffered) or while reading the body.
		resp, err := http.Get(base + "/half")
		if err != nil {
			return
		}
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Fatal("the client read a truncated body without an error")
		}
	})
}
