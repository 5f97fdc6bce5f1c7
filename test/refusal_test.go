package test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"

	_ "github.com/causewayhq/causeway/plugins/standard"
)

// refusalEdge serves one route per way the edge answers without reading the
// body, on a plain and a TLS listener, with body_read_timeout 2s.
func refusalEdge(t *testing.T, up string) (e *edge, pool *x509.CertPool) {
	t.Helper()
	certFile, keyFile, pool := serverCert(t, t.TempDir(), "api.example.com")
	keys := writeTemp(t, "keys.txt", "partner:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\n") // "foo"
	secret := writeTemp(t, "hmac", strings.Repeat("k", 32))
	e = startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
server: {body_read_timeout: 2s}
tls:
  certificates: [{cert_file: %q, key_file: %q}]
  redirect_http: false
authenticators:
  partners: {api_key: {header: X-API-Key, keys_file: %q}}
  users: {jwt: {issuer: "https://id.example.com/", audiences: [api], hmac_secret_file: %q, algorithms: [HS256]}}
rate_limits:
  once: {key: route, limit: 1, per: 1h, burst: 1}
plugins:
  deny-all: {use: ip_filter, config: {deny: ["0.0.0.0/0", "::/0"]}}
  small: {use: body_limit, config: {max_bytes: 10}}
  maintenance: {use: respond, config: {status: 503, body: "down"}}
upstreams:
  u: {endpoints: [%q]}
  down: {endpoints: ["127.0.0.1:1"]}
routes:
  - {name: auth, match: {path_prefix: /auth}, auth: partners, upstream: u}
  - {name: jwt, match: {path_prefix: /jwt}, auth: users, upstream: u}
  - {name: down, match: {path_prefix: /down}, upstream: down}
  - {name: forbidden, match: {path_prefix: /forbidden}, plugins: [deny-all], upstream: u}
  - {name: small, match: {path_prefix: /small}, plugins: [small], upstream: u}
  - {name: limited, match: {path_prefix: /limited}, rate_limit: once, upstream: u}
  - {name: respond, match: {path_prefix: /respond}, plugins: [maintenance], upstream: u}
  - {name: open, match: {path_prefix: /open}, upstream: u}
`, certFile, keyFile, keys, secret, up))
	return e, pool
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	writeConfig(t, path, content)
	return path
}

// Every answer the edge gives without reading the body is written at once,
// even when the client then stalls its body or waits for 100 Continue, and
// the connection is closed after it (the rest of the body will not be
// read). Before the fix net/http first read the whole body, with no
// deadline: a client that stopped sending held the connection forever and
// never got its answer; with Expect: 100-continue the same.
func TestRefusalsDoNotWaitForTheBody(t *testing.T) {
	up := newBodyUpstream(t)
	e, pool := refusalEdge(t, up.addr())
	dialers := map[string]func() (net.Conn, error){
		"plain": func() (net.Conn, error) { return net.Dial("tcp", e.Addr("http")) },
		"tls": func() (net.Conn, error) {
			return tls.Dial("tcp", e.Addr("https"), &tls.Config{RootCAs: pool, ServerName: "api.example.com", NextProtos: []string{"http/1.1"}})
		},
	}
	refusals := []struct {
		path string
		want int
		// method and host, when set, replace POST and api.example.com:
		// refusals decided from the request line and Host, before any
		// route (CONNECT, a method in the wrong case, a control character
		// in the path, a malformed Host).
		method, host string
	}{
		{"/auth", 401, "", ""},
		{"/forbidden", 403, "", ""},
		{"/nothing-here", 404, "", ""},
		{"/small", 413, "", ""},
		{"/limited", 429, "", ""}, // after a first request that spends the burst
		{"/respond", 503, "", ""},
		{"/jwt", 401, "", ""},  // no token
		{"/down", 502, "", ""}, // the upstream refuses the connection before any byte of the body is read
		{"api.example.com:443", 405, "CONNECT", ""},
		{"/open", 400, "post", ""},
		{"/open/a%00b", 400, "", ""},
		{"/open", 400, "", "a..example"},
	}
	kinds := []struct {
		name, headers, sent string
	}{
		{"stalled body", "Content-Length: 100000\r\n", "0123456789"},
		{"stalled chunked body", "Transfer-Encoding: chunked\r\n", "a\r\n0123456789\r\n"},
		{"expect 100-continue, no body", "Content-Length: 100000\r\nExpect: 100-continue\r\n", ""},
	}
	// Spend the rate limit's burst.
	if resp, err := http.Post("http://"+e.Addr("http")+"/limited", "text/plain", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	// Each connection's close comes after the edge's lingering close (a
	// second when the body's length is unknown): the cases wait for it
	// side by side, each on its own connection, and it is checked once
	// all have closed or failed to.
	var closes sync.WaitGroup
	var closeMu sync.Mutex
	var stillOpen []string
	for proto, dial := range dialers {
		for _, k := range kinds {
			for _, rf := range refusals {
				method, host := "POST", "api.example.com"
				if rf.method != "" {
					method = rf.method
				}
				if rf.host != "" {
					host = rf.host
				}
				name := proto + "/" + k.name + "/" + method + " " + rf.path + " " + host
				t.Run(name, func(t *testing.T) {
					c, err := dial()
					if err != nil {
						t.Fatal(err)
					}
					handed := false // to the close's waiter, which closes c
					defer func() {
						if !handed {
							c.Close()
						}
					}()
					if _, err := io.WriteString(c, method+" "+rf.path+" HTTP/1.1\r\nHost: "+host+"\r\n"+k.headers+"\r\n"+k.sent); err != nil {
						t.Fatal(err)
					}
					// The body stalls here. The deadline only guards against a
					// hung test: the answer needs no part of the body.
					start := time.Now()
					_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
					br := bufio.NewReader(c)
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatalf("no answer while the body stalls: %v", err)
					}
					if resp.StatusCode == http.StatusContinue {
						t.Fatal("100 Continue for a request the edge refuses")
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					want := rf.want
					if rf.path == "/small" && strings.Contains(k.name, "chunked") {
						// No declared length: body_limit counts while it reads,
						// so the stall is what ends the request, within
						// body_read_timeout.
						want = http.StatusRequestTimeout
					}
					if resp.StatusCode != want {
						t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, want)
					}
					if rf.path != "/respond" {
						var eb struct{ Status int }
						if json.Unmarshal(body, &eb) != nil || eb.Status != want {
							t.Fatalf("not the JSON error body: %q", body)
						}
					}
					if !resp.Close {
						t.Fatal("the answer does not say Connection: close, though the body was not read")
					}
					t.Logf("answered %d in %s", resp.StatusCode, time.Since(start).Round(time.Millisecond))
					handed = true
					closes.Go(func() {
						defer c.Close()
						// Bounded by the 5 s read deadline above; reaching
						// it means the edge kept the connection.
						n, err := br.Read(make([]byte, 1))
						closeMu.Lock()
						defer closeMu.Unlock()
						if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
							stillOpen = append(stillOpen, fmt.Sprintf("%s: read %d bytes, %v", name, n, err))
						}
					})
				})
			}
		}
	}
	closes.Wait()
	if len(stillOpen) > 0 {
		t.Fatalf("%d connections still open after the answer: %v", len(stillOpen), stillOpen)
	}

	// HTTP/2: the refusal comes at once too, and the stream's end does not
	// wait for the body (the connection carries on).
	t.Run("h2/stalled body", func(t *testing.T) {
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "api.example.com"},
			ForceAttemptHTTP2: true,
		}}
		defer client.CloseIdleConnections()
		for _, rf := range refusals[:3] {
			pr, pw := io.Pipe()
			go func() { pw.Write([]byte("0123456789")) }() // then nothing
			req, _ := http.NewRequest(http.MethodPost, "https://"+e.Addr("https")+rf.path, pr)
			req.ContentLength = 100000
			resp, err := client.Do(req)
			if err != nil {
				pw.Close()
				t.Fatalf("%s: %v", rf.path, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			pw.Close()
			if resp.ProtoMajor != 2 || resp.StatusCode != rf.want {
				t.Fatalf("%s: %s %d, want HTTP/2 %d", rf.path, resp.Proto, resp.StatusCode, rf.want)
			}
		}
	})

	// A refusal whose small body had all arrived keeps the connection:
	// the edge read what was already there.
	t.Run("complete small body keeps the connection", func(t *testing.T) {
		c, err := net.Dial("tcp", e.Addr("http"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for i := range 3 {
			if _, err := io.WriteString(c, "POST /auth HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("request %d on the same connection: %v", i, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || resp.Close {
				t.Fatalf("request %d: status %d, close %v", i, resp.StatusCode, resp.Close)
			}
		}
	})

	// The good path is unchanged: an allowed request with Expect gets its
	// 100 Continue, and every byte of the body reaches the upstream.
	t.Run("allowed expect-continue request", func(t *testing.T) {
		c, err := net.Dial("tcp", e.Addr("http"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		const body = "the whole body, sent after 100 Continue"
		if _, err := io.WriteString(c, fmt.Sprintf("POST /open HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", len(body))); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusContinue {
			t.Fatalf("want 100 Continue first: %v %v", resp, err)
		}
		if _, err := io.WriteString(c, body); err != nil {
			t.Fatal(err)
		}
		resp, err = http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("final answer: %v %v", resp, err)
		}
		resp.Body.Close()
		if got, err := up.last(t); err != nil || got != body {
			t.Fatalf("the upstream received %q (%v)", got, err)
		}
	})
}

// The plain listener's redirect to https (and an ACME challenge's answer,
// served by the same handler) needs none of the request's body, and is
// answered like every other answer the edge gives itself: at once, with
// Connection: close when the body has not all arrived, the connection
// closed within body_read_timeout and a lingering close. Before the fix
// the server read the rest of a body under 256 KiB before it wrote the
// 308, with no deadline (read_timeout is off by default): a client that
// stalled its body, or waited for 100 Continue, never got its answer and
// held the connection for as long as it liked.
func TestRedirectToHTTPSDoesNotWaitForTheBody(t *testing.T) {
	certFile, keyFile, _ := serverCert(t, t.TempDir(), "api.example.com")
	kinds := []struct {
		name, headers, sent string
		keep                bool // the whole body is there: the connection stays
	}{
		{name: "stalled body", headers: "Content-Length: 100000\r\n", sent: "0123456789"},
		{name: "stalled chunked body", headers: "Transfer-Encoding: chunked\r\n", sent: "a\r\n0123456789\r\n"},
		{name: "expect 100-continue, no body", headers: "Content-Length: 100000\r\nExpect: 100-continue\r\n"},
		{name: "complete small body", headers: "Content-Length: 5\r\n", sent: "hello", keep: true},
	}
	for _, engine := range []string{"causeway", "net/http"} {
		e := startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
server: {body_read_timeout: 2s, http1_engine: %q}
tls:
  certificates: [{cert_file: %q, key_file: %q}]
upstreams:
  u: {endpoints: ["127.0.0.1:9"]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, engine, certFile, keyFile))
		for _, k := range kinds {
			t.Run(engine+"/"+k.name, func(t *testing.T) {
				resp, br := postStalled(t, e.Addr("http"), "/upload", "api.example.com", k.headers, k.sent)
				if resp.StatusCode != http.StatusPermanentRedirect || !strings.HasPrefix(resp.Header.Get("Location"), "https://api.example.com:") {
					t.Fatalf("status %d, Location %q, want the 308 to https", resp.StatusCode, resp.Header.Get("Location"))
				}
				if resp.Close == k.keep {
					t.Fatalf("Connection: close is %v, want %v", resp.Close, !k.keep)
				}
				if !k.keep {
					expectClosed(t, br)
				}
			})
		}
	}
}

// No admin endpoint reads a request body, and the admin listener answers
// as the data listeners do: at once, closing a connection whose body has
// not all arrived after a lingering close. Before the fix the admin server
// read up to 256 KiB of an unread body before it answered, with no
// deadline, and again after the answer: a client that stalled its body
// never got an answer and held an admin connection forever.
func TestAdminDoesNotWaitForTheBody(t *testing.T) {
	e := startEdge(t, `version: 1
listen: {http: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
upstreams:
  u: {endpoints: ["127.0.0.1:9"]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`)
	kinds := []struct {
		name, headers, sent string
		keep                bool
	}{
		{name: "stalled body", headers: "Content-Length: 100000\r\n", sent: "0123456789"},
		{name: "stalled chunked body", headers: "Transfer-Encoding: chunked\r\n", sent: "a\r\n0123456789\r\n"},
		{name: "complete small body", headers: "Content-Length: 5\r\n", sent: "hello", keep: true},
	}
	for _, path := range []string{"/healthz", "/config", "/no-such-page"} {
		for _, k := range kinds {
			t.Run(path+"/"+k.name, func(t *testing.T) {
				resp, br := postStalled(t, e.Addr("admin"), path, e.Addr("admin"), k.headers, k.sent)
				if resp.Close == k.keep {
					t.Fatalf("status %d: Connection: close is %v, want %v", resp.StatusCode, resp.Close, !k.keep)
				}
				if !k.keep {
					expectClosed(t, br)
				}
			})
		}
	}
}

// postStalled sends a POST to path at addr with the given framing headers
// and only the part sent of its body, and returns the answer, read whole,
// and the reader behind it. The deadline only guards against a hung test:
// the answer needs no part of the body.
func postStalled(t *testing.T, addr, path, host, headers, sent string) (*http.Response, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: "+host+"\r\n"+headers+"\r\n"+sent); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer while the body stalls: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, br
}

// expectClosed fails unless the connection behind br ends after the answer.
func expectClosed(t *testing.T, br *bufio.Reader) {
	t.Helper()
	if n, err := br.Read(make([]byte, 1)); err == nil {
		t.Fatalf("connection still open after the answer (read %d bytes)", n)
	}
}

// A route's timeout that runs out while the client is still sending its
// body is answered 504 at once, on both HTTP/1.1 engines, and the
// connection closed: the body is not wanted any more. Before the fix the
// forwarder's body writer was still reading the body when the edge wrote
// its answer: with a stalled body, the expired deadline the answer sets to
// take what had arrived cut that read and was taken for the client's
// stall (408 "nothing arrived within the body read timeout", a second
// before body_read_timeout); with a body that keeps coming a byte at a
// time, the writer kept moving the deadline and the answer waited for the
// whole body (no answer within 5 s for a 1 s route timeout).
func TestRouteTimeoutWhileTheBodyArrives(t *testing.T) {
	hang, _ := hangingListener(t)
	for _, engine := range []string{routes.HTTP1EngineCauseway, routes.HTTP1EngineNetHTTP} {
		e := startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
server: {body_read_timeout: 3s, http1_engine: %s}
upstreams:
  hang: {endpoints: [%q], timeout: 30s}
routes:
  - {name: slow, match: {path_prefix: /}, upstream: hang, timeout: 300ms}
`, engine, hang))
		for _, tc := range []struct {
			name    string
			trickle bool // a byte every 100 ms, for longer than the test waits
		}{
			{name: "stalled body"},
			{name: "body a byte at a time", trickle: true},
		} {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				c, err := net.Dial("tcp", e.Addr("http"))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, err := io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789"); err != nil {
					t.Fatal(err)
				}
				stop := make(chan struct{})
				sending := make(chan struct{})
				go func() {
					defer close(sending)
					tick := time.NewTicker(100 * time.Millisecond)
					defer tick.Stop()
					for tc.trickle {
						select {
						case <-stop:
							return
						case <-tick.C:
							if _, err := c.Write([]byte("x")); err != nil {
								return
							}
						}
					}
				}()
				defer func() { close(stop); <-sending }()
				// Only a guard against a hung test: the answer is due
				// at the route's timeout.
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				br := bufio.NewReader(c)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("no answer: %v", err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var eb struct {
					Status int
					Error  string
				}
				if resp.StatusCode != http.StatusGatewayTimeout || json.Unmarshal(body, &eb) != nil || eb.Error != "route timeout" {
					t.Fatalf("status %d %s, want 504 route timeout", resp.StatusCode, body)
				}
				if !resp.Close {
					t.Fatal("the answer does not say Connection: close, though the body was not read")
				}
				if n, err := br.Read(make([]byte, 1)); err == nil {
					t.Fatalf("connection still open after the answer (read %d bytes)", n)
				}
			})
		}
	}
}
