package edgetls

import (
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/routes"
)

var h2specSummary = regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`)

// h2specBody is the response body h2spec gets: some flow-control cases
// (6.9.2#2) are skipped unless the response is larger than a small window.
var h2specBody = strings.Repeat("causeway ", 2048)

// TestH2Spec runs the h2spec HTTP/2 conformance suite against an https
// listener configured by this package, and against a plain Go net/http TLS
// server on the same machine at the same moment as the baseline (TESTING.md:
// 141/145, the 4 failures being Go's own HTTP/2 server: 4.2#3, 6.5.3#1,
// 8.1.2.2#1 and #2). Ours must score no less than the baseline. It is slow
// and timing-sensitive on a loaded machine, so it runs from `make h2spec`
// (CAUSEWAY_H2SPEC=1), where a missing h2spec fails the test.
func TestH2Spec(t *testing.T) {
	if os.Getenv("CAUSEWAY_H2SPEC") == "" {
		t.Skip("HTTP/2 conformance runs with `make h2spec` (CAUSEWAY_H2SPEC=1)")
	}
	bin := findTool(t, "h2spec")
	dir := t.TempDir()
	ca := newCA(t, "h2spec CA")
	c, k := ca.writePair(t, dir, "a", "127.0.0.1", "localhost")
	m := newManager(t, &routes.TLS{MinVersion: "1.2", Certificates: []routes.Certificate{{CertFile: c, KeyFile: k}}}, Options{})
	// The handler reads the request body first, as the proxy does: Go's server
	// then sees a content-length mismatch (8.1.2.6#1) before it answers, which
	// otherwise is a race that either server may lose.
	body := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		_, _ = io.WriteString(w, h2specBody)
	})
	ours := serveTLS(t, m.TLSConfig(), body)
	pair, err := tls.LoadX509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	plain := serveTLS(t, &tls.Config{Certificates: []tls.Certificate{pair}}, body)

	report := os.Getenv("H2SPEC_REPORT")
	if report == "" {
		report = filepath.Join(dir, "h2spec.xml")
	}
	base, baseTotal, baseFailed := runH2Spec(t, bin, plain, filepath.Join(dir, "plain.xml"))
	got, total, failed := runH2Spec(t, bin, ours, report)
	t.Logf("h2spec score, plain Go net/http TLS server: %d/%d passed; failed: %s", base, baseTotal, strings.Join(baseFailed, " | "))
	t.Logf("h2spec score, edgetls listener:             %d/%d passed; failed: %s", got, total, strings.Join(failed, " | "))
	if got < base {
		t.Fatalf("edgetls listener passed %d h2spec cases, fewer than plain Go's %d", got, base)
	}
}

// runH2Spec runs h2spec over TLS against addr and returns the passed and
// total counts and the titles of failed cases.
func runH2Spec(t *testing.T, bin, addr, report string) (passed, total int, failed []string) {
	t.Helper()
	_, p, _ := strings.Cut(addr, ":")
	// -o 5: per-case time-out; the default 2s fails cases on a busy machine.
	out, err := exec.Command(bin, "-h", "127.0.0.1", "-p", p, "-t", "-k", "-o", "5", "-j", report).CombinedOutput()
	// h2spec exits 1 when any case fails; the counts decide here.
	match := h2specSummary.FindSubmatch(out)
	if match == nil {
		t.Fatalf("h2spec printed no summary (exit %v):\n%s", err, out)
	}
	total, _ = strconv.Atoi(string(match[1]))
	passed, _ = strconv.Atoi(string(match[2]))
	// The detailed list repeats after "Failures:"; take each case once.
	seen := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if _, title, ok := strings.Cut(line, "× "); ok && !seen[title] {
			seen[title] = true
			failed = append(failed, strings.TrimSpace(title))
		}
	}
	return passed, total, failed
}
