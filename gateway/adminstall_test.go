package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh/meshtest"
)

// adminConnGoroutines counts the goroutines serving a net/http server's
// connections. In these tests the admin listener is the only net/http
// server with a client connection (the data listeners are the edge's own
// engine and the echo upstreams get no request), so the count is the
// admin connections held.
func adminConnGoroutines() int {
	buf := make([]byte, 16<<20)
	buf = buf[:goruntime.Stack(buf, true)]
	return strings.Count(string(buf), "net/http.(*conn).serve(")
}

// waitAdminConns waits until at most n admin connections are held, for
// 20 s at most: a guard against a hang, far beyond any timeout the tests
// configure, not a speed limit.
func waitAdminConns(n int) bool {
	deadline := time.Now().Add(20 * time.Second)
	for adminConnGoroutines() > n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func waitNoAdminConns(t *testing.T) {
	t.Helper()
	if !waitAdminConns(0) {
		t.Fatal("admin connections left from before the test")
	}
}

// A client that asks for admin answers and never reads them is let go
// once a write has made no progress for server.write_stall_timeout. The
// client pipelines at least 2,000 GET /metrics (48 MB of answers or more:
// far more than loopback's socket buffers hold) and reads nothing. Before
// the fix the admin server had no write deadline at all: its goroutine
// and descriptor stayed blocked in the write for as long as the client
// kept the socket open (the wait below ran out), and the admin listener
// has no connection cap, so enough such clients took the process's
// descriptors. Both roles (edge and sidecar) serve the admin API with the
// same server.
func TestAdminWriteStallReleasesNonReader(t *testing.T) {
	up := echoUpstream(t, "a")
	ca := meshtest.NewCA(t, "example.org")
	files := ca.IssueFiles(t.TempDir(), ordersID)
	for _, tc := range []struct {
		name  string
		admin func(t *testing.T) string // the admin address
	}{
		{"edge", func(t *testing.T) string {
			te := startEdge(t, listenHeader+"server: {write_stall_timeout: 300ms}\n"+
				"upstreams:\n  a: {endpoints: [\""+hostPort(up)+"\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: a}\n")
			return strings.TrimPrefix(te.admin, "http://")
		}},
		{"sidecar", func(t *testing.T) string {
			sc := startSidecar(t, sidecarConfig(files, hostPort(up), []string{edgeID}, nil)+"server: {write_stall_timeout: 300ms}\n")
			return sc.Addr("admin")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.admin(t)
			// Nothing else holds an admin connection (the previous case's
			// server is stopped): the count below is this client's alone.
			waitNoAdminConns(t)
			// Enough answers that they cannot all sit in the socket
			// buffers (the sender's grows to a few MB on loopback): a
			// sidecar's /metrics is a few KB, so 2,000 of them could fit,
			// and the server would write them all without ever stalling.
			_, one := get(t, "http://"+addr+"/metrics")
			http.DefaultClient.CloseIdleConnections()
			waitNoAdminConns(t)
			n := max(2000, (48<<20)/max(len(one), 1)+1)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			// The requests are written from a goroutine: once the server
			// stops reading them (it is blocked writing answers), the
			// write blocks until the server lets go of the connection.
			var wg sync.WaitGroup
			defer wg.Wait()
			defer c.Close()
			wg.Go(func() {
				req := strings.Repeat("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 500)
				for sent := 0; sent < n; sent += 500 {
					if _, err := io.WriteString(c, req); err != nil {
						return
					}
				}
			})
			// The server lets go of the connection by itself while the
			// client still holds its socket. The wait is a guard far
			// beyond the 300 ms stall, not a speed limit.
			if !waitAdminConns(0) {
				t.Fatal("the admin server still held the connection of a client that reads nothing, 20 s after it blocked (write_stall_timeout 300ms)")
			}
			// What the client can still read is what the buffers held
			// when the server gave up: some answers, never all of them.
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReaderSize(c, 64<<10)
			got := 0
			for ; got < n; got++ {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					break
				}
				if _, err := io.Copy(io.Discard, resp.Body); err != nil {
					break
				}
				resp.Body.Close()
			}
			if got == n {
				t.Fatalf("all %d answers arrived: the connection was not cut", n)
			}
			// The admin API still answers others.
			resp, body := get(t, "http://"+addr+"/healthz")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("/healthz after the cut: %d %s", resp.StatusCode, body)
			}
		})
	}
}

// The bound is on a write's progress, not on the answer's length: a CPU
// profile and a trace longer than write_stall_timeout are served whole.
// A deadline set once when the answer starts (or a plain WriteTimeout
// without net/http's pprof extension) would have passed when the profile
// is written after its second.
func TestAdminWriteStallKeepsLongProfiles(t *testing.T) {
	up := echoUpstream(t, "a")
	te := startEdge(t, listenHeader+"server: {write_stall_timeout: 300ms}\n"+
		"upstreams:\n  a: {endpoints: [\""+hostPort(up)+"\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: a}\n",
		func(o *EdgeOptions) { o.Pprof = true })
	for _, path := range []string{"/debug/pprof/profile?seconds=1", "/debug/pprof/trace?seconds=1"} {
		t.Run(path, func(t *testing.T) {
			resp, body := get(t, te.admin+path)
			if resp.StatusCode != http.StatusOK || len(body) == 0 {
				t.Fatalf("%s: %d with %d bytes: %.200s", path, resp.StatusCode, len(body), body)
			}
		})
	}
}
