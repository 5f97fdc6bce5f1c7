package test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// A keep-alive client pipelines POSTs to an open route around ones the edge
// refuses (401 without a key, 404, 413 from body_limit, 403 from
// ip_filter), each refused body made of a whole request to the open route,
// with Content-Length or chunked, in one write or in pieces of random size
// (every fourth round: lengths and one write, so that the connection is
// kept).
// Every answer the client reads is its own request's, in order; the
// connection may close after a refusal (then the rest is never answered),
// but what the upstream received is exactly the bodies of the open requests
// answered 200, each once, and never a refused body or the request hidden in
// it.
func TestPipelinedRefusalsInTheMiddle(t *testing.T) {
	var mu sync.Mutex
	got := map[string]int{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		mu.Lock()
		got[string(b)]++
		mu.Unlock()
		_, _ = io.WriteString(w, "echo:"+string(b))
	}))
	t.Cleanup(up.Close)
	e, pool := refusalEdge(t, strings.TrimPrefix(up.URL, "http://"))
	dialers := map[string]func() (net.Conn, error){
		"plain": func() (net.Conn, error) { return net.Dial("tcp", e.Addr("http")) },
		"tls": func() (net.Conn, error) {
			return tls.Dial("tcp", e.Addr("https"), &tls.Config{RootCAs: pool, ServerName: "api.example.com", NextProtos: []string{"http/1.1"}})
		},
	}
	frame := func(rng *rand.Rand, path, body string, length bool) string {
		if length || rng.IntN(2) == 0 {
			return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n", path)
		for rest := body; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(40))
			fmt.Fprintf(&b, "%x\r\n%s\r\n", n, rest[:n])
			rest = rest[n:]
		}
		b.WriteString("0\r\n\r\n")
		return b.String()
	}
	refused := []struct {
		path   string
		status int
	}{{"/auth", 401}, {"/nothing-here", 404}, {"/small", 413}, {"/forbidden", 403}}
	const rounds = 150
	for proto, dial := range dialers {
		t.Run(proto, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(len(proto)), 7))
			full := 0
			defer func() { t.Logf("%d of %d pipelines answered whole", full, rounds) }()
			for round := range rounds {
				var stream strings.Builder
				type sent struct {
					status int
					body   string
				}
				var want []sent
				for i := range 7 {
					if i%2 == 0 {
						body := fmt.Sprintf("%s-%d-%d-%s", proto, round, i, strings.Repeat("x", rng.IntN(3000)))
						stream.WriteString(frame(rng, "/open", body, false))
						want = append(want, sent{200, body})
						continue
					}
					rf := refused[rng.IntN(len(refused))]
					hidden := fmt.Sprintf("%s-%d-%d-HIDDEN", proto, round, i)
					smuggled := fmt.Sprintf("POST /open HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: %d\r\n\r\n%s", len(hidden), hidden)
					// Every fourth round the refused bodies have a length and
					// come in the same write: the connection is then kept, and
					// the requests behind them are read.
					stream.WriteString(frame(rng, rf.path, smuggled, round%4 == 0))
					want = append(want, sent{rf.status, smuggled})
				}
				c, err := dial()
				if err != nil {
					t.Fatal(err)
				}
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				var wg sync.WaitGroup
				wg.Go(func() {
					s := stream.String()
					if round%4 == 0 || rng.IntN(2) == 0 {
						_, _ = io.WriteString(c, s)
						return
					}
					for len(s) > 0 {
						n := min(len(s), 1+rng.IntN(700))
						if _, err := io.WriteString(c, s[:n]); err != nil {
							return
						}
						s = s[n:]
					}
				})
				br := bufio.NewReader(c)
				answered := 0
				for _, w := range want {
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						break // closed after a refusal: the rest is never answered
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil {
						t.Fatalf("round %d answer %d: %v", round, answered, err)
					}
					if resp.StatusCode != w.status || w.status == 200 && string(b) != "echo:"+w.body {
						t.Fatalf("round %d answer %d: status %d body %.80q, want %d for %.80q", round, answered, resp.StatusCode, b, w.status, w.body)
					}
					answered++
					if resp.Close {
						break
					}
				}
				c.Close()
				wg.Wait()
				full += answered / len(want)
				if answered == 0 {
					t.Fatalf("round %d: not even the first request was answered", round)
				}
				mu.Lock()
				for i, w := range want {
					n := got[w.body]
					if strings.Contains(w.body, "HIDDEN") {
						hidden := w.body[strings.Index(w.body, "\r\n\r\n")+4:]
						n += got[hidden]
					}
					switch {
					case w.status == 200 && i < answered && n != 1:
						t.Errorf("round %d: the upstream read request %d's body %d times, want once", round, i, n)
					case w.status == 200 && i >= answered && n != 0:
						t.Errorf("round %d: request %d was never answered, yet the upstream read its body %d times", round, i, n)
					case w.status != 200 && n != 0:
						t.Errorf("round %d: a body refused with %d (or the request in it) reached the upstream %d times", round, w.status, n)
					}
				}
				mu.Unlock()
				if t.Failed() {
					return
				}
			}
		})
	}
}
