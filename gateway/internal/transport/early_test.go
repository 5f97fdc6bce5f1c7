package transport

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
)

// heldBody gives the first half of its bytes at once and the rest only
// once released: a client still uploading when the upstream answers.
type heldBody struct {
	first, rest []byte
	release     chan struct{}
}

func (b *heldBody) Read(p []byte) (int, error) {
	if len(b.first) > 0 {
		n := copy(p, b.first)
		b.first = b.first[n:]
		return n, nil
	}
	if b.rest == nil {
		return 0, io.EOF
	}
	<-b.release
	n := copy(p, b.rest)
	b.rest = b.rest[n:]
	if len(b.rest) == 0 {
		b.rest = nil
	}
	return n, nil
}

// An upstream that answers an upload at once, without Connection: close,
// and never reads the body, while the client is still sending it: the
// rest of the body arrives after the answer and fits in the sockets'
// buffers, so the writer gets it all out soon after. The connection must
// not be reused: the upstream would read that rest as the next request's
// head (here it reads on, as a careless server does, and the next request
// would reach it glued behind the body). Before the fix the connection
// went back to the pool whenever the writer finished within 50 ms of the
// answer's end, and the next requests were read behind the body (15 of
// 16 in the content-length case). A chunked body's rest starts with a
// chunk-size line, which the upstream fails to parse as a request, so it
// ends that connection itself: that case checks the answers only.
func TestH1TransportEarlyAnswerNotReused(t *testing.T) {
	const rounds = 8
	for _, tc := range []struct {
		name   string
		length func(n int) int64
	}{
		{"content-length", func(n int) int64 { return int64(n) }},
		{"chunked", func(int) int64 { return -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			var mu sync.Mutex
			answered := map[net.Conn]bool{} // connections answered early
			var behind []string             // requests read behind an early answer
			up := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader, req *http.Request) bool {
				mu.Lock()
				early := answered[c]
				if early {
					behind = append(behind, fmt.Sprintf("%.40q", req.Method+" "+req.URL.Path))
				}
				if req.URL.Path == "/early" {
					answered[c] = true
				}
				mu.Unlock()
				if req.URL.Path == "/early" {
					_, _ = io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig")
					return true // reads on, the body left where it is
				}
				b, err := io.ReadAll(req.Body)
				if err != nil {
					return false
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
				return true
			})
			h1 := newTestPool(t, 4, notATimeout)
			for i := range rounds {
				half := bytes.Repeat([]byte("x"), 64<<10)
				body := &heldBody{first: half, rest: bytes.Clone(half), release: make(chan struct{})}
				resp, err := h1.RoundTrip(post(t, "http://"+up.addr+"/early", body, tc.length(2*len(half))))
				if err != nil {
					close(body.release)
					t.Fatalf("round %d: %v", i, err)
				}
				close(body.release) // the rest comes while the answer is read
				if got := readAnswer(t, resp); got != "413 big" {
					t.Fatalf("round %d: %q", i, got)
				}
				resp, err = h1.RoundTrip(post(t, "http://"+up.addr+"/next", bytes.NewReader([]byte("next")), 4))
				if err != nil {
					t.Fatalf("round %d: the next request: %v", i, err)
				}
				if got := readAnswer(t, resp); got != "200 next" {
					t.Fatalf("round %d: the next request got %q", i, got)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(behind) > 0 {
				t.Fatalf("%d requests read behind an unread body on a reused connection: %v", len(behind), behind)
			}
			// One connection per upload, closed after its answer; each
			// next request takes a new one and leaves it in the pool,
			// where the following upload finds it.
			if n := up.conns.Load(); n != rounds+1 {
				t.Fatalf("%d connections for %d uploads, want %d", n, rounds, rounds+1)
			}
		})
	}
}
