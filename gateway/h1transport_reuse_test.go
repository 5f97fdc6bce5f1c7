package gateway

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// edgeBeforeHostileUpstream starts an edge whose one route goes to a
// hostile upstream (testutil.HostileUpstream) that sends its stray bytes
// 1 ms after the answer that provokes them, so that they reach the edge's
// connection after the response was handed back.
func edgeBeforeHostileUpstream(t *testing.T, mode string) *testEdge {
	addr := testutil.HostileUpstream(t, mode, func() { time.Sleep(time.Millisecond) }, func() {})
	return startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, addr))
}

// alternate runs 8 keep-alive clients against te, each sending 150
// requests that alternate between one that provokes stray bytes (even i)
// and one whose answer must name its own path (odd i).
func alternate(t *testing.T, te *testEdge, provoke, follow func(path string) *http.Request) {
	keepAliveClients(t, 8, 150, func(client *http.Client, w, i int) error {
		path := fmt.Sprintf("/w%d/%d", w, i)
		req := follow(te.url + path)
		if i%2 == 0 {
			req = provoke(te.url + path)
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if i%2 == 1 && string(b) != "resp:"+path {
			return fmt.Errorf("%s %s got %d %q: not its own answer", req.Method, path, resp.StatusCode, b)
		}
		return nil
	})
}

// keepAliveClients runs workers clients side by side, each over one
// keep-alive connection, each calling do for its requests 0..perWorker-1
// and stopping at its first error, which the test reports.
func keepAliveClients(t *testing.T, workers, perWorker int, do func(client *http.Client, w, i int) error) {
	t.Helper()
	concurrently(t, workers, func(w int) error {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		defer client.CloseIdleConnections()
		for i := range perWorker {
			if err := do(client, w, i); err != nil {
				return err
			}
		}
		return nil
	})
}

// concurrently runs work(0) to work(n-1) at once and reports each error
// one returns: the shape of every test that sends many requests from
// several connections or clients at once.
func concurrently(t *testing.T, n int, work func(w int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range n {
		wg.Go(func() {
			if err := work(w); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func newRequest(method, url string, body io.Reader) *http.Request {
	req, _ := http.NewRequest(method, url, body)
	return req
}

// Through the whole edge, with concurrent clients: a body an upstream sends
// after its HEAD answer never becomes another request's answer.
func TestEdgeNeverLeaksStrayUpstreamBytes(t *testing.T) {
	te := edgeBeforeHostileUpstream(t, "late body after HEAD")
	get := func(url string) *http.Request { return newRequest(http.MethodGet, url, nil) }
	alternate(t, te, func(url string) *http.Request { return newRequest(http.MethodHead, url, nil) }, get)
}

// A body that follows a 204 or 304 a moment later, with the next request
// right behind it: no check made when the connection is returned or taken
// can see bytes that are still on their way, so the only safe answer is
// not to reuse a connection after a response whose body the upstream may
// wrongly send anyway. Checked through the edge for GET (the calling-
// goroutine transport) and POST (http.Transport), with concurrent clients.
func TestEdgeNeverLeaksLateBodiesAfterEmptyResponses(t *testing.T) {
	for _, mode := range []string{"late body after 204", "late body after 304"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			t.Run(mode+"/"+method, func(t *testing.T) {
				te := edgeBeforeHostileUpstream(t, mode)
				req := func(prefix string) func(string) *http.Request {
					return func(url string) *http.Request {
						url = strings.Replace(url, "/w", prefix+"/w", 1)
						if method == http.MethodPost {
							return newRequest(method, url, strings.NewReader("payload"))
						}
						return newRequest(method, url, nil)
					}
				}
				alternate(t, te, req("/empty"), req(""))
			})
		}
	}
}
