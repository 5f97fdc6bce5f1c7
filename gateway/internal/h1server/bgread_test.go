package h1server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A client that sends a request and leaves at once, before the background
// read has started, still cancels the request's context: the read, when
// it starts, finds the connection closed.
func TestClientGoneBeforeBackgroundRead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, req string }{
		{"GET", "GET / HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"POST body read", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			canceled := make(chan bool, 1)
			_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				select {
				case <-r.Context().Done():
					canceled <- true
				case <-time.After(5 * time.Second):
					canceled <- false
				}
			}), nil)
			c, _ := dial(t, addr)
			_, _ = io.WriteString(c, tc.req)
			c.Close()
			if !<-canceled {
				t.Fatal("the request's context outlived its client")
			}
		})
	}
}

// Handlers that return around the moment the background read starts, on
// one connection with every request pipelined: the read that starts (or
// is being stopped) as a handler returns must never take the next
// request's bytes, cancel a request whose client is there, or read
// concurrently with the next head or body.
func TestBackgroundReadAtHandlerReturn(t *testing.T) {
	t.Parallel()
	waits := []time.Duration{0, backgroundReadDelay - time.Millisecond, backgroundReadDelay,
		backgroundReadDelay + time.Millisecond, 2 * backgroundReadDelay}
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var i int
		_, _ = fmt.Sscanf(r.URL.Path, "/%d", &i)
		time.Sleep(waits[i%len(waits)])
		fmt.Fprintf(w, "%s body=%q err=%v ctx=%v", r.URL.Path, body, err, r.Context().Err())
	}), nil)
	const n = 300
	c, br := dial(t, addr)
	// 300 answers with handler waits of up to 10 ms each, under -race on
	// a busy machine: a hang guard, not a time limit.
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	var all strings.Builder
	for i := range n {
		if i%2 == 0 {
			fmt.Fprintf(&all, "GET /%d HTTP/1.1\r\nHost: h\r\n\r\n", i)
		} else {
			fmt.Fprintf(&all, "POST /%d HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nb%04d", i, i)
		}
	}
	go func() { _, _ = io.WriteString(c, all.String()) }()
	for i := range n {
		method := "GET"
		body := `""`
		if i%2 == 1 {
			method = "POST"
			body = fmt.Sprintf(`"b%04d"`, i)
		}
		_, got := mustRead(t, br, method)
		if want := fmt.Sprintf("/%d body=%s err=<nil> ctx=<nil>", i, body); got != want {
			t.Fatalf("answer %d: %q, want %q", i, got, want)
		}
	}
}

// Over keep-alive, the next request's first byte arriving while the
// background read is pending (the handler still runs): the read takes it,
// and it must come back in front of the rest of the head.
func TestBackgroundReadKeepsFirstByte(t *testing.T) {
	t.Parallel()
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(4 * backgroundReadDelay)
		fmt.Fprintf(w, "%s %s ctx=%v", r.Method, r.URL.Path, r.Context().Err())
	}), nil)
	c, br := dial(t, addr)
	_, _ = io.WriteString(c, "GET /0 HTTP/1.1\r\nHost: h\r\n\r\n")
	for i := range 30 {
		time.Sleep(2 * backgroundReadDelay)
		_, _ = io.WriteString(c, "G")
		_, got := mustRead(t, br, "GET")
		if want := fmt.Sprintf("GET /%d ctx=<nil>", i); got != want {
			t.Fatalf("answer %d: %q, want %q", i, got, want)
		}
		_, _ = fmt.Fprintf(c, "ET /%d HTTP/1.1\r\nHost: h\r\n\r\n", i+1)
	}
}

// Many connections arm and disarm their background reads around the
// moment the sweep makes them due (handlers of 0-8 ms), then each leaves
// a request whose handler waits for its context. Every one of those must
// be cancelled (a reader the sweep lost would leave its handler waiting),
// and no request whose client stayed may be. (That the sweep's goroutine
// ends once nothing is armed, goleak checks after the package's tests.)
func TestBackgroundReadsUnderChurn(t *testing.T) {
	t.Parallel()
	const conns, quick = 64, 30
	longs := make(chan bool, conns)
	started := make(chan struct{}, conns)
	_, addr := serveOurs(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var d int
		switch _, _ = fmt.Sscanf(r.URL.Path, "/quick/%d", &d); {
		case strings.HasPrefix(r.URL.Path, "/long"):
			started <- struct{}{}
			select {
			case <-r.Context().Done():
				longs <- true
			case <-time.After(10 * time.Second):
				longs <- false
			}
			return
		default:
			time.Sleep(time.Duration(d) * time.Millisecond / 4)
		}
		fmt.Fprintf(w, "%s ctx=%v", r.URL.Path, r.Context().Err())
	}), nil)
	for round := range 3 {
		errs := make(chan error, conns)
		for i := range conns {
			go func() {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				br := bufio.NewReader(c)
				for j := range quick {
					path := fmt.Sprintf("/quick/%d", (i*7+j*13+round)%33)
					if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", path); err != nil {
						errs <- err
						return
					}
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						errs <- err
						return
					}
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if want := path + " ctx=<nil>"; err != nil || string(body) != want {
						errs <- fmt.Errorf("%s: %q (%w), want %q", path, body, err, want)
						return
					}
				}
				if _, err := io.WriteString(c, "GET /long HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
					errs <- err
					return
				}
				<-started
				time.Sleep(time.Duration(i%11) * time.Millisecond)
				errs <- nil
			}()
		}
		for range conns {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		for range conns {
			if !<-longs {
				t.Fatalf("round %d: a request's context outlived its client", round)
			}
		}
	}
}
