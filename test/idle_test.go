package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/causewayhq/causeway/internal/testutil"
)

// idleConns is how many keep-alive client connections the edge holds in
// TestEdgeIdleConnectionsMemory (the figure the performance issue asks for).
const idleConns = 10_000

// TestEdgeIdleConnectionsMemory runs `causeway edge` as its own process,
// opens 10,000 HTTP/1.1 keep-alive connections to it (plain, then TLS 1.3
// against a second edge, then optionally HTTP/2 over TLS), serves one request on each so every connection
// has been through the whole proxy path and now waits idle for its next
// request, and reports what the edge holds for them: resident memory, Go
// heap and stacks, goroutines. The numbers are logged, not asserted (they
// depend on the machine and the Go release); what is asserted is that every
// request got 200 and that the idle connections are still open and usable.
//
// IDLE_PROFILE_DIR=DIR keeps the edge's heap profile (taken after a forced
// GC with all connections idle) as DIR/<case>.heap.pb.gz for `go tool pprof`.
// IDLE_TLS_FULL_HANDSHAKES=1 and IDLE_H2=1 (both set by make bench-memory)
// measure TLS as browsers use it, at the cost of a run too long for make
// test: see idleClientTLS and the h2 case. GOGC and GOMEMLIMIT set in the
// environment reach the edge; the log names the values it ran with.
func TestEdgeIdleConnectionsMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and opens 2x10,000 connections")
	}
	raiseFileLimit(t, idleConns+4096) // the cases run one after the other
	dir := t.TempDir()
	bin := buildCauseway(t, dir)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 64))
	}))
	defer up.Close()

	cases := []struct {
		name  string
		proto string // "http/1.1" or "h2" (over TLS)
		tls   bool
		// Each case dials from its own loopback address, so its 10,000
		// source ports come from a range no earlier case (or run of the
		// package) has left in TIME_WAIT.
		source string
		// onlyIf names an environment variable that must be 1 for the case
		// to run: cases that would take make test's run past ~30 s.
		onlyIf string
	}{
		{name: "http", proto: "http/1.1", source: "127.0.0.2"},
		{name: "https", proto: "http/1.1", tls: true, source: "127.0.0.3"},
		// Browsers speak HTTP/2 to an https edge; one idle HTTP/2
		// connection costs the edge two goroutines and the HTTP/2 server's
		// per-connection state. make bench-memory sets IDLE_H2=1.
		{name: "h2", proto: "h2", tls: true, source: "127.0.0.4", onlyIf: "IDLE_H2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.onlyIf != "" && os.Getenv(tc.onlyIf) != "1" {
				t.Skipf("%s=1 runs this case (make bench-memory does)", tc.onlyIf)
			}
			caseDir := filepath.Join(dir, tc.name)
			if err := os.Mkdir(caseDir, 0o755); err != nil {
				t.Fatal(err)
			}
			e := startEdgeProcess(t, bin, caseDir, tc.tls, tc.proto, strings.TrimPrefix(up.URL, "http://"))
			src := &net.TCPAddr{IP: net.ParseIP(tc.source)}

			// One request on a connection of its own first, so "before"
			// includes what the first request sets up (upstream pool,
			// router caches), not only what start-up did.
			warm := e.dial(t, src)
			if err := warm.get(); err != nil {
				t.Fatalf("first request: %v", err)
			}
			warm.Close()
			before := e.stats(t)

			conns := e.dialAll(t, src, idleConns)
			defer func() {
				// The edge goes first: its shutdown closes the idle
				// connections, so TIME_WAIT lands on its side and not on
				// our source ports.
				e.stop(t)
				for _, c := range conns {
					c.Close()
				}
			}()
			idle := e.stats(t)
			if dirName := os.Getenv("IDLE_PROFILE_DIR"); dirName != "" {
				e.saveHeapProfile(t, filepath.Join(dirName, tc.name+".heap.pb.gz"))
			}

			// Still open and reusable: a second request on every 100th.
			var failed []string
			for i := 0; i < len(conns); i += len(conns) / 100 {
				if err := conns[i].get(); err != nil {
					failed = append(failed, fmt.Sprintf("conn %d: %v", i, err))
				}
			}
			if len(failed) > 0 {
				t.Errorf("%d of 100 idle connections could not be reused; first: %s", len(failed), failed[0])
			}

			n := float64(len(conns))
			limit := "none"
			if idle.memLimit < math.MaxInt64 {
				limit = fmt.Sprintf("%.0f MiB", mib(idle.memLimit))
			}
			t.Logf("%s: %d idle keep-alive connections (edge GOGC %d, memory limit %s)", tc.name, len(conns), idle.gogc, limit)
			if tc.tls {
				t.Logf("  TLS 1.3, %d of them resumed the first session, %d full handshakes", e.resumed.Load(), int64(len(conns))-e.resumed.Load())
			}
			t.Logf("  RSS        before %7.1f MiB   idle %7.1f MiB   per connection %5.1f KiB", mib(before.rssKiB*1024), mib(idle.rssKiB*1024), float64(idle.rssKiB-before.rssKiB)/n)
			t.Logf("  heap inuse before %7.1f MiB   idle %7.1f MiB   per connection %5.1f KiB", mib(before.heapInuse), mib(idle.heapInuse), float64(idle.heapInuse-before.heapInuse)/1024/n)
			t.Logf("  stacks     before %7.1f MiB   idle %7.1f MiB   per connection %5.1f KiB", mib(before.stackInuse), mib(idle.stackInuse), float64(idle.stackInuse-before.stackInuse)/1024/n)
			t.Logf("  goroutines before %7d       idle %7d       per connection %5.2f", before.goroutines, idle.goroutines, float64(idle.goroutines-before.goroutines)/n)
		})
	}
}

// raiseFileLimit makes room for want descriptors. The limit set here is
// also the edge's: a child inherits it once the process has called
// Setrlimit (before that, Go hands children the limit it started with).
func raiseFileLimit(t *testing.T, want uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if lim.Cur >= want {
		// Set it anyway, so the child gets this limit and not the one the
		// test binary started with.
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatalf("setrlimit: %v", err)
		}
		return
	}
	next := syscall.Rlimit{Cur: want, Max: max(lim.Max, want)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err != nil {
		// Raising the hard limit needs root (or CAP_SYS_RESOURCE).
		t.Skipf("open-file limit %d/%d is below the %d this test needs and cannot be raised: %v", lim.Cur, lim.Max, want, err)
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// edgeProcess is a `causeway edge` child process with one data listener.
type edgeProcess struct {
	cmd      *exec.Cmd
	done     chan error
	addr     string // the data listener
	admin    string
	tlsConf  *tls.Config  // nil: plain HTTP
	h2       bool         // HTTP/2 over TLS (ALPN h2)
	resumed  atomic.Int64 // TLS handshakes that resumed a session
	stopOnce sync.Once
}

func startEdgeProcess(t *testing.T, bin, dir string, withTLS bool, proto, upstream string) *edgeProcess {
	t.Helper()
	e := &edgeProcess{addr: freeTCPAddr(t), admin: freeTCPAddr(t), done: make(chan error, 1), h2: proto == "h2"}
	listen := fmt.Sprintf("listen: {http: %q, admin: %q}\n", e.addr, e.admin)
	if withTLS {
		certFile, keyFile, pool := serverCert(t, dir, "api.example.com")
		listen = fmt.Sprintf("listen: {https: %q, admin: %q}\ntls:\n  min_version: \"1.3\"\n  certificates: [{cert_file: %q, key_file: %q}]\n",
			e.addr, e.admin, certFile, keyFile)
		e.tlsConf = idleClientTLS(pool)
		e.tlsConf.NextProtos = []string{proto}
	}
	cfg := filepath.Join(dir, "causeway.yaml")
	// max_connections 0: the test holds 10,000 connections on purpose, more
	// than the default cap derived from its file-descriptor limit allows.
	writeConfig(t, cfg, fmt.Sprintf(`version: 1
%saccess_log: {output: "off"}
server: {max_connections: 0}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, listen, upstream))
	logs, err := os.Create(filepath.Join(dir, "edge.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logs.Close() })
	// -pprof: the heap profile endpoint is how the test forces a GC in the
	// edge before reading its memory, and what IDLE_PROFILE_DIR saves.
	e.cmd = exec.Command(bin, "edge", "-config", cfg, "-log-level", "warn", "-pprof")
	e.cmd.Stdout, e.cmd.Stderr = logs, logs
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start edge: %v", err)
	}
	go func() { e.done <- e.cmd.Wait() }()
	t.Cleanup(func() { e.stop(t) })
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + e.admin + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-e.done:
			b, _ := os.ReadFile(logs.Name())
			t.Fatalf("edge exited at start: %v\n%s", err, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("edge did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return e
}

// idleClientTLS is the client side of the TLS case. Under the race
// detector (make test) the client's half of 10,000 full handshakes takes
// about 30 s, 5 s without it, so by default the client offers X25519 only
// (Go's default hybrid ML-KEM exchange is pure Go, slow under the
// detector) and resumes the session the first connection got (TLS 1.3 PSK
// with a fresh ECDHE: no certificate to verify again). That understates
// what real clients cost: crypto/tls keeps its record and handshake
// buffers at the size of the largest message read, the ClientHello, which
// the hybrid ML-KEM key share makes about 1.2 KiB larger, and full
// handshakes leave more garbage for the RSS to carry (measured: heap 16.5
// vs 19.3 KiB, RSS 30 vs 40 KiB per connection).
// IDLE_TLS_FULL_HANDSHAKES=1 (make bench-memory) makes every connection a
// full handshake with Go's default key exchange, as a browser's would be.
func idleClientTLS(pool *x509.CertPool) *tls.Config {
	c := &tls.Config{
		RootCAs:    pool,
		ServerName: "api.example.com",
		NextProtos: []string{"http/1.1"},
		MinVersion: tls.VersionTLS13,
	}
	if os.Getenv("IDLE_TLS_FULL_HANDSHAKES") != "1" {
		c.CurvePreferences = []tls.CurveID{tls.X25519}
		c.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	}
	return c
}

func (e *edgeProcess) stop(t *testing.T) {
	e.stopOnce.Do(func() { stopChild(t, e.cmd, e.done) })
}

// stopChild sends cmd SIGTERM and waits for it to exit (done delivers
// cmd.Wait's result), killing it after 20 s, which is an error.
func stopChild(t *testing.T, cmd *exec.Cmd, done <-chan error) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Errorf("%s did not stop on SIGTERM", strings.Join(cmd.Args[:min(2, len(cmd.Args))], " "))
	}
}

// idleConn is one client connection with its reader, kept across
// requests: a bufio.Reader for HTTP/1.1, a framer for HTTP/2. Requests on
// one connection are sequential, so neither needs a goroutine of its own
// (the race detector allows about 8,000 live goroutines, fewer than the
// connections held).
type idleConn struct {
	net.Conn
	br *bufio.Reader

	fr         *http2.Framer // HTTP/2 only
	nextStream uint32
}

func (e *edgeProcess) dial(t *testing.T, src *net.TCPAddr) *idleConn {
	t.Helper()
	c, err := e.dialErr(src)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *edgeProcess) dialErr(src *net.TCPAddr) (*idleConn, error) {
	d := net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", e.addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", e.addr, src.IP, err)
	}
	if e.tlsConf != nil {
		tc := tls.Client(c, e.tlsConf)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", e.addr, err)
		}
		if tc.ConnectionState().DidResume {
			e.resumed.Add(1)
		}
		if p, want := tc.ConnectionState().NegotiatedProtocol, e.tlsConf.NextProtos[0]; p != want {
			c.Close()
			return nil, fmt.Errorf("ALPN with %s chose %q, want %q", e.addr, p, want)
		}
		c = tc
	}
	if !e.h2 {
		return &idleConn{Conn: c, br: bufio.NewReaderSize(c, 1024)}, nil
	}
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		c.Close()
		return nil, fmt.Errorf("http2 preface: %w", err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		c.Close()
		return nil, fmt.Errorf("http2 settings: %w", err)
	}
	return &idleConn{Conn: c, fr: fr, nextStream: 1}, nil
}

// get sends one request and reads the whole response; the connection must
// answer 200 and stay open for the next one.
func (c *idleConn) get() error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if c.fr != nil {
		return c.getH2()
	}
	if _, err := io.WriteString(c, "GET /idle HTTP/1.1\r\nHost: api.example.com\r\n\r\n"); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	if resp.Close {
		return fmt.Errorf("the edge asked to close the connection")
	}
	return nil
}

// getH2 sends one request on the next stream and reads frames until its
// response has ended, answering the edge's SETTINGS and PINGs on the way.
func (c *idleConn) getH2() error {
	id := c.nextStream
	c.nextStream += 2
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: requestBlock(), EndStream: true, EndHeaders: true}); err != nil {
		return fmt.Errorf("write headers: %w", err)
	}
	status := ""
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return fmt.Errorf("read frame (stream %d): %w", id, err)
		}
		ended := false
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := c.fr.WriteSettingsAck(); err != nil {
					return fmt.Errorf("settings ack: %w", err)
				}
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				if err := c.fr.WritePing(true, f.Data); err != nil {
					return fmt.Errorf("ping ack: %w", err)
				}
			}
		case *http2.GoAwayFrame:
			return fmt.Errorf("GOAWAY %v", f.ErrCode)
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return fmt.Errorf("stream %d reset: %v", id, f.ErrCode)
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				status = f.PseudoValue("status")
				ended = f.StreamEnded()
			}
		case *http2.DataFrame:
			ended = f.StreamID == id && f.StreamEnded()
		}
		if ended {
			break
		}
	}
	if status != "200" {
		return fmt.Errorf("status %q", status)
	}
	return nil
}

// dialAll opens n connections and serves one request on each. A few
// workers, not one goroutine per connection: the race detector allows
// about 8,000 live goroutines, and a small number of requests in flight
// keeps the edge's upstream pool (and our upstream's connections) small,
// so what grows in the edge is what the client connections cost.
func (e *edgeProcess) dialAll(t *testing.T, src *net.TCPAddr, n int) []*idleConn {
	t.Helper()
	const workers = 16
	conns := make([]*idleConn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				c, err := e.dialErr(src)
				if err == nil {
					conns[i] = c
					err = c.get()
				}
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Sprintf("conn %d: %v", i, err))
		}
	}
	if len(failed) > 0 {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		t.Fatalf("%d of %d first requests failed; first: %s", len(failed), n, failed[0])
	}
	return conns
}

// edgeStats is what the edge holds at one moment.
type edgeStats struct {
	rssKiB     int64
	heapInuse  int64 // bytes
	stackInuse int64 // bytes
	goroutines int64
	gogc       int64 // the edge's GC target, which sets how much garbage its RSS carries
	memLimit   int64 // bytes; math.MaxInt64 when unset
}

// stats forces a GC in the edge (so the heap figures are live data, not
// garbage waiting for the next cycle), then reads its resident set from
// /proc and its runtime figures from the admin /metrics.
func (e *edgeProcess) stats(t *testing.T) edgeStats {
	t.Helper()
	e.adminGet(t, "/debug/pprof/heap?gc=1", io.Discard)
	var s edgeStats
	s.rssKiB = procRSSKiB(t, e.cmd.Process.Pid)
	var metrics strings.Builder
	e.adminGet(t, "/metrics", &metrics)
	for _, m := range []struct {
		name string
		dst  *int64
	}{
		{"go_memstats_heap_inuse_bytes", &s.heapInuse},
		{"go_memstats_stack_inuse_bytes", &s.stackInuse},
		{"go_goroutines", &s.goroutines},
		{"go_gc_gogc_percent", &s.gogc},
		{"go_gc_gomemlimit_bytes", &s.memLimit},
	} {
		v, ok := metricValue(metrics.String(), m.name)
		if !ok {
			t.Fatalf("admin /metrics has no %s", m.name)
		}
		// "No limit" is MaxInt64, which a float64 rounds up to 2^63:
		// converted as it is, that would wrap to a negative number.
		if v >= math.MaxInt64 {
			*m.dst = math.MaxInt64
		} else {
			*m.dst = int64(v)
		}
	}
	return s
}

func (e *edgeProcess) saveHeapProfile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("heap profile: %v", err)
	}
	defer f.Close()
	e.adminGet(t, "/debug/pprof/heap?gc=1", f)
	t.Logf("heap profile of the edge with all connections idle: %s", path)
}

func (e *edgeProcess) adminGet(t *testing.T, path string, w io.Writer) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + e.admin + path)
	if err != nil {
		t.Fatalf("admin %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin %s: %s", path, resp.Status)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		t.Fatalf("admin %s: %v", path, err)
	}
}

// metricValue finds an unlabelled sample in a Prometheus text exposition.
func metricValue(text, name string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		return v, err == nil
	}
	return 0, false
}

func procRSSKiB(t *testing.T, pid int) int64 {
	t.Helper()
	n, err := testutil.ProcStatusKB(pid, "VmRSS:")
	if err != nil {
		t.Fatalf("rss of %d: %v", pid, err)
	}
	return n
}
