package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// hostileUpstream answers every request correctly (the body of GET /x is
// "resp:/x") but also sends bytes that answer nothing: a body after a
// response that has none, or a whole response nobody asked for while the
// connection sits idle. Before the fix, the next request on a reused
// connection read those bytes as its own response. In the late modes the
// upstream sends the stray bytes only after beforeLate returns, and calls
// afterLate once they are written, so a test can hold them back until the
// client has put the connection in the idle pool.
func hostileUpstream(t *testing.T, mode string, beforeLate, afterLate func()) string {
	return testutil.ServeConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body := "resp:" + req.URL.Path
			var resp, stray string
			late := false
			switch {
			case req.Method == http.MethodHead && mode == "body after HEAD":
				resp = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
				stray = "LEAK" + body
			case req.Method == http.MethodHead && mode == "late body after HEAD":
				resp = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
				stray, late = "LEAK"+body, true
			case req.Method == http.MethodHead:
				resp = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
			case mode == "late body after 204" && strings.HasPrefix(req.URL.Path, "/empty"):
				resp, stray, late = "HTTP/1.1 204 No Content\r\n\r\n", "LEAK"+body, true
			case mode == "late body after 304" && strings.HasPrefix(req.URL.Path, "/empty"):
				resp, stray, late = "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", "LEAK"+body, true
			case mode == "body after 204" && strings.HasPrefix(req.URL.Path, "/empty"):
				resp, stray = "HTTP/1.1 204 No Content\r\n\r\n", "LEAK"+body
			case mode == "body after 304" && strings.HasPrefix(req.URL.Path, "/empty"):
				resp, stray = "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", "LEAK"+body
			case mode == "more body than Content-Length":
				resp, stray = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body), "LEAK"+body
			case mode == "unsolicited response while idle" && strings.HasPrefix(req.URL.Path, "/empty"):
				resp = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				stray, late = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\nLEAK%s", len(body)+4, body), true
			default:
				resp = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			}
			if !late {
				resp += stray
			}
			if req.Body != nil {
				_, _ = io.Copy(io.Discard, req.Body)
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
			if late && stray != "" {
				beforeLate()
				io.WriteString(c, stray)
				afterLate()
			}
		}
	})
}

// No client ever sees bytes meant for, or sent after, another request:
// whatever an upstream sends that answers nothing we asked closes the
// connection, whether it arrives with the response, after it, or while
// the connection is idle.
func TestH1TransportNeverHandsStrayBytesToTheNextRequest(t *testing.T) {
	modes := []struct {
		mode, first string // first: the request that provokes stray bytes
		late        bool
	}{
		{"body after HEAD", http.MethodHead, false},
		{"late body after HEAD", http.MethodHead, true},
		{"body after 204", http.MethodGet, false},
		{"body after 304", http.MethodGet, false},
		{"more body than Content-Length", http.MethodGet, false},
		{"unsolicited response while idle", http.MethodGet, true},
	}
	const rounds = 300
	for _, m := range modes {
		t.Run(m.mode, func(t *testing.T) {
			t.Parallel()
			// The client says when the first response is read (the
			// connection is idle); the upstream says when the stray bytes
			// are out. Both channels are buffered so that neither side
			// blocks once the other has stopped.
			idle, wrote := make(chan struct{}, rounds), make(chan struct{}, rounds)
			done := make(chan struct{})
			t.Cleanup(func() { close(done) })
			addr := hostileUpstream(t, m.mode, func() {
				select {
				case <-idle:
				case <-done:
				}
			}, func() { wrote <- struct{}{} })
			h1 := newTestPool(t, 4, 0)
			for i := range rounds {
				first := fmt.Sprintf("/empty/%d", i)
				req, _ := http.NewRequest(m.first, "http://"+addr+first, nil)
				resp, err := h1.RoundTrip(req)
				if err != nil {
					t.Fatalf("round %d, %s %s: %v", i, m.first, first, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if m.first == http.MethodGet && resp.StatusCode == http.StatusOK && string(b) != "resp:"+first {
					t.Fatalf("round %d: %s got %q", i, first, b)
				}
				if m.late {
					idle <- struct{}{}
					<-wrote
					// The bytes are written; give them a moment to land
					// in the socket, as they would on any real network.
					time.Sleep(time.Millisecond)
				}
				next := fmt.Sprintf("/next/%d", i)
				_, body, err := rtGet(t, h1, context.Background(), "http://"+addr+next)
				if err != nil {
					t.Fatalf("round %d, GET %s: %v", i, next, err)
				}
				if body != "resp:"+next {
					t.Fatalf("round %d: GET %s got %q: another request's bytes", i, next, body)
				}
			}
		})
	}
}

// The same through the whole edge, with concurrent clients: every client
// checks that the body it got names its own request.
func TestEdgeNeverLeaksStrayUpstreamBytes(t *testing.T) {
	// The stray body follows the HEAD response a moment later, so that it
	// reaches the edge's connection after the response was handed back.
	addr := hostileUpstream(t, "late body after HEAD", func() { time.Sleep(time.Millisecond) }, func() {})
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
				addr := hostileUpstream(t, mode, func() { time.Sleep(time.Millisecond) }, func() {})
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
