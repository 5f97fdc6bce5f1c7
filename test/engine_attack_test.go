package test

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	stdlog "log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh/meshtest"
	"github.com/causewayhq/causeway/routes"
)

// Attacks on the edge's own HTTP/1.1 engine (server.http1_engine:
// causeway) from outside: raw bytes on a socket, and what the upstream
// really received. Where it is cheap, every case runs on both engines, so
// that a difference between them shows.

// engines are the HTTP/1.1 engines a case runs on.
var engines = []string{routes.HTTP1EngineNetHTTP, routes.HTTP1EngineCauseway}

// engineHeader is the start of a routes file serving HTTP/1.1 with engine.
func engineHeader(engine string) string {
	return header + fmt.Sprintf("server: {http1_engine: %q}\n", engine)
}

// bodyUpstreamLog records, by X-Id, the digest of every request body that
// reached it whole, and how many requests arrived without an X-Id (what a
// smuggled request would look like).
type bodyUpstreamLog struct {
	mu      sync.Mutex
	digests map[string][]string // X-Id -> digests of the bodies received
	paths   []string            // every request's "METHOD PATH X-Id"
}

func (l *bodyUpstreamLog) record(r *http.Request, body []byte) {
	sum := sha256.Sum256(body)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.digests == nil {
		l.digests = map[string][]string{}
	}
	id := r.Header.Get("X-Id")
	l.digests[id] = append(l.digests[id], hex.EncodeToString(sum[:]))
	l.paths = append(l.paths, r.Method+" "+r.URL.Path+" "+id)
}

func (l *bodyUpstreamLog) seen() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.paths...)
}

// readAnswer reads one final response from br (past any 1xx) and its
// whole body.
func readAnswer(br *bufio.Reader, method string) (*http.Response, string, error) {
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
		resp, err = http.ReadResponse(br, &http.Request{Method: method})
	}
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// idUpstream answers every request with its X-Id and the digest of the
// body it received, and records both.
func idUpstream(t *testing.T, log *bodyUpstreamLog) *httptest.Server {
	t.Helper()
	return watchedIDUpstream(t, log, nil)
}

// upstreamWatch is what an upstream's server saw beside its handler: the
// connections it accepted and saw end (closed by either side), and what it
// logged (a body it could not read, a panic). A request its server refuses
// before the handler (a malformed head) is answered without a log line,
// and then the connection count is what tells.
type upstreamWatch struct {
	opened, closed atomic.Int64
	errs           testutil.Buffer
}

func (w *upstreamWatch) String() string {
	return fmt.Sprintf("the upstream's server accepted %d connections and saw %d end; its error log: %q", w.opened.Load(), w.closed.Load(), w.errs.String())
}

// watchedIDUpstream is idUpstream with its server's connections and error
// log recorded in watch (when not nil).
func watchedIDUpstream(t *testing.T, log *bodyUpstreamLog, watch *upstreamWatch) *httptest.Server {
	t.Helper()
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			// A cut body: recorded as such, never as a body.
			b = []byte(cutBody)
		}
		log.record(r, b)
		sum := sha256.Sum256(b)
		w.Header().Set("X-Id", r.Header.Get("X-Id"))
		_, _ = io.WriteString(w, hex.EncodeToString(sum[:]))
	}))
	if watch != nil {
		up.Config.ErrorLog = stdlog.New(&watch.errs, "", 0)
		up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				watch.opened.Add(1)
			case http.StateClosed, http.StateHijacked:
				watch.closed.Add(1)
			}
		}
	}
	up.Start()
	t.Cleanup(up.Close)
	return up
}

// smuggledText is a request hidden in bodies: an upstream that ever sees
// X-Id: SMUGGLED was made to read a body as a request.
const smuggledText = "GET /open/smuggled HTTP/1.1\r\nHost: a\r\nX-Id: SMUGGLED\r\n\r\n"

// cutBody is what idUpstream records for a body it could not read whole.
const cutBody = "<cut>"

var cutDigest = func() string { s := sha256.Sum256([]byte(cutBody)); return hex.EncodeToString(s[:]) }()

// pipelined is one request of a pipelined burst and what it must get.
type pipelined struct {
	id     string
	raw    string
	method string
	status int
	// body is what the upstream must receive; forwarded says it must be
	// forwarded at all.
	forwarded bool
	body      string
	// mayCut: the upstream may receive it with a body it cannot read
	// whole (body_limit counts a chunked body as it is forwarded).
	mayCut bool
	// closes: the client asked to close after it. (The edge may also
	// close after a refusal whose body it did not read whole: the
	// answer says so.)
	closes bool
}

// pipelineBody is a body of n bytes that holds request-looking text.
func pipelineBody(rng *rand.Rand, n int) string {
	var b strings.Builder
	for b.Len() < n {
		if rng.IntN(3) == 0 {
			b.WriteString(smuggledText)
		} else {
			b.WriteString(strconv.Itoa(rng.IntN(1 << 20)))
			b.WriteByte(' ')
		}
	}
	return b.String()[:n]
}

// chunkedBody frames body as chunks of random sizes, some with chunk
// extensions, and sometimes a trailer.
func chunkedBody(rng *rand.Rand, body string) string {
	var b strings.Builder
	for len(body) > 0 {
		n := min(len(body), 1+rng.IntN(700))
		ext := ""
		if rng.IntN(4) == 0 {
			ext = ";ext=\"v\";x"
		}
		fmt.Fprintf(&b, "%x%s\r\n%s\r\n", n, ext, body[:n])
		body = body[n:]
	}
	b.WriteString("0\r\n")
	if rng.IntN(4) == 0 {
		b.WriteString("X-Trailer: t\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// newPipelined makes a random request for the pipelining edge's routes.
func newPipelined(rng *rand.Rand, id string) pipelined {
	hdr := "Host: a\r\nX-Id: " + id + "\r\n"
	size := []int{0, 1, 10, 100, 101, 700, 4095, 4096, 9000}[rng.IntN(9)]
	body := pipelineBody(rng, size)
	withBody := func(method, path string, chunked bool) string {
		if chunked {
			return method + " " + path + " HTTP/1.1\r\n" + hdr + "Transfer-Encoding: chunked\r\n\r\n" + chunkedBody(rng, body)
		}
		return fmt.Sprintf("%s %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s", method, path, hdr, len(body), body)
	}
	p := pipelined{id: id, method: http.MethodPost}
	chunked := rng.IntN(2) == 0
	switch k := rng.IntN(10); k {
	case 0:
		p.method, p.raw, p.status, p.forwarded = http.MethodGet, "GET /open/"+id+" HTTP/1.1\r\n"+hdr+"\r\n", 200, true
	case 1:
		p.method, p.raw, p.status, p.forwarded = http.MethodHead, "HEAD /open/"+id+" HTTP/1.1\r\n"+hdr+"\r\n", 200, true
	case 2, 3:
		p.raw, p.status, p.forwarded, p.body = withBody("POST", "/open/"+id, chunked), 200, true, body
	case 4:
		hdr += "X-API-Key: foo\r\n"
		p.raw, p.status, p.forwarded, p.body = withBody("PUT", "/auth/"+id, chunked), 200, true, body
		p.method = http.MethodPut
	case 5:
		// No key: 401, and the body is not forwarded.
		p.raw, p.status = withBody("POST", "/auth/"+id, chunked), 401
	case 6:
		p.method, p.raw, p.status = http.MethodGet, "GET /nowhere/"+id+" HTTP/1.1\r\n"+hdr+"\r\n", 404
	case 7:
		p.raw = withBody("POST", "/small/"+id, chunked)
		if size > 10 {
			p.status, p.mayCut = 413, chunked
		} else {
			p.status, p.forwarded, p.body = 200, true, body
		}
	case 8:
		// Wrong key, with a body the client announced and sent.
		hdr += "X-API-Key: bar\r\n"
		p.raw, p.status = withBody("POST", "/auth/"+id, chunked), 401
	case 9:
		p.method, p.raw, p.status, p.forwarded = http.MethodGet, "GET /open/"+id+" HTTP/1.1\r\n"+hdr+"Connection: close\r\n\r\n", 200, true
		p.closes = true
	}
	return p
}

// Pipelining: bursts of requests written at once on one connection, with
// bodies (Content-Length and chunked, holding request-looking text), some
// refused (401, 404, 413), some ending with a head too large (431). Every
// answer must come back in order for the request it answers, and the
// upstream must get exactly the allowed requests answered before the
// connection ended, each with its body byte for byte, and nothing else:
// no body read as a request, no request behind a close.
func TestEnginePipelinedBursts(t *testing.T) {
	modes := []struct {
		engine string
		tls    bool
	}{
		{routes.HTTP1EngineNetHTTP, false},
		{routes.HTTP1EngineCauseway, false},
		// Over TLS the engine waits for a request by reading its first
		// byte, not by polling the socket: another path.
		{routes.HTTP1EngineCauseway, true},
	}
	for _, m := range modes {
		engine := m.engine
		name := engine
		if m.tls {
			name += "/tls"
		}
		t.Run(name, func(t *testing.T) {
			var log bodyUpstreamLog
			up := idUpstream(t, &log)
			keys := writeTemp(t, "keys.txt", "partner:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\n") // "foo"
			head := engineHeader(engine)
			dial := func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) }
			listener := "http"
			if m.tls {
				certFile, keyFile, pool := serverCert(t, t.TempDir(), "api.example.com")
				head = fmt.Sprintf("version: 1\nlisten: {https: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: \"off\"}\nserver: {http1_engine: %q}\ntls:\n  certificates: [{cert_file: %q, key_file: %q}]\n", engine, certFile, keyFile)
				cfg := &tls.Config{RootCAs: pool, ServerName: "api.example.com", NextProtos: []string{"http/1.1"}}
				dial = func(addr string) (net.Conn, error) { return tls.Dial("tcp", addr, cfg) }
				listener = "https"
			}
			e := startEdge(t, head+fmt.Sprintf(`authenticators:
  partners: {api_key: {header: X-API-Key, keys_file: %q}}
plugins:
  small: {use: body_limit, config: {max_bytes: 10}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: auth, match: {path_prefix: /auth}, auth: partners, upstream: u}
  - {name: small, match: {path_prefix: /small}, plugins: [small], upstream: u}
  - {name: open, match: {path_prefix: /open}, upstream: u}
`, keys, strings.TrimPrefix(up.URL, "http://")))
			const (
				bursts  = 400
				workers = 8
			)
			var (
				next      atomic.Int64
				wg        sync.WaitGroup
				mu        sync.Mutex
				forwarded = map[string]string{} // id -> body the upstream must have
				sentIDs   = map[string]string{} // id -> request line
				mayCut    = map[string]bool{}
				failures  []string
				answered  atomic.Int64
			)
			fail := func(format string, args ...any) {
				mu.Lock()
				defer mu.Unlock()
				if len(failures) < 10 {
					failures = append(failures, fmt.Sprintf(format, args...))
				}
			}
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 7))
					for {
						b := next.Add(1)
						if b > bursts {
							return
						}
						n := 1 + rng.IntN(24)
						reqs := make([]pipelined, n)
						var all strings.Builder
						for i := range reqs {
							reqs[i] = newPipelined(rng, fmt.Sprintf("%s-%d-%d", engine, b, i))
							all.WriteString(reqs[i].raw)
						}
						if rng.IntN(5) == 0 {
							// A head too large for the edge ends the burst.
							all.WriteString("GET /open/x HTTP/1.1\r\nHost: a\r\nX-Id: TOO-LARGE\r\nX-Big: " + strings.Repeat("b", 200<<10) + "\r\n\r\n")
						}
						mu.Lock()
						for _, r := range reqs {
							sentIDs[r.id] = firstLine(r.raw)
							mayCut[r.id] = r.mayCut
						}
						mu.Unlock()
						got := runBurst(func() (net.Conn, error) { return dial(e.Addr(listener)) }, all.String(), reqs, fail)
						answered.Add(int64(got))
						mu.Lock()
						for _, r := range reqs[:got] {
							if r.forwarded {
								forwarded[r.id] = r.body
							}
						}
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			for _, f := range failures {
				t.Error(f)
			}
			// What the upstream received: exactly the forwarded requests,
			// each once, with its body.
			log.mu.Lock()
			defer log.mu.Unlock()
			for id, digests := range log.digests {
				want, ok := forwarded[id]
				if !ok && mayCut[id] && len(digests) == 1 && digests[0] == cutDigest {
					continue
				}
				if !ok {
					if line, sent := sentIDs[id]; sent {
						t.Errorf("the upstream received %s (%s), which was refused or never answered", id, line)
					} else {
						t.Errorf("the upstream received a request the client never sent as one: X-Id %q", id)
					}
					continue
				}
				sum := sha256.Sum256([]byte(want))
				if len(digests) != 1 || digests[0] != hex.EncodeToString(sum[:]) {
					t.Errorf("%s: the upstream received %d bodies %v, want one of %d bytes", id, len(digests), digests, len(want))
				}
			}
			for id := range forwarded {
				if _, ok := log.digests[id]; !ok {
					t.Errorf("%s was answered 200 but never reached the upstream", id)
				}
			}
			t.Logf("%s: %d answers checked, %d requests forwarded", engine, answered.Load(), len(forwarded))
		})
	}
}

// runBurst writes all at once and reads the answers to reqs in order,
// checking each; it returns how many were answered before the connection
// ended (the edge closes after a refusal it did not read the body of, or
// a 431).
func runBurst(dial func() (net.Conn, error), all string, reqs []pipelined, fail func(string, ...any)) int {
	c, err := dial()
	if err != nil {
		fail("dial: %v", err)
		return 0
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() { _, _ = io.WriteString(c, all) }()
	br := bufio.NewReader(c)
	for i, r := range reqs {
		resp, body, err := readAnswer(br, r.method)
		if err != nil {
			fail("%s: no answer (%v) after %d answers", r.id, err, i)
			return i
		}
		if r.closes && !resp.Close {
			fail("%s: the answer to a request that closes does not say so", r.id)
		}
		if resp.StatusCode != r.status {
			fail("%s: status %d, want %d (body %.200q)", r.id, resp.StatusCode, r.status, body)
		}
		if r.status == 200 {
			if resp.Header.Get("X-Id") != r.id {
				fail("%s: got the answer to %q", r.id, resp.Header.Get("X-Id"))
			}
			sum := sha256.Sum256([]byte(r.body))
			if r.method != http.MethodHead && body != hex.EncodeToString(sum[:]) {
				fail("%s: the upstream's digest %q is not the body's", r.id, body)
			}
		} else if resp.Header.Get("X-Id") != "" {
			fail("%s: a refusal carries an upstream's X-Id %q", r.id, resp.Header.Get("X-Id"))
		}
		if resp.Close {
			return i + 1
		}
	}
	// After the last answer: only a 431 may follow.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	rest, _ := io.ReadAll(br)
	if len(rest) > 0 && !strings.HasPrefix(string(rest), "HTTP/1.1 431") {
		fail("after the last answer: %.200q", rest)
	}
	return len(reqs)
}

// Concurrency: 64 keep-alive clients send POSTs with bodies of the sizes
// where buffers turn over (0, 1, 4095, 4096, 65537 bytes, 1 MiB), with
// Content-Length or chunked in chunks of random sizes, each request
// written in random pieces (a head split anywhere, a CRLF split in two).
// The upstream's digest of what it received must match, per request, and
// every answer must be its own request's.
func TestEngineConcurrentBodies(t *testing.T) {
	// 300,000 bytes crosses every buffer boundary a MiB would, at a third
	// of the cost under -race.
	sizes := []int{0, 1, 4095, 4096, 65537, 300_000}
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			var (
				log   bodyUpstreamLog
				watch upstreamWatch
			)
			up := watchedIDUpstream(t, &log, &watch)
			// The access log says, for a request that failed, what the
			// edge saw: its status, the body bytes it read and the
			// upstream's error.
			accessLog := filepath.Join(t.TempDir(), "access.log")
			e, logs := startLoggingEdge(t, strings.Replace(engineHeader(engine), `access_log: {output: "off"}`, fmt.Sprintf("access_log: {output: %q}", accessLog), 1)+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: open, match: {path_prefix: /open}, upstream: u}
`, strings.TrimPrefix(up.URL, "http://")))
			const (
				clients = 64
				total   = 1000
			)
			var (
				fails failureLog
				mu    sync.Mutex
				want  = map[string]string{} // id -> digest
			)
			fail := fails.add
			runClients(clients, total, 11, func(k *keepAliveClient, n int64) bool {
				rng := k.rng
				id := fmt.Sprintf("%s-%d", engine, n)
				size := sizes[rng.IntN(len(sizes))]
				body := make([]byte, size)
				fillRandom(rng, body)
				sum := sha256.Sum256(body)
				digest := hex.EncodeToString(sum[:])
				mu.Lock()
				want[id] = digest
				mu.Unlock()
				var msg string
				if rng.IntN(2) == 0 {
					msg = fmt.Sprintf("POST /open/%s HTTP/1.1\r\nHost: a\r\nX-Id: %s\r\nContent-Length: %d\r\n\r\n%s", id, id, size, body)
				} else {
					msg = "POST /open/" + id + " HTTP/1.1\r\nHost: a\r\nX-Id: " + id + "\r\nTransfer-Encoding: chunked\r\n\r\n"
					rest := body
					var b strings.Builder
					for len(rest) > 0 {
						k := min(len(rest), 1+rng.IntN([]int{300, 4096, 70000}[rng.IntN(3)]))
						fmt.Fprintf(&b, "%x\r\n%s\r\n", k, rest[:k])
						rest = rest[k:]
					}
					msg += b.String() + "0\r\n\r\n"
				}
				// Dialled only once the request is ready: the
				// first head must arrive within read_header_timeout
				// of the accept, and building a MiB under -race on
				// a loaded machine can take a while.
				if err := k.dial(e.Addr("http")); err != nil {
					fail(id, "%s: dial: %v", id, err)
					return false
				}
				c, br := k.c, k.br
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				// In pieces: the first few at random places, then
				// the rest at once.
				p := msg
				for range rng.IntN(4) {
					if len(p) < 2 {
						break
					}
					k := 1 + rng.IntN(min(len(p)-1, 200))
					if _, err := io.WriteString(c, p[:k]); err != nil {
						fail(id, "%s: write: %v (the edge said %q)", id, err, drain(br))
						return false
					}
					p = p[k:]
					time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
				}
				if _, err := io.WriteString(c, p); err != nil {
					fail(id, "%s: write: %v (the edge said %q)", id, err, drain(br))
					return false
				}
				resp, got, err := readAnswer(br, http.MethodPost)
				if err != nil {
					fail(id, "%s (%d bytes): no answer: %v", id, size, err)
					return false
				}
				if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Id") != id || got != digest {
					fail(id, "%s (%d bytes): %d for %q, digest %.64q want %s", id, size, resp.StatusCode, resp.Header.Get("X-Id"), got, digest)
				}
				if resp.Close {
					k.drop()
				}
				return true
			})
			fails.report(t)
			failed := fails.ids
			log.mu.Lock()
			for id, digests := range log.digests {
				if w, ok := want[id]; !ok || len(digests) != 1 || digests[0] != w {
					t.Errorf("%s: the upstream received %v, want one body with digest %s", id, digests, w)
					failed = append(failed, id)
				}
			}
			for id := range want {
				if _, ok := log.digests[id]; !ok {
					t.Errorf("%s: never reached the upstream's handler", id)
					failed = append(failed, id)
				}
			}
			log.mu.Unlock()
			if len(failed) > 0 {
				// What each side recorded, so that a failure that does not
				// come back on a rerun still says where the request ended.
				for _, l := range accessLogLines(accessLog, failed) {
					t.Log("access log:", l)
				}
				for _, l := range strings.Split(logs.String(), "\n") {
					if strings.Contains(l, "h1server") || strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
						t.Log("edge:", l)
					}
				}
				t.Log(watch.String())
				t.Log(openFiles())
			}
		})
	}
}

// accessLogLines are the lines of the access log at path for the requests
// to /open/<id>, one for each of ids (at most 10). The edge writes a line
// once its handler returns, which can be after the client has its answer:
// it waits a little for lines that are missing.
func accessLogLines(path string, ids []string) []string {
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	if len(ids) > 10 {
		ids = ids[:10]
	}
	var found []string
	waitFor(2*time.Second, func() bool {
		b, _ := os.ReadFile(path)
		found = found[:0]
		for _, id := range ids {
			key := fmt.Sprintf(`"path":"/open/%s"`, id)
			line := id + ": no line"
			for l := range strings.SplitSeq(string(b), "\n") {
				if strings.Contains(l, key) {
					line = l
				}
			}
			found = append(found, line)
		}
		return !strings.Contains(strings.Join(found, "\n"), ": no line")
	})
	return found
}

// openFiles is how many files the test process has open and may open
// (Linux), for a failure's message: an edge whose dial to its upstream
// fails with EMFILE answers 502 for a request the upstream never saw.
func openFiles() string {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return "open files: unknown (" + err.Error() + ")"
	}
	limit := "unknown"
	if b, err := os.ReadFile("/proc/self/limits"); err == nil {
		for l := range strings.SplitSeq(string(b), "\n") {
			if f := strings.Fields(strings.TrimPrefix(l, "Max open files")); strings.HasPrefix(l, "Max open files") && len(f) >= 2 {
				limit = f[0] + " soft, " + f[1] + " hard"
			}
		}
	}
	return fmt.Sprintf("the test process has %d files open; its limit: %s", len(fds), limit)
}

// fillRandom fills b with bytes from rng, eight at a time.
func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := i; j < min(i+8, len(b)); j++ {
			b[j] = byte(v)
			v >>= 8
		}
	}
}

// drain is what is left to read on a connection the edge ended, for a
// failure's message.
func drain(br *bufio.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(br, 1024))
	return string(b)
}

// upgradeUpstream switches protocols for every request but those under
// /refuse (403), then echoes what it reads; it records every request.
func upgradeUpstream(t *testing.T, log *bodyUpstreamLog) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		log.record(r, body)
		if strings.HasPrefix(r.URL.Path, "/refuse") || r.Header.Get("Upgrade") == "" {
			w.Header().Set("X-Id", r.Header.Get("X-Id"))
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(c, brw) // echo, bytes the server read ahead first
	}))
	t.Cleanup(up.Close)
	return up
}

// Upgrades. Bytes a client sends right behind its upgrade request reach
// the upstream through the tunnel once it switches, in order; an upgrade
// the upstream refuses leaves an HTTP connection whose next bytes are a
// request of their own, routed and authenticated as any other.
func TestEngineUpgrades(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			var log bodyUpstreamLog
			up := upgradeUpstream(t, &log)
			keys := writeTemp(t, "keys.txt", "partner:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\n") // "foo"
			e := startEdge(t, engineHeader(engine)+fmt.Sprintf(`authenticators:
  partners: {api_key: {header: X-API-Key, keys_file: %q}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: auth, match: {path_prefix: /auth}, auth: partners, upstream: u}
  - {name: open, match: {path_prefix: /}, upstream: u}
`, keys, strings.TrimPrefix(up.URL, "http://")))
			upgrade := func(path, id string) string {
				return "GET " + path + " HTTP/1.1\r\nHost: a\r\nX-Id: " + id + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
			}
			hidden := "GET /auth/hidden HTTP/1.1\r\nHost: a\r\nX-Id: hidden\r\n\r\n"
			t.Run("early data reaches the tunnel", func(t *testing.T) {
				for i := range 50 {
					c, err := net.Dial("tcp", e.Addr("http"))
					if err != nil {
						t.Fatal(err)
					}
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					early := fmt.Sprintf("early-%d|", i)
					if _, err := io.WriteString(c, upgrade("/ws", fmt.Sprintf("ws-%d", i))+early); err != nil {
						t.Fatal(err)
					}
					br := bufio.NewReader(c)
					resp, err := http.ReadResponse(br, nil)
					if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
						c.Close()
						t.Fatalf("round %d: %v %v", i, resp, err)
					}
					if _, err := io.WriteString(c, "late"); err != nil {
						t.Fatal(err)
					}
					want := early + "late"
					got := make([]byte, len(want))
					_, err = io.ReadFull(br, got)
					c.Close()
					if string(got) != want {
						t.Fatalf("round %d: the tunnel echoed %q (%v), want %q: bytes sent before the 101 were lost", i, got, err, want)
					}
				}
			})
			t.Run("refused upgrade is no tunnel", func(t *testing.T) {
				c, err := net.Dial("tcp", e.Addr("http"))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.WriteString(c, upgrade("/refuse", "refused")+hidden); err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReader(c)
				resp, _, err := readAnswer(br, http.MethodGet)
				if err != nil || resp.StatusCode != http.StatusForbidden {
					t.Fatalf("the refused upgrade: %v %v", resp, err)
				}
				if resp, _, err := readAnswer(br, http.MethodGet); err == nil && resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("the request behind a refused upgrade: %d, want 401", resp.StatusCode)
				}
				for _, s := range log.seen() {
					if strings.Contains(s, "hidden") {
						t.Fatalf("the upstream received the request behind a refused upgrade without its auth: %s", s)
					}
				}
			})
		})
	}
}

// engineGoroutines counts the goroutines of the edge's own HTTP/1.1
// engine: one per client connection it holds, and their helpers.
func engineGoroutines() int {
	buf := make([]byte, 16<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "gateway/internal/h1server.(*conn).serve(")
}

// Hostile clients that hold connections: a head dribbled and stopped, a
// body stopped, an Expect: 100-continue never followed by its body, big
// answers never read (one request, and a pipelined pair), a reset in the
// middle of a body, a half-close. With the timeouts short, the engine must
// let go of every one of them by itself, while the clients still hold
// their sockets open; and well-formed oddities (10,000 one-byte chunks)
// are still served, while a chunk extension past every bound is refused.
func TestEngineHostileClientsReleased(t *testing.T) {
	var log bodyUpstreamLog
	big := strings.Repeat("z", 8<<20)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			b = []byte(cutBody)
		}
		log.record(r, b)
		w.Header().Set("X-Id", r.Header.Get("X-Id"))
		if strings.HasPrefix(r.URL.Path, "/big") {
			_, _ = io.WriteString(w, big)
			return
		}
		sum := sha256.Sum256(b)
		_, _ = io.WriteString(w, hex.EncodeToString(sum[:]))
	}))
	t.Cleanup(up.Close)
	e := startEdge(t, header+fmt.Sprintf(`server:
  http1_engine: causeway
  read_header_timeout: 1s
  body_read_timeout: 1s
  write_stall_timeout: 1s
  idle_timeout: 2s
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: open, match: {path_prefix: /}, upstream: u}
`, strings.TrimPrefix(up.URL, "http://")))
	addr := e.Addr("http")
	const each = 20
	post := func(id, extra string) string {
		return "POST /p HTTP/1.1\r\nHost: a\r\nX-Id: " + id + "\r\n" + extra + "\r\n"
	}
	hostile := []struct {
		name  string
		send  string
		reset bool // then reset the connection
		half  bool // then half-close and read the answer
	}{
		{name: "slowloris head", send: "GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n"},
		{name: "body stopped", send: post("stopped", "Content-Length: 1000\r\n") + "0123456789"},
		{name: "chunked body stopped", send: post("stopped-chunked", "Transfer-Encoding: chunked\r\n") + "5\r\nhello\r\n"},
		{name: "expect without body", send: post("expect", "Content-Length: 10\r\nExpect: 100-continue\r\n")},
		{name: "answer never read", send: "GET /big HTTP/1.1\r\nHost: a\r\nX-Id: big\r\n\r\n"},
		{name: "pipelined answers never read", send: "GET /big HTTP/1.1\r\nHost: a\r\nX-Id: big1\r\n\r\nGET /big HTTP/1.1\r\nHost: a\r\nX-Id: big2\r\n\r\n"},
		{name: "reset mid-body", send: post("reset", "Content-Length: 100000\r\n") + strings.Repeat("r", 5000), reset: true},
		{name: "half-close", send: "GET /x HTTP/1.1\r\nHost: a\r\nX-Id: half\r\n\r\n", half: true},
	}
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for _, h := range hostile {
		for range each {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("%s: %v", h.name, err)
			}
			if _, err := io.WriteString(c, h.send); err != nil {
				t.Fatalf("%s: %v", h.name, err)
			}
			switch {
			case h.reset:
				_ = c.(*net.TCPConn).SetLinger(0)
				c.Close()
			case h.half:
				_ = c.(*net.TCPConn).CloseWrite()
				held = append(held, c)
			default:
				held = append(held, c)
			}
		}
	}
	// Well-formed but odd, on connections of their own meanwhile.
	var chunks strings.Builder
	var body strings.Builder
	for i := range 10000 {
		b := byte('a' + i%26)
		fmt.Fprintf(&chunks, "1\r\n%c\r\n", b)
		body.WriteByte(b)
	}
	resp := rawExchange(t, addr, post("tiny-chunks", "Transfer-Encoding: chunked\r\n")+chunks.String()+"0\r\n\r\n")
	sum := sha256.Sum256([]byte(body.String()))
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || string(b) != hex.EncodeToString(sum[:]) {
		t.Errorf("10,000 one-byte chunks: %d %q", resp.StatusCode, b)
	}
	resp = rawExchange(t, addr, post("long-ext", "Transfer-Encoding: chunked\r\n")+"1;x="+strings.Repeat("e", 3000)+"\r\na\r\n"+
		strings.Repeat("1;"+strings.Repeat("e", 3000)+"\r\na\r\n", 10)+"0\r\n\r\n")
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("chunk extensions past the bound: %d, want 400", resp.StatusCode)
	}

	// Every hostile connection is let go of by the engine, the clients
	// still holding theirs. The wait is only a guard against a hang: the
	// timeouts are 1-2 s.
	if !waitFor(20*time.Second, func() bool { return engineGoroutines() == 0 }) {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("the engine still serves %d connections the clients hold; goroutines:\n%s", engineGoroutines(), buf)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	for _, id := range []string{"stopped", "stopped-chunked", "reset", "expect"} {
		for _, d := range log.digests[id] {
			if d != cutDigest {
				t.Errorf("%s: the upstream read a cut body as complete", id)
			}
		}
	}
}

// misbehavingUpstream speaks HTTP/1.1 by hand and misbehaves by path:
// bytes after its answer (at once or a moment later), a body after HEAD or
// 204, 1xx answers before the final one, an answer cut short. Every stray
// byte it sends is a whole response for X-Id LEAKED.
//
// With cfg it speaks TLS (a sidecar's end of the mesh hop): stray bytes
// written with the answer then share its TLS record, later ones come in
// records of their own, and /extra-big's span several full-size records.
func misbehavingUpstream(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	const leak = "HTTP/1.1 200 OK\r\nX-Id: LEAKED\r\nContent-Length: 6\r\n\r\nleaked"
	serve := func(raw net.Conn) {
		defer wg.Done()
		held := &heldWrites{Conn: raw}
		c := net.Conn(held)
		if cfg != nil {
			c = tls.Server(held, cfg)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return
			}
			id := r.Header.Get("X-Id")
			ok := "HTTP/1.1 200 OK\r\nX-Id: " + id + "\r\nContent-Length: " + strconv.Itoa(len(id)) + "\r\n\r\n" + id
			var out string
			switch {
			case r.Method == http.MethodHead:
				out = "HTTP/1.1 200 OK\r\nX-Id: " + id + "\r\nContent-Length: 6\r\n\r\nleaked"
			case strings.HasPrefix(r.URL.Path, "/extra-record"):
				// The answer and the stray response written apart (over
				// TLS, a record each) but sent in one segment, so both
				// are at the edge before it is done with the answer: the
				// stray record waits in the socket or undecrypted in
				// crypto/tls, never in what the answer was read from.
				held.hold()
				if _, err := io.WriteString(c, ok); err != nil {
					return
				}
				if _, err := io.WriteString(c, leak); err != nil {
					return
				}
				if err := held.release(); err != nil {
					return
				}
				continue
			case strings.HasPrefix(r.URL.Path, "/extra-big"):
				// A whole response, then 40 KiB more of its body: over
				// TLS, three records beyond the answer's.
				big := strings.Repeat("leaked", 40<<10/6)
				out = ok + "HTTP/1.1 200 OK\r\nX-Id: LEAKED\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big
			case strings.HasPrefix(r.URL.Path, "/extra"):
				out = ok + leak
			case strings.HasPrefix(r.URL.Path, "/late"):
				if _, err := io.WriteString(c, ok); err != nil {
					return
				}
				time.Sleep(time.Millisecond)
				out = leak
			case strings.HasPrefix(r.URL.Path, "/204"):
				out = "HTTP/1.1 204 No Content\r\nX-Id: " + id + "\r\n\r\n" + leak
			case strings.HasPrefix(r.URL.Path, "/1xx"):
				out = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </b>\r\n\r\n" + ok
			case strings.HasPrefix(r.URL.Path, "/cut"):
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Id: "+id+"\r\nContent-Length: 100\r\n\r\nshort")
				return
			case strings.HasPrefix(r.URL.Path, "/chunked-extra"):
				out = "HTTP/1.1 200 OK\r\nX-Id: " + id + "\r\nTransfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(id), id) + leak
			default:
				out = ok
			}
			if _, err := io.WriteString(c, out); err != nil {
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// heldWrites gathers what is written while held and sends it in one write
// on release.
type heldWrites struct {
	net.Conn
	held bool
	buf  []byte
}

func (h *heldWrites) hold() { h.held = true }

func (h *heldWrites) Write(p []byte) (int, error) {
	if h.held {
		h.buf = append(h.buf, p...)
		return len(p), nil
	}
	return h.Conn.Write(p)
}

func (h *heldWrites) release() error {
	h.held = false
	_, err := h.Conn.Write(h.buf)
	h.buf = h.buf[:0]
	return err
}

// An upstream that sends stray bytes must never get them to a client as
// an answer: 32 keep-alive clients, requests spread over every kind of
// misbehaviour, each answer checked to be its own request's.
func TestEngineStrayUpstreamBytesNeverAnswer(t *testing.T) {
	addr := misbehavingUpstream(t, nil)
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			strayBytesNeverAnswer(t, engine, engineHeader(engine)+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: open, match: {path_prefix: /}, upstream: u}
`, addr), 4000)
		})
	}
}

// The same over the mesh hop: the edge's own HTTP/1.1 client speaks mTLS to
// a sidecar that misbehaves, and must never hand a later request what the
// sidecar sent after an answer, whether it came in the answer's TLS record,
// in records of its own or across several.
func TestEngineStrayMeshBytesNeverAnswer(t *testing.T) {
	hop := newMeshHop(t)
	addr := misbehavingUpstream(t, hop.serverTLS)
	// The hop's client is the same under either server engine.
	engine := routes.HTTP1EngineCauseway
	strayBytesNeverAnswer(t, engine, engineHeader(engine)+hop.config(addr, ""), 3000)
}

// meshHop is an edge identity and a service identity of one mesh CA: the
// service's side is a server that stands in for a sidecar.
type meshHop struct {
	serverTLS *tls.Config // the sidecar's: mTLS 1.3, the edge's certificate required
	edgeFiles meshtest.Files
	svcID     string
}

func newMeshHop(t *testing.T) *meshHop {
	ca := meshtest.NewCA(t, "example.org")
	const edgeID, svcID = "spiffe://example.org/ns/edge/sa/gateway", "spiffe://example.org/ns/shop/sa/orders"
	svc := ca.Issue(svcID)
	return &meshHop{
		serverTLS: &tls.Config{
			Certificates: []tls.Certificate{svc.TLS},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    ca.Pool(),
			MinVersion:   tls.VersionTLS13,
			NextProtos:   []string{"http/1.1"},
		},
		edgeFiles: ca.IssueFiles(t.TempDir(), edgeID),
		svcID:     svcID,
	}
}

// config is the edge's mesh settings and one route to the sidecar at addr;
// extra is appended to the upstream's flow mapping (", timeout: 5s").
func (h *meshHop) config(addr, extra string) string {
	return fmt.Sprintf(`mesh: {trust_domain: example.org, cert_file: %q, key_file: %q, bundle_file: %q}
upstreams:
  u: {endpoints: [%q], mesh_identity: %q%s}
routes:
  - {name: open, match: {path_prefix: /}, upstream: u}
`, h.edgeFiles.Cert, h.edgeFiles.Key, h.edgeFiles.Bundle, addr, h.svcID, extra)
}

// strayBytesNeverAnswer runs total requests of 32 keep-alive clients
// through an edge of config whose upstream is misbehavingUpstream's, every
// answer checked to be its own request's.
func strayBytesNeverAnswer(t *testing.T, engine, config string, total int64) {
	e := startEdge(t, config)
	// Not /late: a response that comes after the connection went
	// back to the pool and was given the next request cannot be
	// told from that request's answer (http.Transport has the
	// same window); only not reusing connections closes it.
	paths := []string{"/ok", "/extra", "/extra-record", "/extra-big", "/204", "/1xx", "/cut", "/chunked-extra", "/ok2"}
	const clients = 32
	var fails failureLog
	runClients(clients, total, 5, func(k *keepAliveClient, n int64) bool {
		rng := k.rng
		id := fmt.Sprintf("%s-%d", engine, n)
		if err := k.dial(e.Addr("http")); err != nil {
			fails.add(id, "dial: %v", err)
			return false
		}
		c, br := k.c, k.br
		path := paths[rng.IntN(len(paths))]
		method := http.MethodGet
		if rng.IntN(8) == 0 {
			method = http.MethodHead
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(c, method+" "+path+" HTTP/1.1\r\nHost: a\r\nX-Id: "+id+"\r\n\r\n"); err != nil {
			fails.add(id, "%s: %v", id, err)
			return false
		}
		resp, body, err := readAnswer(br, method)
		if err != nil {
			if path != "/cut" {
				// An answer cut short must reach the
				// client cut short: only there.
				fails.add(id, "%s %s %s: %v", method, path, id, err)
			}
			k.drop()
			return true
		}
		got := resp.Header.Get("X-Id")
		switch {
		case resp.StatusCode == http.StatusBadGateway && path == "/cut":
		case resp.StatusCode >= 500:
			fails.add(id, "%s %s %s: %d %q", method, path, id, resp.StatusCode, body)
		case got != id:
			fails.add(id, "%s %s %s: got the answer of %q: %d %q", method, path, id, got, resp.StatusCode, body)
		case method == http.MethodGet && path != "/204" && path != "/cut" && body != id:
			fails.add(id, "%s %s %s: body %q", method, path, id, body)
		}
		if resp.Close {
			k.drop()
		}
		return true
	})
	fails.report(t)
}

// Host against an absolute-form target: the edge routes and authorises by
// one host (the target's authority, RFC 9112 3.2.2), and the upstream must
// see that same host, never the Host header the client set beside it
// (here a host whose route needs a key).
func TestEngineAbsoluteFormHost(t *testing.T) {
	up := newHeaderUpstream(t)
	keys := writeTemp(t, "keys.txt", "partner:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\n") // "foo"
	tests := []struct{ name, req string }{
		{"absolute-form", "GET http://public.example/x HTTP/1.1\r\nHost: admin.example\r\n"},
		{"absolute-form, case", "GET http://PUBLIC.example/x HTTP/1.1\r\nHost: admin.example\r\n"},
		{"absolute-form, port", "GET http://public.example:80/x HTTP/1.1\r\nHost: admin.example\r\n"},
		{"absolute-form https", "GET https://public.example/x HTTP/1.1\r\nHost: admin.example\r\n"},
		{"trailing dot", "GET /x HTTP/1.1\r\nHost: public.example.\r\n"},
		{"upper case and port", "GET /x HTTP/1.1\r\nHost: PUBLIC.EXAMPLE:8080\r\n"},
	}
	for _, engine := range engines {
		e := startEdge(t, engineHeader(engine)+fmt.Sprintf(`authenticators:
  partners: {api_key: {header: X-API-Key, keys_file: %q}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: admin, match: {host: admin.example}, auth: partners, upstream: u}
  - {name: pub, match: {host: public.example}, upstream: u}
`, keys, up.addr()))
		for i, tt := range tests {
			t.Run(engine+"/"+tt.name, func(t *testing.T) {
				id := fmt.Sprintf("abs-%s-%d", engine, i)
				resp := rawExchange(t, e.Addr("http"), tt.req+"X-Test-Id: "+id+"\r\n\r\n")
				s, ok := up.got(id)
				if resp.StatusCode != http.StatusOK || !ok {
					t.Fatalf("status %d, reached the upstream: %v", resp.StatusCode, ok)
				}
				host := strings.TrimSuffix(strings.ToLower(s.Host), ".")
				if h, _, err := net.SplitHostPort(host); err == nil {
					host = h
				}
				if host != "public.example" {
					t.Errorf("routed as public.example, the upstream saw Host %q", s.Host)
				}
			})
		}
	}
}

// failureLog keeps the first ten failures reported by many clients, and
// the ids of the requests they were about.
type failureLog struct {
	mu   sync.Mutex
	msgs []string
	ids  []string
}

func (f *failureLog) add(id, format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.msgs) < 10 {
		f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
		f.ids = append(f.ids, id)
	}
}

// report fails t with each failure kept.
func (f *failureLog) report(t *testing.T) {
	t.Helper()
	for _, m := range f.msgs {
		t.Error(m)
	}
}

// keepAliveClient is one of runClients' clients: its own random source,
// and at most one connection, dialled when a request needs one.
type keepAliveClient struct {
	rng *rand.Rand
	c   net.Conn
	br  *bufio.Reader
}

// dial connects to addr unless the client is still connected.
func (k *keepAliveClient) dial(addr string) error {
	if k.c != nil {
		return nil
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	k.c, k.br = c, bufio.NewReader(c)
	return nil
}

// drop closes the client's connection; the next request dials again.
func (k *keepAliveClient) drop() {
	if k.c != nil {
		k.c.Close()
		k.c, k.br = nil, nil
	}
}

// runClients runs clients keep-alive clients that share the requests
// numbered 1 to total between them, and waits for them. Each calls send
// for the requests it takes, and stops when send returns false; client i's
// random source is seeded with (i, seed).
func runClients(clients int, total int64, seed uint64, send func(k *keepAliveClient, n int64) bool) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			k := &keepAliveClient{rng: rand.New(rand.NewPCG(uint64(i), seed))}
			defer k.drop()
			for {
				n := next.Add(1)
				if n > total || !send(k, n) {
					return
				}
			}
		})
	}
	wg.Wait()
}
