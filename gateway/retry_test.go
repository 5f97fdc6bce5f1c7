package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"

	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/causewayhq/causeway/internal/testutil"
)

func TestRetryOnConnectFailure(t *testing.T) {
	good := newBackend(t, "good", "127.0.0.1:0")
	dead := freeAddr(t) // nothing listens: connection refused
	eps := fmt.Sprintf("[%q, %q]", dead, good.addr)
	// budget_percent 100: half the requests fail, more than the default
	// budget of 20% would retry.
	retries := "    retries: {attempts: 2, on: [connect_failure], budget_percent: 100, backoff: 1ms, max_backoff: 2ms}\n"
	tests := []struct {
		name   string
		method string
		extra  string
		want   map[int]int
	}{
		{"GET goes to the other endpoint", "GET", retries, map[int]int{200: 40}},
		{"PUT is idempotent", "PUT", retries, map[int]int{200: 40}},
		{"POST is not retried", "POST", retries, map[int]int{200: 20, 502: 20}},
		{"POST is retried when allowed", "POST", "    retries: {attempts: 2, on: [connect_failure], budget_percent: 100, backoff: 1ms, max_backoff: 2ms, non_idempotent: true}\n", map[int]int{200: 40}},
		{"no retries configured", "GET", "", map[int]int{200: 20, 502: 20}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good.hits.Store(0)
			good.bodies.Store(0)
			te := startEdge(t, oneUpstream(eps, tt.extra))
			codes := sendMethod(t, tt.method, te.url+"/", "payload", 40, 1)
			if fmt.Sprint(codes) != fmt.Sprint(tt.want) {
				t.Fatalf("statuses %v, want %v", codes, tt.want)
			}
			if good.bodies.Load() != int64(len("payload"))*good.hits.Load() {
				t.Fatalf("bodies: %d bytes for %d requests", good.bodies.Load(), good.hits.Load())
			}
		})
	}
}

func TestRetryOnStatusGoesElsewhere(t *testing.T) {
	bs := backends(t, 2)
	bs[0].status.Store(503)
	te := startEdge(t, oneUpstream(addrList(bs), "    retries: {attempts: 1, on: [\"503\"], budget_percent: 100, backoff: 1ms}\n"))
	codes := send(t, te.url+"/", 40, 1)
	// Every request ends on b1; the retries' picks move the round robin
	// too, so how many first attempts b0 got is not fixed.
	if codes[200] != 40 || bs[0].hits.Load() == 0 || bs[1].hits.Load() != 40 {
		t.Fatalf("statuses %v, hits %v", codes, hits(bs))
	}
	t.Run("a status not listed is not retried", func(t *testing.T) {
		bs[0].status.Store(500)
		resetHits(bs)
		codes := send(t, te.url+"/", 40, 1)
		if codes[500] != 20 || codes[200] != 20 || bs[0].hits.Load() != 20 {
			t.Fatalf("statuses %v, hits %v", codes, hits(bs))
		}
	})
}

// Once the upstream has sent response headers, a broken body is the
// client's problem: the edge never sends the request again.
func TestNoRetryAfterResponseStarted(t *testing.T) {
	var mu sync.Mutex
	count := 0
	breaking := testutil.ServeConns(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		mu.Lock()
		count++
		mu.Unlock()
		// Headers and part of the body, then the connection drops.
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
	})
	other := newBackend(t, "other", "127.0.0.1:0")
	te := startEdge(t, oneUpstream(fmt.Sprintf("[%q, %q]", breaking, other.addr), "    balance: ring_hash\n    hash_on: header:X-Key\n    retries: {attempts: 2, on: [connect_failure, reset, \"502\"], backoff: 1ms}\n"))
	// Go's client itself resends an idempotent request that failed on a
	// reused connection before any response: new connections only, so
	// that what is counted is the edge's behaviour.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	// Find a key that the ring sends to the breaking server.
	for i := 0; ; i++ {
		key := fmt.Sprintf("k%d", i)
		req, _ := http.NewRequest(http.MethodGet, te.url+"/", nil)
		req.Header.Set("X-Key", key)
		var status int
		resp, err := client.Do(req)
		if err == nil {
			status = resp.StatusCode
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		mu.Lock()
		n := count
		mu.Unlock()
		if n == 0 {
			if err != nil {
				t.Fatalf("key %s: %v", key, err)
			}
			if i > 200 {
				t.Fatal("no key maps to the breaking server")
			}
			continue
		}
		// The edge aborts the client's response (status and part of the
		// body may or may not have reached it): never a clean answer.
		if err == nil {
			t.Fatalf("status %d with a complete body: the client must see the broken response", status)
		}
		if n != 1 {
			t.Fatalf("the upstream got the request %d times", n)
		}
		return
	}
}

// When every endpoint fails, the budget keeps retries near budget_percent
// of the requests instead of attempts x requests.
func TestRetryBudgetCapsRetries(t *testing.T) {
	clock := newFakeClock() // no time passes: the minimum rate pays in nothing
	bs := backends(t, 3)
	for _, b := range bs {
		b.status.Store(503)
	}
	te := startEdge(t, oneUpstream(addrList(bs), "    retries: {attempts: 3, on: [\"503\"], budget_percent: 20, backoff: 1ms, max_backoff: 1ms}\n"), withClock(clock))
	const n = 1000
	codes := send(t, te.url+"/", n, 4)
	if codes[503] != n {
		t.Fatalf("statuses %v", codes)
	}
	var total int64
	for _, h := range hits(bs) {
		total += h
	}
	retries := total - n
	limit := int64(n*20/100 + proxy.RetryBudgetBurst)
	t.Logf("%d requests, all endpoints failing: %d retries (budget %d; without a budget up to %d)", n, retries, limit, 3*n)
	if retries > limit || retries < n*20/100-10 {
		t.Fatalf("%d retries, want about %d and at most %d", retries, n*20/100, limit)
	}
}

func TestPerTryTimeout(t *testing.T) {
	good := newBackend(t, "good", "127.0.0.1:0")
	stuck := newBackend(t, "stuck", "127.0.0.1:0")
	stuck.holdRequests()
	eps := fmt.Sprintf("[%q, %q]", good.addr, stuck.addr)
	t.Run("retried elsewhere", func(t *testing.T) {
		te := startEdge(t, oneUpstream(eps, "    retries: {attempts: 1, on: [timeout], per_try_timeout: 300ms, backoff: 1ms}\n"))
		codes := send(t, te.url+"/", 10, 2)
		if codes[200] != 10 {
			t.Fatalf("statuses %v", codes)
		}
	})
	t.Run("504 when not retried", func(t *testing.T) {
		te := startEdge(t, oneUpstream(eps, "    retries: {attempts: 1, on: [connect_failure], per_try_timeout: 300ms}\n"))
		codes := send(t, te.url+"/", 10, 2)
		if codes[200] != 5 || codes[504] != 5 {
			t.Fatalf("statuses %v", codes)
		}
	})
}

// A body larger than retries.max_body streams through once and is never
// replayed; a small one is.
func TestRetryBodyLimit(t *testing.T) {
	good := newBackend(t, "good", "127.0.0.1:0")
	dead := freeAddr(t)
	te := startEdge(t, oneUpstream(fmt.Sprintf("[%q, %q]", dead, good.addr), "    retries: {attempts: 1, on: [connect_failure], max_body: 16, backoff: 1ms}\n"))
	small := sendMethod(t, "PUT", te.url+"/", strings.Repeat("s", 16), 10, 1)
	large := sendMethod(t, "PUT", te.url+"/", strings.Repeat("l", 17), 10, 1)
	if small[200] != 10 || large[200] != 5 || large[502] != 5 {
		t.Fatalf("small %v, large %v", small, large)
	}
}

// A POST retried after its first endpoint reset the connection half way
// through the body reaches the second endpoint whole, whatever the body's
// size up to retries.max_body: with bodies larger than the socket buffers
// http.Transport reported the reset as "use of closed network connection",
// which was not read as a reset, so the request was not retried (502).
func TestRetriedPOSTAfterResetMidBody(t *testing.T) {
	reset := testutil.ServeConns(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		_, _ = io.CopyN(io.Discard, req.Body, req.ContentLength/2)
		_ = c.(*net.TCPConn).SetLinger(0) // close with RST
		c.Close()
	})
	var mu sync.Mutex
	got := map[string]string{}
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		sum := fmt.Sprintf("%d:%x", len(b), sha256.Sum256(b))
		if err != nil {
			sum = "broken: " + err.Error()
		}
		mu.Lock()
		got[r.URL.Path] = sum
		mu.Unlock()
		io.WriteString(w, sum)
	}))
	t.Cleanup(good.Close)
	te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u:
    endpoints: [%q, %q]
    balance: round_robin
    retries: {attempts: 2, on: [reset], non_idempotent: true, budget_percent: 100}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, reset, strings.TrimPrefix(good.URL, "http://")))
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 100 {
		body := make([]byte, 1+rng.IntN(64<<10))
		for j := range body {
			body[j] = byte(rng.IntN(256))
		}
		path := fmt.Sprintf("/p%d", i)
		req, _ := http.NewRequest(http.MethodPost, te.url+path, bytes.NewReader(body))
		if i%3 == 0 {
			req.Header.Set("Expect", "100-continue")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("%d:%x", len(body), sha256.Sum256(body))
		mu.Lock()
		at := got[path]
		mu.Unlock()
		if resp.StatusCode != http.StatusOK || string(b) != want || at != want {
			t.Errorf("POST %s (%d bytes): %d %q; the upstream received %q", path, len(body), resp.StatusCode, b, at)
		}
	}
}
