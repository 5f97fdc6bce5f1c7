package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// Attacks on the upstream side of the edge with request bodies: an upstream
// that answers before it read the body, sends bytes after its answer,
// frames its answer wrongly or goes away in the middle of it, while
// keep-alive clients upload bodies (some leaving half-way) through the same
// pool of upstream connections. Every request carries a token of its own in
// its X-Id and at the start of its body; what each client got and what the
// upstream received are both checked.

// hostileBodyUpstream is a raw HTTP/1.1 upstream whose misbehaviour is
// chosen by the request's path (see serve). It records, by X-Id, the digest
// of every body it read whole, and every request it could not place (one
// without a known X-Id, or whose body does not start with its token: what a
// body parsed as a request, or a body sent to the wrong request, looks
// like).
type hostileBodyUpstream struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
	got   map[string][]string // X-Id -> digests of the bodies read whole
	wrong []string
}

// With cfg it speaks TLS (a sidecar's end of the mesh hop).
func newHostileBodyUpstream(t *testing.T, cfg *tls.Config) *hostileBodyUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &hostileBodyUpstream{ln: ln, conns: map[net.Conn]bool{}, got: map[string][]string{}}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns[c] = true
			u.mu.Unlock()
			u.wg.Add(1)
			go u.serve(c, cfg)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

// readBody reads r's body whole and records it; false when it could not.
func (u *hostileBodyUpstream) readBody(r *http.Request) bool {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return false
	}
	id := r.Header.Get("X-Id")
	sum := sha256.Sum256(body)
	u.mu.Lock()
	defer u.mu.Unlock()
	if id == "" || !strings.HasPrefix(string(body), id+":") {
		u.wrong = append(u.wrong, fmt.Sprintf("%s %s X-Id %q, body starts %q", r.Method, r.URL.Path, id, body[:min(len(body), 40)]))
		return true
	}
	u.got[id] = append(u.got[id], hex.EncodeToString(sum[:]))
	if d := r.Header.Get("X-Digest"); d != hex.EncodeToString(sum[:]) {
		u.wrong = append(u.wrong, fmt.Sprintf("%s %s %s: body of %d bytes with another digest than the client's", r.Method, r.URL.Path, id, len(body)))
	}
	return true
}

const strayAnswer = "HTTP/1.1 200 OK\r\nX-Id: LEAKED\r\nContent-Length: 6\r\n\r\nleaked"

func (u *hostileBodyUpstream) serve(raw net.Conn, cfg *tls.Config) {
	defer u.wg.Done()
	c := raw
	if cfg != nil {
		c = tls.Server(raw, cfg)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	last := ""
	for {
		r, err := http.ReadRequest(br)
		if err != nil {
			// Anything but the end of the connection is bytes out of
			// step: a body sent where none was wanted, or the rest of
			// one the edge cut.
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ECONNRESET) {
				u.mu.Lock()
				u.wrong = append(u.wrong, fmt.Sprintf("after %s: %.80v", last, err))
				u.mu.Unlock()
			}
			return
		}
		id := r.Header.Get("X-Id")
		last = r.Method + " " + r.URL.Path + " " + id
		if id == "" {
			u.mu.Lock()
			u.wrong = append(u.wrong, fmt.Sprintf("request without X-Id: %s %s", r.Method, r.URL.Path))
			u.mu.Unlock()
			return
		}
		ok := "HTTP/1.1 200 OK\r\nX-Id: " + id + "\r\nContent-Length: " + strconv.Itoa(len(id)) + "\r\n\r\n" + id
		write := func(s string) bool { _, err := io.WriteString(c, s); return err == nil }
		switch strings.TrimPrefix(r.URL.Path, "/") {
		case "ok":
			if !u.readBody(r) || !write(ok) {
				return
			}
		case "slow":
			// The answer some milliseconds after the body: clients that
			// leave do so while their request is at the upstream.
			if !u.readBody(r) {
				return
			}
			time.Sleep(time.Duration(1+len(id)%7) * 3 * time.Millisecond)
			if !write(ok) {
				return
			}
		case "big":
			// A 256 KiB answer, the token repeated: clients that leave
			// half-way through it leave its connection unfinished.
			big := strings.Repeat(id+";", (256<<10)/(len(id)+1))
			if !u.readBody(r) || !write("HTTP/1.1 200 OK\r\nX-Id: "+id+"\r\nContent-Length: "+strconv.Itoa(len(big))+"\r\n\r\n"+big) {
				return
			}
		case "early":
			// The answer before the body, on a connection kept open; the
			// body is read (and recorded) afterwards, as net/http's
			// server reads away what its handler left.
			if !write("HTTP/1.1 413 Content Too Large\r\nX-Id: "+id+"\r\nContent-Length: "+strconv.Itoa(len(id))+"\r\n\r\n"+id) || !u.readBody(r) {
				return
			}
		case "early-close":
			// The answer before the body, and the connection closed
			// without reading it.
			_ = write("HTTP/1.1 401 Unauthorized\r\nX-Id: " + id + "\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(id)) + "\r\n\r\n" + id)
			return
		case "expect":
			// A 100 Continue, then the body, then the answer.
			if r.Header.Get("Expect") != "" && !write("HTTP/1.1 100 Continue\r\n\r\n") {
				return
			}
			if !u.readBody(r) || !write(ok) {
				return
			}
		case "expect-refused":
			// The final answer instead of the 100: the body must not
			// follow (the upstream would read it as the next request).
			if !write("HTTP/1.1 417 Expectation Failed\r\nX-Id: " + id + "\r\nContent-Length: " + strconv.Itoa(len(id)) + "\r\n\r\n" + id) {
				return
			}
			// Without an Expect (an HTTP/2 client's is not passed on)
			// the body comes anyway: it is read away, as it must be on
			// a connection kept open (RFC 9112 9.3).
			if r.Header.Get("Expect") == "" && !u.readBody(r) {
				return
			}
		case "late-1xx":
			if !u.readBody(r) || !write(ok+"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"+strayAnswer) {
				return
			}
		case "304-body":
			if !u.readBody(r) || !write("HTTP/1.1 304 Not Modified\r\nX-Id: "+id+"\r\nContent-Length: 6\r\n\r\n"+strayAnswer) {
				return
			}
		case "204-body":
			if !u.readBody(r) || !write("HTTP/1.1 204 No Content\r\nX-Id: "+id+"\r\n\r\n"+strayAnswer) {
				return
			}
		case "trailers":
			if !u.readBody(r) || !write("HTTP/1.1 200 OK\r\nX-Id: "+id+"\r\nTrailer: X-Tail\r\nTransfer-Encoding: chunked\r\n\r\n"+
				fmt.Sprintf("%x\r\n%s\r\n0\r\nX-Tail: %s\r\n\r\n", len(id), id, id)) {
				return
			}
		case "bad-chunk":
			if !u.readBody(r) || !write("HTTP/1.1 200 OK\r\nX-Id: "+id+"\r\nTransfer-Encoding: chunked\r\n\r\n"+
				fmt.Sprintf("%x\r\n%s\r\nzz\r\n", len(id), id)+strayAnswer) {
				return
			}
		case "short-length":
			// Content-Length shorter than what follows: the rest is
			// stray bytes.
			if !u.readBody(r) || !write("HTTP/1.1 200 OK\r\nX-Id: "+id+"\r\nContent-Length: 2\r\n\r\n"+id+strayAnswer) {
				return
			}
		case "long-length":
			// Content-Length longer than what is sent, then the close.
			_ = u.readBody(r) && write("HTTP/1.1 200 OK\r\nX-Id: "+id+"\r\nContent-Length: "+strconv.Itoa(len(id)+100)+"\r\n\r\n"+id)
			return
		case "reset":
			// Half an answer, then a reset.
			if u.readBody(r) && write("HTTP/1.1 200 OK\r\nX-Id: "+id+"\r\nContent-Length: "+strconv.Itoa(2*len(id))+"\r\n\r\n"+id) {
				if tc, ok := raw.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
			}
			return
		default:
			_ = write("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
			return
		}
	}
}

// upstreamAttackPaths are hostileBodyUpstream's cases, with what a client
// may get from each: want is the status of a whole answer (0: none may
// come whole, the client must see it fail); body says the answer's body is
// the request's token; gateway lists the edge's own answers allowed.
var upstreamAttackPaths = []struct {
	path    string
	want    int
	body    bool
	gateway []int
	// reads: the upstream reads (and records) the body whole when the
	// client sent it whole.
	reads bool
}{
	{path: "ok", want: 200, body: true, reads: true},
	{path: "slow", want: 200, body: true, reads: true},
	{path: "big", want: 200, reads: true},
	{path: "early", want: 413, body: true},
	{path: "early-close", want: 401, body: true, gateway: []int{502}},
	{path: "expect", want: 200, body: true, reads: true},
	{path: "expect-refused", want: 417, body: true},
	{path: "late-1xx", want: 200, body: true, reads: true},
	{path: "304-body", want: 304, reads: true},
	{path: "204-body", want: 204, reads: true},
	{path: "trailers", want: 200, body: true, reads: true},
	{path: "bad-chunk", gateway: []int{502}, reads: true},
	{path: "short-length", want: 200, reads: true},
	{path: "long-length", gateway: []int{502}, reads: true},
	{path: "reset", gateway: []int{502}, reads: true},
}

// TestEngineHostileUpstreamWithBodies: 24 keep-alive clients send POST and
// PUT bodies (0 B to 256 KiB, Content-Length or chunked, some with Expect:
// 100-continue, some left half-way) to every case of hostileBodyUpstream
// through one edge, so the cases share its upstream connections. No client
// may get another's answer or a stray one, an answer cut short must reach
// its client cut short, and the upstream must read every body it reads
// whole exactly as it was sent, once, and never a cut one as whole.
func TestEngineHostileUpstreamWithBodies(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			u := newHostileBodyUpstream(t, nil)
			e := startEdge(t, engineHeader(engine)+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q], timeout: 5s}
routes:
  - {name: open, match: {path_prefix: /}, upstream: u}
`, u.ln.Addr().String()))
			hostileUpstreamWithBodies(t, e.Addr("http"), u, engine, 1000)
		})
	}
	// Retries and a per-try timeout: every attempt watches a context of
	// its own (not the request's end watch), and a POST may be sent again
	// only from its kept copy, never after its answer began.
	t.Run("retries", func(t *testing.T) {
		u := newHostileBodyUpstream(t, nil)
		engine := routes.HTTP1EngineCauseway
		e := startEdge(t, engineHeader(engine)+fmt.Sprintf(`upstreams:
  u:
    endpoints: [%q]
    timeout: 5s
    retries: {attempts: 2, on: [connect_failure, "503"], per_try_timeout: 5s, budget_percent: 100, non_idempotent: true, backoff: 1ms, max_backoff: 2ms}
routes:
  - {name: open, match: {path_prefix: /}, upstream: u}
`, u.ln.Addr().String()))
		hostileUpstreamWithBodies(t, e.Addr("http"), u, "retries", 600)
	})
	// The mesh hop: the edge's own client over mTLS to a sidecar that
	// misbehaves.
	t.Run("mesh", func(t *testing.T) {
		hop := newMeshHop(t)
		u := newHostileBodyUpstream(t, hop.serverTLS)
		engine := routes.HTTP1EngineCauseway
		e := startEdge(t, engineHeader(engine)+hop.config(u.ln.Addr().String(), ", timeout: 5s"))
		hostileUpstreamWithBodies(t, e.Addr("http"), u, "mesh", 600)
	})
}

func hostileUpstreamWithBodies(t *testing.T, addr string, u *hostileBodyUpstream, engine string, total int64) {
	var fails failureLog
	var mu sync.Mutex
	sent := map[string]string{} // X-Id -> digest of the whole body, for bodies sent whole to a path that reads
	runClients(24, total, 11, func(k *keepAliveClient, n int64) bool {
		rng := k.rng
		id := fmt.Sprintf("%s-%d", engine, n)
		cs := upstreamAttackPaths[rng.IntN(len(upstreamAttackPaths))]
		if err := k.dial(addr); err != nil {
			fails.add(id, "dial: %v", err)
			return false
		}
		c, br := k.c, k.br
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		body, digest := taggedBody(rng, id, attackBodySize(rng))
		method := http.MethodPost
		if rng.IntN(3) == 0 {
			method = http.MethodPut
		}
		chunked := rng.IntN(2) == 0
		// Expect elsewhere is rare: an upstream that never answers it
		// costs the request the edge's 1 s wait for its 100.
		expect := cs.path == "expect" || cs.path == "expect-refused" || rng.IntN(40) == 0
		// The client leaves half-way through its body, or once it is
		// sent, or half-way through the answer.
		leave := rng.IntN(24)
		var head strings.Builder
		fmt.Fprintf(&head, "%s /%s HTTP/1.1\r\nHost: a\r\nX-Id: %s\r\nX-Digest: %s\r\n", method, cs.path, id, digest)
		if expect {
			head.WriteString("Expect: 100-continue\r\n")
		}
		var wire []byte
		if chunked {
			head.WriteString("Transfer-Encoding: chunked\r\n\r\n")
			wire = []byte(head.String())
			for rest := body; len(rest) > 0; {
				k := min(len(rest), 1+rng.IntN(16<<10))
				wire = fmt.Appendf(wire, "%x\r\n", k)
				wire = append(wire, rest[:k]...)
				wire = append(wire, "\r\n"...)
				rest = rest[k:]
			}
			wire = append(wire, "0\r\n\r\n"...)
		} else {
			fmt.Fprintf(&head, "Content-Length: %d\r\n\r\n", len(body))
			wire = append([]byte(head.String()), body...)
		}
		if leave == 0 {
			cut := len(head.String()) + rng.IntN(len(wire)-len(head.String()))
			_, _ = c.Write(wire[:cut])
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
			k.drop()
			return true
		}
		if cs.reads {
			mu.Lock()
			sent[id] = digest
			mu.Unlock()
		}
		// The body is written beside the reading of the answer: an early
		// answer must be read while the body still goes out.
		werr := make(chan error, 1)
		go func() { _, err := c.Write(wire); werr <- err }()
		if leave == 1 || leave == 2 {
			mu.Lock()
			delete(sent, id)
			mu.Unlock()
			<-werr
			if leave == 2 {
				// One read: some of the answer, all of a small one.
				_, _ = br.Read(make([]byte, 1+rng.IntN(512)))
			}
			k.drop()
			return true
		}
		resp, got, err := readAnswer(br, method)
		if err != nil {
			<-werr
			if cs.want != 0 && cs.gateway == nil {
				fails.add(id, "%s /%s %s: %v", method, cs.path, id, err)
			}
			k.drop()
			return true
		}
		// An answer before the body was written whole: the edge closes
		// the connection, or reads the rest away, either way the write
		// ends.
		<-werr
		status := resp.StatusCode
		switch {
		case resp.Header.Get("X-Id") == "LEAKED" || strings.Contains(got, "leaked"):
			fails.add(id, "%s /%s %s: a stray answer: %d %q", method, cs.path, id, status, got)
		case status == cs.want:
			if x := resp.Header.Get("X-Id"); x != id {
				fails.add(id, "%s /%s %s: got the answer of %q: %d %q", method, cs.path, id, x, status, got)
			}
			if cs.body && got != id || cs.path == "big" && strings.Trim(strings.ReplaceAll(got, id+";", ""), " ") != "" {
				fails.add(id, "%s /%s %s: body %q", method, cs.path, id, got)
			}
			if cs.path == "trailers" && resp.Trailer.Get("X-Tail") != id {
				fails.add(id, "%s /%s %s: trailer %q", method, cs.path, id, resp.Trailer.Get("X-Tail"))
			}
		case !containsInt(cs.gateway, status):
			fails.add(id, "%s /%s %s: %d %q", method, cs.path, id, status, got)
		}
		if resp.Close {
			k.drop()
		}
		return true
	})
	fails.report(t)
	mu.Lock()
	defer mu.Unlock()
	u.check(t, sent)
}

// check fails t for every request the upstream could not place, every body
// it read whole more than once or other than it was sent, and every body of
// sent (X-Id -> digest: sent whole to a case that reads it) it never read
// whole.
func (u *hostileBodyUpstream) check(t *testing.T, sent map[string]string) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, w := range u.wrong {
		if i == 10 {
			t.Errorf("... and %d more", len(u.wrong)-10)
			break
		}
		t.Errorf("upstream: %s", w)
	}
	for id, digests := range u.got {
		if len(digests) > 1 {
			t.Errorf("upstream read the body of %s %d times", id, len(digests))
		}
		if want, ok := sent[id]; ok && digests[0] != want {
			t.Errorf("upstream read the body of %s other than it was sent", id)
		}
	}
	missing := 0
	for id := range sent {
		if _, ok := u.got[id]; !ok {
			missing++
			if missing <= 5 {
				t.Errorf("upstream never read the body of %s whole", id)
			}
		}
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// The same cases from HTTP/2 clients over TLS to the HTTP/1.1 upstream:
// 24 goroutines share two HTTP/2 connections, bodies go with a length or
// without one (an HTTP/2 body of unknown length reaches the upstream
// chunked), and some requests are cancelled during their upload or their
// answer, which resets their stream while the connection's other streams
// go on.
func TestEngineHostileUpstreamWithBodiesH2(t *testing.T) {
	u := newHostileBodyUpstream(t, nil)
	e, pool := startTLSEdgeUpstream(t, u.ln.Addr().String(), "timeout: 5s")
	clients := []*http.Client{h2Client(pool), h2Client(pool)}
	for _, c := range clients {
		c.Timeout = 20 * time.Second
		defer c.CloseIdleConnections()
	}
	base := "https://" + e.Addr("https")
	var fails failureLog
	var mu sync.Mutex
	sent := map[string]string{}
	runClients(24, 1000, 13, func(k *keepAliveClient, n int64) bool {
		rng := k.rng
		id := fmt.Sprintf("h2-%d", n)
		cs := upstreamAttackPaths[rng.IntN(len(upstreamAttackPaths))]
		body, digest := taggedBody(rng, id, attackBodySize(rng))
		leave := rng.IntN(16)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var rd io.Reader = bytes.NewReader(body)
		if leave == 0 {
			// Cancelled half-way through the upload: the rest of the
			// body never comes.
			half := len(body) / 2
			pr, pw := io.Pipe()
			go func() {
				_, _ = pw.Write(body[:half])
				time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
				cancel()
				pw.CloseWithError(context.Canceled)
			}()
			rd = pr
		} else if rng.IntN(2) == 0 {
			rd = onlyReader{rd} // no length: chunked to the upstream
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/"+cs.path, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Id", id)
		req.Header.Set("X-Digest", digest)
		if cs.path == "expect" || cs.path == "expect-refused" {
			req.Header.Set("Expect", "100-continue")
		}
		if leave != 0 && cs.reads {
			mu.Lock()
			sent[id] = digest
			mu.Unlock()
		}
		resp, err := clients[n%2].Do(req)
		if err != nil {
			if leave != 0 && cs.want != 0 && cs.gateway == nil {
				fails.add(id, "/%s %s: %v", cs.path, id, err)
			}
			return true
		}
		defer resp.Body.Close()
		if leave == 1 {
			// Cancelled during the answer.
			_, _ = io.CopyN(io.Discard, resp.Body, int64(rng.IntN(64)))
			cancel()
			return true
		}
		b, err := io.ReadAll(resp.Body)
		got := string(b)
		status := resp.StatusCode
		switch {
		case resp.Header.Get("X-Id") == "LEAKED" || strings.Contains(got, "leaked"):
			fails.add(id, "/%s %s: a stray answer: %d %q", cs.path, id, status, got)
		case err != nil:
			if leave != 0 && cs.want != 0 && cs.gateway == nil {
				fails.add(id, "/%s %s: %d: %v", cs.path, id, status, err)
			}
		case status == cs.want:
			if x := resp.Header.Get("X-Id"); x != id {
				fails.add(id, "/%s %s: got the answer of %q: %d %q", cs.path, id, x, status, got)
			}
			if cs.body && got != id || cs.path == "big" && strings.ReplaceAll(got, id+";", "") != "" {
				fails.add(id, "/%s %s: body %q", cs.path, id, got[:min(len(got), 80)])
			}
			if cs.path == "trailers" && resp.Trailer.Get("X-Tail") != id {
				fails.add(id, "/%s %s: trailer %q", cs.path, id, resp.Trailer.Get("X-Tail"))
			}
		case cs.want == 0 && status == http.StatusOK:
			fails.add(id, "/%s %s: a whole answer where none can be: %q", cs.path, id, got)
		case cs.want != 0 && !containsInt(cs.gateway, status):
			fails.add(id, "/%s %s (leave %d): %d %q", cs.path, id, leave, status, got)
		}
		return true
	})
	fails.report(t)
	mu.Lock()
	defer mu.Unlock()
	u.check(t, sent)

}

// Pipelined clients with bodies: each writes two to five requests at once
// (any of hostileBodyUpstream's cases, Content-Length or chunked), split
// at random bytes with pauses on either side of the engine's 5 ms wait
// before parking, then reads the answers in order. Every answer must be its
// own request's, in order, until an answer that closes or a failure (an
// upstream cut short) ends the connection; the upstream must read every
// body once and as sent, and never a body as a request.
func TestEngineHostilePipelinedBodies(t *testing.T) {
	u := newHostileBodyUpstream(t, nil)
	engine := routes.HTTP1EngineCauseway
	e := startEdge(t, engineHeader(engine)+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q], timeout: 5s}
routes:
  - {name: open, match: {path_prefix: /}, upstream: u}
`, u.ln.Addr().String()))
	var fails failureLog
	var mu sync.Mutex
	sent := map[string]string{}
	runClients(16, 600, 17, func(k *keepAliveClient, n int64) bool {
		rng := k.rng
		if err := k.dial(e.Addr("http")); err != nil {
			fails.add("", "dial: %v", err)
			return false
		}
		defer k.drop()
		c, br := k.c, k.br
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		type sentReq struct {
			id, digest string
			cs         int
		}
		var reqs []sentReq
		var wire []byte
		for i := range 2 + rng.IntN(4) {
			id := fmt.Sprintf("pipe-%d-%d", n, i)
			ci := rng.IntN(len(upstreamAttackPaths))
			cs := upstreamAttackPaths[ci]
			body, digest := taggedBody(rng, id, rng.IntN(8<<10))
			wire = fmt.Appendf(wire, "POST /%s HTTP/1.1\r\nHost: a\r\nX-Id: %s\r\nX-Digest: %s\r\n", cs.path, id, digest)
			if cs.path == "expect" || cs.path == "expect-refused" {
				wire = append(wire, "Expect: 100-continue\r\n"...)
			}
			if rng.IntN(2) == 0 {
				wire = fmt.Appendf(wire, "Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body)
			} else {
				wire = fmt.Appendf(wire, "Content-Length: %d\r\n\r\n%s", len(body), body)
			}
			reqs = append(reqs, sentReq{id: id, digest: digest, cs: ci})
		}
		werr := make(chan error, 1)
		go func() {
			for rest := wire; len(rest) > 0; {
				k := min(len(rest), 1+rng.IntN(len(wire)))
				if _, err := c.Write(rest[:k]); err != nil {
					werr <- err
					return
				}
				rest = rest[k:]
				if rng.IntN(3) == 0 {
					time.Sleep(time.Duration(rng.IntN(8000)) * time.Microsecond)
				}
			}
			werr <- nil
		}()
		defer func() { c.Close(); <-werr }()
		for _, r := range reqs {
			cs := upstreamAttackPaths[r.cs]
			resp, got, err := readAnswer(br, http.MethodPost)
			if err != nil {
				if cs.want != 0 && cs.gateway == nil {
					var seq []string
					for _, r := range reqs {
						seq = append(seq, upstreamAttackPaths[r.cs].path)
					}
					fails.add(r.id, "/%s %s: %v (pipeline %v)", cs.path, r.id, err, seq)
				}
				return true
			}
			status := resp.StatusCode
			switch {
			case resp.Header.Get("X-Id") == "LEAKED" || strings.Contains(got, "leaked"):
				fails.add(r.id, "/%s %s: a stray answer: %d %q", cs.path, r.id, status, got)
			case status == cs.want:
				if x := resp.Header.Get("X-Id"); x != r.id {
					fails.add(r.id, "/%s %s: got the answer of %q: %d", cs.path, r.id, x, status)
				}
				if cs.body && got != r.id {
					fails.add(r.id, "/%s %s: body %q", cs.path, r.id, got)
				}
				if cs.reads {
					mu.Lock()
					sent[r.id] = r.digest
					mu.Unlock()
				}
			case !containsInt(cs.gateway, status):
				fails.add(r.id, "/%s %s: %d %q", cs.path, r.id, status, got)
			}
			if resp.Close {
				return true
			}
		}
		return true
	})
	fails.report(t)
	mu.Lock()
	defer mu.Unlock()
	u.check(t, sent)
}

// attackBodySize is a request body's size: mostly up to 4 KiB, one in
// eight empty and one in eight up to 256 KiB.
func attackBodySize(rng *rand.Rand) int {
	switch rng.IntN(8) {
	case 0:
		return 0
	case 1:
		return rng.IntN(256 << 10)
	}
	return rng.IntN(4 << 10)
}

// taggedBody is "id:" and size random bytes, with the SHA-256 of the whole
// in hex: the upstream's copy is checked against it.
func taggedBody(rng *rand.Rand, id string, size int) (body []byte, digest string) {
	body = make([]byte, len(id)+1+size)
	copy(body, id+":")
	fillRandom(rng, body[len(id)+1:])
	sum := sha256.Sum256(body)
	return body, hex.EncodeToString(sum[:])
}
