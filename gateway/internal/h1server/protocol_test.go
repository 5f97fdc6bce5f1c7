package h1server

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func mustRead(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	res, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return res, string(b)
}

func TestExpectContinue(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		handler   http.HandlerFunc
		wantFirst int // the first status line the client sees
		wantClose bool
	}{
		{"handler reads: 100 then 200", func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			_, _ = w.Write(b)
		}, 100, false},
		{"handler refuses without reading: no 100, connection closes", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
		}, 413, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, addr := serveOurs(t, tc.handler, nil)
			c, br := dial(t, addr)
			_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
			res, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tc.wantFirst {
				t.Fatalf("first answer %d, want %d", res.StatusCode, tc.wantFirst)
			}
			if tc.wantFirst == 100 {
				_, _ = io.WriteString(c, "hello")
				res, body := mustRead(t, br, "POST")
				if res.StatusCode != http.StatusOK || body != "hello" {
					t.Fatalf("after 100: %d %q", res.StatusCode, body)
				}
			} else {
				_, _ = io.ReadAll(res.Body)
			}
			if res.Close != tc.wantClose {
				t.Fatalf("Close = %v, want %v", res.Close, tc.wantClose)
			}
		})
	}
}

func TestEarlyHintsAndTrailers(t *testing.T) {
	t.Parallel()
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</s.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Trailer", "X-Sum")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Sum", "42")
		w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
	}), nil)
	c, br := dial(t, addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	res, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil || res.StatusCode != http.StatusEarlyHints || res.Header.Get("Link") == "" {
		t.Fatalf("first answer: %v %+v", err, res)
	}
	res, body := mustRead(t, br, "GET")
	if res.StatusCode != http.StatusOK || body != "body" {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
	if res.Trailer.Get("X-Sum") != "42" || res.Trailer.Get("X-Late") != "yes" {
		t.Fatalf("trailers %v", res.Trailer)
	}
	if res.Header.Get("X-Sum") != "" {
		t.Fatal("the trailer's value went into the head")
	}
}

// A 1xx response has no body, so it never carries the fields that frame
// one: a handler (the forwarder passing an upstream's 103 on) may have
// Content-Length or Transfer-Encoding in its header when it writes the
// 1xx, and net/http leaves both out. A client that took a 103's
// Content-Length for a body would read the final response's first bytes
// as that body. The final response still carries its own.
func TestInformationalWithoutFraming(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</s.css>; rel=preload")
		w.Header().Set("Content-Length", "5")
		w.Header().Set("Transfer-Encoding", "chunked")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Content-Length", "2")
		w.Header().Del("Transfer-Encoding")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "ok")
	})
	_, ours := serveOurs(t, h, nil)
	theirs := serveNetHTTP(t, h)
	for _, tc := range []struct{ name, addr string }{{"ours", ours}, {"net/http", theirs}} {
		t.Run(tc.name, func(t *testing.T) {
			raw := string(exchange(t, tc.addr, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))
			hints, final, ok := strings.Cut(raw, "\r\n\r\n")
			if !ok || !strings.HasPrefix(hints, "HTTP/1.1 103 ") || !strings.Contains(hints, "Link: </s.css>; rel=preload") {
				t.Fatalf("no 103 first: %q", raw)
			}
			if l := strings.ToLower(hints); strings.Contains(l, "content-length") || strings.Contains(l, "transfer-encoding") {
				t.Fatalf("the 103 carries framing: %q", hints)
			}
			res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(final)), nil)
			if err != nil || res.StatusCode != http.StatusOK || res.ContentLength != 2 {
				t.Fatalf("final answer after the 103: %v %+v (%q)", err, res, final)
			}
		})
	}
}

func TestHijackUpgradeEcho(t *testing.T) {
	t.Parallel()
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "no", http.StatusBadRequest)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		_ = rw.Flush()
		_, _ = io.Copy(conn, rw) // what the client sent with the head comes first
	}), nil)
	c, br := dial(t, addr)
	// The first echoed bytes travel in the same segment as the head.
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly ")
	res, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("%v %+v", err, res)
	}
	_, _ = io.WriteString(c, "late")
	got := make([]byte, len("early late"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "early late" {
		t.Fatalf("echoed %q, %v", got, err)
	}
}

func TestFlushDeliversEventsPromptly(t *testing.T) {
	t.Parallel()
	next := make(chan struct{})
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 1\n\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Error(err)
		}
		select {
		case <-next: // the client has read the first event
		case <-time.After(5 * time.Second):
			t.Error("the first event did not reach the client")
		}
		_, _ = io.WriteString(w, "data: 2\n\n")
	}), nil)
	c, br := dial(t, addr)
	_, _ = io.WriteString(c, "GET /events HTTP/1.1\r\nHost: h\r\n\r\n")
	res, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.TransferEncoding) == 0 || res.TransferEncoding[0] != "chunked" {
		t.Fatalf("a streamed body is chunked, got %v", res.TransferEncoding)
	}
	rb := bufio.NewReader(res.Body)
	if l, err := rb.ReadString('\n'); err != nil || l != "data: 1\n" {
		t.Fatalf("%q %v", l, err)
	}
	close(next)
	rest, _ := io.ReadAll(rb)
	if string(rest) != "\ndata: 2\n\n" {
		t.Fatalf("rest %q", rest)
	}
}

func TestBodylessFraming(t *testing.T) {
	t.Parallel()
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.Header().Set("ETag", `"x"`)
			w.WriteHeader(http.StatusNotModified)
		default:
			_, _ = io.WriteString(w, "twelve bytes")
		}
	}), nil)
	c, br := dial(t, addr)
	// Pipelined: a body where none belongs would be read as the next
	// answer's start.
	_, _ = io.WriteString(c, "HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET /204 HTTP/1.1\r\nHost: h\r\n\r\nGET /304 HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
	res, body := mustRead(t, br, "HEAD")
	if res.StatusCode != http.StatusOK || body != "" || res.ContentLength != 12 {
		t.Fatalf("HEAD: %d %q CL %d", res.StatusCode, body, res.ContentLength)
	}
	for _, want := range []int{204, 304} {
		res, body = mustRead(t, br, "GET")
		if res.StatusCode != want || body != "" || res.Header.Get("Transfer-Encoding") != "" || len(res.TransferEncoding) != 0 {
			t.Fatalf("%d: %d %q %v", want, res.StatusCode, body, res.TransferEncoding)
		}
		if want == 204 && res.Header.Get("Content-Length") != "" {
			t.Fatal("204 with a Content-Length")
		}
	}
	res, body = mustRead(t, br, "GET")
	if res.StatusCode != http.StatusOK || body != "twelve bytes" {
		t.Fatalf("last: %d %q", res.StatusCode, body)
	}
}

// The fields that frame or describe a body, in the heads of answers that
// have none, are net/http's: a 304 carries no Content-Length,
// Transfer-Encoding or Content-Type (RFC 9110 15.4.5; net/http's
// suppressedHeaders), a 204 no Content-Length or Transfer-Encoding, a HEAD
// answer keeps the Content-Length of the body it stands for. The forwarder
// copies an upstream's fields into the header as they came: an upstream
// that sends "304, Content-Length: 6" (and then six bytes, which the
// upstream client never reads) must not have its length reach a client
// that could take it for a body and read the next answer's first bytes.
func TestBodylessHeadsAsNetHTTP(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		for _, k := range []string{"Content-Length", "Transfer-Encoding", "Content-Type"} {
			if v := r.URL.Query().Get(k); v != "" {
				w.Header().Set(k, v)
			}
		}
		w.Header().Set("ETag", `"x"`)
		w.WriteHeader(status)
	})
	_, ours := serveOurs(t, h, nil)
	theirs := serveNetHTTP(t, h)
	framing := func(addr, method, target string) (string, string) {
		raw := string(exchange(t, addr, method+" "+target+" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))
		res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%s %s: %v (%q)", method, target, err, raw)
		}
		head, _, _ := strings.Cut(raw, "\r\n\r\n")
		var got []string
		for _, k := range []string{"Content-Length", "Transfer-Encoding", "Content-Type", "Etag"} {
			if v, ok := res.Header[k]; ok {
				got = append(got, k+"="+strings.Join(v, ","))
			}
		}
		if len(res.TransferEncoding) > 0 {
			got = append(got, "TE="+strings.Join(res.TransferEncoding, ","))
		}
		return strings.Join(got, " "), head
	}
	for _, tc := range []struct{ method, target string }{
		{"GET", "/304?Content-Length=6&Content-Type=text/plain"},
		{"GET", "/304?Transfer-Encoding=chunked"},
		{"GET", "/204?Content-Length=6&Content-Type=text/plain"},
		{"GET", "/204?Transfer-Encoding=chunked"},
		{"HEAD", "/200?Content-Length=6&Content-Type=text/plain"},
		{"HEAD", "/200?Transfer-Encoding=chunked"},
		{"HEAD", "/304?Content-Length=6"},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			got, head := framing(ours, tc.method, tc.target)
			want, ref := framing(theirs, tc.method, tc.target)
			if got != want {
				t.Fatalf("fields %q, net/http %q\nours     %q\nnet/http %q", got, want, head, ref)
			}
		})
	}
}

func TestHTTP10(t *testing.T) {
	t.Parallel()
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "streamed ")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "until close")
	}), nil)
	t.Run("close-delimited", func(t *testing.T) {
		c, _ := dial(t, addr)
		_, _ = io.WriteString(c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		raw, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		s := string(raw)
		if strings.Contains(strings.ToLower(s), "transfer-encoding") || strings.Contains(s, "Content-Length") || !strings.HasSuffix(s, "streamed until close") {
			t.Fatalf("HTTP/1.0 answer:\n%s", s)
		}
	})
	t.Run("keep-alive with a length", func(t *testing.T) {
		_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "short")
		}), nil)
		c, br := dial(t, addr)
		_, _ = io.WriteString(c, "GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n")
		res, body := mustRead(t, br, "GET")
		if body != "short" || res.Close || res.Header.Get("Connection") != "keep-alive" {
			t.Fatalf("first: %q close=%v %v", body, res.Close, res.Header)
		}
		_, body = mustRead(t, br, "GET")
		if body != "short" {
			t.Fatalf("second: %q", body)
		}
		// No keep-alive asked: the connection closes after it.
		if n, err := br.ReadByte(); !errors.Is(err, io.EOF) {
			t.Fatalf("after an HTTP/1.0 answer without keep-alive: %v %v", n, err)
		}
	})
}

func TestRefusalsAreJSON(t *testing.T) {
	t.Parallel()
	_, addr := serveOurs(t, echo, func(s *Server) { s.MaxHeaderBytes = 4 << 10 })
	cases := []struct {
		name, in string
		status   int
	}{
		{"request line too long", "GET /" + strings.Repeat("a", 9<<10) + " HTTP/1.1\r\nHost: h\r\n\r\n", 414},
		{"head too large", "GET / HTTP/1.1\r\nHost: h\r\nX: " + strings.Repeat("a", 5<<10) + "\r\n\r\n", 431},
		{"CL and TE", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"two lengths", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"unknown coding", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := exchange(t, addr, tc.in)
			res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(raw))), nil)
			if err != nil {
				t.Fatalf("%v: %q", err, raw)
			}
			var body struct {
				Error  string `json:"error"`
				Status int    `json:"status"`
			}
			if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tc.status || body.Status != tc.status || body.Error == "" || !res.Close {
				t.Fatalf("got %d %+v close=%v", res.StatusCode, body, res.Close)
			}
		})
	}
}

func TestHTTP2HandedToNetHTTP(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	})
	t.Run("h2c prior knowledge", func(t *testing.T) {
		t.Parallel()
		_, addr := serveOurs(t, h, func(s *Server) { s.H2C = true })
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: &p}
		defer tr.CloseIdleConnections()
		res, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != "HTTP/2.0" {
			t.Fatalf("served as %q", b)
		}
		// HTTP/1.1 on the same listener still works.
		res, body := mustReadGet(t, addr)
		if res.StatusCode != http.StatusOK || body != "HTTP/1.1" {
			t.Fatalf("%d %q", res.StatusCode, body)
		}
	})
	t.Run("TLS ALPN", func(t *testing.T) {
		t.Parallel()
		_, addr, pool := serveOursTLS(t, h, nil)
		for _, proto := range []string{"HTTP/2.0", "HTTP/1.1"} {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "example.com"}, ForceAttemptHTTP2: proto == "HTTP/2.0"}
			res, err := (&http.Client{Transport: tr}).Get("https://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			tr.CloseIdleConnections()
			if string(b) != proto {
				t.Fatalf("served as %q, want %q", b, proto)
			}
		}
	})
}

func mustReadGet(t *testing.T, addr string) (*http.Response, string) {
	t.Helper()
	c, br := dial(t, addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	return mustRead(t, br, "GET")
}

// TestAbortedResponseIsNotComplete: a handler that panics with
// http.ErrAbortHandler mid-body (httputil.ReverseProxy does when the
// upstream's body breaks, if it finds a server in the context) leaves the
// client with a body that fails, never one that looks complete.
func TestAbortedResponseIsNotComplete(t *testing.T) {
	t.Parallel()
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Context().Value(http.ServerContextKey) == nil {
			t.Error("no server in the request's context")
		}
		_, _ = io.WriteString(w, strings.Repeat("x", 10<<10))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}), nil)
	res, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if _, err := io.ReadAll(res.Body); err == nil {
		t.Fatal("an aborted response read as complete")
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}
