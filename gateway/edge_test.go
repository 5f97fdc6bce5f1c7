package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Idle keep-alive connections of http.DefaultTransport used by clients in tests.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	)
}

// testEdge is an edge serving a routes file from a temp dir on loopback.
type testEdge struct {
	*Edge
	path   string
	cancel context.CancelFunc
	done   chan error
	url    string
	admin  string
	logs   *testutil.Buffer
}

// listenHeader is prepended to test configs: loopback, ephemeral ports.
const listenHeader = "version: 1\nlisten: {http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: off}\n"

func startEdge(t testing.TB, config string, options ...func(*EdgeOptions)) *testEdge {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "causeway.yaml")
	writeFile(t, path, config)
	logs := &testutil.Buffer{}
	opts := EdgeOptions{
		ConfigPath:     path,
		Logger:         slog.New(slog.NewJSONHandler(logs, nil)),
		ReloadDebounce: 20 * time.Millisecond,
	}
	for _, o := range options {
		o(&opts)
	}
	e, err := NewEdge(context.Background(), opts)
	if err != nil {
		t.Fatalf("NewEdge: %v", err)
	}
	if err := e.Listen(); err != nil {
		e.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	te := &testEdge{Edge: e, path: path, cancel: cancel, done: make(chan error, 1), logs: logs,
		url: "http://" + e.Addr("http"), admin: "http://" + e.Addr("admin")}
	go func() { te.done <- e.Serve(ctx) }()
	t.Cleanup(te.stop)
	return te
}

func (te *testEdge) stop() {
	te.cancel()
	select {
	case <-te.done:
	case <-time.After(10 * time.Second):
		panic("edge did not stop")
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	// Write then rename, as editors and ConfigMaps do, so a reader never
	// sees half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// echoUpstream answers with what it received, as JSON.
func echoUpstream(t *testing.T, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echo{Upstream: name, Method: r.Method, Path: r.URL.Path, RawPath: r.URL.RawPath, Query: r.URL.RawQuery, Host: r.Host, Header: r.Header, Body: string(body)})
	}))
	t.Cleanup(s.Close)
	return s
}

type echo struct {
	Upstream string
	Method   string
	Path     string
	RawPath  string
	Query    string
	Host     string
	Header   http.Header
	Body     string
}

func hostPort(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

func get(t *testing.T, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func decodeEcho(t *testing.T, body []byte) echo {
	t.Helper()
	var e echo
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("upstream body %q: %v", body, err)
	}
	return e
}

type errorBody struct {
	Error     string `json:"error"`
	Status    int    `json:"status"`
	RequestID string `json:"request_id"`
}

func TestErrorBodies(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()
	malformed := rawServer(t, "HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n")
	closed := freeAddr(t) // nothing listens there
	te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  slow: {endpoints: [%q], timeout: 100ms}
  refused: {endpoints: [%q]}
  malformed: {endpoints: [%q]}
routes:
  - {name: slow, match: {path: /slow}, upstream: slow}
  - {name: refused, match: {path: /refused}, upstream: refused}
  - {name: malformed, match: {path: /malformed}, upstream: malformed}
`, hostPort(slow), closed, malformed))

	tests := []struct {
		path   string
		status int
		msg    string
	}{
		{"/nowhere", 404, "no route matches this request"},
		{"/refused", 502, "upstream unavailable or sent an invalid response"},
		{"/malformed", 502, "upstream unavailable or sent an invalid response"},
		{"/slow", 504, "upstream timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, body := get(t, te.url+tt.path)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.status, body)
			}
			var eb errorBody
			if err := json.Unmarshal(body, &eb); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if eb.Status != tt.status || eb.Error != tt.msg || eb.RequestID == "" || eb.RequestID != resp.Header.Get("X-Request-Id") {
				t.Fatalf("body %+v, header id %q", eb, resp.Header.Get("X-Request-Id"))
			}
			if resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
			}
		})
	}
}

// An upstream with no endpoint available gets the JSON 503 from the
// transport's attempt loop (the one place endpoints are picked), counted
// in the upstream's metrics, and nothing is sent anywhere.
func TestNoEndpoint503(t *testing.T) {
	f, err := routes.Parse("t.yaml", []byte("version: 1\nupstreams:\n  u: {endpoints: [\"127.0.0.1:1\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n"))
	if err != nil {
		t.Fatal(err)
	}
	reg := promRegistry()
	rt, err := buildRuntime(f, buildDeps{metrics: newMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.close()
	rt.upstreams["u"].Bal.Update(nil) // every endpoint gone (discovery found none)
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("X-Request-Id", "abc")
	rt.ServeHTTP(w, r)
	var eb errorBody
	if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil {
		t.Fatal(err)
	}
	if w.Code != 503 || eb.Status != 503 || eb.Error != "no healthy upstream endpoint" || eb.RequestID != "abc" {
		t.Fatalf("got %d %+v", w.Code, eb)
	}
	if v, ok := sample(t, reg, "causeway_upstream_requests_total", map[string]string{"upstream": "u", "endpoint": "", "code": "503"}); !ok || v != 1 {
		t.Fatalf("upstream 503 counted %v times (present %v), want once", v, ok)
	}
}

// rawServer answers every connection with a fixed byte string.
func rawServer(t *testing.T, response string) string {
	t.Helper()
	return testutil.ServeConns(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, response)
	})
}

func freeAddr(t *testing.T) string { return testutil.FreeAddr(t) }

func TestProxyHeaders(t *testing.T) {
	up := echoUpstream(t, "a")
	cfg := listenHeader + fmt.Sprintf(`upstreams:
  a: {endpoints: [%q]}
routes:
  - {name: api, match: {path_prefix: /api/}, strip_prefix: true, upstream: a}
  - {name: root, match: {path_prefix: /}, upstream: a}
`, hostPort(up))

	t.Run("untrusted peer: forwarded headers replaced", func(t *testing.T) {
		te := startEdge(t, cfg)
		resp, body := get(t, te.url+"/api/x?q=1", "X-Forwarded-For", "6.6.6.6", "Forwarded", "for=6.6.6.6", "X-Forwarded-Proto", "https", "X-Forwarded-Host", "evil.example")
		e := decodeEcho(t, body)
		if got := e.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
			t.Errorf("X-Forwarded-For %q", got)
		}
		if got := e.Header.Get("X-Forwarded-Proto"); got != "http" {
			t.Errorf("X-Forwarded-Proto %q", got)
		}
		if got := e.Header.Get("X-Forwarded-Host"); got != strings.TrimPrefix(te.url, "http://") {
			t.Errorf("X-Forwarded-Host %q", got)
		}
		if got := e.Header.Get("Forwarded"); got != `for=127.0.0.1;host="`+strings.TrimPrefix(te.url, "http://")+`";proto=http` {
			t.Errorf("Forwarded %q", got)
		}
		if e.Path != "/x" || e.Query != "q=1" {
			t.Errorf("strip_prefix: path %q query %q", e.Path, e.Query)
		}
		if resp.Header.Get("X-Request-Id") == "" || e.Header.Get("X-Request-Id") != resp.Header.Get("X-Request-Id") {
			t.Errorf("request id: upstream %q, client %q", e.Header.Get("X-Request-Id"), resp.Header.Get("X-Request-Id"))
		}
	})

	t.Run("trusted peer: forwarded headers extended", func(t *testing.T) {
		te := startEdge(t, strings.Replace(cfg, "version: 1\n", "version: 1\ntrusted_proxies: [127.0.0.0/8]\n", 1))
		_, body := get(t, te.url+"/api/x", "X-Forwarded-For", "203.0.113.7", "Forwarded", "for=203.0.113.7", "X-Forwarded-Proto", "https")
		e := decodeEcho(t, body)
		if got := e.Header.Get("X-Forwarded-For"); got != "203.0.113.7, 127.0.0.1" {
			t.Errorf("X-Forwarded-For %q", got)
		}
		if got := e.Header.Get("X-Forwarded-Proto"); got != "https" {
			t.Errorf("X-Forwarded-Proto %q", got)
		}
		if got := e.Header.Get("Forwarded"); !strings.HasPrefix(got, "for=203.0.113.7, for=127.0.0.1;") {
			t.Errorf("Forwarded %q", got)
		}
	})

	te := startEdge(t, cfg)
	t.Run("hop-by-hop headers removed", func(t *testing.T) {
		_, body := get(t, te.url+"/x", "Connection", "X-Secret-Hop", "X-Secret-Hop", "1", "Keep-Alive", "timeout=5", "Proxy-Authorization", "Basic eA==", "X-Kept", "yes")
		e := decodeEcho(t, body)
		for _, h := range []string{"X-Secret-Hop", "Keep-Alive", "Proxy-Authorization"} {
			if e.Header.Get(h) != "" {
				t.Errorf("hop-by-hop header %s reached the upstream", h)
			}
		}
		if e.Header.Get("X-Kept") != "yes" {
			t.Errorf("end-to-end header dropped")
		}
	})
	t.Run("request id passed through when sane", func(t *testing.T) {
		resp, body := get(t, te.url+"/x", "X-Request-Id", "client-id-42")
		if e := decodeEcho(t, body); e.Header.Get("X-Request-Id") != "client-id-42" || resp.Header.Get("X-Request-Id") != "client-id-42" {
			t.Errorf("ids %q %q", e.Header.Get("X-Request-Id"), resp.Header.Get("X-Request-Id"))
		}
	})
	t.Run("hostile request id replaced", func(t *testing.T) {
		resp, body := get(t, te.url+"/x", "X-Request-Id", "bad id <script>")
		e := decodeEcho(t, body)
		if got := e.Header.Get("X-Request-Id"); got == "bad id <script>" || len(got) != 36 || resp.Header.Get("X-Request-Id") != got {
			t.Errorf("ids %q %q", got, resp.Header.Get("X-Request-Id"))
		}
	})
	t.Run("host passed through", func(t *testing.T) {
		_, body := get(t, te.url+"/x", "Host", "api.example.com")
		if e := decodeEcho(t, body); e.Host != "api.example.com" {
			t.Errorf("host %q", e.Host)
		}
	})
	t.Run("dot segments cleaned before matching and forwarding", func(t *testing.T) {
		// Sent raw: Go's client would clean the path itself.
		status, body := rawRequest(t, te.Addr("http"), "GET /api/../x/./y//z HTTP/1.1\r\nHost: a\r\n\r\n")
		if status != 200 {
			t.Fatalf("status %d", status)
		}
		if e := decodeEcho(t, body); e.Path != "/x/y/z" || e.Upstream != "a" {
			t.Errorf("path %q", e.Path)
		}
	})
	t.Run("oversized headers get 431", func(t *testing.T) {
		status, _ := rawRequest(t, te.Addr("http"), "GET / HTTP/1.1\r\nHost: a\r\nX-Big: "+strings.Repeat("a", 80<<10)+"\r\n\r\n")
		if status != 431 {
			t.Errorf("status %d, want 431", status)
		}
	})
	t.Run("body streamed to upstream", func(t *testing.T) {
		resp, err := http.Post(te.url+"/x", "text/plain", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if e := decodeEcho(t, body); e.Body != "hello" || e.Method != http.MethodPost {
			t.Errorf("echo %+v", e)
		}
	})
}

// rawRequest sends bytes as they are and returns the status and body.
func rawRequest(t *testing.T, addr, req string) (int, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func TestAdmin(t *testing.T) {
	up := echoUpstream(t, "a")
	te := startEdge(t, listenHeader+fmt.Sprintf(`redis: {url: "redis://user:hunter2@127.0.0.1:1/0"}
upstreams:
  a: {endpoints: [%q]}
routes:
  - {name: root, match: {path_prefix: /}, upstream: a}
`, hostPort(up)))
	get(t, te.url+"/x")

	for _, tt := range []struct {
		path, want, notWant string
		status              int
	}{
		{"/healthz", "ok", "", 200},
		{"/config", `redis://user:REDACTED@127.0.0.1:1/0`, "hunter2", 200},
		{"/config", `"path_prefix": "/"`, "", 200},
		{"/metrics", `causeway_requests_total{code="200",method="GET",route="root"} 1`, "", 200},
		{"/metrics", `causeway_config_reloads_total{result="success"} 1`, "", 200},
	} {
		t.Run(tt.path, func(t *testing.T) {
			resp, body := get(t, te.admin+tt.path)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.want) {
				t.Fatalf("status %d body %s", resp.StatusCode, body)
			}
			if tt.notWant != "" && strings.Contains(string(body), tt.notWant) {
				t.Fatalf("body shows %q: %s", tt.notWant, body)
			}
		})
	}
}

func TestReload(t *testing.T) {
	a, b := echoUpstream(t, "a"), echoUpstream(t, "b")
	cfg := func(up string) string {
		return listenHeader + fmt.Sprintf("upstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", up)
	}
	te := startEdge(t, cfg(hostPort(a)))
	which := func() string {
		_, body := get(t, te.url+"/")
		return decodeEcho(t, body).Upstream
	}
	if got := which(); got != "a" {
		t.Fatalf("before reload: %s", got)
	}

	t.Run("good file swaps on change", func(t *testing.T) {
		writeFile(t, te.path, cfg(hostPort(b)))
		waitFor(t, func() bool { return which() == "b" })
	})

	t.Run("bad file keeps the old config and is reported", func(t *testing.T) {
		writeFile(t, te.path, cfg(hostPort(b))+"  - {name: r, match: {path_prefix: /x}, upstream: nope}\n")
		waitFor(t, func() bool { return !te.LastReload().OK })
		if got := which(); got != "b" {
			t.Fatalf("after bad reload: %s", got)
		}
		_, body := get(t, te.admin+"/config")
		if !strings.Contains(string(body), `undefined upstream \"nope\"`) || !strings.Contains(string(body), `"ok": false`) {
			t.Fatalf("admin /config does not report the failure: %s", body)
		}
		_, body = get(t, te.admin+"/metrics")
		if !strings.Contains(string(body), `causeway_config_reloads_total{result="failure"} 1`) {
			t.Fatalf("failure not counted")
		}
		if !strings.Contains(te.logs.String(), "routes file refused") {
			t.Fatalf("failure not logged: %s", te.logs.String())
		}
	})

	t.Run("SIGHUP-style reload", func(t *testing.T) {
		writeFile(t, te.path, cfg(hostPort(a)))
		if err := te.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := which(); got != "a" {
			t.Fatalf("after Reload: %s", got)
		}
	})
}

// No request may fail while the configuration is swapped 50 times under load.
func TestReloadUnderLoad(t *testing.T) {
	a, b := echoUpstream(t, "a"), echoUpstream(t, "b")
	cfg := func(up string, i int) string {
		return listenHeader + fmt.Sprintf("upstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r%d, match: {path_prefix: /}, upstream: u}\n", up, i)
	}
	te := startEdge(t, cfg(hostPort(a), 0))
	ctx, stop := context.WithCancel(context.Background())
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer client.CloseIdleConnections()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := client.Get(te.url + "/")
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	for i := 1; i <= 50; i++ {
		up := hostPort(a)
		if i%2 == 1 {
			up = hostPort(b)
		}
		writeFile(t, te.path, cfg(up, i))
		if err := te.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("%d requests failed, %d succeeded", failed.Load(), ok.Load())
	}
	t.Logf("%d requests across 50 reloads, none failed", ok.Load())
}

func TestGracefulShutdown(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "finished")
	}))
	defer up.Close()
	te := startEdge(t, listenHeader+fmt.Sprintf("server: {shutdown_timeout: 10s}\nupstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", hostPort(up)))

	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Get(te.url + "/")
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		res <- result{string(b), err}
	}()
	<-started
	te.cancel() // SIGTERM
	// New connections are refused once shutdown begins.
	waitFor(t, func() bool {
		c, err := net.DialTimeout("tcp", te.Addr("http"), 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	// The drain's start is logged while the request is still in flight,
	// its end only once it finished.
	waitFor(t, func() bool {
		return strings.Contains(te.logs.String(), "shutting down: listeners closed, draining in-flight requests")
	})
	if strings.Contains(te.logs.String(), "shutdown complete") {
		t.Fatalf("shutdown complete logged with a request in flight:\n%s", te.logs)
	}
	close(release)
	r := <-res
	if r.err != nil || r.body != "finished" {
		t.Fatalf("in-flight request: %q %v", r.body, r.err)
	}
	if err := <-te.done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	te.done <- nil // for the cleanup
	if !strings.Contains(te.logs.String(), `"msg":"shutdown complete","drained":true`) {
		t.Fatalf("the end of the drain is not logged:\n%s", te.logs)
	}
}

func waitFor(t *testing.T, cond func() bool) { t.Helper(); testutil.WaitFor(t, cond) }

func TestNewEdgeRefusesBadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	writeFile(t, path, "version: 1\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: nope}\n")
	_, err := NewEdge(context.Background(), EdgeOptions{ConfigPath: path, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), path+`:3:50: routes[0].upstream: undefined upstream "nope"`) {
		t.Fatalf("got %v", err)
	}
	if err := Validate(context.Background(), path); err == nil {
		t.Fatal("Validate accepted a bad file")
	}
}

// The plain listener speaks h2c (HTTP/2 with prior knowledge) for gRPC
// clients, next to HTTP/1.1.
func TestPlainListenerH2C(t *testing.T) {
	up := echoUpstream(t, "a")
	te := startEdge(t, listenHeader+fmt.Sprintf("upstreams:\n  a: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: a}\n", hostPort(up)))
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &p}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(te.url + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("status %d over %s, want 200 over HTTP/2", resp.StatusCode, resp.Proto)
	}
}

// Profiles are on the admin listener only when asked for.
func TestAdminPprofFlag(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, path, listenHeader+"upstreams:\n  a: {endpoints: [\"127.0.0.1:1\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: a}\n")
	for _, on := range []bool{false, true} {
		e, err := NewEdge(context.Background(), EdgeOptions{ConfigPath: path, Logger: slog.New(slog.DiscardHandler), Pprof: on})
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		e.adminHandler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/debug/pprof/", nil))
		e.Close()
		if want := map[bool]int{false: 404, true: 200}[on]; w.Code != want {
			t.Fatalf("pprof %v: status %d, want %d", on, w.Code, want)
		}
	}
}
