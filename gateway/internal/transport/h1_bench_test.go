package transport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/h1"
	"github.com/causewayhq/causeway/internal/testutil"
)

// BenchmarkH1RoundTrip is one body-less GET and its whole response over a
// keep-alive connection to a real socket, for response shapes the edge
// relays all the time. The upstream writes canned bytes and allocates
// nothing per request, so -benchmem counts what the transport costs:
//
//	go test -run XXX -bench H1RoundTrip -benchmem ./gateway/internal/transport/
//
// Reading responses with internal/h1 instead of http.ReadResponse took the
// allocations per round trip to 0.60x (length: 25 to 15), 0.80x
// (chunked-trailer: 30 to 24) and 0.63x (many-headers: 49 to 31); the 304
// case, which dials a new connection every time, stayed at 54. Bytes per
// round trip stayed within 5 % (one string holds a whole head). Writing
// the request head with internal/h1 instead of http.Request.Write took 5
// allocations more off each case (length: 15 to 10).
func BenchmarkH1RoundTrip(b *testing.B) {
	typical := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 64\r\n" +
		"Date: Sat, 05 Dec 2026 18:00:00 GMT\r\nCache-Control: no-store\r\nVary: Accept-Encoding\r\n" +
		"X-Request-Id: 4bf92f3577b34da6a3ce929d0e0e4736\r\n\r\n" + strings.Repeat("x", 64)
	for _, tc := range []struct{ name, resp string }{
		{"length", typical},
		{"chunked-trailer", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" +
			"20\r\n" + strings.Repeat("y", 32) + "\r\n20\r\n" + strings.Repeat("z", 32) + "\r\n0\r\nX-Checksum: 42\r\n\r\n"},
		{"many-headers", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" +
			strings.Repeat("Set-Cookie: session=abcdef0123456789; Path=/; HttpOnly\r\n", 8) +
			strings.Repeat("x-custom-lower: value\r\n", 8) + "\r\nok"},
		{"304", "HTTP/1.1 304 Not Modified\r\nETag: \"abc\"\r\n\r\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			addr := cannedUpstream(b, tc.resp)
			h1 := NewH1(&http.Transport{
				DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
				MaxIdleConnsPerHost: 4,
			})
			b.Cleanup(h1.CloseIdleConnections)
			req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 4<<10)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := h1.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				drainBody(b, resp, buf)
			}
		})
	}
}

// cannedUpstream answers every request head it reads with resp.
func cannedUpstream(tb testing.TB, resp string) string {
	out := []byte(resp)
	return testutil.ServeConns(tb, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			// The request ends at its empty line (the benchmark sends no
			// bodies).
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if bytes.Equal(line, []byte("\r\n")) {
					break
				}
			}
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	})
}

// BenchmarkH1BodyRoundTrip is one POST with a body and a small response
// over a keep-alive connection, sent by H1 itself and by its fallback
// http.Transport, for a body with a Content-Length and a chunked one. The
// body is a reader of unknown kind, as a server's request body is (so
// http.Transport flushes the head before the body, as H1 does); the
// upstream reads every request with internal/h1 and allocates nothing per
// request, so -benchmem counts what the transport costs:
//
//	go test -run XXX -bench H1BodyRoundTrip -benchmem ./gateway/internal/transport/
func BenchmarkH1BodyRoundTrip(b *testing.B) {
	addr := bodyReadingUpstream(b)
	for _, size := range []int{1 << 10, 64 << 10} {
		for _, chunked := range []bool{false, true} {
			for _, via := range []string{"h1", "http.Transport"} {
				framing := "length"
				if chunked {
					framing = "chunked"
				}
				b.Run(fmt.Sprintf("%s-%dKiB/%s", framing, size>>10, via), func(b *testing.B) {
					t := NewH1(&http.Transport{
						DialContext:           (&net.Dialer{Timeout: time.Second}).DialContext,
						MaxIdleConnsPerHost:   4,
						ResponseHeaderTimeout: 10 * time.Second,
						ExpectContinueTimeout: time.Second,
					})
					b.Cleanup(t.CloseIdleConnections)
					var rt http.RoundTripper = t
					if via != "h1" {
						rt = t.Fallback()
					}
					payload := bytes.Repeat([]byte("x"), size)
					body := &benchBody{}
					req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/", nil)
					if err != nil {
						b.Fatal(err)
					}
					req.Header["User-Agent"] = []string{""}
					buf := make([]byte, 4<<10)
					b.SetBytes(int64(size))
					b.ReportAllocs()
					for b.Loop() {
						body.r.Reset(payload)
						req.Body, req.ContentLength = body, int64(size)
						if chunked {
							req.ContentLength = -1
						}
						resp, err := rt.RoundTrip(req)
						if err != nil {
							b.Fatal(err)
						}
						drainBody(b, resp, buf)
					}
				})
			}
		}
	}
}

// benchBody is a request body of a kind no transport knows to be in
// memory.
type benchBody struct{ r bytes.Reader }

func (b *benchBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *benchBody) Close() error               { return nil }

// bodyReadingUpstream reads each request, head and body (Content-Length
// or chunked), with internal/h1 and answers "ok"; nothing is allocated per
// request.
func bodyReadingUpstream(tb testing.TB) string {
	out := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	return testutil.ServeConns(tb, func(c net.Conn) {
		br := bufio.NewReaderSize(c, 64<<10)
		var req h1.Request
		req.Headers = make([]h1.Header, 0, 32)
		var cr h1.ChunkedReader
		buf := make([]byte, 32<<10)
		for {
			for {
				// Parse what is buffered; read more only when the head is
				// not all there.
				p, _ := br.Peek(br.Buffered())
				m, perr := h1.Parse(p, &req, h1.DefaultLimits)
				if perr == nil {
					_, _ = br.Discard(m)
					break
				}
				if !errors.Is(perr, h1.ErrIncomplete) {
					return
				}
				if _, err := br.Peek(br.Buffered() + 1); err != nil {
					return
				}
			}
			if req.Chunked {
				cr.Reset(br)
				for {
					_, err := cr.Read(buf)
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						return
					}
				}
			} else if req.ContentLength > 0 {
				if _, err := br.Discard(int(req.ContentLength)); err != nil {
					return
				}
			}
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	})
}

// drainBody reads a benchmark's response to its end, through buf, and
// closes it: the body's cost is part of what a round trip measures.
func drainBody(b *testing.B, resp *http.Response, buf []byte) {
	b.Helper()
	for {
		_, err := resp.Body.Read(buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	resp.Body.Close()
}
