package h1server

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

var h2specSummary = regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`)

// TestH2SpecThroughHandOver runs the h2spec HTTP/2 conformance suite
// against this server's hand-over to net/http's HTTP/2 server, over TLS
// (ALPN h2) and over plain TCP (h2c prior knowledge), and against a plain
// net/http server as the baseline: the hand-over must score no less. Slow,
// so it runs with CAUSEWAY_H2SPEC=1 (make h2spec sets it).
func TestH2SpecThroughHandOver(t *testing.T) {
	if os.Getenv("CAUSEWAY_H2SPEC") == "" {
		t.Skip("HTTP/2 conformance runs with CAUSEWAY_H2SPEC=1")
	}
	bin := h2specBinary(t)
	body := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		_, _ = io.WriteString(w, strings.Repeat("causeway ", 2048))
	})
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	certs := ts.TLS.Certificates
	ts.Close()

	// net/http's HTTP/2 connections end a moment after their server is
	// closed: wait for them before goleak looks.
	before := runtime.NumGoroutine()
	defer func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}()
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"tls", true}, {"h2c", false}} {
		t.Run(tc.name, func(t *testing.T) {
			// The baseline: net/http alone.
			bln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var p http.Protocols
			p.SetHTTP1(true)
			p.SetHTTP2(true)
			p.SetUnencryptedHTTP2(true)
			base := &http.Server{Handler: body, Protocols: &p, TLSConfig: &tls.Config{Certificates: certs}}
			go func() {
				if tc.tls {
					_ = base.ServeTLS(bln, "", "")
				} else {
					_ = base.Serve(bln)
				}
			}()
			defer base.Close()

			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s := &Server{Handler: body, H2C: !tc.tls, TLSConfig: &tls.Config{Certificates: certs}}
			done := make(chan error, 1)
			go func() {
				if tc.tls {
					done <- s.ServeTLS(ln, "", "")
				} else {
					done <- s.Serve(ln)
				}
			}()
			defer func() { _ = s.Close(); <-done }()

			want, total := runH2Spec(t, bin, bln.Addr().String(), tc.tls)
			got, _ := runH2Spec(t, bin, ln.Addr().String(), tc.tls)
			t.Logf("h2spec %s: net/http %d/%d, through the hand-over %d/%d", tc.name, want, total, got, total)
			if got < want {
				t.Fatalf("the hand-over passed %d cases, net/http alone %d", got, want)
			}
		})
	}
}

func runH2Spec(t *testing.T, bin, addr string, useTLS bool) (passed, total int) {
	t.Helper()
	_, port, _ := strings.Cut(addr, ":")
	args := []string{"-h", "127.0.0.1", "-p", port, "-o", "5"}
	if useTLS {
		args = append(args, "-t", "-k")
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	m := h2specSummary.FindSubmatch(out)
	if m == nil {
		t.Fatalf("h2spec printed no summary (%v):\n%s", err, out)
	}
	total, _ = strconv.Atoi(string(m[1]))
	passed, _ = strconv.Atoi(string(m[2]))
	return passed, total
}

// h2specBinary finds h2spec on PATH or in the module's .tools/bin.
func h2specBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("h2spec"); err == nil {
		return p
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, ".tools", "bin", "h2spec")
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("h2spec not found (make deps installs it)")
		}
		dir = parent
	}
}
