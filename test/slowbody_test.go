package test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// bodyUpstream records, for every POST, the body it read and the error
// that ended the read (nil: the whole body arrived).
type bodyUpstream struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []string
	errs   []error
	got    chan struct{} // one value per request whose body read ended
}

func newBodyUpstream(t *testing.T) *bodyUpstream {
	t.Helper()
	u := &bodyUpstream{got: make(chan struct{}, 16)}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			// The edge's health probes: the endpoint is healthy.
			_, _ = io.WriteString(w, "ok")
			return
		}
		body, err := io.ReadAll(r.Body)
		u.mu.Lock()
		u.bodies = append(u.bodies, string(body))
		u.errs = append(u.errs, err)
		u.mu.Unlock()
		u.got <- struct{}{}
		if err != nil {
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *bodyUpstream) addr() string { return strings.TrimPrefix(u.URL, "http://") }

func (u *bodyUpstream) last(t *testing.T) (string, error) {
	t.Helper()
	select {
	case <-u.got:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream never finished reading a request body")
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.bodies[len(u.bodies)-1], u.errs[len(u.errs)-1]
}

// slowBodyConfig is an edge with body_read_timeout 300ms, its access log in
// a file so that the test can read how a request was logged.
func slowBodyConfig(t *testing.T, up, listen string, extra string) (config, accessLog string) {
	accessLog = filepath.Join(t.TempDir(), "access.log")
	return fmt.Sprintf(`version: 1
listen: {%s, admin: "127.0.0.1:0"}
access_log: {output: %q}
server: {body_read_timeout: 300ms}
%supstreams:
  u: {endpoints: [%q], health_check: {path: /, interval: 1h}}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, listen, accessLog, extra, up), accessLog
}

// accessLine returns the access log's line for the request to path.
func accessLine(t *testing.T, file, path string) map[string]any {
	t.Helper()
	var found map[string]any
	waitFor(3*time.Second, func() bool {
		data, _ := os.ReadFile(file)
		for _, l := range strings.Split(string(data), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["path"] == path {
				found = m
				return true
			}
		}
		return false
	})
	if found == nil {
		t.Fatalf("no access log line for %s", path)
	}
	return found
}

// Slow request bodies: server.body_read_timeout bounds each wait for the
// client's next body bytes. A stalled body gets 408, the upstream sees its
// request aborted, the stall is logged as the client's (status 408, no
// upstream error) and does not count against the endpoint; a slow but
// steady body is served; after a body the deadline is gone, so keep-alive
// is unaffected.
func TestSlowRequestBodies(t *testing.T) {
	up := newBodyUpstream(t)
	config, accessLog := slowBodyConfig(t, up.addr(), `http: "127.0.0.1:0"`, "")
	e := startEdge(t, config)
	addr := e.Addr("http")

	stalls := []struct {
		name    string
		path    string
		headers string
		sent    string
	}{
		{"content-length stall", "/cl", "Content-Length: 1000\r\n", "0123456789"},
		{"chunked stall", "/chunked", "Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n"},
	}
	for _, tt := range stalls {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, "POST "+tt.path+" HTTP/1.1\r\nHost: x\r\n"+tt.headers+"\r\n"+tt.sent); err != nil {
				t.Fatal(err)
			}
			// Then nothing: the edge must answer on its own. The 5 s is only
			// a guard against a hung test, not a measurement.
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer to a stalled body: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout {
				t.Fatalf("status %d (%s), want 408", resp.StatusCode, body)
			}
			var eb struct {
				Status    int    `json:"status"`
				RequestID string `json:"request_id"`
			}
			if err := json.Unmarshal(body, &eb); err != nil || eb.Status != 408 || eb.RequestID == "" {
				t.Fatalf("error body %q (%v)", body, err)
			}
			// The connection is closed: the rest of the body will never be
			// read, so it cannot carry another request.
			if n, err := br.Read(make([]byte, 1)); err == nil {
				t.Fatalf("connection still open after a cut body (read %d bytes)", n)
			}
			got, uerr := up.last(t)
			if uerr == nil {
				t.Fatalf("the upstream read a complete body %q; want its request aborted", got)
			}
			line := accessLine(t, accessLog, tt.path)
			if line["status"] != float64(408) {
				t.Fatalf("logged status %v, want 408: %v", line["status"], line)
			}
			if ue, ok := line["upstream_error"]; ok {
				t.Fatalf("a client stall is logged as an upstream error: %v", ue)
			}
		})
	}

	t.Run("slow but steady body", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		const body = "0123456789"
		if _, err := io.WriteString(c, fmt.Sprintf("POST /steady HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))); err != nil {
			t.Fatal(err)
		}
		// 10 bytes at 100 ms each: 1 s in all, far past the 300 ms timeout,
		// which bounds each wait, not the whole body.
		for i := range len(body) {
			time.Sleep(100 * time.Millisecond)
			if _, err := c.Write([]byte{body[i]}); err != nil {
				t.Fatalf("edge closed the connection after %d bytes: %v", i, err)
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
		if got, uerr := up.last(t); got != body || uerr != nil {
			t.Fatalf("upstream read %q (%v), want %q", got, uerr, body)
		}
		// Idle on the kept-alive connection for longer than the timeout: the
		// body's deadline must be gone, so the next request is served.
		time.Sleep(3 * 300 * time.Millisecond)
		if _, err := io.WriteString(c, "POST /again HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			t.Fatal(err)
		}
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("kept-alive connection closed after an idle shorter than idle_timeout: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("second request: status %d", resp.StatusCode)
		}
		if got, uerr := up.last(t); got != "ok" || uerr != nil {
			t.Fatalf("upstream read %q (%v), want %q", got, uerr, "ok")
		}
	})

	t.Run("stalls do not count against the endpoint", func(t *testing.T) {
		resp, err := http.Get("http://" + e.Addr("admin") + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		metrics, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(metrics), "\n") {
			if strings.HasPrefix(l, "causeway_upstream_requests_total{") && strings.Contains(l, `code="5`) {
				t.Errorf("an upstream failure was counted: %s", l)
			}
			if strings.HasPrefix(l, "causeway_upstream_endpoint_healthy{") && strings.HasSuffix(l, " 0") {
				t.Errorf("the endpoint was ejected: %s", l)
			}
		}
	})
}

// HTTP/2: the deadline is the stream's, so one stalled upload gets 408
// while other streams of the same connection carry on.
func TestSlowRequestBodyHTTP2(t *testing.T) {
	up := newBodyUpstream(t)
	certFile, keyFile, pool := serverCert(t, t.TempDir(), "api.example.com")
	config, accessLog := slowBodyConfig(t, up.addr(), `https: "127.0.0.1:0"`,
		fmt.Sprintf("tls:\n  certificates: [{cert_file: %q, key_file: %q}]\n", certFile, keyFile))
	e := startEdge(t, config)
	h2only := new(http.Protocols)
	h2only.SetHTTP2(true)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "api.example.com"}, Protocols: h2only}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	base := "https://" + e.Addr("https")

	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		// Ten bytes, then the stream's body stalls; the pipe ends with the test.
		_, _ = pw.Write([]byte("0123456789"))
	}()
	req, _ := http.NewRequest(http.MethodPost, base+"/h2stall", pr)
	req.ContentLength = 1000
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("no answer to a stalled HTTP/2 body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || resp.ProtoMajor != 2 {
		t.Fatalf("status %d over %s (%s), want 408 over HTTP/2", resp.StatusCode, resp.Proto, body)
	}
	if got, uerr := up.last(t); uerr == nil {
		t.Fatalf("the upstream read a complete body %q; want its request aborted", got)
	}
	line := accessLine(t, accessLog, "/h2stall")
	if line["status"] != float64(408) {
		t.Fatalf("logged status %v, want 408", line["status"])
	}
	if ue, ok := line["upstream_error"]; ok {
		t.Fatalf("a client stall is logged as an upstream error: %v", ue)
	}
	mresp, err := http.Get("http://" + e.Addr("admin") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, l := range strings.Split(string(metrics), "\n") {
		if strings.HasPrefix(l, "causeway_upstream_requests_total{") && !strings.Contains(l, `code="200"`) {
			t.Errorf("the stall was counted as an upstream answer: %s", l)
		}
	}

	// The same connection still serves: only the stream was cut.
	resp, err = client.Post(base+"/h2ok", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("next request: status %d", resp.StatusCode)
	}
	if got, uerr := up.last(t); got != "hello" || uerr != nil {
		t.Fatalf("upstream read %q (%v)", got, uerr)
	}
}

// A client that hangs up in the middle of its body: the upstream never
// reads the request as complete. With a Content-Length it gets fewer bytes
// and the close; chunked, it never gets the last chunk. The body is larger
// than the edge's buffers, so part of it has reached the upstream when the
// client goes.
func TestClientDisconnectMidBody(t *testing.T) {
	up := newBodyUpstream(t)
	config, _ := slowBodyConfig(t, up.addr(), `http: "127.0.0.1:0"`, "")
	e := startEdge(t, config)
	part := strings.Repeat("z", 200<<10)
	for _, tt := range []struct{ name, headers, sent string }{
		{"content-length", "Content-Length: 1048576\r\n", part},
		{"chunked", "Transfer-Encoding: chunked\r\n", fmt.Sprintf("%x\r\n%s\r\n", len(part), part)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", e.Addr("http"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(c, "POST /gone HTTP/1.1\r\nHost: x\r\n"+tt.headers+"\r\n"+tt.sent); err != nil {
				t.Fatal(err)
			}
			// Let the body reach the upstream before the client goes.
			time.Sleep(100 * time.Millisecond)
			c.Close()
			got, uerr := up.last(t)
			if uerr == nil {
				t.Fatalf("the upstream read a complete request of %d bytes from a client that hung up", len(got))
			}
			if len(got) == 0 {
				t.Logf("the upstream got none of the body before the close (%v)", uerr)
			}
		})
	}
}
