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

// The same through the whole edge, with concurrent clients: every client
// checks that the body it got names its own request.
func TestEdgeNeverLeaksStrayUpstreamBytes(t *testing.T) {
	// The stray body follows the HEAD response a moment later, so that it
	// reaches the edge's connection after the response was handed back.
	addr := testutil.HostileUpstream(t, "late body after HEAD", func() { time.Sleep(time.Millisecond) }, func() {})
	te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, addr))
	const workers, perWorker = 8, 150
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer client.CloseIdleConnections()
			for i := range perWorker {
				path := fmt.Sprintf("/w%d/%d", w, i)
				method := http.MethodGet
				if i%2 == 0 {
					method = http.MethodHead
				}
				req, _ := http.NewRequest(method, te.url+path, nil)
				resp, err := client.Do(req)
				if err != nil {
					errs <- fmt.Errorf("%s %s: %w", method, path, err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if method == http.MethodGet && string(b) != "resp:"+path {
					errs <- fmt.Errorf("GET %s got %d %q: not its own answer", path, resp.StatusCode, b)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
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
				addr := testutil.HostileUpstream(t, mode, func() { time.Sleep(time.Millisecond) }, func() {})
				te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, addr))
				const workers, perWorker = 8, 150
				var wg sync.WaitGroup
				errs := make(chan error, workers)
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
						defer client.CloseIdleConnections()
						for i := range perWorker {
							path := fmt.Sprintf("/w%d/%d", w, i)
							if i%2 == 0 {
								path = "/empty" + path
							}
							var body io.Reader
							if method == http.MethodPost {
								body = strings.NewReader("payload")
							}
							req, _ := http.NewRequest(method, te.url+path, body)
							resp, err := client.Do(req)
							if err != nil {
								errs <- fmt.Errorf("%s %s: %w", method, path, err)
								return
							}
							b, _ := io.ReadAll(resp.Body)
							resp.Body.Close()
							if i%2 == 1 && string(b) != "resp:"+path {
								errs <- fmt.Errorf("%s %s got %d %q: not its own answer", method, path, resp.StatusCode, b)
								return
							}
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
			})
		}
	}
}
