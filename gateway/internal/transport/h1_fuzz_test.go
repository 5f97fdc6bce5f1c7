package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FuzzH1ResponseReader is the differential test of the calling-goroutine
// transport's response reader (response.go, internal/h1) against net/http:
// the same bytes go to the transport over a real socket and to
// http.ReadResponse. For every input the transport either refuses the
// response (or fails its body), or reads what net/http reads: status line,
// header (canonical keys, repeated fields in order), framing (Content-
// Length, Transfer-Encoding, Close), body bytes, trailers and the 1xx
// responses before the final one. It never accepts a head or a body that
// net/http refuses.
//
// Around the parser it checks what the transport adds:
//   - the peek that tells a live connection from one closed while idle;
//   - the loop over 1xx responses (101 and more than maxInformational 1xx
//     are refused on purpose: the fast path never asks for an upgrade, and
//     an endless stream of 1xx must not hold the request);
//   - the body that gives the connection back at EOF;
//   - the reuse decision: a connection is pooled only when the response was
//     accepted and read whole, is self-delimited, did not ask to close, was
//     not to a HEAD, and nothing at all follows it on the wire (the check
//     before reuse is part of the decision). A pooled
//     connection with a stray byte would hand that byte to the next request
//     as its answer (response splitting across requests); a refused one
//     is never pooled, since where its next response starts is unknown.
//
// step > 0 makes the transport's socket hand out at most step bytes per
// read, so heads and chunks arrive split everywhere.
func FuzzH1ResponseReader(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), false, false, uint8(0))
	}
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), true, false, uint8(0))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), false, true, uint8(0))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n"), false, false, uint8(1))
	f.Add([]byte("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), false, false, uint8(7))
	// A HEAD answer followed by the chunked body HEAD must not have.
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nleaked\r\n0\r\n\r\n"), true, false, uint8(3))
	f.Add([]byte(bigHead(6<<10)), false, false, uint8(0))
	f.Add([]byte(bigHead(6<<10)), false, false, uint8(200))

	f.Fuzz(func(t *testing.T, data []byte, head, closeAfter bool, step uint8) {
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
		// transport's treatment of 1xx responses, and a buffer of the
		// transport's size (net/http bounds trailers by it).
		wire := bytes.NewReader(data)
		br := bufio.NewReaderSize(wire, 4<<10)
		ref, ref1xx, refErr := readFinalResponse(br, newFuzzRequest(context.Background(), method))
		var refBody []byte
		var refBodyErr error
		var refAnnounced http.Header // the Trailer before the body: filled at its end
		if refErr == nil {
			refAnnounced = ref.Trailer.Clone()
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
		conn := client
		if step > 0 {
			conn = &steppedConn{UnixConn: client.(*net.UnixConn), step: int(step)}
		}
		dialed := false
		tr := NewH1(&http.Transport{
			MaxIdleConnsPerHost: 1,
			DialContext: func(context.Context, string, string) (net.Conn, error) {
				if dialed {
					return nil, errors.New("second dial: the transport retried on a fresh connection")
				}
				dialed = true
				return conn, nil
			},
		})
		defer tr.CloseIdleConnections()
		// Not a time limit on the parser: a guard so that a reader that
		// waits for bytes the reference did not need fails the run instead
		// of hanging it.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var got1xx []informational
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				got1xx = append(got1xx, informational{code, http.Header(h)})
				return nil
			},
		})
		req := newFuzzRequest(ctx, method)
		if !tr.sendsItself(req) {
			t.Fatal("the fuzz request is not sent by H1 itself")
		}
		// pooled: the pool would hand the connection to the next request.
		// A connection in the idle stack whose socket holds stray bytes or
		// an EOF is closed by the check before reuse (getConn), the only
		// one that asks the socket: that check is part of the decision.
		pooled := func() bool {
			tr.mu.Lock()
			stack := tr.idle["upstream.test:80"]
			tr.mu.Unlock()
			return len(stack) == 1 && stack[0].quiet()
		}
		got, err := tr.RoundTrip(req)
		if ctx.Err() != nil {
			t.Fatalf("the transport blocked on %q (reference: %v)", short(data), refErr)
		}
		if err != nil {
			// Refusing is always allowed (h1 is stricter than net/http);
			// keeping the connection is not.
			if pooled() {
				t.Fatalf("refused %q (%v) but pooled the connection", short(data), err)
			}
			return
		}
		if refErr != nil {
			t.Fatalf("accepted what net/http refuses (%v): %q", refErr, short(data))
		}
		if !reflect.DeepEqual(got1xx, ref1xx) {
			t.Fatalf("1xx responses of %q: transport %v, net/http %v", short(data), got1xx, ref1xx)
		}
		if got.StatusCode != ref.StatusCode || got.Status != ref.Status || got.Proto != ref.Proto ||
			got.ProtoMajor != ref.ProtoMajor || got.ProtoMinor != ref.ProtoMinor {
			t.Fatalf("status line of %q: transport %d %q %q, net/http %d %q %q", short(data), got.StatusCode, got.Status, got.Proto, ref.StatusCode, ref.Status, ref.Proto)
		}
		// One deliberate difference: net/http drops an HTTP/1.1 response's
		// whole Connection field once it says close; the transport keeps
		// the other names it nominates (hop-by-hop fields the forwarder
		// must drop), without close.
		gotHeader := got.Header
		if conn, ok := got.Header["Connection"]; ok && ref.ProtoMinor == 1 && ref.Close && ref.Header["Connection"] == nil {
			if len(conn) != 1 || conn[0] == "" || withoutClose(conn) != conn[0] {
				t.Fatalf("Connection of %q kept as %q", short(data), conn)
			}
			gotHeader = got.Header.Clone()
			delete(gotHeader, "Connection")
		}
		if !reflect.DeepEqual(gotHeader, ref.Header) {
			t.Fatalf("header of %q: transport %v, net/http %v", short(data), got.Header, ref.Header)
		}
		if got.ContentLength != ref.ContentLength || !reflect.DeepEqual(got.TransferEncoding, ref.TransferEncoding) ||
			got.Close != ref.Close || got.Uncompressed != ref.Uncompressed || got.Request != req {
			t.Fatalf("framing of %q: transport CL=%d TE=%v close=%v, net/http CL=%d TE=%v close=%v",
				short(data), got.ContentLength, got.TransferEncoding, got.Close, ref.ContentLength, ref.TransferEncoding, ref.Close)
		}
		if (got.Body == http.NoBody) != (ref.Body == http.NoBody) {
			t.Fatalf("body of %q: transport NoBody=%v, net/http NoBody=%v", short(data), got.Body == http.NoBody, ref.Body == http.NoBody)
		}
		if !reflect.DeepEqual(got.Trailer, refAnnounced) {
			t.Fatalf("announced trailer of %q: transport %v, net/http %v", short(data), got.Trailer, refAnnounced)
		}
		body, bodyErr := io.ReadAll(got.Body)
		got.Body.Close()
		if ctx.Err() != nil {
			t.Fatalf("the transport's body blocked on %q", short(data))
		}
		if bodyErr != nil {
			// A body the strict reader fails: what it delivered before
			// the failure is what net/http delivered too.
			if !bytes.HasPrefix(refBody, body) {
				t.Fatalf("body of %q failed (%v) after %q, net/http read %q", short(data), bodyErr, body, refBody)
			}
			if pooled() {
				t.Fatalf("the body of %q failed (%v) but the connection was pooled", short(data), bodyErr)
			}
			return
		}
		if refBodyErr != nil {
			t.Fatalf("read the body of %q whole (%q), net/http refuses it: %v", short(data), body, refBodyErr)
		}
		if !bytes.Equal(body, refBody) {
			t.Fatalf("body of %q: transport %q, net/http %q", short(data), body, refBody)
		}
		if !reflect.DeepEqual(got.Trailer, ref.Trailer) {
			t.Fatalf("trailer of %q: transport %v, net/http %v", short(data), got.Trailer, ref.Trailer)
		}

		wantPooled := !closeAfter && !ref.Close && !head && leftover == 0 &&
			ref.StatusCode != http.StatusNoContent && ref.StatusCode != http.StatusNotModified
		if p := pooled(); p != wantPooled {
			t.Fatalf("after %q (head=%v, close=%v, %d bytes left over): pooled=%v, want %v", short(data), head, closeAfter, leftover, p, wantPooled)
		}
	})
}

// short is data for a failure message: long inputs are cut.
func short(data []byte) []byte {
	if len(data) > 300 {
		return append(data[:300:300], "..."...)
	}
	return data
}

// informational is a 1xx response as the trace hook sees it.
type informational struct {
	code   int
	header http.Header
}

// steppedConn hands out at most step bytes per read; SyscallConn is the
// socket's, so the transport's peek at the socket still works.
type steppedConn struct {
	*net.UnixConn
	step int
}

func (c *steppedConn) Read(p []byte) (int, error) {
	return c.UnixConn.Read(p[:min(len(p), c.step)])
}

// bigHead is a response whose head is about n bytes: bigger than the
// transport's 4 KiB read buffer, within its 64 KiB limit.
func bigHead(n int) string {
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\n")
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "X-Field-%d: %s\r\n", i, strings.Repeat("v", 100))
	}
	b.WriteString("X-Long: " + strings.Repeat("w", 5000) + "\r\nContent-Length: 2\r\n\r\nok")
	return b.String()
}

// fuzzSeeds are ordinary responses and every response-smuggling form the
// transport must refuse or read as net/http does.
var fuzzSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n\r\n", // bytes after the response
	"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nCONTENT-TYPE: text/plain\r\nx-custom: a\r\nX-Custom: b\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Spaces:  \t v \t \r\nX-Obs: caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
	// Framing that two readers could take two ways.
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",  // duplicate, equal
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", // duplicate, different
	"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n", // TE + CL
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", // CL + TE
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nabc",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\nabc",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	// Chunked bodies.
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1;q=\"x\"\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n", // extensions, trailer
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3 ;ext\r\nabc\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=\"a\x01\"\r\nabc\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Repeat("1;"+strings.Repeat("e", 200)+"\r\nx\r\n", 100) + "0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",                // chunk-size overflow
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",                // 2^64
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc\r\n0\r\n\r\n", // 16 digits
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nabc\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",       // bare LF in chunks
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\rabc\r\n0\r\n\r\n", // bare CR in chunks
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
	// Trailers: announced, received, forbidden, unannounced, too big.
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum, x-other\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Extra: 2\r\nx-sum: 3\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nContent-Length: 3\r\n\r\nabc",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Host\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: a b\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nContent-Length: 99\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nHost: evil.example\r\nAuthorization: Basic eA==\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: a\r\n b\r\n\r\n",
	// A trailer section of 4096 bytes fits net/http's read buffer, one of
	// 4097 does not; a line longer than the buffer fails both.
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: " + strings.Repeat("a", 2000) + "\r\nX-B: " + strings.Repeat("b", 2080) + "\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: " + strings.Repeat("a", 2000) + "\r\nX-B: " + strings.Repeat("b", 2081) + "\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Big: " + strings.Repeat("t", 4090) + "\r\n\r\n",
	// Malformed heads.
	"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",                      // bare LF in the head
	"HTTP/1.1 200 OK\r\nX-A: one\rtwo\r\nContent-Length: 0\r\n\r\n", // bare CR in a value
	"HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n", // obs-fold
	"HTTP/1.1 200 OK\r\n X-A: leading space\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-A : space before colon\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-A: nul\x00byte\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-A: del\x7fbyte\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX@A: v\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: close, \"x\"\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 Very  Fine\t \r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 099 Low\r\n\r\n",
	"HTTP/1.1 1000 High\r\n\r\n",
	"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n",
	"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n",
	"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"ICY 200 OK\r\n\r\n",
	"",
	"\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",
	// Informational responses.
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 100 Continue\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", // 100 twice
	"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
	// Bodies after responses that have none by rule.
	"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc",
	"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n",
	// A whole chunked body, then a response nobody asked for, after a 304.
	"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nleaked\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nleaked",
	// Versions and the connection.
	"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.0 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nConnection: X-A,close\r\nConnection: CLOSE , X-B\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\n\r\nread to EOF",
	"HTTP/1.0 200 OK\r\n\r\nread to EOF",
}

// readFinalResponse reads responses until a final (non-1xx) one, as the
// transport does: a 101 or more than maxInformational 1xx are refused. It
// returns the 1xx responses the transport hands to the trace hook.
func readFinalResponse(br *bufio.Reader, req *http.Request) (*http.Response, []informational, error) {
	var seen []informational
	for n := 0; ; n++ {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, nil, err
		}
		if resp.StatusCode >= 200 {
			return resp, seen, nil
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusSwitchingProtocols || n >= maxInformational {
			return nil, nil, errors.New("unexpected 1xx")
		}
		seen = append(seen, informational{resp.StatusCode, resp.Header})
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
