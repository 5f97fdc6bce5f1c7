// Package test holds Causeway's hardening suite: hostile input, faults and
// load against a whole edge on loopback. The fast cases run in `make test`;
// the long soak runs in `make soak` (CAUSEWAY_SOAK=1).
package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/causewayhq/causeway/gateway"
	"github.com/causewayhq/causeway/routes"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(cleanupM{m},
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	)
}

// cleanupM runs the tests, then removes what they shared (the binary
// buildCauseway built), before goleak looks for leaks.
type cleanupM struct{ *testing.M }

func (m cleanupM) Run() int {
	code := m.M.Run()
	removeBuiltBinary()
	return code
}

// recordingUpstream remembers every request that reached it.
type recordingUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string // "METHOD PATH body=..."
}

func newRecordingUpstream(t *testing.T) *recordingUpstream {
	t.Helper()
	u := &recordingUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.seen = append(u.seen, fmt.Sprintf("%s %s body=%q", r.Method, r.URL.Path, body))
		u.mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *recordingUpstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.seen...)
}

func (u *recordingUpstream) addr() string { return strings.TrimPrefix(u.URL, "http://") }

type edge struct {
	*gateway.Edge
	path   string
	cancel context.CancelFunc
	done   chan error
}

const header = "version: 1\nlisten: {http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: \"off\"}\n"

func startEdge(t testing.TB, config string) *edge {
	t.Helper()
	return startEdgeWithLogger(t, config, slog.New(slog.DiscardHandler))
}

// startEdgeWithLogger serves config from a file of its own until the test
// ends.
func startEdgeWithLogger(t testing.TB, config string, log *slog.Logger) *edge {
	t.Helper()
	path := filepath.Join(t.TempDir(), "causeway.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := gateway.NewEdge(context.Background(), gateway.EdgeOptions{ConfigPath: path, Logger: log, ReloadDebounce: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Listen(); err != nil {
		e.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	te := &edge{Edge: e, path: path, cancel: cancel, done: make(chan error, 1)}
	go func() { te.done <- e.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-te.done
	})
	return te
}

// http1Engine is the engine the edges of this run serve HTTP/1.1 with: the
// environment's (gateway.HTTP1EngineEnv) or the default. The binaries the
// tests start inherit the environment, so it holds for them too.
func http1Engine() string {
	if v := os.Getenv(gateway.HTTP1EngineEnv); v != "" {
		return v
	}
	return routes.HTTP1EngineDefault
}

// ownHTTP1Engine says whether the edges of this run serve HTTP/1.1 with
// Causeway's engine, which refuses some requests net/http reads leniently.
func ownHTTP1Engine() bool { return http1Engine() == routes.HTTP1EngineCauseway }

// raw sends bytes as they are and returns everything the edge answered
// until it closed the connection or went quiet.
func raw(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(c)
	return string(out)
}

// Request smuggling. The edge's HTTP/1.1 parser settles every framing
// question one way or refuses the request (400/501) and closes; the edge
// then re-frames each request it forwards. Causeway's engine (the default)
// refuses Content-Length with Transfer-Encoding; the deprecated net/http
// engine reads it as chunked (RFC 9112 §6.3: Transfer-Encoding wins, the
// Content-Length is dropped). What a smuggler wants — a request the
// upstream sees that the edge did not route and authorise — cannot happen
// with either: a "hidden" request is refused with its carrier, or parsed
// by the edge as a request of its own and put through its route's auth.
func TestSmuggling(t *testing.T) {
	up := newRecordingUpstream(t)
	keys := filepath.Join(t.TempDir(), "keys.txt")
	if err := os.WriteFile(keys, []byte("ops:"+strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, header+fmt.Sprintf(`authenticators:
  ops: {api_key: {keys_file: %q}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: open, match: {path_prefix: /a}, upstream: u}
  - {name: private, match: {path_prefix: /smuggled}, auth: ops, upstream: u}
`, keys, up.addr()))
	addr := e.Addr("http")
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	// Content-Length with Transfer-Encoding: net/http reads the body as
	// chunked and the hidden request as one of its own (which meets its
	// route's auth); Causeway's engine refuses the request (400) and
	// closes, so nothing is forwarded.
	clte := struct{ want, upstream []string }{[]string{"HTTP/1.1 200", "HTTP/1.1 401"}, []string{`POST /a body=""`}}
	if ownHTTP1Engine() {
		clte.want, clte.upstream = []string{"HTTP/1.1 400"}, nil
	}
	tests := []struct {
		name string
		req  string
		// want is the edge's answers, in order ("" = any); upstream what the
		// upstream may see.
		want     []string
		upstream []string
	}{
		{"CL.TE", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
			clte.want, clte.upstream},
		{"TE.CL", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" + smuggled,
			clte.want, clte.upstream},
		{"duplicate Content-Length", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc" + smuggled,
			[]string{"HTTP/1.1 400"}, nil},
		{"obfuscated Transfer-Encoding", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + smuggled,
			[]string{"HTTP/1.1 501"}, nil},
		{"space before colon", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello" + smuggled,
			[]string{"HTTP/1.1 400"}, nil},
		{"two Host headers", "GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", []string{"HTTP/1.1 400"}, nil},
		{"NUL in header value", "GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", []string{"HTTP/1.1 400"}, nil},
		{"bad chunk size", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n" + smuggled,
			[]string{"HTTP/1.1 400"}, []string{`POST /a body=""`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.requests())
			out := raw(t, addr, tt.req)
			got := statusLineRe.FindAllString(out, -1)
			if len(got) < len(tt.want) {
				t.Fatalf("answers %q, want %q; raw:\n%s", got, tt.want, out)
			}
			for i, w := range tt.want {
				if w != "" && !strings.HasPrefix(got[i], w) {
					t.Errorf("answer %d is %q, want %q", i, got[i], w)
				}
			}
			if strings.Contains(out, "200 OK") && len(tt.want) == 1 && tt.want[0] != "" && !strings.HasPrefix(tt.want[0], "HTTP/1.1 200") {
				t.Errorf("a refused request was also served: %q", got)
			}
			// Give a forwarded request time to land before checking.
			time.Sleep(50 * time.Millisecond)
			for _, r := range up.requests()[before:] {
				if strings.Contains(r, "/smuggled") {
					t.Errorf("the hidden request reached the upstream without its route's auth: %s", r)
				}
				if !contains(tt.upstream, r) {
					t.Errorf("the upstream saw %s", r)
				}
			}
		})
	}
}

var statusLineRe = regexp.MustCompile(`HTTP/1\.1 [0-9]{3}`)

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

func firstLine(s string) string {
	if i := strings.Index(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

// Slow clients: headers dribbled byte by byte are cut at read_header_timeout;
// too many connections from one address are refused at accept.
func TestSlowClientsAndConnectionCaps(t *testing.T) {
	up := newRecordingUpstream(t)
	e := startEdge(t, header+fmt.Sprintf(`server: {read_header_timeout: 300ms, max_connections_per_ip: 4}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, up.addr()))
	addr := e.Addr("http")

	t.Run("slowloris", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		req := "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 100)
		var werr error
		for i := 0; i < len(req) && werr == nil; i++ {
			_, werr = c.Write([]byte{req[i]})
			time.Sleep(20 * time.Millisecond)
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		out, _ := io.ReadAll(c)
		if werr == nil && len(out) == 0 && time.Since(start) > 5*time.Second {
			t.Fatal("a slow client kept its connection")
		}
		if strings.Contains(string(out), "200 OK") {
			t.Fatalf("slow headers were served: %q", out)
		}
	})

	t.Run("connections per IP capped", func(t *testing.T) {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for range 4 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			// Each one is really held: it gets an answer.
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		fifth, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer fifth.Close()
		_ = fifth.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, _ = io.WriteString(fifth, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if out, _ := io.ReadAll(fifth); len(out) != 0 {
			t.Fatalf("fifth connection was served: %q", firstLine(string(out)))
		}
	})
}

// Path tricks must not reach a route, or skip its auth, by a side door.
func TestPathTraversalDoesNotBypassAuth(t *testing.T) {
	up := newRecordingUpstream(t)
	keys := filepath.Join(t.TempDir(), "keys.txt")
	// One key whose plain form nobody in this test knows: every request here is anonymous.
	if err := os.WriteFile(keys, []byte("ops:0ab2b1bbe9a1bf9a0b1a3e6b8b5bd1d3a07cf3ef4c1a9c0e05ef8dd2b8f3c0a1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, header+fmt.Sprintf(`authenticators:
  ops: {api_key: {header: X-API-Key, keys_file: %q}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: admin, match: {path_prefix: /admin}, auth: ops, upstream: u}
  - {name: public, match: {path_prefix: /public/}, upstream: u}
`, keys, up.addr()))
	addr := e.Addr("http")
	for _, path := range []string{
		"/public/../admin/users",
		"/public/..%2Fadmin/users",
		"/public/%2e%2e/admin/users",
		"/public//../admin/users",
		"//admin/users",
		"/./admin/users",
		"/public/./../admin",
	} {
		t.Run(path, func(t *testing.T) {
			before := len(up.requests())
			out := raw(t, addr, "GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			status := firstLine(out)
			for _, r := range up.requests()[before:] {
				if strings.Contains(r, "admin") {
					t.Fatalf("%s reached the upstream as %s without a key (edge said %s)", path, r, status)
				}
			}
			if strings.HasPrefix(status, "HTTP/1.1 200") {
				t.Fatalf("%s: %s", path, status)
			}
		})
	}
}
