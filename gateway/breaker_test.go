package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"
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
