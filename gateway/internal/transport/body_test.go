package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/causewayhq/causeway/internal/testutil"
)

// noLeaks fails the test if it leaves a goroutine behind; registered
// first, it runs after every other cleanup (servers closed, pools retired).
func noLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// trickle hands out its bytes in reads of random sizes, and hides its
// length: a request with it as body is sent chunked.
type trickle struct {
	data []byte
	rng  *rand.Rand
}

func (r *trickle) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.data), 1+r.rng.IntN(40<<10))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func (r *trickle) Close() error { return nil }

// bodySize picks sizes around the buffer sizes of both ends, odd ones, and
// now and then several MiB.
func bodySize(rng *rand.Rand) int {
	edges := []int{0, 1, 2, 3, 4095, 4096, 4097, 32767, 32768, 32769, 65535, 65537}
	switch r := rng.IntN(100); {
	case r < 30:
		return edges[rng.IntN(len(edges))]
	case r < 99:
		return 1 + rng.IntN(64<<10)
	default:
		return 1<<20 + rng.IntN(3<<20)
	}
}

// Every byte a client sends reaches the upstream, and every answer goes
// to the request it answers: thousands of requests with bodies of random
// sizes, half with a Content-Length and half chunked, from 8 goroutines on
// a pool of reused keep-alive connections. The upstream (net/http's own
// server, reading the body as it reads any) answers with the request's tag
// and the SHA-256 of the body it received; each client checks both.
func TestH1TransportBodyIntegrity(t *testing.T) {
	noLeaks(t)
	s, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s %s %d %d", r.Header.Get("X-Tag"), digest(b), len(b), r.ContentLength)
	})
	h1 := newTestPool(t, 4, notATimeout)
	total := 2500
	if testing.Short() {
		total = 300
	}
	const workers = 8
	var next atomic.Int64
	var sent atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for {
				i := next.Add(1)
				if i > int64(total) {
					return
				}
				body := make([]byte, bodySize(rng))
				for j := range body {
					body[j] = byte(rng.Uint32())
				}
				tag := fmt.Sprintf("w%d-r%d", w, i)
				req, _ := http.NewRequest([]string{"POST", "PUT", "PATCH"}[i%3], s.URL+"/"+tag, nil)
				wantCL := int64(len(body))
				if i%2 == 0 {
					req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
					if len(body) == 0 {
						req.Body = http.NoBody
					}
				} else {
					req.Body, req.ContentLength = &trickle{data: body, rng: rng}, -1
					wantCL = -1
				}
				req.Header.Set("X-Tag", tag)
				resp, err := h1.RoundTrip(req)
				if err != nil {
					errs <- fmt.Errorf("%s (%d bytes): %w", tag, len(body), err)
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := fmt.Sprintf("%s %s %d %d", tag, digest(body), len(body), wantCL)
				if err != nil || string(got) != want {
					errs <- fmt.Errorf("%s: got %q (%w), want %q", tag, got, err, want)
					return
				}
				sent.Add(int64(len(body)))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d requests, %d MiB of bodies, %d connections", total, sent.Load()>>20, conns.Load())
	if n := conns.Load(); n > int64(total)/4 {
		t.Fatalf("%d connections for %d requests: keep-alive connections were not reused", n, total)
	}
}

// rawUpstream serves each connection with handle after reading a request
// head; it records what each request's body read gave (the bytes and the
// error that ended it: nil means the upstream saw a complete request).
type rawUpstream struct {
	addr  string
	mu    sync.Mutex
	reads []bodyRead
	taken int // reads already returned by last
	conns atomic.Int64
}

type bodyRead struct {
	body []byte
	err  error
}

func (u *rawUpstream) record(b []byte, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reads = append(u.reads, bodyRead{b, err})
}

// last waits for the upstream's next body read since the previous call
// and returns it.
func (u *rawUpstream) last(t *testing.T) bodyRead {
	t.Helper()
	var r bodyRead
	testutil.WaitFor(t, func() bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		if len(u.reads) <= u.taken {
			return false
		}
		r = u.reads[u.taken]
		u.taken++
		return true
	})
	return r
}

func newRawUpstream(t *testing.T, handle func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool) *rawUpstream {
	u := &rawUpstream{}
	u.addr = testutil.ServeConns(t, func(c net.Conn) {
		u.conns.Add(1)
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if !handle(u, c, br, req) {
				return
			}
		}
	})
	return u
}

func post(t *testing.T, url string, body io.Reader, length int64, hdr ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Body, req.ContentLength = io.NopCloser(body), length
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return req
}

// framings are the two ways a body of known content goes out.
var framings = []struct {
	name    string
	request func(t *testing.T, url string, body []byte, hdr ...string) *http.Request
}{
	{"content-length", func(t *testing.T, url string, body []byte, hdr ...string) *http.Request {
		return post(t, url, bytes.NewReader(body), int64(len(body)), hdr...)
	}},
	{"chunked", func(t *testing.T, url string, body []byte, hdr ...string) *http.Request {
		return post(t, url, &trickle{data: body, rng: rand.New(rand.NewPCG(1, 2))}, -1, hdr...)
	}},
}

func readAnswer(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}

// Upstreams that answer before they have read the body, or that break off
// in the middle of it: the client gets the answer when there is one, a
// connection is reused only when the body went out whole and the answer
// was read whole, and the next request always gets its own answer.
func TestH1TransportHostileUpstreams(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 256<<10) // 4 MiB: far beyond the socket buffers
	for _, f := range framings {
		t.Run(f.name, func(t *testing.T) {
			t.Run("answers early then reads on", func(t *testing.T) {
				noLeaks(t)
				up := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool {
					io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig")
					b, err := io.ReadAll(req.Body)
					u.record(b, err)
					return err == nil
				})
				h1 := newTestPool(t, 4, notATimeout)
				for i := range 3 {
					resp, err := h1.RoundTrip(f.request(t, "http://"+up.addr+"/", big))
					if err != nil {
						t.Fatalf("request %d: %v", i, err)
					}
					if got := readAnswer(t, resp); got != "413 big" {
						t.Fatalf("request %d: %q", i, got)
					}
					// The body goes on while the answer is relayed; once the
					// answer is read, the connection is closed unless the
					// body is written whole within maxWriteWait. Either way
					// the upstream never reads a body that is not the one
					// sent as complete.
					if r := up.last(t); r.err == nil && !bytes.Equal(r.body, big) {
						t.Fatalf("request %d: the upstream read a complete body of %d bytes, sent %d", i, len(r.body), len(big))
					}
				}
			})
			t.Run("answers and closes", func(t *testing.T) {
				noLeaks(t)
				up := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool {
					io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbig")
					return false
				})
				h1 := newTestPool(t, 4, notATimeout)
				for i := range 10 {
					resp, err := h1.RoundTrip(f.request(t, "http://"+up.addr+"/", big))
					if err != nil {
						t.Fatalf("request %d: %v", i, err)
					}
					if got := readAnswer(t, resp); got != "413 big" {
						t.Fatalf("request %d: %q", i, got)
					}
				}
				if n := up.conns.Load(); n != 10 {
					t.Fatalf("%d connections for 10 requests", n)
				}
			})
			t.Run("closes mid-body", func(t *testing.T) {
				noLeaks(t)
				up := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool {
					_, _ = io.CopyN(io.Discard, req.Body, 64<<10)
					return false
				})
				h1 := newTestPool(t, 4, notATimeout)
				_, err := h1.RoundTrip(f.request(t, "http://"+up.addr+"/", big))
				if err == nil {
					t.Fatal("a request whose upstream closed mid-body succeeded")
				}
				if errors.As(err, new(*bodyReadError)) {
					t.Fatalf("the upstream's close was taken for the client's fault: %v", err)
				}
			})
			t.Run("extra bytes after the answer", func(t *testing.T) {
				noLeaks(t)
				up := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool {
					b, err := io.ReadAll(req.Body)
					u.record(b, err)
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%sHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged",
						len(req.URL.Path), req.URL.Path)
					return true
				})
				h1 := newTestPool(t, 4, notATimeout)
				for i := range 5 {
					path := fmt.Sprintf("/r%d", i)
					resp, err := h1.RoundTrip(f.request(t, "http://"+up.addr+path, []byte("payload")))
					if err != nil {
						t.Fatalf("request %d: %v", i, err)
					}
					if got := readAnswer(t, resp); got != "200 "+path {
						t.Fatalf("request %d got %q: another request's bytes", i, got)
					}
				}
				if n := up.conns.Load(); n != 5 {
					t.Fatalf("%d connections for 5 requests, want 5 (none reusable)", n)
				}
			})
			t.Run("stalls reading", func(t *testing.T) {
				noLeaks(t)
				release := make(chan struct{})
				up := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool {
					<-release
					return false
				})
				t.Cleanup(func() { close(release) })
				h1 := newTestPool(t, 4, 300*time.Millisecond)
				start := time.Now()
				_, err := h1.RoundTrip(f.request(t, "http://"+up.addr+"/", append(big, big...)))
				var nerr net.Error
				if !errors.As(err, &nerr) || !nerr.Timeout() {
					t.Fatalf("a write stall ended with %v, want a timeout", err)
				}
				d := time.Since(start)
				if d > 5*time.Second {
					t.Fatalf("the stall held the request %v, the upstream's timeout is 300ms", d)
				}
				t.Logf("the stalled write failed after %v: %v", d.Round(time.Millisecond), err)
			})
		})
	}
}

// Expect: 100-continue, as http.Transport does it with the edge's
// ExpectContinueTimeout: the body goes out after the 100, or after the
// timeout when the upstream ignores the Expect; a final answer first
// means the body is never sent and the connection is not reused.
func TestH1TransportExpectContinue(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 100<<10)
	echo := func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool {
		b, err := io.ReadAll(req.Body)
		u.record(b, err)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(digest(b)), digest(b))
		return err == nil
	}
	for _, f := range framings {
		t.Run(f.name, func(t *testing.T) {
			t.Run("100 Continue", func(t *testing.T) {
				noLeaks(t)
				up := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool {
					if req.Header.Get("Expect") != "100-continue" {
						return false
					}
					// Nothing of the body before the 100.
					_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
					if n, _ := br.Peek(1); len(n) > 0 {
						return false
					}
					_ = c.SetReadDeadline(time.Time{})
					io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
					return echo(u, c, br, req)
				})
				h1 := newTestPool(t, 4, notATimeout)
				h1.expectTimeout = 10 * time.Second
				start := time.Now()
				for i := range 3 {
					resp, err := h1.RoundTrip(f.request(t, "http://"+up.addr+"/", body, "Expect", "100-continue"))
					if err != nil {
						t.Fatalf("request %d: %v", i, err)
					}
					if got := readAnswer(t, resp); got != "200 "+digest(body) {
						t.Fatalf("request %d: %q", i, got)
					}
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Fatalf("the body waited for the Expect timeout after the 100 (%v)", d)
				}
				if n := up.conns.Load(); n != 1 {
					t.Fatalf("%d connections for 3 requests, want 1", n)
				}
			})
			t.Run("ignored by the upstream", func(t *testing.T) {
				noLeaks(t)
				up := newRawUpstream(t, echo)
				h1 := newTestPool(t, 4, notATimeout)
				h1.expectTimeout = 200 * time.Millisecond
				start := time.Now()
				resp, err := h1.RoundTrip(f.request(t, "http://"+up.addr+"/", body, "Expect", "100-continue"))
				if err != nil {
					t.Fatal(err)
				}
				if got := readAnswer(t, resp); got != "200 "+digest(body) {
					t.Fatalf("%q", got)
				}
				if d := time.Since(start); d < 200*time.Millisecond {
					t.Fatalf("the body went out after %v, before the Expect timeout", d)
				}
			})
			t.Run("final answer first", func(t *testing.T) {
				noLeaks(t)
				up := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool {
					io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope")
					// The client must send nothing more and close.
					_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
					rest, err := io.ReadAll(br)
					u.record(rest, err)
					return false
				})
				h1 := newTestPool(t, 4, notATimeout)
				h1.expectTimeout = 5 * time.Second
				for i := range 3 {
					resp, err := h1.RoundTrip(f.request(t, "http://"+up.addr+"/", body, "Expect", "100-continue"))
					if err != nil {
						t.Fatalf("request %d: %v", i, err)
					}
					if got := readAnswer(t, resp); got != "401 nope" {
						t.Fatalf("request %d: %q", i, got)
					}
					if r := up.last(t); r.err != nil || len(r.body) != 0 {
						t.Fatalf("request %d: after its answer the upstream got %d bytes (%v), want none and the close", i, len(r.body), r.err)
					}
				}
				if n := up.conns.Load(); n != 3 {
					t.Fatalf("%d connections for 3 requests, want 3 (none reusable)", n)
				}
			})
			t.Run("final answer after the timeout sent the body", func(t *testing.T) {
				// The upstream never sends the 100 and answers only once
				// the whole body, sent at the Expect timeout, is in its
				// buffer, without reading it: kept, the connection would
				// give that body to the next request as its head.
				noLeaks(t)
				small := []byte("0123456789")
				up := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool {
					for n := 1; ; n++ {
						b, err := br.Peek(n)
						if err != nil {
							return false
						}
						if req.ContentLength == int64(len(small)) && n == len(small) || bytes.HasSuffix(b, []byte("0\r\n\r\n")) {
							break
						}
					}
					io.WriteString(c, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 2\r\n\r\nno")
					return true
				})
				h1 := newTestPool(t, 4, notATimeout)
				h1.expectTimeout = 50 * time.Millisecond
				for i := range 3 {
					resp, err := h1.RoundTrip(f.request(t, "http://"+up.addr+"/", small, "Expect", "100-continue"))
					if err != nil {
						t.Fatalf("request %d: %v", i, err)
					}
					if got := readAnswer(t, resp); got != "417 no" {
						t.Fatalf("request %d: %q", i, got)
					}
				}
				if n := up.conns.Load(); n != 3 {
					t.Fatalf("%d connections for 3 requests, want 3 (none reusable)", n)
				}
			})
		})
	}
}

// failingBody gives n bytes, then fails as a client that hangs up does.
type failingBody struct {
	r   io.Reader
	err error
}

func (b *failingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		return n, b.err
	}
	return n, err
}

// A client body that fails mid-stream (a disconnect, a stall cut by the
// edge's body timeout) or stalls until the request is cancelled: the
// upstream never sees a complete request. With a Content-Length it gets
// fewer bytes and the close; chunked, it never gets the last chunk.
func TestH1TransportClientBodyFails(t *testing.T) {
	part := bytes.Repeat([]byte("y"), 100<<10)
	for _, f := range []struct {
		name   string
		length int64
	}{{"content-length", 1 << 20}, {"chunked", -1}} {
		t.Run(f.name, func(t *testing.T) {
			up := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool {
				b, err := io.ReadAll(req.Body)
				u.record(b, err)
				if err == nil {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ncomplete")
				}
				return err == nil
			})
			t.Run("disconnect", func(t *testing.T) {
				noLeaks(t)
				h1 := newTestPool(t, 4, notATimeout)
				req := post(t, "http://"+up.addr+"/", &failingBody{r: bytes.NewReader(part), err: io.ErrUnexpectedEOF}, f.length)
				_, err := h1.RoundTrip(req)
				if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.As(err, new(*bodyReadError)) {
					t.Fatalf("RoundTrip: %v, want the body's error", err)
				}
				if r := up.last(t); r.err == nil {
					t.Fatalf("the upstream read a complete request of %d bytes", len(r.body))
				}
			})
			t.Run("stall until cancelled", func(t *testing.T) {
				noLeaks(t)
				h1 := newTestPool(t, 4, notATimeout)
				pr, pw := io.Pipe()
				go func() {
					pw.Write(part)
					// then nothing: the client stalls
				}()
				t.Cleanup(func() { pw.CloseWithError(errors.New("gone")) })
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				req := post(t, "http://"+up.addr+"/", pr, f.length).WithContext(ctx)
				if _, err := h1.RoundTrip(req); !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("RoundTrip: %v, want the deadline", err)
				}
				if r := up.last(t); r.err == nil {
					t.Fatalf("the upstream read a complete request of %d bytes", len(r.body))
				}
			})
		})
	}
}

var errStalled = fmt.Errorf("read tcp: %w", os.ErrDeadlineExceeded)

// A client body that stalls after a part and is then cut by the edge's
// body timeout, in every order the cut can reach the transport: the
// body's error alone (with or without bytes), the request's context first
// (net/http ends it inside the connection read that fails, before the
// read returns), and the context with the attempt already over before the
// body's error. The upstream answers (an empty 200) as soon as its own
// read of the body fails, as a handler that gives up on its body does.
// The attempt always fails, never with that answer, and the upstream never
// reads a complete request: a Content-Length body stays short, a chunked
// one gets no last chunk.
func TestH1TransportStalledBodyNeverCompletes(t *testing.T) {
	part := []byte("0123456789")
	for _, f := range []struct {
		name   string
		length int64
	}{{"content-length", 100}, {"chunked", -1}} {
		t.Run(f.name, func(t *testing.T) {
			reads := make(chan bodyRead, 1)
			stop := make(chan struct{})
			up := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool {
				b, err := io.ReadAll(req.Body)
				select {
				case reads <- bodyRead{b, err}:
				case <-stop: // the test failed and reads no more
					return false
				}
				if err != nil {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
					return false
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ncomplete")
				return true
			})
			t.Cleanup(func() { close(stop) }) // before the upstream's own cleanup waits for its handlers
			for _, tc := range []struct {
				name string
				tail int // the last bytes of part, returned with the error
				// cut ends the stalled read; returned is closed once
				// RoundTrip has returned.
				cut  func(cancel context.CancelFunc, returned <-chan struct{})
				want error // what RoundTrip's error wraps
			}{
				{"the body's error", 0, func(context.CancelFunc, <-chan struct{}) {}, os.ErrDeadlineExceeded},
				{"the body's error with its last bytes", 4, func(context.CancelFunc, <-chan struct{}) {}, os.ErrDeadlineExceeded},
				{"the context ends, then the body's error", 0, func(cancel context.CancelFunc, _ <-chan struct{}) {
					cancel()
				}, context.Canceled},
				{"the context ends, the attempt returns, then the body's error", 0, func(cancel context.CancelFunc, returned <-chan struct{}) {
					cancel()
					<-returned
				}, context.Canceled},
			} {
				t.Run(tc.name, func(t *testing.T) {
					noLeaks(t)
					h1 := newTestPool(t, 4, notATimeout)
					runs := 500
					if testing.Short() {
						runs = 50
					}
					for i := range runs {
						ctx, cancel := context.WithCancel(context.Background())
						returned := make(chan struct{})
						head, tail := part[:len(part)-tc.tail], part[len(part)-tc.tail:]
						body := testutil.NewStallBody(head, errStalled)
						body.Cut = func() ([]byte, error) {
							tc.cut(cancel, returned)
							return tail, errStalled
						}
						req := post(t, "http://"+up.addr+"/", body, f.length).WithContext(ctx)
						go func() {
							<-body.Blocked // the upstream waits for the rest
							close(body.Stall)
						}()
						resp, err := h1.RoundTrip(req)
						close(returned)
						cancel()
						if err == nil {
							t.Fatalf("run %d: a stalled body got the upstream's answer %q", i, readAnswer(t, resp))
						}
						if !errors.Is(err, tc.want) {
							t.Fatalf("run %d: RoundTrip: %v, want %v", i, err, tc.want)
						}
						if errors.Is(tc.want, os.ErrDeadlineExceeded) && !errors.As(err, new(*bodyReadError)) {
							t.Fatalf("run %d: %v is not the client's body failing", i, err)
						}
						r := <-reads
						if r.err == nil {
							t.Fatalf("run %d: the upstream read a complete request of %d bytes", i, len(r.body))
						}
						if !bytes.HasPrefix(part, r.body) {
							t.Fatalf("run %d: the upstream read %q, not a part of what was sent", i, r.body)
						}
					}
				})
			}
		})
	}
}

// A body that does not match its Content-Length, or ends with a trailer
// field that must not be sent, is not completed either.
func TestH1TransportRefusesBodiesThatBreakTheirFraming(t *testing.T) {
	noLeaks(t)
	up := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool {
		b, err := io.ReadAll(req.Body)
		u.record(b, err)
		if err == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ncomplete")
		}
		return err == nil
	})
	// Short timeouts: a request that is wrongly completed must fail the
	// test, not leave it waiting on an upstream that waits for more.
	h1 := newTestPool(t, 4, 2*time.Second)
	short := post(t, "http://"+up.addr+"/", strings.NewReader("abc"), 10)
	if resp, err := h1.RoundTrip(short); err == nil {
		resp.Body.Close()
		t.Fatal("a body shorter than its Content-Length was sent")
	}
	if r := up.last(t); r.err == nil {
		t.Fatalf("the upstream read a complete request: %q", r.body)
	}
	trailer := post(t, "http://"+up.addr+"/", strings.NewReader("abc"), -1)
	trailer.Trailer = http.Header{"X-Sum": nil}
	trailer.Body = &trailerBody{r: strings.NewReader("abc"), req: trailer, set: http.Header{"Content-Length": {"0"}}}
	if resp, err := h1.RoundTrip(trailer); err == nil || !strings.Contains(err.Error(), "forbidden trailer") {
		if err == nil {
			resp.Body.Close()
		}
		t.Fatalf("a forbidden trailer field: %v", err)
	}
	if r := up.last(t); r.err == nil {
		t.Fatalf("the upstream read a complete request: %q", r.body)
	}
	// A trailer section net/http's 4 KiB read buffer would not hold, as
	// the response side refuses to read one.
	big := post(t, "http://"+up.addr+"/", nil, -1)
	big.Trailer = http.Header{"X-Sum": nil}
	big.Body = &trailerBody{r: strings.NewReader("abc"), req: big, set: http.Header{"X-Sum": {strings.Repeat("9", 5000)}}}
	if resp, err := h1.RoundTrip(big); err == nil || !strings.Contains(err.Error(), "trailer section") {
		if err == nil {
			resp.Body.Close()
		}
		t.Fatalf("a 5 KB trailer section: %v", err)
	}
	if r := up.last(t); r.err == nil {
		t.Fatalf("the upstream read a complete request: %q", r.body)
	}
	announced := post(t, "http://"+up.addr+"/", strings.NewReader("abc"), -1)
	announced.Trailer = http.Header{"Host": nil}
	if resp, err := h1.RoundTrip(announced); err == nil || !strings.Contains(err.Error(), "forbidden trailer") {
		if err == nil {
			resp.Body.Close()
		}
		t.Fatalf("a forbidden trailer announced: %v", err)
	}
}

// trailerBody sets its request's trailer fields at EOF, as a server's
// request body does.
type trailerBody struct {
	r   io.Reader
	req *http.Request
	set http.Header
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		for k, v := range b.set {
			b.req.Trailer[k] = v
		}
	}
	return n, err
}

func (b *trailerBody) Close() error { return nil }

// Trailers the client sent after a chunked body reach the upstream.
func TestH1TransportRequestTrailers(t *testing.T) {
	noLeaks(t)
	s, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", b, r.Trailer.Get("X-Sum"), r.TransferEncoding)
	})
	h1 := newTestPool(t, 4, notATimeout)
	req := post(t, s.URL, nil, 3)
	req.Trailer = http.Header{"X-Sum": nil}
	req.Body = &trailerBody{r: strings.NewReader("abc"), req: req, set: http.Header{"X-Sum": {"42"}}}
	resp, err := h1.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAnswer(t, resp); got != "200 abc 42 [chunked]" {
		t.Fatalf("%q", got)
	}
}

// A request is sent again on a fresh connection only when nothing of it can
// have reached the upstream, or when it is replayable: an upstream that
// takes the second request of a keep-alive connection and closes without an
// answer sees a body-less GET again on another connection, and a POST with
// a body once, the failure left to the attempt loop above.
func TestH1TransportSendsABodyOnce(t *testing.T) {
	for _, tc := range []struct {
		method string
		body   string
		want   []string // what the upstream saw, in order
		fails  bool
	}{
		{http.MethodGet, "", []string{"/first", "/second", "/second"}, false},
		{http.MethodPost, "payload", []string{"/first", "/second"}, true},
	} {
		t.Run(tc.method, func(t *testing.T) {
			noLeaks(t)
			var mu sync.Mutex
			var seen []string
			addr := testutil.ServeConns(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				for n := 0; ; n++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					mu.Lock()
					seen = append(seen, req.URL.Path)
					mu.Unlock()
					if n == 1 {
						return // the second request of a connection: closed unanswered
					}
					io.Copy(io.Discard, req.Body)
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
			h1 := newTestPool(t, 4, notATimeout)
			send := func(path string) error {
				var body io.Reader
				if tc.body != "" {
					body = strings.NewReader(tc.body)
				}
				req, _ := http.NewRequest(tc.method, "http://"+addr+path, body)
				resp, err := h1.RoundTrip(req)
				if err != nil {
					return err
				}
				readAnswer(t, resp)
				return nil
			}
			if err := send("/first"); err != nil {
				t.Fatal(err)
			}
			err := send("/second")
			if (err != nil) != tc.fails {
				t.Fatalf("second request: %v, want failing %v", err, tc.fails)
			}
			mu.Lock()
			defer mu.Unlock()
			if fmt.Sprint(seen) != fmt.Sprint(tc.want) {
				t.Fatalf("the upstream saw %v, want %v", seen, tc.want)
			}
		})
	}
}
