package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"

	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
)

func TestBreakerConcurrencyLimits(t *testing.T) {
	b := newBackend(t, "b", "127.0.0.1:0")
	release := b.holdRequests()
	te := startEdge(t, oneUpstream(`["`+b.addr+`"]`, "    circuit_breaker: {max_requests: 2, max_pending: 1}\n"))

	type result struct {
		code int
		body string
	}
	results := make(chan result, 3)
	var wg sync.WaitGroup
	fire := func() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := trafficClient.Get(te.url + "/")
			if err != nil {
				results <- result{code: -1, body: err.Error()}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- result{resp.StatusCode, string(body)}
		}()
	}
	fire()
	fire()
	waitFor(t, func() bool { return b.held.Load() == 2 })
	fire() // waits for a slot: max_pending 1
	up := te.live.Load().runtime(0).upstreams["u"]
	waitFor(t, func() bool { return up.Breaker.Pending.Load() == 1 })

	resp, body := get(t, te.url+"/")
	var eb errorBody
	_ = json.Unmarshal(body, &eb)
	if resp.StatusCode != http.StatusServiceUnavailable || eb.Error != "upstream overloaded: too many pending requests" {
		t.Fatalf("fourth request: %d %s", resp.StatusCode, body)
	}
	if b.hits.Load() != 2 {
		t.Fatalf("upstream saw %d requests", b.hits.Load())
	}
	release()
	wg.Wait()
	close(results)
	for r := range results {
		if r.code != 200 {
			t.Fatalf("admitted request: %d %s", r.code, r.body)
		}
	}
	if b.hits.Load() != 3 {
		t.Fatalf("upstream saw %d requests, want the 2 running and the 1 pending", b.hits.Load())
	}
}

func TestBreakerTripAndRecovery(t *testing.T) {
	clock := newFakeClock()
	b := newBackend(t, "b", "127.0.0.1:0")
	b.status.Store(500)
	te := startEdge(t, oneUpstream(`["`+b.addr+`"]`, "    circuit_breaker: {consecutive_failures: 3, open_for: 10s}\n"), withClock(clock))
	up := te.live.Load().runtime(0).upstreams["u"]

	codes := send(t, te.url+"/", 3, 1)
	if codes[500] != 3 || up.Breaker.StateName() != "open" {
		t.Fatalf("statuses %v, breaker %s", codes, up.Breaker.StateName())
	}
	resp, body := get(t, te.url+"/")
	var eb errorBody
	_ = json.Unmarshal(body, &eb)
	if resp.StatusCode != http.StatusServiceUnavailable || eb.Error != "upstream circuit breaker is open" || b.hits.Load() != 3 {
		t.Fatalf("open breaker: %d %s, upstream hits %d", resp.StatusCode, body, b.hits.Load())
	}

	t.Run("a failed probe opens it again", func(t *testing.T) {
		clock.Advance(11 * time.Second)
		codes := send(t, te.url+"/", 1, 1)
		if codes[500] != 1 || up.Breaker.StateName() != "open" || b.hits.Load() != 4 {
			t.Fatalf("probe: %v, breaker %s", codes, up.Breaker.StateName())
		}
		if codes := send(t, te.url+"/", 5, 1); codes[503] != 5 {
			t.Fatalf("after the failed probe: %v", codes)
		}
	})
	t.Run("a good probe closes it", func(t *testing.T) {
		b.status.Store(0)
		clock.Advance(11 * time.Second)
		codes := send(t, te.url+"/", 20, 1)
		if codes[200] != 20 || up.Breaker.StateName() != "closed" {
			t.Fatalf("statuses %v, breaker %s", codes, up.Breaker.StateName())
		}
	})
}

// The half-open state lets exactly half_open_requests probes through.
func TestBreakerHalfOpenProbes(t *testing.T) {
	clock := &fakeClock{}
	b := proxy.NewBreaker("u", &routes.CircuitBreaker{ConsecutiveFailures: 1, OpenFor: routes.Duration(time.Second), HalfOpenRequests: 2}, clock.Now)
	ctx := context.Background()
	tk, err := b.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b.Release(tk, true)
	if _, err := b.Acquire(ctx); !errors.Is(err, proxy.ErrBreakerOpen) {
		t.Fatalf("open breaker admitted: %v", err)
	}
	clock.Advance(time.Second)
	p1, err1 := b.Acquire(ctx)
	p2, err2 := b.Acquire(ctx)
	_, err3 := b.Acquire(ctx)
	if err1 != nil || err2 != nil || !p1.Probe || !p2.Probe || !errors.Is(err3, proxy.ErrBreakerOpen) {
		t.Fatalf("half-open: %v %v %v", err1, err2, err3)
	}
	b.Release(p1, false)
	if b.StateName() != "closed" {
		t.Fatalf("state %s after a good probe", b.StateName())
	}
	b.Release(p2, false)
	tk, err = b.Acquire(ctx)
	if err != nil || tk.Probe {
		t.Fatalf("closed breaker: %+v %v", tk, err)
	}
}

// A client that leaves while waiting for a slot gives its place up.
func TestBreakerPendingClientLeaves(t *testing.T) {
	b := proxy.NewBreaker("u", &routes.CircuitBreaker{MaxRequests: 1, MaxPending: 1}, time.Now)
	tk, err := b.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := b.Acquire(ctx)
		done <- err
	}()
	waitFor(t, func() bool { return b.Pending.Load() == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) || b.Pending.Load() != 0 {
		t.Fatalf("got %v, pending %d", err, b.Pending.Load())
	}
	b.Release(tk, false)
	if _, err := b.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestBreakerMaxPendingAlone(t *testing.T) {
	b := proxy.NewBreaker("u", &routes.CircuitBreaker{MaxPending: 2}, time.Now)
	t1, _ := b.Acquire(context.Background())
	t2, _ := b.Acquire(context.Background())
	if _, err := b.Acquire(context.Background()); !errors.Is(err, proxy.ErrOverloaded) {
		t.Fatalf("third request: %v", err)
	}
	b.Release(t1, false)
	b.Release(t2, false)
	if _, err := b.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A response aborted mid-body (ReverseProxy panics with ErrAbortHandler)
// still gives its max_requests slot back.
func TestBreakerSlotReturnedOnAbortedResponse(t *testing.T) {
	broken := rawServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
	te := startEdge(t, oneUpstream(`["`+broken+`"]`, "    circuit_breaker: {max_requests: 1}\n"))
	for i := 0; i < 5; i++ {
		resp, err := trafficClient.Get(te.url + "/")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				t.Fatalf("request %d: %s: the slot of an aborted response was not returned", i, body)
			}
		}
	}
	if n := len(te.live.Load().runtime(0).upstreams["u"].Breaker.Slots); n != 0 {
		t.Fatalf("%d slots held after every request ended", n)
	}
}
