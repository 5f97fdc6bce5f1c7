package h1server

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A handler that aborts its response (panic(http.ErrAbortHandler), what
// the forwarder does when the upstream's body breaks off) must leave the
// client unable to take what it got for a whole answer, and must not cost
// the client the answers it was sent before.
func TestAbortedResponse(t *testing.T) {
	const big = 256 << 10
	arrived := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Header().Set("Content-Length", "262144")
			_, _ = io.WriteString(w, strings.Repeat("b", big))
		case "/abort":
			if r.Header.Get("X-Wait") != "" {
				// The client's next bytes are on their way: they sit
				// unread in the socket when the connection closes.
				<-arrived
				time.Sleep(20 * time.Millisecond)
			}
			if r.Header.Get("X-Length") != "" {
				w.Header().Set("Content-Length", "100")
			}
			_, _ = io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
	})
	_, addr := serveOurs(t, h, nil)

	tests := []struct {
		name string
		// in is sent at once; more is sent once /abort runs (then its
		// bytes are unread when the connection closes).
		in, more string
		// wantBig: the answer to /big must come whole first.
		wantBig bool
	}{
		{name: "close-delimited answer to HTTP/1.0", in: "GET /abort HTTP/1.0\r\n\r\n"},
		{name: "close-delimited answer with unread bytes", in: "GET /abort HTTP/1.0\r\nX-Wait: 1\r\n\r\n", more: "GET /next HTTP/1.0\r\n\r\n"},
		{name: "chunked answer after a pipelined one", in: "GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /abort HTTP/1.1\r\nHost: a\r\nX-Wait: 1\r\n\r\n",
			more: "GET /next HTTP/1.1\r\nHost: a\r\n\r\n", wantBig: true},
		{name: "length-framed answer after a pipelined one", in: "GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /abort HTTP/1.1\r\nHost: a\r\nX-Wait: 1\r\nX-Length: 1\r\n\r\n",
			more: "GET /next HTTP/1.1\r\nHost: a\r\n\r\n", wantBig: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for range 10 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.WriteString(c, tc.in); err != nil {
					t.Fatal(err)
				}
				if tc.more != "" {
					// Not read by the client until the server is done:
					// the answers wait in the client's socket.
					time.Sleep(20 * time.Millisecond)
					if _, err := io.WriteString(c, tc.more); err != nil {
						t.Fatal(err)
					}
					arrived <- struct{}{}
					time.Sleep(100 * time.Millisecond)
				}
				br := bufio.NewReader(c)
				if tc.wantBig {
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatalf("the answer before the aborted one: %v", err)
					}
					n, err := io.Copy(io.Discard, resp.Body)
					if err != nil || n != big {
						t.Fatalf("the answer before the aborted one: %d of %d bytes, %v", n, big, err)
					}
				}
				resp, err := http.ReadResponse(br, nil)
				if err == nil {
					var b []byte
					b, err = io.ReadAll(resp.Body)
					if err == nil {
						t.Fatalf("an aborted answer read as whole: %d %q", resp.StatusCode, b)
					}
				}
				if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
					t.Fatalf("reading the aborted answer: %v", err)
				}
				c.Close()
			}
		})
	}
}

// TestCloseAfterAnswerWithPipelinedRequests: a handler that ends the
// connection (Connection: close) while the client has pipelined more
// requests that sit unread in the socket. A plain close then resets the
// connection, and the reset makes the client's system discard the answers
// it had received and not yet read: the client must get both answers
// whole, then the end of the connection.
func TestCloseAfterAnswerWithPipelinedRequests(t *testing.T) {
	const big = 256 << 10
	arrived := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Header().Set("Content-Length", strconv.Itoa(big))
			_, _ = io.WriteString(w, strings.Repeat("b", big))
		case "/close":
			// The client's next request is on its way: it sits unread in
			// the socket when the connection closes.
			<-arrived
			time.Sleep(20 * time.Millisecond)
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, "bye")
		}
	})
	_, addr := serveOurs(t, h, nil)
	for range 10 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /close HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		// Not read by the client until the server is done: the answers
		// wait in the client's socket.
		time.Sleep(20 * time.Millisecond)
		if _, err := io.WriteString(c, "POST /next HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("n", 100000)); err != nil {
			t.Fatal(err)
		}
		arrived <- struct{}{}
		time.Sleep(100 * time.Millisecond)
		br := bufio.NewReader(c)
		for _, want := range []int{big, 3} {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("answer of %d bytes: %v", want, err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			if err != nil || n != int64(want) {
				t.Fatalf("answer of %d bytes: got %d, %v", want, n, err)
			}
		}
		if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the closing answer: %v, want the end of the connection", err)
		}
		c.Close()
	}
}
