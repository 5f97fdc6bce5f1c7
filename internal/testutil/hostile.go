package testutil

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// HostileUpstream answers every request correctly (the body of GET /x is
// "resp:/x") but also sends bytes that answer nothing: a body after a
// response that has none, or a whole response nobody asked for while the
// connection sits idle. Before the fix, the next request on a reused
// connection read those bytes as its own response. In the late modes the
// upstream sends the stray bytes only after beforeLate returns, and calls
// afterLate once they are written, so a test can hold them back until the
// client has put the connection in the idle pool.
func HostileUpstream(t testing.TB, mode string, beforeLate, afterLate func()) string {
	return ServeConns(t, hostile(mode, beforeLate, afterLate))
}

// HostileUpstreamTLS is HostileUpstream over TLS with cfg (mTLS, say). A
// write is a TLS record, so the stray bytes arrive in the response's own
// record (the modes that send them with the response), in a record of
// their own right after it ("more body in a later write"), or later (the
// late modes).
func HostileUpstreamTLS(t testing.TB, cfg *tls.Config, mode string, beforeLate, afterLate func()) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ServeListener(t, tls.NewListener(ln, cfg), hostile(mode, beforeLate, afterLate))
}

func hostile(mode string, beforeLate, afterLate func()) func(net.Conn) {
	return func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body := "resp:" + req.URL.Path
			var resp, stray string
			late, split := false, false
			switch {
			case req.Method == http.MethodHead && mode == "body after HEAD":
				resp = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
				stray = "LEAK" + body
			case req.Method == http.MethodHead && mode == "late body after HEAD":
				resp = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
				stray, late = "LEAK"+body, true
			case req.Method == http.MethodHead:
				resp = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
			case mode == "late body after 204" && strings.HasPrefix(req.URL.Path, "/empty"):
				resp, stray, late = "HTTP/1.1 204 No Content\r\n\r\n", "LEAK"+body, true
			case mode == "late body after 304" && strings.HasPrefix(req.URL.Path, "/empty"):
				resp, stray, late = "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", "LEAK"+body, true
			case mode == "body after 204" && strings.HasPrefix(req.URL.Path, "/empty"):
				resp, stray = "HTTP/1.1 204 No Content\r\n\r\n", "LEAK"+body
			case mode == "body after 304" && strings.HasPrefix(req.URL.Path, "/empty"):
				resp, stray = "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", "LEAK"+body
			case mode == "more body than Content-Length":
				resp, stray = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body), "LEAK"+body
			case mode == "more body in a later write" && strings.HasPrefix(req.URL.Path, "/empty"):
				resp, stray, split = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body), "LEAK"+body, true
			case mode == "unsolicited response while idle" && strings.HasPrefix(req.URL.Path, "/empty"):
				resp = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				stray, late = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\nLEAK%s", len(body)+4, body), true
			default:
				resp = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			}
			if !late && !split {
				resp += stray
			}
			if req.Body != nil {
				_, _ = io.Copy(io.Discard, req.Body)
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
			if split {
				_, _ = io.WriteString(c, stray)
				afterLate()
			}
			if late && stray != "" {
				beforeLate()
				_, _ = io.WriteString(c, stray) // the connection may be gone; the test reads what arrived
				afterLate()
			}
		}
	}
}
