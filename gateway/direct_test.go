package gateway

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// The differential tests send the same requests, byte for byte, through an
// edge that forwards with its own forwarder (directProxy) and one that
// forwards with httputil.ReverseProxy (Options.reverseProxy), both to the
// same raw-TCP upstream, and compare what the upstream received and what
// the client received, as raw bytes. The only thing normalised is the
// Date header the edge's server adds.

// recordingConn keeps every byte read from the connection.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// take returns the bytes read so far minus what br still holds, and
// forgets them: the raw bytes of the message br just gave out.
func (c *recordingConn) take(br *bufio.Reader) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.buf.Len() - br.Buffered()
	return string(c.buf.Next(n))
}

// diffUpstream is a raw upstream: each request is answered as its path
// says (answerDiff), and its raw bytes are kept by X-Request-Id.
type diffUpstream struct {
	addr string
	mu   sync.Mutex
	got  map[string]string
	// gone records requests whose connection the edge closed while the
	// upstream held the answer back (/hold).
	gone map[string]bool
}

func startDiffUpstream(t *testing.T) *diffUpstream {
	u := &diffUpstream{got: map[string]string{}, gone: map[string]bool{}}
	u.addr = testutil.ServeConns(t, u.serve)
	return u
}

func (u *diffUpstream) received(id string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.got[id]
}

func (u *diffUpstream) serve(nc net.Conn) {
	c := &recordingConn{Conn: nc}
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		id := req.Header.Get("X-Request-Id")
		if req.Header.Get("Expect") == "100-continue" && req.URL.Path == "/continue" {
			_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		}
		head := normalizeHead(c.take(br))
		body, err := io.ReadAll(req.Body)
		raw := head + normalizeBody(c.take(br))
		u.mu.Lock()
		u.got[id] = raw
		if err != nil && req.URL.Path == "/hold" {
			// The body broke off: the edge closed the connection.
			u.gone[id] = errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
		}
		u.mu.Unlock()
		if err != nil {
			return
		}
		if !u.answer(c, br, req, id, body) {
			return
		}
	}
}

// answer writes the response the request's path asks for; false ends the
// connection.
func (u *diffUpstream) answer(c net.Conn, br *bufio.Reader, req *http.Request, id string, body []byte) bool {
	w := func(s string) bool { _, err := io.WriteString(c, s); return err == nil }
	sum := sha256.Sum256(body)
	digest := hex.EncodeToString(sum[:8])
	switch req.URL.Path {
	case "/chunked":
		return w("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n")
	case "/chunked-empty":
		return w("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	case "/trailer-announced":
		return w("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n")
	case "/trailer-undeclared":
		return w("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 42\r\nX-Extra: 7\r\n\r\n")
	case "/hop":
		return w("HTTP/1.1 200 OK\r\nConnection: X-Hop, Keep-Alive\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n" +
			"Upgrade: nothing\r\nX-Dup: a\r\nX-Dup: b\r\nx-lower: v\r\nX-Request-Id: upstream-own\r\nContent-Length: 2\r\n\r\nok")
	case "/204":
		return w("HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")
	case "/304":
		return w("HTTP/1.1 304 Not Modified\r\nEtag: \"v1\"\r\n\r\n")
	case "/103":
		return w("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
	case "/continue":
		return w("HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(digest)) + "\r\n\r\n" + digest)
	case "/sse":
		if !w("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n") {
			return false
		}
		for i := range 3 {
			time.Sleep(20 * time.Millisecond)
			ev := fmt.Sprintf("data: %d\n\n", i)
			if !w(fmt.Sprintf("%x\r\n%s\r\n", len(ev), ev)) {
				return false
			}
		}
		return w("0\r\n\r\n")
	case "/sse-param":
		return w("HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\nContent-Length: 9\r\n\r\ndata: x\n\n")
	case "/unknown-length":
		_ = w("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
		time.Sleep(20 * time.Millisecond)
		_ = w("close")
		return false
	case "/cut":
		_ = w("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it")
		return false
	case "/cut-chunked":
		_ = w("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		return false
	case "/bad-framing":
		_ = w("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello")
		return false
	case "/bad-chunk":
		_ = w("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
		return false
	case "/bad-status":
		_ = w("HTTP/1.1 2000 OK\r\n\r\n")
		return false
	case "/switch":
		_ = w("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		return false
	case "/slow":
		time.Sleep(600 * time.Millisecond)
		return w("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
	case "/hold":
		// Held back until the edge gives up on the request (the client
		// left): the edge must close this connection.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := br.ReadByte()
		u.mu.Lock()
		u.gone[id] = err == io.EOF
		u.mu.Unlock()
		return false
	case "/500":
		return w("HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	}
	// The echo: the body's length and digest, framed as the request's
	// X-Frame header asks.
	out := fmt.Sprintf("%s %d %s", req.Method, len(body), digest)
	if req.Method == http.MethodHead {
		return w("HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(out)) + "\r\n\r\n")
	}
	if req.Header.Get("X-Frame") == "chunked" {
		return w(fmt.Sprintf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(out), out))
	}
	return w("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(out)) + "\r\n\r\n" + out)
}

const diffConfig = `upstreams:
  u: {endpoints: [%[1]q]}
  slow: {endpoints: [%[1]q], timeout: 200ms}
routes:
  - {name: slow, match: {path_prefix: /slow}, upstream: slow}
  - {name: r, match: {path_prefix: /}, upstream: u}
`

// diffEdges starts an edge on the forwarder and one on ReverseProxy, both
// to u.
func diffEdges(t *testing.T, u *diffUpstream) (direct, reference string) {
	cfg := listenHeader + fmt.Sprintf(diffConfig, u.addr)
	d := startEdge(t, cfg)
	r := startEdge(t, cfg, func(o *EdgeOptions) { o.reverseProxy = true })
	return strings.TrimPrefix(d.url, "http://"), strings.TrimPrefix(r.url, "http://")
}

// normalizeHead puts a message head's fields in order of their names
// (values of one name keep their order): both proxies write a header map,
// whose order Go randomises. Date and Traceparent, which differ from
// request to request, lose their values.
func normalizeHead(h string) string {
	lines := strings.Split(strings.TrimSuffix(h, "\r\n\r\n"), "\r\n")
	if len(lines) == 0 {
		return h
	}
	fields := lines[1:]
	for i, f := range fields {
		name, _, _ := strings.Cut(f, ":")
		switch strings.ToLower(name) {
		case "date", "traceparent":
			fields[i] = name + ": -"
		}
	}
	slices.SortStableFunc(fields, func(a, b string) int {
		na, _, _ := strings.Cut(a, ":")
		nb, _, _ := strings.Cut(b, ":")
		return strings.Compare(strings.ToLower(na), strings.ToLower(nb))
	})
	return strings.Join(lines, "\r\n") + "\r\n\r\n"
}

// lastChunk finds the trailer section of a chunked body.
var lastChunk = regexp.MustCompile(`(^|\r\n)0\r\n`)

// normalizeBody orders a chunked body's trailer fields, as normalizeHead
// does a head's.
func normalizeBody(b string) string {
	locs := lastChunk.FindAllStringIndex(b, -1)
	if len(locs) == 0 || !strings.HasSuffix(b, "\r\n\r\n") {
		return b
	}
	end := locs[len(locs)-1][1]
	return b[:end] + strings.TrimPrefix(normalizeHead("-\r\n"+b[end:]), "-\r\n")
}

// readAnswer reads from br the responses (1xx included) to one request
// whose method is method, and returns their raw bytes; a response that
// breaks off ends with what arrived and "<cut>".
func readAnswer(c *recordingConn, br *bufio.Reader, method string) (string, bool) {
	var raw strings.Builder
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			_, _ = io.Copy(io.Discard, br)
			raw.WriteString(c.take(br) + "<cut>")
			return raw.String(), false
		}
		raw.WriteString(normalizeHead(c.take(br)))
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			_, _ = io.Copy(io.Discard, br)
			raw.WriteString(c.take(br) + "<cut>")
			return raw.String(), false
		}
		raw.WriteString(normalizeBody(c.take(br)))
		if resp.StatusCode >= 200 {
			return raw.String(), !resp.Close
		}
	}
}

type diffCase struct {
	name string
	// req is the raw request; "ID" in it is replaced by the request id.
	req    string
	method string
	// leaveAfter: the client closes the connection this long after
	// sending, without reading the answer.
	leaveAfter time.Duration
	// streamed: the answer is streamed (chunked or of unknown length), where
	// ReverseProxy's header flush races with the first write (see
	// copyResponse): the forwarder must answer the same every time, and
	// the two are compared without the race's traces (withoutFlushRace).
	streamed bool
	// trailer is the trailer section the forwarder sends the upstream
	// where ReverseProxy, which announces a request's trailers but drops
	// their values, sends none.
	trailer string
}

func chunkedBody(body string, sizes ...int) string {
	var b strings.Builder
	for len(body) > 0 {
		n := len(body)
		if len(sizes) > 0 {
			n = min(sizes[0], len(body))
			sizes = append(sizes[1:], sizes[0])
		}
		fmt.Fprintf(&b, "%x\r\n%s\r\n", n, body[:n])
		body = body[n:]
	}
	return b.String()
}

func diffCases() []diffCase {
	const host = "Host: api.example.test\r\nX-Request-Id: ID\r\n"
	body := func(n int) string { return strings.Repeat("0123456789abcdef", n/16+1)[:n] }
	cases := []diffCase{
		{name: "GET", req: "GET /x?a=1&b=2 HTTP/1.1\r\n" + host + "User-Agent: t\r\n\r\n"},
		{name: "GET no User-Agent", req: "GET /x HTTP/1.1\r\n" + host + "\r\n"},
		{name: "query with semicolon and bad escape", req: "GET /x?a=1;b=2&c=3 HTTP/1.1\r\n" + host + "\r\n"},
		{name: "HEAD", method: "HEAD", req: "HEAD /x HTTP/1.1\r\n" + host + "\r\n"},
		{name: "OPTIONS", req: "OPTIONS /x HTTP/1.1\r\n" + host + "\r\n"},
		{name: "DELETE", req: "DELETE /x HTTP/1.1\r\n" + host + "\r\n"},
		{name: "POST empty", req: "POST /x HTTP/1.1\r\n" + host + "Content-Length: 0\r\n\r\n"},
		{name: "POST no length", req: "POST /x HTTP/1.1\r\n" + host + "\r\n"},
		{name: "POST chunked empty", req: "POST /x HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{name: "POST chunked with trailers", trailer: "X-Check: 1\r\n", req: "POST /x HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTrailer: X-Check\r\nTe: trailers\r\n\r\n" +
			chunkedBody(body(100), 7, 50) + "0\r\nX-Check: 1\r\n\r\n"},
		{name: "POST chunked undeclared trailer", req: "POST /x HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n" +
			chunkedBody(body(10)) + "0\r\nX-Late: 1\r\n\r\n"},
		{name: "PATCH chunked echo chunked", streamed: true, req: "PATCH /x HTTP/1.1\r\n" + host + "X-Frame: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedBody(body(70000), 4096, 1, 30000) + "0\r\n\r\n"},
		{name: "Expect 100-continue answered", req: "PUT /continue HTTP/1.1\r\n" + host + "Expect: 100-continue\r\nContent-Length: 10\r\n\r\n" + body(10)},
		{name: "Expect 100-continue large", req: "PUT /continue HTTP/1.1\r\n" + host + "Expect: 100-continue\r\nContent-Length: 100000\r\n\r\n" + body(100000)},
		{name: "hop-by-hop request headers", req: "GET /x HTTP/1.1\r\n" + host +
			"Connection: keep-alive, X-Secret, Te\r\nX-Secret: s\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nTe: trailers, deflate\r\nUpgrade: h2c\r\nHttp2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"},
		{name: "forged forwarding headers", req: "GET /x HTTP/1.1\r\n" + host +
			"X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\nForwarded: for=1.2.3.4\r\nX-Real-Ip: 1.2.3.4\r\nX_Forwarded_For: 5.6.7.8\r\n\r\n"},
		{name: "duplicate headers", req: "GET /x HTTP/1.1\r\n" + host + "Accept: a\r\nAccept: b\r\nX-Many: 1\r\nx-many: 2\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n"},
		{name: "HTTP/1.0", req: "GET /x HTTP/1.0\r\n" + host + "\r\n"},
		{name: "HTTP/1.0 keep-alive 103", req: "GET /103 HTTP/1.0\r\n" + host + "Connection: keep-alive\r\n\r\n"},
		{name: "103 Early Hints", req: "GET /103 HTTP/1.1\r\n" + host + "\r\n"},
		{name: "chunked response", streamed: true, req: "GET /chunked HTTP/1.1\r\n" + host + "\r\n"},
		{name: "chunked empty response", streamed: true, req: "GET /chunked-empty HTTP/1.1\r\n" + host + "\r\n"},
		{name: "announced trailer", streamed: true, req: "GET /trailer-announced HTTP/1.1\r\n" + host + "Te: trailers\r\n\r\n"},
		{name: "undeclared trailer", streamed: true, req: "GET /trailer-undeclared HTTP/1.1\r\n" + host + "\r\n"},
		{name: "hop-by-hop response headers", req: "GET /hop HTTP/1.1\r\n" + host + "\r\n"},
		{name: "204", req: "GET /204 HTTP/1.1\r\n" + host + "\r\n"},
		{name: "304", req: "GET /304 HTTP/1.1\r\n" + host + "If-None-Match: \"v1\"\r\n\r\n"},
		{name: "HEAD 304", method: "HEAD", req: "HEAD /304 HTTP/1.1\r\n" + host + "\r\n"},
		{name: "SSE", streamed: true, req: "GET /sse HTTP/1.1\r\n" + host + "Accept: text/event-stream\r\n\r\n"},
		{name: "SSE with parameters", req: "GET /sse-param HTTP/1.1\r\n" + host + "\r\n"},
		{name: "unknown length", streamed: true, req: "GET /unknown-length HTTP/1.1\r\n" + host + "\r\n"},
		{name: "upstream closes mid-body", req: "GET /cut HTTP/1.1\r\n" + host + "\r\n"},
		{name: "upstream closes mid-chunk", streamed: true, req: "GET /cut-chunked HTTP/1.1\r\n" + host + "\r\n"},
		{name: "duplicate Content-Length", req: "GET /bad-framing HTTP/1.1\r\n" + host + "\r\n"},
		{name: "bad chunk size", streamed: true, req: "GET /bad-chunk HTTP/1.1\r\n" + host + "\r\n"},
		{name: "bad status", req: "GET /bad-status HTTP/1.1\r\n" + host + "\r\n"},
		{name: "gRPC call, bad upstream answer", req: "POST /bad-status HTTP/1.1\r\n" + host + "Content-Type: application/grpc\r\nTe: trailers\r\nContent-Length: 5\r\n\r\n\x00\x00\x00\x00\x00"},
		{name: "gRPC call, upstream timeout", req: "POST /slow HTTP/1.1\r\n" + host + "Content-Type: application/grpc+proto\r\nTe: trailers\r\nContent-Length: 5\r\n\r\n\x00\x00\x00\x00\x00"},
		{name: "unasked 101", req: "GET /switch HTTP/1.1\r\n" + host + "\r\n"},
		{name: "upstream 500", req: "POST /500 HTTP/1.1\r\n" + host + "Content-Type: application/grpc\r\nContent-Length: 3\r\n\r\nabc"},
		{name: "upstream timeout", req: "GET /slow HTTP/1.1\r\n" + host + "\r\n"},
		{name: "client leaves", req: "GET /hold HTTP/1.1\r\n" + host + "\r\n", leaveAfter: 100 * time.Millisecond},
		{name: "client leaves mid-body", req: "POST /hold HTTP/1.1\r\n" + host + "Content-Length: 100\r\n\r\n" + body(40), leaveAfter: 100 * time.Millisecond},
	}
	for _, n := range []int{1, 4095, 4096, 4097, 32 << 10, 65537} {
		cases = append(cases, diffCase{name: fmt.Sprintf("POST %d bytes", n),
			req: "POST /x HTTP/1.1\r\n" + host + "Content-Type: application/octet-stream\r\nContent-Length: " + strconv.Itoa(n) + "\r\n\r\n" + body(n)})
	}
	return cases
}

// withoutFlushRace maps the two answers ReverseProxy gives, as its header
// flush wins or loses the race with the first write (copyResponse), to
// one, so the forwarder's (always the first kind) can be compared with
// either: a Content-Type sniffed by net/http (the upstream sent none in
// these cases) goes, an empty body framed by Content-Length: 0 becomes
// the empty chunked body, and a head then a cut before the first body
// byte becomes a bare cut.
func withoutFlushRace(s string) string {
	s = strings.Replace(s, "Content-Type: text/plain; charset=utf-8\r\n", "", 1)
	head, body, ok := strings.Cut(s, "\r\n\r\n")
	if !ok {
		return s
	}
	if body == "" && strings.Contains(head, "\r\nContent-Length: 0") {
		return normalizeHead(strings.Replace(head, "Content-Length: 0", "Transfer-Encoding: chunked", 1)+"\r\n\r\n") + "0\r\n\r\n"
	}
	if s == "<cut>" {
		return s
	}
	if body == "<cut>" {
		return "<cut>"
	}
	return s
}

// exchange sends one case on a fresh connection and returns what came
// back.
func exchange(t *testing.T, addr string, tc diffCase, id string) string {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &recordingConn{Conn: nc}
	if _, err := io.WriteString(c, strings.Replace(tc.req, "ID", id, 1)); err != nil {
		t.Fatal(err)
	}
	if tc.leaveAfter > 0 {
		time.Sleep(tc.leaveAfter)
		return ""
	}
	method := tc.method
	if method == "" {
		method = http.MethodGet
	}
	raw, _ := readAnswer(c, bufio.NewReader(c), method)
	return raw
}

// TestForwarderMatchesReverseProxy sends every case through both edges and
// compares the upstream's and the client's raw bytes.
func TestForwarderMatchesReverseProxy(t *testing.T) {
	u := startDiffUpstream(t)
	direct, reference := diffEdges(t, u)
	for _, tc := range diffCases() {
		t.Run(tc.name, func(t *testing.T) {
			idD, idR := "d-"+sanitizeID(tc.name), "r-"+sanitizeID(tc.name)
			gotD := exchange(t, direct, tc, idD)
			gotR := exchange(t, reference, tc, idR)
			if tc.leaveAfter > 0 {
				waitFor(t, func() bool {
					u.mu.Lock()
					defer u.mu.Unlock()
					_, d := u.gone[idD]
					_, r := u.gone[idR]
					return d && r
				})
				u.mu.Lock()
				goneD, goneR := u.gone[idD], u.gone[idR]
				u.mu.Unlock()
				if !goneD || !goneR {
					t.Errorf("upstream connection closed after the client left: forwarder %v, ReverseProxy %v", goneD, goneR)
				}
			}
			for i := 0; tc.streamed && i < 4; i++ {
				if again := exchange(t, direct, tc, idD); again != gotD {
					t.Fatalf("the forwarder answered differently the second time\nfirst: %q\nthen:  %q", gotD, again)
				}
			}
			if tc.streamed {
				gotD, gotR = withoutFlushRace(gotD), withoutFlushRace(gotR)
			}
			if gotD != strings.ReplaceAll(gotR, idR, idD) {
				t.Errorf("client received\nforwarder:     %q\nReverseProxy:  %q", gotD, gotR)
			}
			upD, upR := u.received(idD), u.received(idR)
			wantD := strings.ReplaceAll(upR, idR, idD)
			if tc.trailer != "" {
				wantD = strings.TrimSuffix(wantD, "0\r\n\r\n") + "0\r\n" + tc.trailer + "\r\n"
			}
			if upD != wantD {
				t.Errorf("upstream received\nforwarder:     %q\nReverseProxy:  %q", upD, upR)
			}
			if upD == "" && !strings.HasPrefix(tc.name, "client leaves mid-body") {
				t.Errorf("the upstream received nothing")
			}
		})
	}
}

func sanitizeID(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, s)
}

// TestForwarderMatchesReverseProxyUnderLoad sends thousands of requests,
// with bodies of many sizes and both framings, over a few keep-alive
// connections at once through both edges: every body must reach the
// upstream whole (the echo's digest), and each request's raw bytes at the
// upstream and its answer at the client must be the same through both.
func TestForwarderMatchesReverseProxyUnderLoad(t *testing.T) {
	conns, perConn := 4, 600
	if testing.Short() {
		conns, perConn = 2, 100
	}
	u := startDiffUpstream(t)
	direct, reference := diffEdges(t, u)
	sizes := []int{0, 0, 1, 15, 100, 1000, 4095, 4096, 4097, 16 << 10, 32<<10 + 1, 70000}
	type sent struct{ id, req, method, want string }
	plan := make([][]sent, conns)
	for c := range conns {
		rng := rand.New(rand.NewPCG(uint64(c), 17))
		for i := range perConn {
			id := fmt.Sprintf("load-%d-%d", c, i)
			n := sizes[rng.IntN(len(sizes))]
			body := make([]byte, n)
			for j := range body {
				body[j] = byte(rng.IntN(256))
			}
			method := []string{"POST", "PUT", "PATCH", "GET", "HEAD"}[rng.IntN(5)]
			var b strings.Builder
			fmt.Fprintf(&b, "%s /load/%d HTTP/1.1\r\nHost: api.example.test\r\nX-Request-Id: ID\r\nX-Dup: 1\r\nX-Dup: 2\r\n", method, i)
			if rng.IntN(2) == 0 {
				b.WriteString("X-Frame: chunked\r\n")
			}
			if rng.IntN(8) == 0 {
				b.WriteString("Connection: X-Drop\r\nX-Drop: 1\r\n")
			}
			switch {
			case method == "GET" || method == "HEAD":
				body = nil
				b.WriteString("\r\n")
			case rng.IntN(2) == 0:
				fmt.Fprintf(&b, "Transfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n", chunkedBody(string(body), 1+rng.IntN(9000), 1+rng.IntN(100)))
			default:
				fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
			}
			sum := sha256.Sum256(body)
			plan[c] = append(plan[c], sent{id: id, req: b.String(), method: method,
				want: fmt.Sprintf("%s %d %s", method, len(body), hex.EncodeToString(sum[:8]))})
		}
	}
	run := func(addr, prefix string) map[string]string {
		var mu sync.Mutex
		answers := map[string]string{}
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		for c := range conns {
			wg.Go(func() {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					errs <- err
					return
				}
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(2 * time.Minute))
				rc := &recordingConn{Conn: nc}
				br := bufio.NewReader(rc)
				for _, s := range plan[c] {
					if _, err := io.WriteString(rc, strings.Replace(s.req, "ID", prefix+s.id, 1)); err != nil {
						errs <- err
						return
					}
					raw, alive := readAnswer(rc, br, s.method)
					headOK := s.method == "HEAD" && strings.HasPrefix(raw, "HTTP/1.1 200 OK")
					if !headOK && !strings.Contains(raw, s.want) {
						errs <- fmt.Errorf("%s%s: answer %q, want the echo %q", prefix, s.id, raw, s.want)
						return
					}
					if !alive {
						errs <- fmt.Errorf("%s%s: connection not kept alive: %q", prefix, s.id, raw)
						return
					}
					// The one difference on a streamed answer (copyResponse):
					// ReverseProxy sometimes writes before it flushes the
					// header, and net/http then sniffs a Content-Type. The
					// echo's own Content-Type has no charset.
					raw = strings.Replace(raw, "Content-Type: text/plain; charset=utf-8\r\n", "", 1)
					mu.Lock()
					answers[s.id] = strings.ReplaceAll(raw, prefix+s.id, s.id)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		return answers
	}
	// Both edges at once, so the two see the same load.
	var gotD, gotR map[string]string
	var wg sync.WaitGroup
	wg.Go(func() { gotD = run(direct, "d-") })
	wg.Go(func() { gotR = run(reference, "r-") })
	wg.Wait()
	if t.Failed() {
		return
	}
	diffs := 0
	for c := range conns {
		for _, s := range plan[c] {
			if gotD[s.id] != gotR[s.id] {
				diffs++
				if diffs <= 3 {
					t.Errorf("%s: client received\nforwarder:    %q\nReverseProxy: %q", s.id, gotD[s.id], gotR[s.id])
				}
			}
			upD := strings.ReplaceAll(u.received("d-"+s.id), "d-"+s.id, s.id)
			upR := strings.ReplaceAll(u.received("r-"+s.id), "r-"+s.id, s.id)
			if upD == "" || upD != upR {
				diffs++
				if diffs <= 3 {
					t.Errorf("%s: upstream received\nforwarder:    %q\nReverseProxy: %q", s.id, upD, upR)
				}
			}
		}
	}
	if diffs > 0 {
		t.Errorf("%d of %d requests differ", diffs, conns*perConn)
	}
}

// TestIsEventStreamMatchesParseMediaType: the forwarder reads
// Content-Type without mime.ParseMediaType's map, and must still agree
// with it, which is what ReverseProxy asks.
func TestIsEventStreamMatchesParseMediaType(t *testing.T) {
	for _, ct := range []string{
		"", "text/event-stream", " TEXT/Event-Stream ", "text/event-stream;", "text/event-stream; charset=utf-8",
		"text/event-stream; a=1; a=2", "text/event-stream; bad", "text/event-stream ;x=\"y\"", "text/event-streamx",
		"text/plain", "text/plain; charset=utf-8", "text/event-stream\t", "text /event-stream", "text/event-stream; a*=x",
		"text/event-stream;;", "text/event-stream; a=1;", "ＴＥＸＴ/event-stream", "text/event-stream, text/plain",
	} {
		base, _, _ := mime.ParseMediaType(ct)
		if want := base == "text/event-stream"; isEventStream(ct) != want {
			t.Errorf("isEventStream(%q) = %v, mime.ParseMediaType says %v", ct, !want, want)
		}
	}
}
