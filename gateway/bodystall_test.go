package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	goruntime "runtime"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// stallUpstream reads each request's body to its end, as any server does,
// and answers as soon as that read ends: "ok" for a complete body, an
// empty 200 for a failed one (what a handler that gives up on its body
// leaves net/http to send). Every body read is reported on reads.
type stallUpstream struct {
	addr  string
	reads chan upstreamRead
}

type upstreamRead struct {
	body []byte
	err  error // nil: the upstream saw a complete request
}

func newStallUpstream(t *testing.T) *stallUpstream {
	u := &stallUpstream{reads: make(chan upstreamRead, 16)}
	u.addr = testutil.ServeConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, err := io.ReadAll(req.Body)
			u.reads <- upstreamRead{b, err}
			if err != nil {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	return u
}

var errDeadline = fmt.Errorf("read tcp 127.0.0.1:8443->127.0.0.1:50000: %w", os.ErrDeadlineExceeded)

// A client body cut by body_read_timeout while the upstream waits for it
// is answered 408, whatever the order in which the request's end reaches
// the handler and the transport's body writer. net/http cancels the
// request's context inside the connection read that fails, before that
// read returns its error to the body's reader: the forwarder could see
// the attempt cancelled (a client that left, nothing to answer) before
// the body had said that it stalled, and the client then got an empty 200
// (1 run in ~20 of TestRefusalsDoNotWaitForTheBody/tls/stalled_chunked_body
// under load). Nor does the upstream ever see a complete request, nor is
// its answer (written once its own body read failed) relayed.
func TestStalledBodyIsAnsweredWhateverTheOrder(t *testing.T) {
	up := newStallUpstream(t)
	rt, err := buildRuntimeFromYAML(t, fmt.Sprintf(`version: 1
access_log: {output: "off"}
server: {body_read_timeout: 1m}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, up.addr))
	if err != nil {
		t.Fatal(err)
	}
	// How long the deterministic case holds the failing read back when
	// the handler does not return first (as it must not: it waits for
	// that read to say how the body ended).
	const hold = 20 * time.Millisecond
	cases := []struct {
		name  string
		runs  int
		order func(cancel context.CancelFunc, served <-chan struct{}) error
	}{
		{"net/http's order: the context ends, then the read fails", 1000,
			func(cancel context.CancelFunc, _ <-chan struct{}) error {
				cancel()
				goruntime.Gosched()
				return errDeadline
			}},
		{"the context ends and the handler is done with the attempt before the read fails", 25,
			func(cancel context.CancelFunc, served <-chan struct{}) error {
				cancel()
				select {
				case <-served:
				case <-time.After(hold):
				}
				return errDeadline
			}},
		{"the read fails, the context stays (HTTP/2's order)", 300,
			func(context.CancelFunc, <-chan struct{}) error { return errDeadline }},
	}
	for _, framing := range []struct {
		name   string
		length int64
	}{{"chunked", -1}, {"content-length", 100}} {
		for _, tc := range cases {
			t.Run(framing.name+"/"+tc.name, func(t *testing.T) {
				runs := tc.runs
				if testing.Short() {
					runs = min(runs, 50)
				}
				for i := range runs {
					ctx, cancel := context.WithCancel(context.Background())
					served := make(chan struct{})
					body := testutil.NewStallBody([]byte("0123456789"), errDeadline)
					body.Cut = func() ([]byte, error) { return nil, tc.order(cancel, served) }
					req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/upload", nil)
					req.Body, req.ContentLength = body, framing.length
					w := &deadlineWriter{ResponseRecorder: httptest.NewRecorder()}
					go func() {
						defer close(served)
						rt.ServeHTTP(w, req)
					}()
					<-body.Blocked // the upstream waits for the rest
					close(body.Stall)
					<-served
					cancel()
					var eb struct{ Status int }
					if w.Code != http.StatusRequestTimeout || json.Unmarshal(w.Body.Bytes(), &eb) != nil || eb.Status != http.StatusRequestTimeout {
						t.Fatalf("run %d: answered %d %q, want the 408 of the stalled body", i, w.Code, w.Body)
					}
					if r := <-up.reads; r.err == nil {
						t.Fatalf("run %d: the upstream read a complete request (%q)", i, r.body)
					}
				}
			})
		}
	}
}
