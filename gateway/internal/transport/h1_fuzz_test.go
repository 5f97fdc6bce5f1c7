package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"syscall"
	"testing"
	"time"
)

// FuzzH1ResponseReader feeds an arbitrary upstream answer to the
// calling-goroutine HTTP/1.1 transport over a real socket and holds what it
// makes of it against net/http's http.ReadResponse reading the same bytes.
//
// The transport parses with http.ReadResponse itself, so what this target
// really checks is everything the transport puts around that call:
//   - the peek that tells a live connection from one closed while idle;
//   - the loop over 1xx responses (101 and more than maxInformational 1xx
//     are refused on purpose: the fast path never asks for an upgrade, and
//     an endless stream of 1xx must not hold the request);
//   - the body wrapper that gives the connection back at EOF;
//   - the reuse decision: a connection is pooled only when the response was
//     read whole, is self-delimited, did not ask to close, was not to a
//     HEAD, and nothing at all follows it on the wire. A pooled connection
//     with a stray byte would hand that byte to the next request as its
//     answer (response splitting across requests).
//
// Both readers must agree on accept or reject, on the status line, the
// header, the framing (Content-Length, Transfer-Encoding, Close) and on the
// body bytes and trailers.
func FuzzH1ResponseReader(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n\r\n", // bytes after the response
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",   // duplicate, equal
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",  // duplicate, different
		"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",          // TE + CL
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1;q=\"x\"\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n", // extensions, trailer
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", // bare LF in chunks
		"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",                           // bare LF in the head
		"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n",   // obs-fold
		"HTTP/1.1 200 OK\r\n X-A: leading space\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A : space before colon\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: nul\x00byte\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\n\r\nread to EOF",
		"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 099 Low\r\n\r\n",
		"HTTP/1.1 1000 High\r\n\r\n",
		"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"ICY 200 OK\r\n\r\n",
		"",
		"\r\n",
	} {
		f.Add([]byte(s), false, false)
	}
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), true, false)
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), false, true)

	f.Fuzz(func(t *testing.T, data []byte, head, closeAfter bool) {
		if len(data) > 32<<10 {
			// The answer is written into the socket before the request
			// is sent; it must fit the socket's buffer.
			return
		}
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}

		// Reference: net/http's reader over the same bytes, with the
		// transport's treatment of 1xx responses.
		wire := bytes.NewReader(data)
		br := bufio.NewReaderSize(wire, 4<<10)
		ref, refErr := readFinalResponse(br, newFuzzRequest(context.Background(), method))
		var refBody []byte
		var refBodyErr error
		if refErr == nil {
			refBody, refBodyErr = io.ReadAll(ref.Body)
			ref.Body.Close()
		}
		leftover := br.Buffered() + wire.Len()
		// Keeping the socket open is only possible when the reader stops
		// by itself: a response delimited by close, or one that is cut
		// short, would otherwise wait for bytes that never come.
		if refErr != nil || refBodyErr != nil || ref.Close {
			closeAfter = true
		}

		client, server := socketPair(t)
		defer server.Close()
		if _, err := server.Write(data); err != nil {
			t.Fatal(err)
		}
		if closeAfter {
			if err := server.(*net.UnixConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
		}
		dialed := false
		tr := NewH1(&http.Transport{
			MaxIdleConnsPerHost: 1,
			DialContext: func(context.Context, string, string) (net.Conn, error) {
				if dialed {
					return nil, errors.New("second dial: the transport retried on a fresh connection")
				}
				dialed = true
				return client, nil
			},
		})
		defer tr.CloseIdleConnections()
		// Not a time limit on the parser: a guard so that a reader that
		// waits for bytes the reference did not need fails the run instead
		// of hanging it.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req := newFuzzRequest(ctx, method)
		if !tr.fastPath(req) {
			t.Fatal("the fuzz request does not take the fast path")
		}
		got, err := tr.RoundTrip(req)
		if ctx.Err() != nil {
			t.Fatalf("the transport blocked on %q (reference: %v)", data, refErr)
		}
		if (err == nil) != (refErr == nil) {
			t.Fatalf("accept/reject differs on %q: transport %v, net/http %v", data, err, refErr)
		}
		if err != nil {
			return
		}
		body, bodyErr := io.ReadAll(got.Body)
		got.Body.Close()
		if ctx.Err() != nil {
			t.Fatalf("the transport's body blocked on %q", data)
		}
		if got.StatusCode != ref.StatusCode || got.Status != ref.Status || got.Proto != ref.Proto ||
			got.ProtoMajor != ref.ProtoMajor || got.ProtoMinor != ref.ProtoMinor {
			t.Fatalf("status line of %q: transport %d %q %q, net/http %d %q %q", data, got.StatusCode, got.Status, got.Proto, ref.StatusCode, ref.Status, ref.Proto)
		}
		if !reflect.DeepEqual(got.Header, ref.Header) {
			t.Fatalf("header of %q: transport %v, net/http %v", data, got.Header, ref.Header)
		}
		if got.ContentLength != ref.ContentLength || !reflect.DeepEqual(got.TransferEncoding, ref.TransferEncoding) || got.Close != ref.Close {
			t.Fatalf("framing of %q: transport CL=%d TE=%v close=%v, net/http CL=%d TE=%v close=%v",
				data, got.ContentLength, got.TransferEncoding, got.Close, ref.ContentLength, ref.TransferEncoding, ref.Close)
		}
		if !bytes.Equal(body, refBody) || (bodyErr == nil) != (refBodyErr == nil) {
			t.Fatalf("body of %q: transport %q (%v), net/http %q (%v)", data, body, bodyErr, refBody, refBodyErr)
		}
		if !reflect.DeepEqual(got.Trailer, ref.Trailer) {
			t.Fatalf("trailer of %q: transport %v, net/http %v", data, got.Trailer, ref.Trailer)
		}

		tr.mu.Lock()
		pooled := len(tr.idle["upstream.test:80"]) == 1
		tr.mu.Unlock()
		wantPooled := !closeAfter && !ref.Close && !head && leftover == 0 &&
			ref.StatusCode != http.StatusNoContent && ref.StatusCode != http.StatusNotModified
		if pooled != wantPooled {
			t.Fatalf("after %q (head=%v, close=%v, %d bytes left over): pooled=%v, want %v", data, head, closeAfter, leftover, pooled, wantPooled)
		}
	})
}

// readFinalResponse reads responses until a final (non-1xx) one, as the
// transport does: a 101 or more than maxInformational 1xx are refused.
func readFinalResponse(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	for informational := 0; ; informational++ {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 {
			return resp, nil
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusSwitchingProtocols || informational >= maxInformational {
			return nil, errors.New("unexpected 1xx")
		}
	}
}

func newFuzzRequest(ctx context.Context, method string) *http.Request {
	req, err := http.NewRequestWithContext(ctx, method, "http://upstream.test/", nil)
	if err != nil {
		panic(err)
	}
	req.Host = "upstream.test"
	// Address the pool by host:port as the forwarder does.
	req.URL.Host = "upstream.test:80"
	return req
}

// socketPair is a connected pair of Unix stream sockets: a real socket the
// transport can peek at (as it does a TCP one), without a listener.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return conn(fds[0]), conn(fds[1])
}
