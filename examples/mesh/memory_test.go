package mesh_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// TestSidecarMemory runs `causeway sidecar` as its own process and reports
// its resident memory idle and while it carries about 1,000 requests/s of
// mTLS traffic for 5 s (4 senders at 250/s each). Memory is reported, not
// asserted: it depends on the machine as much as timings do (the target,
// idle under 20 MB, is tracked in docs/performance.md).
func TestSidecarMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and loads a sidecar for 5 s")
	}
	dir := t.TempDir()
	bin := testutil.BuildCauseway(t, dir)
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 64))
	}))
	defer svc.Close()
	ca := meshtest.NewCA(t, "example.org")
	files := ca.IssueFiles(dir, "spiffe://example.org/ns/shop/sa/orders")
	caller := ca.Issue("spiffe://example.org/ns/edge/sa/gateway")
	inbound, admin := freePort(t), freePort(t)
	cfg := filepath.Join(dir, "sidecar.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 1
identity: {cert_file: %q, key_file: %q, bundle_file: %q}
access_log: {output: "off"}
admin: %q
inbound: {listen: %q, forward_to: %q, allow: ["spiffe://example.org/ns/edge/sa/gateway"]}
`, files.Cert, files.Key, files.Bundle, admin, inbound, strings.TrimPrefix(svc.URL, "http://"))), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "sidecar", "-config", cfg, "-log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if resp, err := http.Get("http://" + admin + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sidecar did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	idle := rss(t, cmd.Process.Pid)
	idleAnon, idleFile := statusKB(t, cmd.Process.Pid, "RssAnon:"), statusKB(t, cmd.Process.Pid, "RssFile:")

	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{Certificates: []tls.Certificate{caller.TLS}, RootCAs: ca.Pool(), InsecureSkipVerify: true},
		ForceAttemptHTTP2: true,
	}}
	defer client.CloseIdleConnections()
	ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(4 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
				resp, err := client.Get("https://" + inbound + "/")
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	peak := idle
	for ctx.Err() == nil {
		time.Sleep(250 * time.Millisecond)
		peak = max(peak, rss(t, cmd.Process.Pid))
	}
	wg.Wait()
	loaded := peak
	t.Logf("sidecar RSS: idle %.1f MB (anonymous %.1f MB: heap, stacks, buffers; file %.1f MB: the executable's pages, "+
		"shared by every process running the same file), peak under load %.1f MB (%d requests in 5 s, %d failed)",
		float64(idle)/1024, float64(idleAnon)/1024, float64(idleFile)/1024, float64(loaded)/1024, sent.Load(), failed.Load())
	if failed.Load() > 0 || sent.Load() == 0 {
		t.Errorf("%d of %d requests failed", failed.Load(), sent.Load())
	}
}

func rss(t *testing.T, pid int) int { return statusKB(t, pid, "VmRSS:") }

func statusKB(t *testing.T, pid int, field string) int {
	t.Helper()
	n, err := testutil.ProcStatusKB(pid, field)
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

func freePort(t *testing.T) string { return testutil.FreeAddr(t) }
