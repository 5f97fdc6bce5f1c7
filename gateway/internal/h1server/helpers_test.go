package h1server

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serveOurs starts a Server on a loopback port with h; configure may set
// its fields. It is shut down when the test ends.
func serveOurs(t testing.TB, h http.Handler, configure func(*Server)) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h, MaxHeaderBytes: 64 << 10, ErrorLog: log.New(io.Discard, "", 0)}
	if configure != nil {
		configure(s)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			_ = s.Close()
		}
		if err := <-done; err != http.ErrServerClosed { //nolint:errorlint // returned bare
			t.Errorf("Serve returned %v", err)
		}
	})
	return s, ln.Addr().String()
}

// serveNetHTTP starts the reference: net/http's server with the same
// handler and header limit.
func serveNetHTTP(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: h, MaxHeaderBytes: 64 << 10, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })
	return ln.Addr().String()
}

// exchange sends in on a fresh connection, shuts the write side, and reads
// until the server closes (or the deadline).
func exchange(t testing.TB, addr, in string) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, in); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	out, _ := io.ReadAll(c)
	return out
}

// answer is one response as read back: 1xx responses are skipped.
type answer struct {
	status int
	body   string
	close  bool
}

func readAnswers(raw []byte, method func(i int) string) []answer {
	br := bufio.NewReader(strings.NewReader(string(raw)))
	var out []answer
	for {
		req := &http.Request{Method: method(len(out))}
		res, err := http.ReadResponse(br, req)
		if err != nil {
			return out
		}
		if res.StatusCode >= 100 && res.StatusCode < 200 {
			continue
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		out = append(out, answer{status: res.StatusCode, body: string(b), close: res.Close})
		if err != nil {
			return out
		}
	}
}

// echo answers with everything the handler saw of the request: the
// differential tests compare these between the two servers.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q %s host=%q path=%q query=%q cl=%d te=%v close=%v\n",
		r.Method, r.RequestURI, r.Proto, r.Host, r.URL.Path, r.URL.RawQuery, r.ContentLength, r.TransferEncoding, r.Close)
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range r.Header {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		fmt.Fprintf(&b, "h %s=%q\n", k, r.Header[k])
	}
	fmt.Fprintf(&b, "body %q err=%v\n", body, err != nil)
	tkeys := slices.Sorted(func(yield func(string) bool) {
		for k := range r.Trailer {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range tkeys {
		fmt.Fprintf(&b, "t %s=%q\n", k, r.Trailer[k])
	}
	if err != nil {
		// A body that failed: both servers must cut the connection.
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	_, _ = io.WriteString(w, b.String())
})

// serveOursTLS is serveOurs over TLS with a test certificate for
// example.com; it returns the pool that trusts it.
func serveOursTLS(t *testing.T, h http.Handler, configure func(*Server)) (*Server, string, *x509.CertPool) {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	cert := ts.TLS.Certificates
	pool := ts.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	ts.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h, TLSConfig: &tls.Config{Certificates: cert}}
	if configure != nil {
		configure(s)
	}
	done := make(chan error, 1)
	go func() { done <- s.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = s.Close(); <-done })
	return s, ln.Addr().String(), pool
}
