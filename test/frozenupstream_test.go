package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	goruntime "runtime"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testredis"
)

// An upstream process frozen with SIGSTOP: the kernel still completes
// every TCP handshake (the listen backlog), and nothing is ever read or
// answered. A redis-server stands in for it: a real process whose
// backlog (tcp-backlog 511) takes the 500 connections, and which the
// test can freeze. 500 clients wait on a route with a 300 ms timeout;
// each must get the gateway's 504 JSON body (never a hang or another
// status), and once the upstream thaws and the load ends no goroutine is
// left from the 500 abandoned attempts.
func TestFrozenUpstreamUnderLoad(t *testing.T) {
	frozen := testredis.Start(t)
	frozen.Pause()
	t.Cleanup(frozen.Resume) // the server's own cleanup stops a running process
	e := startEdge(t, header+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q], timeout: 300ms}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, frozen.Addr))
	url := "http://" + e.Addr("http") + "/x"
	before := goruntime.NumGoroutine()
	const clients = 500
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[string]int{}
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A guard against a hang, far beyond the 300 ms timeout.
			c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			var key string
			if resp, err := c.Get(url); err == nil {
				var body struct {
					Error  string `json:"error"`
					Status int    `json:"status"`
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if json.Unmarshal(b, &body) == nil && body.Status == resp.StatusCode && body.Error != "" {
					key = fmt.Sprint(resp.StatusCode, " json")
				} else {
					key = fmt.Sprint(resp.StatusCode, " ", string(b))
				}
			} else {
				key = "error: " + err.Error()
			}
			mu.Lock()
			statuses[key]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Logf("500 clients, upstream frozen: %v", statuses)
	if statuses["504 json"] != clients {
		t.Fatalf("answers %v, want %d x 504 with the JSON error body", statuses, clients)
	}
	frozen.Resume()
	if !waitFor(20*time.Second, func() bool { return goruntime.NumGoroutine() <= before+20 }) {
		buf := make([]byte, 4<<20)
		buf = buf[:goruntime.Stack(buf, true)]
		t.Fatalf("goroutines %d after, %d before:\n%s", goruntime.NumGoroutine(), before, buf)
	}
	t.Logf("goroutines %d before, %d after", before, goruntime.NumGoroutine())
}
