package gateway

// What a hostile or buggy upstream and a client uploading against it can do
// to request and response bodies on the upstream path: every body reaches
// the upstream whole (retries, the mirror, large and h2c bodies), a cut
// response is an error and never a short answer, an upstream that closes
// or speaks HTTP/1.0 is followed, and an upload the upstream answers early
// never leaves its rest to be read as requests of their own
// (TestUnreadBodyIsNotParsedAsRequests, TestExpectBodySentAfterFinalAnswer,
// TestEarlyUpstreamAnswerToLargeUpload: all three failed before the edge
// closed such connections).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// bodyRecorder is an upstream that records, per path, the digest and
// length of every request body it received whole, and answers with them.
type bodyRecorder struct {
	mu   sync.Mutex
	got  map[string][]string // path -> "len:sha"
	hits atomic.Int64
}

func digest(b []byte) string { return fmt.Sprintf("%d:%x", len(b), sha256.Sum256(b)) }

func (br *bodyRecorder) record(path string, b []byte) {
	br.hits.Add(1)
	br.mu.Lock()
	if br.got == nil {
		br.got = map[string][]string{}
	}
	br.got[path] = append(br.got[path], digest(b))
	br.mu.Unlock()
}

func (br *bodyRecorder) of(path string) []string {
	br.mu.Lock()
	defer br.mu.Unlock()
	return append([]string(nil), br.got[path]...)
}

func (br *bodyRecorder) handler() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			br.record(r.URL.Path+"#broken", b)
			return
		}
		br.record(r.URL.Path, b)
		io.WriteString(w, digest(b))
	}
}

func randBody(rng *mrand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	return b
}

// failingEndpoint answers every request without reading its body in the
// given way: "503" (a complete 503, connection kept), "reset" (reads part
// of the body, then resets the connection).
func failingEndpoint(t *testing.T, mode string, hits *atomic.Int64) string {
	return testutil.ServeConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			hits.Add(1)
			switch mode {
			case "503":
				if _, err := io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"); err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
			case "reset":
				_, _ = io.CopyN(io.Discard, req.Body, req.ContentLength/2)
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				c.Close()
				return
			}
		}
	})
}

// TestRetriedPOSTBodyArrivesWhole: a POST retried (non_idempotent)
// after the first endpoint answered 503 without reading the body, or reset
// the connection half-way through it, reaches the second endpoint whole.
func TestRetriedPOSTBodyArrivesWhole(t *testing.T) {
	for _, mode := range []string{"503"} { // a reset: TestRetriedPOSTAfterResetMidBody
		t.Run(mode, func(t *testing.T) {
			var badHits atomic.Int64
			bad := failingEndpoint(t, mode, &badHits)
			rec := &bodyRecorder{}
			good := atkServer(t, rec.handler())
			te := startEdge(t, strings.Replace(listenHeader, "output: off", "output: stderr", 1)+fmt.Sprintf(`upstreams:
  u:
    endpoints: [%q, %q]
    retries: {attempts: 2, on: [reset, "503"], non_idempotent: true, budget_percent: 100}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, bad, good))
			rng := mrand.New(mrand.NewPCG(1, 2))
			client := &http.Client{}
			for i := range 200 {
				n := rng.IntN(64 << 10)
				if i%10 == 0 {
					n = 0
				}
				body := randBody(rng, n)
				path := fmt.Sprintf("/p%d", i)
				req, _ := http.NewRequest(http.MethodPost, te.url+path, bytes.NewReader(body))
				if i%3 == 0 && mode == "503" {
					// (With "reset", the raw endpoint never sends 100 Continue,
					// so every such attempt waits the transport's 1 s.)
					req.Header.Set("Expect", "100-continue")
				}
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("POST %s: %v", path, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if d := time.Since(start); d > 2*time.Second || resp.StatusCode != http.StatusOK {
					t.Errorf("POST %s (%d bytes, expect %v): %d %q after %v", path, n, req.Header.Get("Expect") != "", resp.StatusCode, b, d.Round(time.Millisecond))
				}
				want := digest(body)
				if resp.StatusCode == http.StatusOK && string(b) != want {
					t.Errorf("POST %s (%d bytes): answer %q, want %q", path, n, b, want)
				}
				for _, g := range rec.of(path) {
					if g != want {
						t.Errorf("POST %s (%d bytes): upstream received %s, want %s (status to client %d)", path, n, g, want, resp.StatusCode)
					}
				}
				if b := rec.of(path + "#broken"); len(b) > 0 {
					t.Errorf("POST %s: upstream saw a broken body %v", path, b)
				}
			}
			t.Logf("bad endpoint hits %d, good %d", badHits.Load(), rec.hits.Load())
			if t.Failed() {
				t.Log(te.logs.String())
			}
		})
	}
}

// TestMirroredPOSTBodyArrivesWholeAtBoth: with a mirror (and
// retries), the main upstream and the shadow both receive the whole body.
func TestMirroredPOSTBodyArrivesWholeAtBoth(t *testing.T) {
	main, shadow := &bodyRecorder{}, &bodyRecorder{}
	mainURL, shadowURL := atkServer(t, main.handler()), atkServer(t, shadow.handler())
	for _, retries := range []string{"", "\n    retries: {attempts: 1, on: [\"503\"], non_idempotent: true, max_body: 1024}"} {
		t.Run(fmt.Sprintf("retries=%v", retries != ""), func(t *testing.T) {
			te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u:
    endpoints: [%q]
    mirror: {upstream: s, max_body: 65536}%s
  s: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, mainURL, retries, shadowURL))
			rng := mrand.New(mrand.NewPCG(3, 4))
			var wg sync.WaitGroup
			errs := make(chan error, 1000)
			sent := sync.Map{}
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := mrand.New(mrand.NewPCG(uint64(w), 9))
					for i := range 50 {
						n := rng.IntN(64 << 10)
						body := randBody(rng, n)
						path := fmt.Sprintf("/%v/w%d/%d", retries != "", w, i)
						sent.Store(path, digest(body))
						req, _ := http.NewRequest(http.MethodPost, te.url+path, bytes.NewReader(body))
						resp, err := http.DefaultClient.Do(req)
						if err != nil {
							errs <- err
							return
						}
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if string(b) != digest(body) {
							errs <- fmt.Errorf("POST %s: answer %q", path, b)
						}
					}
				}()
			}
			wg.Wait()
			_ = rng
			deadline := time.Now().Add(5 * time.Second)
			sent.Range(func(k, v any) bool {
				path := k.(string)
				for time.Now().Before(deadline) && len(shadow.of(path)) == 0 {
					time.Sleep(10 * time.Millisecond)
				}
				if g := main.of(path); len(g) != 1 || g[0] != v.(string) {
					errs <- fmt.Errorf("%s: main received %v, want %s", path, g, v)
				}
				if g := shadow.of(path); len(g) != 1 || g[0] != v.(string) {
					errs <- fmt.Errorf("%s: shadow received %v, want %s", path, g, v)
				}
				return true
			})
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

func atkServer(t *testing.T, h http.Handler) string {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func edgeConfig(addr string) string {
	return listenHeader + fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, addr)
}

func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// TestLargeBodiesArriveWhole: 1-5 MiB POST bodies over HTTP/1.1
// (Content-Length and chunked) and h2c reach an HTTP/1 upstream whole.
func TestLargeBodiesArriveWhole(t *testing.T) {
	rec := &bodyRecorder{}
	te := startEdge(t, edgeConfig(atkServer(t, rec.handler())))
	clients := map[string]*http.Client{"h1": {Transport: &http.Transport{}}, "h2c": h2cClient()}
	for name, client := range clients {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := mrand.New(mrand.NewPCG(uint64(w), 77))
					for i := range 5 {
						body := randBody(rng, 1<<20+rng.IntN(4<<20))
						path := fmt.Sprintf("/%s/w%d/%d", name, w, i)
						var rd io.Reader = bytes.NewReader(body)
						if i%2 == 1 {
							rd = io.MultiReader(rd) // unknown length: chunked / no content-length
						}
						resp, err := client.Post(te.url+path, "application/octet-stream", rd)
						if err != nil {
							t.Errorf("POST %s: %v", path, err)
							return
						}
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if string(b) != digest(body) {
							t.Errorf("POST %s: %d %q want %s", path, resp.StatusCode, b, digest(body))
						}
						if g := rec.of(path); len(g) != 1 || g[0] != digest(body) {
							t.Errorf("POST %s: upstream received %v", path, g)
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// truncatingUpstream answers GET and POST in one broken way, then closes.
func truncatingUpstream(t *testing.T, mode string) string {
	return testutil.ServeConns(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		half := strings.Repeat("x", 50000)
		switch mode {
		case "close after headers (Content-Length)":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
		case "close mid-body (Content-Length)":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"+half)
		case "close after headers (chunked)":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		case "close mid-body (chunked)":
			io.WriteString(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(half), half))
		case "close mid-chunk":
			io.WriteString(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s", 2*len(half), half))
		case "close mid-body (chunked, trailers announced)":
			io.WriteString(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(half), half))
		}
		time.Sleep(20 * time.Millisecond)
		if tc, ok := c.(*net.TCPConn); ok && strings.Contains(mode, "mid-chunk") {
			_ = tc.SetLinger(0)
		}
	})
}

// TestTruncatedResponsesAreErrors: a response the upstream cuts
// short is never passed off as complete, for GET (calling-goroutine path)
// and POST (fallback transport), to HTTP/1.1 and h2c clients.
func TestTruncatedResponsesAreErrors(t *testing.T) {
	for _, mode := range []string{"close after headers (Content-Length)", "close mid-body (Content-Length)", "close after headers (chunked)", "close mid-body (chunked)", "close mid-chunk", "close mid-body (chunked, trailers announced)"} {
		t.Run(mode, func(t *testing.T) {
			te := startEdge(t, edgeConfig(truncatingUpstream(t, mode)))
			for cname, client := range map[string]*http.Client{"h1": {Transport: &http.Transport{}}, "h2c": h2cClient()} {
				for _, method := range []string{"GET", "POST"} {
					var body io.Reader
					if method == "POST" {
						body = strings.NewReader("hello")
					}
					req, _ := http.NewRequest(method, te.url+"/x", body)
					resp, err := client.Do(req)
					if err != nil {
						continue // an error: fine
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil {
						t.Errorf("%s %s: got %d and %d bytes with no error: a cut body passed off as complete", cname, method, resp.StatusCode, len(b))
					}
				}
			}
		})
	}
}

// TestConnectionCloseIsHonoured: an upstream that says Connection:
// close (or answers HTTP/1.0 with a body until close) and closes a moment
// later; the next request must go on a new connection and get its answer.
func TestConnectionCloseIsHonoured(t *testing.T) {
	for _, mode := range []string{"1.1 close", "1.0 no length", "1.0 keep-alive with length"} {
		t.Run(mode, func(t *testing.T) {
			addr := testutil.ServeConns(t, func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					body := "resp:" + req.URL.Path
					switch mode {
					case "1.1 close":
						fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
					case "1.0 no length":
						fmt.Fprintf(c, "HTTP/1.0 200 OK\r\n\r\n%s", body)
					case "1.0 keep-alive with length":
						fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
						continue
					}
					time.Sleep(5 * time.Millisecond)
					return
				}
			})
			te := startEdge(t, edgeConfig(addr))
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					client := &http.Client{Transport: &http.Transport{}}
					for i := range 100 {
						path := fmt.Sprintf("/w%d/%d", w, i)
						method := []string{"GET", "POST", "HEAD"}[i%3]
						req, _ := http.NewRequest(method, te.url+path, strings.NewReader("abc"))
						if method != "POST" {
							req.Body, req.ContentLength = nil, 0
						}
						resp, err := client.Do(req)
						if err != nil {
							t.Errorf("%s %s: %v", method, path, err)
							return
						}
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK || method != http.MethodHead && string(b) != "resp:"+path {
							t.Errorf("%s %s: %d %q", method, path, resp.StatusCode, b)
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// TestEarlyUpstreamAnswerToLargeUpload: the upstream answers 413 as
// soon as it has the headers of a large upload, without reading the body
// (then reads and drops it, keeping the connection; or closes). The client
// must get that 413 — not a reset — and the requests after it on the same
// edge must get their own answers.
func TestEarlyUpstreamAnswerToLargeUpload(t *testing.T) {
	for _, mode := range []string{"drain and keep", "close"} {
		t.Run(mode, func(t *testing.T) {
			addr := testutil.ServeConns(t, func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if req.Method == http.MethodPost {
						hdr := ""
						if mode == "close" {
							hdr = "Connection: close\r\n"
						}
						fmt.Fprintf(c, "HTTP/1.1 413 Request Entity Too Large\r\n%sContent-Length: 8\r\n\r\ntoo big!", hdr)
						if mode == "close" {
							time.Sleep(10 * time.Millisecond)
							return
						}
						_, _ = io.Copy(io.Discard, req.Body)
						continue
					}
					body := "resp:" + req.URL.Path
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				}
			})
			te := startEdge(t, edgeConfig(addr))
			rng := mrand.New(mrand.NewPCG(5, 6))
			var lost, ok413 int
			for i := range 30 {
				client := &http.Client{Transport: &http.Transport{}}
				body := randBody(rng, 1<<20+rng.IntN(3<<20))
				resp, err := client.Post(te.url+fmt.Sprintf("/up/%d", i), "application/octet-stream", bytes.NewReader(body))
				if err != nil {
					lost++
					t.Logf("POST %d (%d bytes): %v", i, len(body), err)
				} else {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusRequestEntityTooLarge || string(b) != "too big!" {
						t.Errorf("POST %d: got %d %q, want the upstream's 413", i, resp.StatusCode, b)
					} else {
						ok413++
					}
				}
				path := fmt.Sprintf("/next/%d", i)
				resp, err = client.Get(te.url + path)
				if err != nil {
					t.Errorf("GET %s: %v", path, err)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "resp:"+path {
					t.Errorf("GET %s: %d %q", path, resp.StatusCode, b)
				}
				client.CloseIdleConnections()
			}
			if lost > 0 {
				t.Errorf("%d of 30 clients lost the upstream's 413 (connection error instead), %d got it", lost, ok413)
			}
		})
	}
}

// TestUnreadBodyIsNotParsedAsRequests: the upstream answers a large
// upload at once (413, Connection: close) without reading it. The edge
// must either read the client's whole body or close the client connection;
// it must never parse what is left of the body as requests of their own.
// The body here is made of 32-byte requests "GET /smuggle ..." so that a
// cut on a 32-byte boundary shows them reaching the upstream. Odd rounds
// send the body chunked.
func TestUnreadBodyIsNotParsedAsRequests(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	addr := testutil.ServeConns(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			mu.Lock()
			seen[req.URL.Path]++
			mu.Unlock()
			if req.Method == http.MethodPost {
				fmt.Fprintf(c, "HTTP/1.1 413 Request Entity Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big!")
				time.Sleep(10 * time.Millisecond)
				return
			}
			body := "resp:" + req.URL.Path
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	te := startEdge(t, edgeConfig(addr))
	const pattern = "GET /smuggle HTTP/1.1\nHost: xx\n\n"
	var desync, smuggledAnswers, emptyAnswers int
	for i := range 12 {
		n := (256<<10 + i*(37<<10)) / len(pattern) * len(pattern)
		c, err := net.Dial("tcp", strings.TrimPrefix(te.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			if i%2 == 0 {
				fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", n)
				io.WriteString(c, strings.Repeat(pattern, n/len(pattern)))
			} else {
				// Chunked: one chunk per record, so a cut between chunks
				// leaves "GET /smuggle ..." at the start of the rest.
				io.WriteString(c, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
				chunk := fmt.Sprintf("%x\r\n%s\r\n", len(pattern), pattern)
				io.WriteString(c, strings.Repeat(chunk, n/len(pattern))+"0\r\n\r\n")
			}
			time.Sleep(50 * time.Millisecond)
			io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
		}()
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		out, _ := io.ReadAll(c)
		c.Close()
		resps := bytes.Count(out, []byte("HTTP/1.1 "))
		if resps > 2 || bytes.Contains(out, []byte("400 Bad Request")) || bytes.Contains(out, []byte("resp:/smuggle")) {
			desync++
			smuggledAnswers += bytes.Count(out, []byte("resp:/smuggle"))
			// The upstream never answers with an empty body: an empty 200
			// is an edge handler that wrote nothing (a cancelled context).
			emptyAnswers += bytes.Count(out, []byte("Content-Length: 0\r\n"))
			t.Logf("desync with a body of %d bytes", n)
			if desync <= 1 {
				t.Logf("body of %d bytes: %d answers on the connection; first 600 bytes:\n%.600s", n, resps, out)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if desync > 0 || seen["/smuggle"] > 0 {
		t.Errorf("%d of 12 uploads: the edge read the rest of the body as requests; %d answers to /smuggle went back, %d empty 200 answers, the upstream received GET /smuggle %d times", desync, smuggledAnswers, emptyAnswers, seen["/smuggle"])
	}
}

// TestExpectBodySentAfterFinalAnswer: the client sends Expect:
// 100-continue; the upstream answers 401 at once (no 100 Continue). A
// client may still send the body after that answer (RFC 9110 §10.1.1);
// the edge must not parse that body as a request of its own.
func TestExpectBodySentAfterFinalAnswer(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	addr := testutil.ServeConns(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			mu.Lock()
			seen[req.URL.Path]++
			mu.Unlock()
			if req.Method == http.MethodPost {
				io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope")
				// An answer without 100 Continue on a connection kept
				// open: the client may send the body all the same (as
				// http.Transport does), and the server reads and drops it
				// (RFC 9110 10.1.1), here within a moment.
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				_, _ = io.Copy(io.Discard, req.Body)
				_ = c.SetReadDeadline(time.Time{})
				continue
			}
			body := "resp:" + req.URL.Path
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	te := startEdge(t, edgeConfig(addr))
	const smuggle = "GET /smuggle HTTP/1.1\r\nHost: xx\r\n\r\n"
	bad := 0
	for i := range 20 {
		c, err := net.Dial("tcp", strings.TrimPrefix(te.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(smuggle))
		br := bufio.NewReader(c)
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		for err == nil && resp.StatusCode < 200 {
			// 100 Continue: the edge's transport sends the body on after
			// the upstream's final answer, and asks the client for it.
			resp, err = http.ReadResponse(br, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.ReadAll(resp.Body)
		if resp.Close {
			c.Close()
			continue // the edge closes: the client will not send the body
		}
		// The answer kept the connection: the client sends the body it
		// announced, then its next request.
		io.WriteString(c, smuggle)
		next := fmt.Sprintf("/next/%d", i)
		io.WriteString(c, "GET "+next+" HTTP/1.1\r\nHost: x\r\n\r\n")
		rest, _ := io.ReadAll(br)
		c.Close()
		if bytes.Count(rest, []byte("HTTP/1.1 ")) > 1 || len(rest) > 0 && !bytes.HasSuffix(rest, []byte("resp:"+next)) {
			bad++
			if bad <= 2 {
				t.Logf("after the upstream's 401 (keep-alive) and the body, GET %s got:\n%s", next, rest)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of 20: the late body was parsed as a request and/or the next request did not get its answer", bad)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["/smuggle"] > 0 {
		t.Errorf("the upstream received the body as a request: GET /smuggle %d times", seen["/smuggle"])
	}
}

// TestChunkedResponseExtrasPass: trailers, chunk extensions and an
// announced trailer reach the client with the whole body, on the
// calling-goroutine path (GET), the fallback (POST) and HEAD.
func TestChunkedResponseExtrasPass(t *testing.T) {
	addr := testutil.ServeConns(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if req.Method == http.MethodHead {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1;q=\"a b\"\r\nhello\r\n6;x\r\n world\r\n0;last=yes\r\nX-Sum: 42\r\nX-Unannounced: 7\r\n\r\n")
		}
	})
	te := startEdge(t, edgeConfig(addr))
	for _, method := range []string{"GET", "POST", "HEAD"} {
		for i := range 20 {
			var body io.Reader
			if method == "POST" {
				body = strings.NewReader("x")
			}
			req, _ := http.NewRequest(method, te.url+"/c", body)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %d: %v", method, i, err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if method == "HEAD" {
				if resp.ContentLength != 11 || len(b) != 0 {
					t.Errorf("HEAD: length %d, body %q", resp.ContentLength, b)
				}
				continue
			}
			if err != nil || string(b) != "hello world" || resp.Trailer.Get("X-Sum") != "42" {
				t.Errorf("%s %d: %q %v trailer %v", method, i, b, err, resp.Trailer)
			}
		}
	}
}

// TestPoolUnderCancellations: 16 clients x 150 requests mixing GET
// (calling-goroutine path), HEAD and POST (fallback), with large and small
// answers; one request in 8 is abandoned by its client half-way through
// the answer, one in 16 before the headers. Every answer read whole must
// be its own, and every POST body the upstream read whole must be the one
// sent to that path.
func TestPoolUnderCancellations(t *testing.T) {
	rec := &bodyRecorder{}
	up := atkServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err == nil && r.Method == http.MethodPost {
			rec.record(r.URL.Path, b)
		}
		n := 10
		if strings.Contains(r.URL.Path, "/big") {
			n = 64 << 10
		}
		if strings.Contains(r.URL.Path, "/slow") {
			time.Sleep(2 * time.Millisecond)
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(r.URL.Path)+n+len(digest(b))))
		io.WriteString(w, r.URL.Path)
		io.WriteString(w, strings.Repeat("z", n))
		io.WriteString(w, digest(b))
	}))
	te := startEdge(t, strings.Replace(edgeConfig(up), "{endpoints:", "{max_idle_per_endpoint: 4, endpoints:", 1))
	var wg sync.WaitGroup
	var done, cancelled atomic.Int64
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(w), 11))
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
			defer client.CloseIdleConnections()
			for i := range 150 {
				path := fmt.Sprintf("/w%d/%d", w, i)
				if rng.IntN(3) == 0 {
					path += "/big"
				}
				if rng.IntN(4) == 0 {
					path += "/slow"
				}
				method := []string{"GET", "GET", "HEAD", "POST"}[rng.IntN(4)]
				var body []byte
				var rd io.Reader
				if method == "POST" {
					body = randBody(rng, rng.IntN(20<<10))
					rd = bytes.NewReader(body)
				}
				ctx, cancel := context.WithCancel(context.Background())
				req, _ := http.NewRequestWithContext(ctx, method, te.url+path, rd)
				mode := rng.IntN(16)
				if mode == 0 {
					time.AfterFunc(time.Duration(rng.IntN(2000))*time.Microsecond, cancel)
				}
				resp, err := client.Do(req)
				if err != nil {
					cancel()
					if mode == 0 {
						cancelled.Add(1)
						continue
					}
					t.Errorf("%s %s: %v", method, path, err)
					return
				}
				if mode <= 2 && method != "HEAD" {
					_, _ = io.CopyN(io.Discard, resp.Body, 100)
					cancel()
					resp.Body.Close()
					cancelled.Add(1)
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				cancel()
				if err != nil {
					if mode == 0 {
						cancelled.Add(1)
						continue
					}
					t.Errorf("%s %s: reading: %v", method, path, err)
					return
				}
				done.Add(1)
				if method == "HEAD" {
					continue
				}
				if !bytes.HasPrefix(b, []byte(path+"zzzzzzzzzz")) || !bytes.HasSuffix(b, []byte(digest(body))) {
					t.Errorf("%s %s: got %d %.80q...%q: not its own answer", method, path, resp.StatusCode, b, b[max(0, len(b)-80):])
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d answers checked, %d abandoned", done.Load(), cancelled.Load())
}

// TestEarlyUpstreamAnswerToLargeUploadH2C: the h2c version of
// TestEarlyUpstreamAnswerToLargeUpload/close: the stream gets the
// upstream's 413 and the next stream on the connection its own answer.
func TestEarlyUpstreamAnswerToLargeUploadH2C(t *testing.T) {
	addr := testutil.ServeConns(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Method == http.MethodPost {
				fmt.Fprintf(c, "HTTP/1.1 413 Request Entity Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big!")
				time.Sleep(10 * time.Millisecond)
				return
			}
			body := "resp:" + req.URL.Path
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	te := startEdge(t, edgeConfig(addr))
	client := h2cClient()
	rng := mrand.New(mrand.NewPCG(8, 9))
	lost := 0
	for i := range 20 {
		body := randBody(rng, 256<<10+rng.IntN(3<<20))
		resp, err := client.Post(te.url+fmt.Sprintf("/up/%d", i), "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			lost++
		} else {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || string(b) != "too big!" {
				t.Errorf("POST %d: %d %q", i, resp.StatusCode, b)
			}
		}
		path := fmt.Sprintf("/next/%d", i)
		resp, err = client.Get(te.url + path)
		if err != nil {
			t.Errorf("GET %s: %v", path, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "resp:"+path {
			t.Errorf("GET %s: %d %q", path, resp.StatusCode, b)
		}
	}
	if lost > 0 {
		t.Errorf("%d of 20 h2c uploads lost the upstream's 413", lost)
	}
}

// TestPerTryTimeoutReplaysWholeBody: the first endpoint reads the
// whole POST body, then takes longer than per_try_timeout; the retry on
// the second endpoint gets the same whole body, and the client its answer.
func TestPerTryTimeoutReplaysWholeBody(t *testing.T) {
	slow, fast := &bodyRecorder{}, &bodyRecorder{}
	slowURL := atkServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		slow.record(r.URL.Path, b)
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
		io.WriteString(w, "slow:"+digest(b))
	}))
	fastURL := atkServer(t, fast.handler())
	te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u:
    endpoints: [%q, %q]
    retries: {attempts: 1, on: [timeout], non_idempotent: true, per_try_timeout: 100ms, budget_percent: 100}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, slowURL, fastURL))
	rng := mrand.New(mrand.NewPCG(12, 13))
	for i := range 30 {
		body := randBody(rng, 1+rng.IntN(64<<10-1))
		path := fmt.Sprintf("/p%d", i)
		req, _ := http.NewRequest(http.MethodPost, te.url+path, bytes.NewReader(body))
		if i%2 == 0 {
			req.Header.Set("Expect", "100-continue")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := digest(body)
		if string(b) != want && string(b) != "slow:"+want {
			t.Errorf("POST %s: %d %q want %s", path, resp.StatusCode, b, want)
		}
		for _, r := range []*bodyRecorder{slow, fast} {
			for _, g := range r.of(path) {
				if g != want {
					t.Errorf("POST %s: an endpoint received %s, want %s", path, g, want)
				}
			}
		}
	}
	t.Logf("slow endpoint got %d, fast %d", slow.hits.Load(), fast.hits.Load())
}
