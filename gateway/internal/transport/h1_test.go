package transport

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// notATimeout is the response-header timeout of the tests that are not
// about timeouts: long enough that a machine loaded by a full -race run
// never trips it (a second did, with i/o timeouts).
const notATimeout = 30 * time.Second

// newTestPool builds the transport as the gateway's upstream pool does for
// a plain HTTP/1.1 upstream (gateway.TestPlainUpstreamUsesH1 checks that it
// does): an http.Transport with the upstream's limits as the fallback.
func newTestPool(t *testing.T, maxIdle int, timeout time.Duration) *H1 {
	t.Helper()
	h1 := NewH1(&http.Transport{
		DialContext:           (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   maxIdle,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	})
	t.Cleanup(h1.CloseIdleConnections)
	return h1
}

// countingServer is an upstream that counts the connections it accepted.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s, &conns
}

func TestH1TransportReusesConnections(t *testing.T) {
	s, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("User-Agent") != "" {
			w.WriteHeader(http.StatusBadRequest) // ReverseProxy's empty User-Agent must stay absent
		}
		io.WriteString(w, r.Method+" "+r.URL.RequestURI())
	})
	h1 := newTestPool(t, 4, notATimeout)
	for i := range 20 {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/a?b=c", nil)
		req.Header["User-Agent"] = []string{""}
		resp, err := h1.RoundTrip(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "GET /a?b=c" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	// OPTIONS reuses the connection too. A HEAD is sent on it, but the
	// connection is not reused after a HEAD (a server that writes a body
	// for HEAD would otherwise answer the next request with it), so the
	// GET after it needs a second connection.
	for _, m := range []string{"OPTIONS", "HEAD", "GET"} {
		req, _ := http.NewRequest(m, s.URL+"/", nil)
		resp, err := h1.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections for 23 sequential requests, want 2 (one retired after the HEAD)", n)
	}
}

func TestH1TransportConcurrentAndBounded(t *testing.T) {
	s, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	h1 := newTestPool(t, 2, notATimeout)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if _, body, err := testutil.RoundTripGet(t, h1, context.Background(), s.URL); err != nil || body != "ok" {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of 800 concurrent requests failed", failed.Load())
	}
	h1.mu.Lock()
	idle := len(h1.idle[strings.TrimPrefix(s.URL, "http://")])
	h1.mu.Unlock()
	if idle > 2 {
		t.Fatalf("%d idle connections kept, want at most max_idle_per_endpoint 2", idle)
	}
	t.Logf("%d connections for 800 requests from 16 goroutines", conns.Load())
}

// An upstream that closes keep-alive connections while they are idle: the
// next request on such a connection is sent again on a fresh one.
func TestH1TransportRetriesConnectionClosedWhileIdle(t *testing.T) {
	var accepted atomic.Int64
	addr := testutil.ServeConns(t, func(c net.Conn) {
		accepted.Add(1)
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		// Answers as keep-alive, then closes: the client only learns on reuse.
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	h1 := newTestPool(t, 4, notATimeout)
	for i := range 5 {
		if _, body, err := testutil.RoundTripGet(t, h1, context.Background(), "http://"+addr+"/"); err != nil || body != "ok" {
			t.Fatalf("request %d: %q %v", i, body, err)
		}
		time.Sleep(10 * time.Millisecond) // let the close reach the client side
	}
	if n := accepted.Load(); n < 5 {
		t.Fatalf("%d connections, want a new one per request", n)
	}
}

func TestH1TransportDoesNotReuse(t *testing.T) {
	cases := []struct {
		name    string
		handler http.HandlerFunc
		hdr     []string
		partial bool // close the body before EOF
	}{
		{name: "response Connection: close", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			io.WriteString(w, "x")
		}},
		{name: "request Connection: close", hdr: []string{"Connection", "close"}, handler: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "x")
		}},
		{name: "body closed early", partial: true, handler: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, strings.Repeat("x", 64<<10))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, conns := countingServer(t, tc.handler)
			h1 := newTestPool(t, 4, notATimeout)
			for range 3 {
				req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
				for i := 0; i+1 < len(tc.hdr); i += 2 {
					req.Header.Set(tc.hdr[i], tc.hdr[i+1])
				}
				req.Close = req.Header.Get("Connection") == "close"
				resp, err := h1.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				if tc.partial {
					buf := make([]byte, 10)
					_, _ = io.ReadFull(resp.Body, buf) // a partial read is the point
				} else {
					io.Copy(io.Discard, resp.Body)
				}
				resp.Body.Close()
				if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
					t.Fatal("read after close succeeded")
				}
			}
			if n := conns.Load(); n != 3 {
				t.Fatalf("%d connections for 3 requests, want 3 (none reusable)", n)
			}
		})
	}
}

// Bytes after a response are not an answer to anything: the connection is
// dropped rather than read by the next request.
func TestH1TransportDropsConnectionWithTrailingGarbage(t *testing.T) {
	var accepted atomic.Int64
	addr := testutil.ServeConns(t, func(c net.Conn) {
		accepted.Add(1)
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforged")
		}
	})
	h1 := newTestPool(t, 4, notATimeout)
	for i := range 3 {
		if _, body, err := testutil.RoundTripGet(t, h1, context.Background(), "http://"+addr+"/"); err != nil || body != "ok" {
			t.Fatalf("request %d: %q %v", i, body, err)
		}
	}
	if n := accepted.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
}

// 1xx responses before the final one reach the trace hook ReverseProxy uses
// to forward them (103 Early Hints); 100 Continue is passed over.
func TestH1TransportInformational(t *testing.T) {
	addr := testutil.ServeConns(t, func(c net.Conn) {
		_, _ = http.ReadRequest(bufio.NewReader(c)) // what was asked does not matter here
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
	})
	h1 := newTestPool(t, 4, notATimeout)
	var got []string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			got = append(got, http.StatusText(code)+": "+h.Get("Link"))
			return nil
		},
	})
	if _, body, err := testutil.RoundTripGet(t, h1, ctx, "http://"+addr+"/"); err != nil || body != "done" {
		t.Fatalf("%q %v", body, err)
	}
	if want := "Early Hints: </a.css>; rel=preload"; len(got) != 2 || got[0] != want {
		t.Fatalf("1xx seen: %q, want %q then Continue", got, want)
	}
}

// Requests with bodies and any method, and upgrade requests (here one the
// server declines), are sent by H1 itself.
func TestH1TransportFallback(t *testing.T) {
	s, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+":"+string(b))
	})
	h1 := newTestPool(t, 4, notATimeout)
	for _, tc := range []struct {
		method, body string
		hdr          []string
		itself       bool
	}{
		{"POST", "payload", nil, true},
		{"DELETE", "", nil, true},
		{"PUT", "x", []string{"Expect", "100-continue"}, true},
		{"GET", "", []string{"Upgrade", "example", "Connection", "Upgrade"}, true},
	} {
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		req, _ := http.NewRequest(tc.method, s.URL, body)
		for i := 0; i+1 < len(tc.hdr); i += 2 {
			req.Header.Set(tc.hdr[i], tc.hdr[i+1])
		}
		if h1.sendsItself(req) != tc.itself {
			t.Fatalf("%s %v: sent by H1 itself %v, want %v", tc.method, tc.hdr, !tc.itself, tc.itself)
		}
		resp, err := h1.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != tc.method+":"+tc.body {
			t.Fatalf("got %q", b)
		}
	}
}

// Idle connections are closed after the idle timeout and when the pool is
// retired, and a connection returned to a retired pool is closed.
func TestH1TransportIdleLifetime(t *testing.T) {
	closed := make(chan struct{}, 8)
	addr := testutil.ServeConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				closed <- struct{}{}
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	waitClosed := func(what string) {
		t.Helper()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the upstream never saw the connection close", what)
		}
	}
	h1 := newTestPool(t, 4, notATimeout)
	setIdleTimeout := func(d time.Duration) {
		// Under the lock: a pending idle timer reads it (expire).
		h1.mu.Lock()
		h1.idleTimeout = d
		h1.mu.Unlock()
	}
	setIdleTimeout(30 * time.Millisecond)
	if _, _, err := testutil.RoundTripGet(t, h1, context.Background(), "http://"+addr+"/"); err != nil {
		t.Fatal(err)
	}
	waitClosed("idle timeout")

	setIdleTimeout(time.Hour)
	if _, _, err := testutil.RoundTripGet(t, h1, context.Background(), "http://"+addr+"/"); err != nil {
		t.Fatal(err)
	}
	h1.CloseIdleConnections()
	waitClosed("CloseIdleConnections")

	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	resp, err := h1.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	waitClosed("returned to a retired pool")
}

// Endpoints replaced by discovery leave no idle-map entry behind once their
// connections are gone.
func TestH1TransportForgetsEmptyHosts(t *testing.T) {
	s, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	h1 := newTestPool(t, 4, notATimeout)
	h1.idleTimeout = 20 * time.Millisecond
	if _, _, err := testutil.RoundTripGet(t, h1, context.Background(), s.URL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		h1.mu.Lock()
		n := len(h1.idle)
		h1.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d hosts still in the idle map after their connection expired", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A client that leaves while the upstream stalls mid-body ends the body
// read (and closes the connection) instead of waiting on the upstream.
func TestH1TransportCancelDuringBody(t *testing.T) {
	release := make(chan struct{})
	addr := testutil.ServeConns(t, func(c net.Conn) {
		_, _ = http.ReadRequest(bufio.NewReader(c)) // what was asked does not matter here
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
		<-release
	})
	t.Cleanup(func() { close(release) })
	h1 := newTestPool(t, 4, notATimeout)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	resp, err := h1.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "partial" {
		t.Fatalf("%q %v", buf, err)
	}
	done := make(chan error, 1)
	go func() { _, err := resp.Body.Read(make([]byte, 10)); done <- err }()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the body read succeeded after the client left")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the body read still waits on the stalled upstream after the client left")
	}
	resp.Body.Close()
}
