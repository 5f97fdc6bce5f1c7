package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
)

// Attacks on the HTTP/1.1 engine through a whole edge, each case run on
// both engines (server.http1_engine), so that a difference between the
// engine and net/http shows: an upstream that sends informational
// responses in odd orders, bodies after bodiless answers, answers before
// it has read the request body; clients that pipeline bodies of every
// framing behind them. What the upstream received is checked, not only
// what the client got.

// oddUpstream answers by path, each answer on a keep-alive connection:
//
//	/twice    100 Continue twice, then reads the body and echoes it
//	/hints    103 Early Hints then 100 Continue, then the echo
//	/head     (HEAD) a chunked body after the head of a HEAD answer
//	/stale    304 with a chunked body after it
//	/early    the answer before the body is read, then the body is read
//	          away and the connection kept
//	anything  the echo
//
// The echo is "X-Id:body"; every request's X-Id and body are recorded.
type oddUpstream struct {
	mu  sync.Mutex
	got map[string]string // X-Id -> body received
	n   int               // requests received
}

func (u *oddUpstream) record(id, body string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.got == nil {
		u.got = map[string]string{}
	}
	u.got[id] = body
	u.n++
}

func (u *oddUpstream) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		id := r.Header.Get("X-Id")
		echo := func(body string) string {
			s := id + ":" + body
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Id: %s\r\nContent-Length: %d\r\n\r\n%s", id, len(s), s)
		}
		readBody := func() (string, bool) {
			b, err := io.ReadAll(r.Body)
			u.record(id, string(b))
			return string(b), err == nil
		}
		var out string
		switch {
		case r.Method == http.MethodHead:
			readBody()
			out = "HTTP/1.1 200 OK\r\nX-Id: " + id + "\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nleaked\r\n0\r\n\r\n"
		case r.URL.Path == "/twice", r.URL.Path == "/hints":
			pre := "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
			if r.URL.Path == "/hints" {
				pre = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
			}
			if _, err := io.WriteString(c, pre); err != nil {
				return
			}
			b, ok := readBody()
			if !ok {
				return
			}
			out = echo(b)
		case r.URL.Path == "/stale":
			readBody()
			out = "HTTP/1.1 304 Not Modified\r\nX-Id: " + id + "\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nleaked\r\n0\r\n\r\n"
		case r.URL.Path == "/early":
			// Recorded before the answer: the client may be done before
			// the body is read away.
			u.record(id, "")
			if _, err := io.WriteString(c, echo("early")); err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return
			}
			continue
		default:
			b, ok := readBody()
			if !ok {
				return
			}
			out = echo(b)
		}
		if _, err := io.WriteString(c, out); err != nil {
			return
		}
	}
}

func oddEdge(t *testing.T, engine string) (*oddUpstream, string) {
	t.Helper()
	up := &oddUpstream{}
	return up, engineEdge(t, engine, testutil.ServeConns(t, up.serve))
}

// engineEdge starts an edge on engine with one route to the upstream at
// addr, and returns the edge's address.
func engineEdge(t *testing.T, engine, addr string) string {
	t.Helper()
	te := startEdge(t, listenHeader+fmt.Sprintf("server: {http1_engine: %q}\n", engine)+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, addr))
	return strings.TrimPrefix(te.url, "http://")
}

// rawAnswers is an upstream that reads each request of a connection and
// writes answer's bytes for it as they are, however wrong: what a buggy
// or hostile upstream sends. It returns the upstream's address.
func rawAnswers(t *testing.T, answer func(*http.Request) string) string {
	t.Helper()
	return testutil.ServeConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, answer(r)); err != nil {
				return
			}
		}
	})
}

// pipelineThrough writes the pipelined requests to an edge on engine in
// front of the upstream at addr, and returns all the edge answered until
// it closed (the last request says Connection: close).
func pipelineThrough(t *testing.T, engine, addr, pipeline string) []byte {
	t.Helper()
	c, err := net.Dial("tcp", engineEdge(t, engine, addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, pipeline); err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// oddRequest is one request of the attack: its bytes, and what its answer
// and the upstream must show.
type oddRequest struct {
	id, raw, method string
	status          int
	answer          string // the answer's body
	body            string // what the upstream must receive; "-": nothing checked
}

func newOddRequest(rng *mrand.Rand, id string) oddRequest {
	hdr := "Host: a\r\nX-Id: " + id + "\r\n"
	body := strings.Repeat(string(rune('a'+rng.IntN(26))), []int{1, 10, 700, 5000}[rng.IntN(4)])
	// Text that reads as a request, inside the body: read as one, it
	// would reach the upstream without an X-Id of this run.
	body = body[:len(body)/2] + "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n" + body[len(body)/2:]
	framed := func(method, path string) string {
		if rng.IntN(2) == 0 {
			var b strings.Builder
			fmt.Fprintf(&b, "%s %s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n", method, path, hdr)
			rest := body
			for len(rest) > 0 {
				n := min(len(rest), 1+rng.IntN(800))
				ext := ""
				if rng.IntN(3) == 0 {
					ext = `;name="v\"x";k=v`
				}
				fmt.Fprintf(&b, "%x%s\r\n%s\r\n", n, ext, rest[:n])
				rest = rest[n:]
			}
			b.WriteString("0\r\n")
			if rng.IntN(2) == 0 {
				b.WriteString("X-Checksum: 1\r\n")
			}
			b.WriteString("\r\n")
			return b.String()
		}
		return fmt.Sprintf("%s %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s", method, path, hdr, len(body), body)
	}
	expect := func(s string) string {
		return strings.Replace(s, "X-Id: "+id+"\r\n", "X-Id: "+id+"\r\nExpect: 100-continue\r\n", 1)
	}
	switch rng.IntN(6) {
	case 0:
		return oddRequest{id: id, method: http.MethodPost, raw: expect(framed("POST", "/twice")), status: 200, answer: id + ":" + body, body: body}
	case 1:
		return oddRequest{id: id, method: http.MethodPut, raw: expect(framed("PUT", "/hints")), status: 200, answer: id + ":" + body, body: body}
	case 2:
		return oddRequest{id: id, method: http.MethodHead, raw: "HEAD /head HTTP/1.1\r\n" + hdr + "\r\n", status: 200, body: ""}
	case 3:
		return oddRequest{id: id, method: http.MethodGet, raw: "GET /stale HTTP/1.1\r\n" + hdr + "\r\n", status: 304, body: ""}
	case 4:
		return oddRequest{id: id, method: http.MethodPost, raw: framed("POST", "/early"), status: 200, answer: id + ":early", body: "-"}
	}
	return oddRequest{id: id, method: http.MethodPost, raw: framed("POST", "/echo"), status: 200, answer: id + ":" + body, body: body}
}

// Pipelined bursts of those requests, 4 clients at once, 1200 requests in
// all: every answer comes back in order for its own request, no 1xx is
// taken for an answer, no leaked body becomes the next answer, and the
// upstream gets every body whole and nothing else (no request smuggled
// out of a body).
func TestEngineOddUpstreamPipelined(t *testing.T) {
	const clients, bursts, perBurst = 4, 30, 10
	for _, engine := range []string{routes.HTTP1EngineNetHTTP, routes.HTTP1EngineCauseway} {
		t.Run(engine, func(t *testing.T) {
			up, addr := oddEdge(t, engine)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var failures []string
			fail := func(format string, args ...any) {
				mu.Lock()
				defer mu.Unlock()
				if len(failures) < 10 {
					failures = append(failures, fmt.Sprintf(format, args...))
				}
			}
			var all []oddRequest
			for w := range clients {
				wg.Add(1)
				rng := mrand.New(mrand.NewPCG(uint64(w), 17))
				var mine []oddRequest
				for b := range bursts {
					var reqs []oddRequest
					for i := range perBurst {
						reqs = append(reqs, newOddRequest(rng, fmt.Sprintf("w%d-b%d-%d", w, b, i)))
					}
					mine = append(mine, reqs...)
				}
				all = append(all, mine...)
				go func() {
					defer wg.Done()
					for b := range bursts {
						// A connection the edge closes (it may, after an
						// answer that came before the body was read) is
						// followed by a new one for the requests left.
						left := mine[b*perBurst : (b+1)*perBurst]
						for len(left) > 0 {
							n, err := oddBurst(addr, left)
							if err != nil {
								fail("%v", err)
								return
							}
							left = left[n:]
						}
					}
				}()
			}
			wg.Wait()
			for _, f := range failures {
				t.Error(f)
			}
			up.mu.Lock()
			defer up.mu.Unlock()
			if up.n != len(all) {
				t.Errorf("the upstream got %d requests, want %d", up.n, len(all))
			}
			for _, r := range all {
				got, ok := up.got[r.id]
				switch {
				case !ok:
					t.Errorf("%s never reached the upstream", r.id)
				case r.body != "-" && got != r.body:
					t.Errorf("%s: the upstream got a body of %d bytes, want %d", r.id, len(got), len(r.body))
				}
			}
		})
	}
}

// oddBurst writes reqs at once on a new connection and reads their
// answers; it returns how many were answered before the edge closed the
// connection (only an /early answer may close it).
func oddBurst(addr string, reqs []oddRequest) (int, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	var all bytes.Buffer
	for _, r := range reqs {
		all.WriteString(r.raw)
	}
	go func() { _, _ = c.Write(all.Bytes()) }()
	br := bufio.NewReader(c)
	for i, r := range reqs {
		resp, err := http.ReadResponse(br, &http.Request{Method: r.method})
		for err == nil && resp.StatusCode/100 == 1 {
			resp, err = http.ReadResponse(br, &http.Request{Method: r.method})
		}
		if err != nil {
			return i, fmt.Errorf("%s: %w", r.id, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return i, fmt.Errorf("%s: body: %w", r.id, err)
		}
		if resp.StatusCode != r.status || string(b) != r.answer || resp.Header.Get("X-Id") != r.id {
			return i, fmt.Errorf("%s: got %d X-Id %q %.60q, want %d %.60q", r.id, resp.StatusCode, resp.Header.Get("X-Id"), b, r.status, r.answer)
		}
		if resp.Close {
			if r.body != "-" {
				return i, fmt.Errorf("%s: the edge closed the connection after %d %.60q", r.id, resp.StatusCode, b)
			}
			return i + 1, nil
		}
	}
	return len(reqs), nil
}

// An upstream's 103 Early Hints that carries Content-Length (a 1xx has no
// body; an upstream that says otherwise is wrong) is passed on without it,
// on both engines, as net/http's server writes every 1xx: a client that
// took the length for a body would read the final answer's first bytes as
// that body, and then the rest of the connection out of step. Its
// hop-by-hop fields, and those its Connection names, stop at the edge as a
// final answer's do (RFC 9110 7.6.1).
func TestEngineInformationalCarriesNoFraming(t *testing.T) {
	for _, engine := range []string{routes.HTTP1EngineNetHTTP, routes.HTTP1EngineCauseway} {
		t.Run(engine, func(t *testing.T) {
			addr := rawAnswers(t, func(r *http.Request) string {
				body := "answer:" + r.URL.Path
				return fmt.Sprintf("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nContent-Length: 5\r\n"+
					"Connection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\n\r\n"+
					"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			})
			raw := pipelineThrough(t, engine, addr, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
			br := bufio.NewReader(bytes.NewReader(raw))
			for _, path := range []string{"/1", "/2"} {
				hints, err := http.ReadResponse(br, nil)
				if err != nil || hints.StatusCode != http.StatusEarlyHints || hints.Header.Get("Link") == "" {
					t.Fatalf("%s: no 103 first: %v (%q)", path, err, raw)
				}
				if _, ok := hints.Header["Content-Length"]; ok {
					t.Fatalf("%s: the 103 carries Content-Length: %q", path, raw)
				}
				for _, k := range []string{"Connection", "X-Hop", "Keep-Alive", "Upgrade"} {
					if _, ok := hints.Header[k]; ok {
						t.Fatalf("%s: the 103 carries the hop-by-hop %s: %q", path, k, raw)
					}
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("%s: %v (%q)", path, err, raw)
				}
				b, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != http.StatusOK || string(b) != "answer:"+path {
					t.Fatalf("%s: %d %q %v (%q)", path, resp.StatusCode, b, err, raw)
				}
			}
		})
	}
}

// An upstream's 304 that states a Content-Length and sends that many bytes
// after it: the edge never reads the bytes (nor reuses the connection), and
// the client's 304 carries no Content-Length either, on both engines, as
// net/http's server writes a 304: a client that took the length for a body
// would read the next answer's first bytes as that body. A HEAD answer
// keeps its length (the length of the body it stands for), and the next
// pipelined answer is whole.
func TestEngineNotModifiedCarriesNoLength(t *testing.T) {
	for _, engine := range []string{routes.HTTP1EngineNetHTTP, routes.HTTP1EngineCauseway} {
		t.Run(engine, func(t *testing.T) {
			addr := rawAnswers(t, func(r *http.Request) string {
				switch r.URL.Path {
				case "/a":
					return "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nleaked"
				case "/h":
					return "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nleaked"
				}
				return "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nanswer:" + r.URL.Path
			})
			raw := pipelineThrough(t, engine, addr, "GET /a HTTP/1.1\r\nHost: a\r\n\r\nHEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
			br := bufio.NewReader(bytes.NewReader(raw))
			res, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
			if err != nil || res.StatusCode != http.StatusNotModified || res.Header.Get("Etag") != `"x"` {
				t.Fatalf("304: %v (%q)", err, raw)
			}
			if _, ok := res.Header["Content-Length"]; ok {
				t.Fatalf("the 304 carries Content-Length: %q", raw)
			}
			res, err = http.ReadResponse(br, &http.Request{Method: http.MethodHead})
			if err != nil || res.StatusCode != http.StatusOK || res.ContentLength != 6 {
				t.Fatalf("HEAD: %v (%q)", err, raw)
			}
			res, err = http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("last: %v (%q)", err, raw)
			}
			b, err := io.ReadAll(res.Body)
			if err != nil || string(b) != "answer:/b" {
				t.Fatalf("last: %q %v (%q)", b, err, raw)
			}
			if rest, _ := io.ReadAll(br); len(rest) > 0 {
				t.Fatalf("bytes after the last answer: %q", rest)
			}
		})
	}
}
