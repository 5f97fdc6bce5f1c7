package test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// scriptedUpstream is an HTTP/1.1 upstream written byte by byte: each
// request's path picks what it does (serve), and what it read is kept by
// the request's X-Id.
type scriptedUpstream struct {
	addr  string
	serve func(u *scriptedUpstream, c net.Conn, req *http.Request) bool

	mu   sync.Mutex
	seen map[string][]scriptedRequest
}

type scriptedRequest struct {
	expect string
	body   []byte // nil: not read
}

func newScriptedUpstream(t *testing.T, serve func(u *scriptedUpstream, c net.Conn, req *http.Request) bool) *scriptedUpstream {
	t.Helper()
	u := &scriptedUpstream{serve: serve, seen: map[string][]scriptedRequest{}}
	u.addr = testutil.ServeConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil || !u.serve(u, c, req) {
				return
			}
		}
	})
	return u
}

func (u *scriptedUpstream) record(req *http.Request, body []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	id := req.Header.Get("X-Id")
	u.seen[id] = append(u.seen[id], scriptedRequest{expect: req.Header.Get("Expect"), body: body})
}

func (u *scriptedUpstream) requests(id string) []scriptedRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[id]
}

// h2Clients are an HTTP/2 client of the edge's TLS listener (ALPN h2) and
// one of its plain listener (h2c, prior knowledge), with an expect timeout
// far beyond what a case takes, so a client that gets its 100 or its final
// answer never sends the body because it gave up waiting.
func h2Clients(t *testing.T, pool *x509.CertPool) map[string]*http.Transport {
	t.Helper()
	h2 := &http.Transport{
		TLSClientConfig:       &tls.Config{RootCAs: pool, ServerName: "api.example.com"},
		ForceAttemptHTTP2:     true,
		ExpectContinueTimeout: time.Minute,
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2c := &http.Transport{Protocols: &p, ExpectContinueTimeout: time.Minute}
	t.Cleanup(h2.CloseIdleConnections)
	t.Cleanup(h2c.CloseIdleConnections)
	return map[string]*http.Transport{"h2": h2, "h2c": h2c}
}

// startH2Edges runs an edge with a TLS listener (ALPN h2) and one with a
// plain listener (h2c; a plain listener beside TLS would redirect), both
// routing everything to up, and gives the base URL each client uses.
func startH2Edges(t *testing.T, up string) (map[string]string, *x509.CertPool) {
	t.Helper()
	tlsEdge, pool := startTLSEdge(t, up)
	plain := startEdge(t, header+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q], timeout: 10s}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, up))
	return map[string]string{"h2": "https://" + tlsEdge.Addr("https"), "h2c": "http://" + plain.Addr("http")}, pool
}

// Answers that end at their head, to HTTP/2 clients (h2 and h2c): a 304
// that keeps the representation's Content-Length (RFC 9110 8.6 allows
// it), a 204 with Content-Length: 0, and HEAD. Each client must read a
// clean answer: the status, the upstream's fields, no body and no error.
// The 304 and the 204 go out without Content-Length (the edge does not
// announce a length it sends no DATA for, RFC 9113 8.1.1); HEAD keeps
// GET's. Before, Go's HTTP/2 client failed the 304's body with an
// unexpected EOF: the edge passed the upstream's Content-Length: 10 on.
func TestH2BodylessAnswers(t *testing.T) {
	answers := map[string]string{
		"/304":  "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nEtag: \"v1\"\r\nCache-Control: max-age=60\r\n\r\n",
		"/204":  "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-Answer: none\r\n\r\n",
		"/head": "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Type: text/plain\r\n\r\n",
	}
	up := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, req *http.Request) bool {
		_, _ = io.Copy(io.Discard, req.Body)
		_, err := io.WriteString(c, answers[req.URL.Path])
		return err == nil
	})
	bases, pool := startH2Edges(t, up.addr)
	cases := []struct {
		name, method, path string
		status             int
		header             map[string]string // "" means absent
		length             int64             // resp.ContentLength
	}{
		{"304 with the representation's length", http.MethodGet, "/304", http.StatusNotModified,
			map[string]string{"Etag": `"v1"`, "Cache-Control": "max-age=60", "Content-Length": ""}, 0},
		{"204 with Content-Length 0", http.MethodGet, "/204", http.StatusNoContent,
			map[string]string{"X-Answer": "none", "Content-Length": ""}, 0},
		{"HEAD keeps GET's length", http.MethodHead, "/head", http.StatusOK,
			map[string]string{"Content-Length": "10", "Content-Type": "text/plain"}, 10},
	}
	for proto, tr := range h2Clients(t, pool) {
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		for _, tc := range cases {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				req, err := http.NewRequest(tc.method, bases[proto]+tc.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || len(b) > 0 {
					t.Fatalf("body %q, %v: want none and no error", b, err)
				}
				if resp.ProtoMajor != 2 || resp.StatusCode != tc.status || resp.ContentLength != tc.length {
					t.Fatalf("%s %d length %d, want HTTP/2 %d length %d", resp.Proto, resp.StatusCode, resp.ContentLength, tc.status, tc.length)
				}
				for k, want := range tc.header {
					if got := strings.Join(resp.Header[k], ","); got != want {
						t.Errorf("%s: %q, want %q", k, got, want)
					}
				}
			})
		}
	}
}

// countingBody counts the reads of a request body: a client that waits
// for 100 Continue reads none until it is told to send.
type countingBody struct {
	r     io.Reader
	reads *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	b.reads.Add(1)
	return b.r.Read(p)
}

// Expect: 100-continue from HTTP/2 clients (h2 and h2c), with a body of
// known and of unknown length. net/http's HTTP/2 server takes the field
// off the request; the edge asks the HTTP/1.1 upstream all the same, as it
// does for an HTTP/1.1 client. An upstream that sends 100 gets the body
// whole, exactly once, after its 100, and the client the answer; one that
// refuses at once (417, 401, 413) has its answer relayed, and the client
// never sends the body. Before, the upstream never saw the Expect: the
// edge read the body at once, which sent the client its 100, so a refusal
// came only after the whole upload.
func TestH2ExpectContinueReachesUpstream(t *testing.T) {
	up := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, req *http.Request) bool {
		switch req.URL.Path {
		case "/continue":
			if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
				return false
			}
			b, err := io.ReadAll(req.Body)
			if err != nil {
				return false
			}
			u.record(req, b)
			sum := sha256.Sum256(b)
			_, err = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n%s", hex.EncodeToString(sum[:]))
			return err == nil
		default: // a refusal, the body left unread
			u.record(req, nil)
			status := strings.TrimPrefix(req.URL.Path, "/refuse/")
			_, err := fmt.Fprintf(c, "HTTP/1.1 %s Refused\r\nContent-Length: 7\r\n\r\nrefused", status)
			return err == nil
		}
	})
	bases, pool := startH2Edges(t, up.addr)
	body := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB
	sum := sha256.Sum256(body)
	cases := []struct {
		name, path string
		status     int
	}{
		{"100 then the body", "/continue", http.StatusOK},
		{"417 first", "/refuse/417", http.StatusExpectationFailed},
		{"401 first", "/refuse/401", http.StatusUnauthorized},
		{"413 first", "/refuse/413", http.StatusRequestEntityTooLarge},
	}
	for proto, tr := range h2Clients(t, pool) {
		client := &http.Client{Transport: tr, Timeout: 20 * time.Second}
		for _, tc := range cases {
			for _, known := range []bool{true, false} {
				name := fmt.Sprintf("%s/%s/length-known=%v", proto, tc.name, known)
				t.Run(name, func(t *testing.T) {
					var reads atomic.Int64
					var rd io.Reader = countingBody{bytes.NewReader(body), &reads}
					req, err := http.NewRequest(http.MethodPost, bases[proto]+tc.path, rd)
					if err != nil {
						t.Fatal(err)
					}
					if known {
						req.ContentLength = int64(len(body))
					} else {
						req.ContentLength = -1
					}
					req.Header.Set("Expect", "100-continue")
					req.Header.Set("X-Id", name)
					resp, err := client.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					answer, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil || resp.StatusCode != tc.status {
						t.Fatalf("%d %q %v, want %d", resp.StatusCode, answer, err, tc.status)
					}
					got := up.requests(name)
					if len(got) != 1 {
						t.Fatalf("the upstream read %d requests, want 1", len(got))
					}
					if got[0].expect != "100-continue" {
						t.Errorf("the upstream got Expect %q, want 100-continue", got[0].expect)
					}
					if tc.status == http.StatusOK {
						if !bytes.Equal(got[0].body, body) || string(answer) != hex.EncodeToString(sum[:]) {
							t.Errorf("the upstream read %d bytes (%d sent), answered %q", len(got[0].body), len(body), answer)
						}
						return
					}
					if n := reads.Load(); n != 0 {
						t.Errorf("the client read its body %d times after a %d before any 100", n, tc.status)
					}
				})
			}
		}
	}
}
