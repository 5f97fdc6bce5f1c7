package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// hostileUpstream answers each path with the raw bytes of hostileAnswers
// (a path it does not know gets "ok <target>") and records the raw bytes
// of every request it read, by target.
type hostileUpstream struct {
	mu  sync.Mutex
	got map[string]string
}

// hostileAnswers are what an upstream may send that the forwarder must not
// pass on as a complete answer, nor let reach the next request. "|CLOSE"
// ends the connection after the bytes.
var hostileAnswers = map[string]string{
	"/extra":     "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL",
	"/connclose": "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
	"/conntok":   "HTTP/1.1 200 OK\r\nConnection: X-Request-Id, Content-Length\r\nContent-Length: 2\r\n\r\nhi",
	"/flood103":  strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", 50) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"/flood100":  strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 50) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"/s101":      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL",
	"/nul":       "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nhi",
	"/hugecl":    "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nhi",
	"/negcl":     "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhi",
	"/midclose":  "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort|CLOSE",
	"/midchunk":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n|CLOSE",
	"/badtrail":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\nConnection: close\r\n\r\n",
}

func (u *hostileUpstream) serve(nc net.Conn) {
	c := &recordingConn{Conn: nc}
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		raw := c.take(br)
		u.mu.Lock()
		u.got[req.RequestURI] = raw
		u.mu.Unlock()
		answer, ok := hostileAnswers[req.URL.Path]
		if !ok {
			body := "ok " + req.RequestURI
			answer = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
		answer, closeAfter := strings.CutSuffix(answer, "|CLOSE")
		if _, err := io.WriteString(c, answer); err != nil || closeAfter {
			return
		}
	}
}

func (u *hostileUpstream) received(target string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.got[target]
}

// TestForwarderHostileUpstreamNeverReachesNextRequest sends, from several
// keep-alive clients at once, a request the upstream answers with hostile
// bytes and a request pipelined right behind it. The hostile answer is
// refused (502), or cut off (the client's read fails, never a complete
// body), or passed with its own framing only; whenever the client's
// connection survives, the request behind gets its own answer, never the
// bytes the upstream smuggled.
func TestForwarderHostileUpstreamNeverReachesNextRequest(t *testing.T) {
	u := &hostileUpstream{got: map[string]string{}}
	addr := testutil.ServeConns(t, u.serve)
	e := startEdge(t, listenHeader+fmt.Sprintf(diffConfig, addr))
	edge := strings.TrimPrefix(e.url, "http://")

	cases := []struct {
		path string
		// status is the answer's, 0 for an answer that must be cut off.
		status int
		body   string
	}{
		{"/extra", 200, "hi"},
		{"/connclose", 200, "hi"},
		{"/conntok", 200, "hi"},
		{"/flood103", 502, ""},
		{"/flood100", 502, ""},
		{"/s101", 502, ""},
		{"/nul", 502, ""},
		{"/hugecl", 502, ""},
		{"/negcl", 502, ""},
		{"/midclose", 0, ""},
		{"/midchunk", 0, ""},
		{"/badtrail", 0, ""},
	}
	const clients, rounds = 4, 6
	for _, tc := range cases {
		t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
			concurrently(t, clients, func(c int) error {
				for r := range rounds {
					if err := hostileExchange(edge, tc.path, tc.status, tc.body, fmt.Sprintf("%d-%d", c, r)); err != nil {
						return err
					}
				}
				return nil
			})
		})
	}
}

// hostileExchange sends GET path and, pipelined behind it, GET /next?id on
// one connection, and checks both answers.
func hostileExchange(edge, path string, status int, body, id string) error {
	nc, err := net.Dial("tcp", edge)
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	next := "/next?id=" + id
	if _, err := io.WriteString(nc, "GET "+path+" HTTP/1.1\r\nHost: a.example\r\n\r\nGET "+next+" HTTP/1.1\r\nHost: a.example\r\n\r\n"); err != nil {
		return err
	}
	br := bufio.NewReader(nc)
	res, err := http.ReadResponse(br, nil)
	for err == nil && res.StatusCode < 200 {
		// The 1xx the edge passes on (at most what the transport reads
		// before refusing the answer) come first.
		res, err = http.ReadResponse(br, nil)
	}
	if err != nil {
		if status == 0 {
			return nil // cut off before the head: the connection ended
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	got, err := io.ReadAll(res.Body)
	res.Body.Close()
	if status == 0 {
		if err == nil {
			return fmt.Errorf("%s: a cut upstream answer reached the client complete: %d %q", path, res.StatusCode, got)
		}
		return nil
	}
	if err != nil || res.StatusCode != status || (body != "" && string(got) != body) {
		return fmt.Errorf("%s: got %d %q (%w), want %d %q", path, res.StatusCode, got, err, status, body)
	}
	if res.Close {
		return nil
	}
	res, err = http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("%s: the request behind: %w", path, err)
	}
	got, err = io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || string(got) != "ok "+next {
		return fmt.Errorf("%s: the request behind got %d %q (%w), want its own answer", path, res.StatusCode, got, err)
	}
	return nil
}

// TestForwarderClientCannotSetEdgeHeadersUpstream checks what the upstream
// received, byte for byte, when a client tries to state what only the edge
// states: as trailers (announced and sent after a chunked body), through
// Connection, or through a Host that disagrees with an absolute target.
func TestForwarderClientCannotSetEdgeHeadersUpstream(t *testing.T) {
	u := &hostileUpstream{got: map[string]string{}}
	addr := testutil.ServeConns(t, u.serve)
	e := startEdge(t, listenHeader+fmt.Sprintf(diffConfig, addr))
	edge := strings.TrimPrefix(e.url, "http://")

	const forged = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Real-Ip: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Causeway-Peer-Id: spiffe://evil\r\nX-Causeway-Mirror: 1\r\n"
	cases := []struct {
		name, target, req string
		host              string // the Host the upstream must see
	}{
		{name: "trailers", target: "/tr", req: "POST /tr HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n" +
			"Trailer: X-Forwarded-For, X-Forwarded-Proto, X-Real-Ip, Forwarded, X-Causeway-Peer-Id, X-Causeway-Mirror\r\n\r\n1\r\na\r\n0\r\n" + forged + "\r\n"},
		{name: "undeclared trailers", target: "/ut", req: "POST /ut HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n" + forged + "\r\n"},
		{name: "connection nominates", target: "/cn", req: "GET /cn HTTP/1.1\r\nHost: a.example\r\n" +
			"Connection: X-Forwarded-For, X-Real-Ip, Forwarded, X-Causeway-Peer-Id, X-Request-Id\r\n" + forged + "\r\n"},
		{name: "absolute target, other Host", target: "/abs", host: "b.example", req: "GET http://b.example/abs HTTP/1.1\r\nHost: a.example\r\n" + forged + "\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", edge)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(nc, tc.req); err != nil {
				t.Fatal(err)
			}
			res, err := http.ReadResponse(bufio.NewReader(nc), nil)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			raw := u.received(tc.target)
			if res.StatusCode != http.StatusOK || raw == "" {
				t.Fatalf("status %d, upstream received %q", res.StatusCode, raw)
			}
			for _, bad := range []string{"6.6.6.6", "evil", "X-Causeway-Mirror: ", "https"} {
				if strings.Contains(raw, bad) {
					t.Errorf("the upstream received %q:\n%s", bad, raw)
				}
			}
			want := tc.host
			if want == "" {
				want = "a.example"
			}
			for _, field := range []string{"X-Forwarded-For: 127.0.0.1\r\n", "X-Real-Ip: 127.0.0.1\r\n", "\r\nHost: " + want + "\r\n", "X-Forwarded-Host: " + want + "\r\n"} {
				if strings.Count(raw, field) != 1 {
					t.Errorf("the upstream did not receive %q exactly once:\n%s", field, raw)
				}
			}
		})
	}
}
