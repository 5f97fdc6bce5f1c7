package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// A request that loaded the live generation just before a reload replaced
// it, and counted itself on it only after retire found it idle and freed
// it, must not run on the freed runtime (its upstreams and pools closed:
// the client got an EOF, about 1 request in 1,000 under reload churn). The
// hook holds each request in exactly that window until the old generation
// has been freed (its pool released); the request must then be served by
// the new generation, which without serveLive's check it never is.
func TestRequestNeverRunsOnARetiredGeneration(t *testing.T) {
	// Generations alternate between two upstreams, so the answer says
	// which generation served the request.
	var ups [2]*httptest.Server
	for n := range ups {
		ups[n] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = fmt.Fprintf(w, "upstream %d", n)
		}))
		defer ups[n].Close()
	}
	cfg := func(i int) string {
		// timeout is part of the pool's key: each generation has its own pool.
		return listenHeader + fmt.Sprintf("upstreams:\n  u: {endpoints: [%q], timeout: %ds}\nroutes:\n  - {name: r%d, match: {path_prefix: /}, upstream: u}\n", hostPort(ups[i%2]), 30+i%2, i)
	}
	te := startEdge(t, cfg(0))
	defer te.afterLoad.Store(nil)
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for i := 1; i <= 100; i++ {
		old := te.live.Load().runtime(0).upstreams["u"].Pool.Key
		var once sync.Once
		var hookErr error
		hook := func() {
			once.Do(func() {
				writeFile(t, te.path, cfg(i))
				if err := te.Reload(context.Background()); err != nil {
					hookErr = err
					return
				}
				deadline := time.Now().Add(5 * time.Second)
				for te.pools.References(old) != 0 {
					if time.Now().After(deadline) {
						hookErr = fmt.Errorf("the replaced generation was not freed within 5 s")
						return
					}
					time.Sleep(time.Millisecond)
				}
			})
		}
		te.afterLoad.Store(&hook)
		resp, err := client.Get(te.url + "/")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if hookErr != nil {
			t.Fatal(hookErr)
		}
		// Served by the generation that replaced the one it loaded, never
		// by the freed one.
		if want := fmt.Sprintf("upstream %d", i%2); resp.StatusCode != http.StatusOK || string(body) != want {
			t.Fatalf("request %d: %d %q, want 200 %q", i, resp.StatusCode, body, want)
		}
	}
}
