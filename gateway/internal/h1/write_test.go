package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// writeRequest writes h and then body through BodyWriter in pieces of at
// most step bytes, ending with trailer, as the transport does.
func writeRequest(h *RequestHead, body string, step int, trailer http.Header) (string, error) {
	var out bytes.Buffer
	w := bufio.NewWriterSize(&out, 64)
	if err := h.Write(w); err != nil {
		return out.String(), err
	}
	var b BodyWriter
	b.Reset(w, h.Framing, h.ContentLength)
	for i := 0; len(body) > 0; i++ {
		n := min(step, len(body))
		var err error
		if i%2 == 0 {
			_, err = b.Write([]byte(body[:n]))
		} else {
			// Every other piece as the transport writes it, in place.
			buf := make([]byte, FrameHeadRoom+n+FrameTailRoom)
			copy(buf[FrameHeadRoom:], body[:n])
			_, err = b.WriteFramed(buf, n)
		}
		if err != nil {
			w.Flush()
			return out.String(), err
		}
		body = body[n:]
	}
	if err := b.Close(trailer); err != nil {
		w.Flush()
		return out.String(), err
	}
	err := w.Flush()
	return out.String(), err
}

func TestRequestWriter(t *testing.T) {
	one := func(k, v string) http.Header { return http.Header{k: {v}} }
	cases := []struct {
		name    string
		head    RequestHead
		body    string
		step    int
		trailer http.Header
		want    string // the whole request; "" when refused
		refused string // part of the error
		partial string // what was written before a refusal mid-body
	}{
		{name: "no body", head: RequestHead{Method: "GET", Target: "/a?b=c", Host: "up:80", Header: one("Accept", "*/*")},
			want: "GET /a?b=c HTTP/1.1\r\nHost: up:80\r\nAccept: */*\r\n\r\n"},
		{name: "empty length", head: RequestHead{Method: "POST", Target: "/", Host: "up", Framing: Length},
			want: "POST / HTTP/1.1\r\nHost: up\r\nContent-Length: 0\r\n\r\n"},
		{name: "length", head: RequestHead{Method: "PUT", Target: "/x", Host: "up", Framing: Length, ContentLength: 11}, body: "hello world", step: 4,
			want: "PUT /x HTTP/1.1\r\nHost: up\r\nContent-Length: 11\r\n\r\nhello world"},
		{name: "chunked, a chunk per write", head: RequestHead{Method: "POST", Target: "/", Host: "up", Framing: Chunked}, body: strings.Repeat("x", 20), step: 16,
			want: "POST / HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + strings.Repeat("x", 16) + "\r\n4\r\nxxxx\r\n0\r\n\r\n"},
		{name: "chunked, empty", head: RequestHead{Method: "POST", Target: "/", Host: "up", Framing: Chunked},
			want: "POST / HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{name: "chunked with a trailer", head: RequestHead{Method: "POST", Target: "/", Host: "up", Framing: Chunked, Trailer: http.Header{"X-Sum": nil}},
			body: "abc", step: 8, trailer: one("X-Sum", " 42 "),
			want: "POST / HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n"},
		{name: "owned fields come from the head, not the header",
			head: RequestHead{Method: "POST", Target: "/", Host: "up", Framing: Length, ContentLength: 1,
				Header: http.Header{"Content-Length": {"99"}, "Transfer-Encoding": {"chunked"}, "Host": {"evil"}, "Trailer": {"X"}}},
			body: "z", step: 1, want: "POST / HTTP/1.1\r\nHost: up\r\nContent-Length: 1\r\n\r\nz"},
		{name: "first User-Agent only, an empty one left out",
			head: RequestHead{Method: "GET", Target: "/", Host: "up", Header: http.Header{"User-Agent": {"a", "b"}}},
			want: "GET / HTTP/1.1\r\nHost: up\r\nUser-Agent: a\r\n\r\n"},
		{name: "empty User-Agent", head: RequestHead{Method: "GET", Target: "/", Host: "up", Header: one("User-Agent", "")},
			want: "GET / HTTP/1.1\r\nHost: up\r\n\r\n"},
		{name: "close", head: RequestHead{Method: "GET", Target: "/", Host: "up", Close: true},
			want: "GET / HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n"},
		{name: "close already said", head: RequestHead{Method: "GET", Target: "/", Host: "up", Close: true, Header: one("Connection", "Close")},
			want: "GET / HTTP/1.1\r\nHost: up\r\nConnection: Close\r\n\r\n"},

		{name: "CR LF in a value", head: RequestHead{Method: "GET", Target: "/", Host: "up", Header: one("X", "a\r\nEvil: 1")}, refused: "invalid header field value"},
		{name: "bad field name", head: RequestHead{Method: "GET", Target: "/", Host: "up", Header: one("X Y", "1")}, refused: "invalid header field name"},
		{name: "bad method", head: RequestHead{Method: "GET /x", Target: "/", Host: "up"}, refused: "invalid method"},
		{name: "space in target", head: RequestHead{Method: "GET", Target: "/a b", Host: "up"}, refused: "request target"},
		{name: "CRLF in target", head: RequestHead{Method: "GET", Target: "/a\r\nX: y", Host: "up"}, refused: "request target"},
		{name: "bad host", head: RequestHead{Method: "GET", Target: "/", Host: "up\r\nX: y"}, refused: "invalid Host"},
		{name: "non-ASCII host", head: RequestHead{Method: "GET", Target: "/", Host: "bücher.example"}, refused: "invalid Host"},
		{name: "negative length", head: RequestHead{Method: "POST", Target: "/", Host: "up", Framing: Length, ContentLength: -1}, refused: "negative"},
		{name: "announced forbidden trailer", head: RequestHead{Method: "POST", Target: "/", Host: "up", Framing: Chunked, Trailer: http.Header{"Content-Length": nil}},
			refused: "forbidden trailer field Content-Length"},
		{name: "trailers on a length body", head: RequestHead{Method: "POST", Target: "/", Host: "up", Framing: Length, ContentLength: 1, Trailer: http.Header{"X-Sum": nil}},
			refused: "trailers need a chunked body"},
		{name: "to-close framing", head: RequestHead{Method: "POST", Target: "/", Host: "up", Framing: ToClose}, refused: "framed"},

		{name: "body longer than its length", head: RequestHead{Method: "POST", Target: "/", Host: "up", Framing: Length, ContentLength: 3}, body: "abcd", step: 2,
			refused: ErrBodyLength.Error(), partial: "POST / HTTP/1.1\r\nHost: up\r\nContent-Length: 3\r\n\r\nab"},
		{name: "body shorter than its length", head: RequestHead{Method: "POST", Target: "/", Host: "up", Framing: Length, ContentLength: 5}, body: "abc", step: 8,
			refused: ErrBodyLength.Error(), partial: "POST / HTTP/1.1\r\nHost: up\r\nContent-Length: 5\r\n\r\nabc"},
		{name: "forbidden trailer at the end: no last chunk", head: RequestHead{Method: "POST", Target: "/", Host: "up", Framing: Chunked},
			body: "abc", step: 8, trailer: one("Host", "evil"),
			refused: "forbidden trailer field Host", partial: "POST / HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"},
		{name: "trailer value with CR LF: no last chunk", head: RequestHead{Method: "POST", Target: "/", Host: "up", Framing: Chunked},
			body: "abc", step: 8, trailer: one("X-Sum", "1\r\n\r\nGET /smuggled HTTP/1.1"),
			refused: "invalid trailer field value", partial: "POST / HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := writeRequest(&tc.head, tc.body, tc.step, tc.trailer)
			if tc.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("error %v, want one saying %q", err, tc.refused)
				}
				if got != tc.partial {
					t.Fatalf("written before the refusal:\n%q\nwant\n%q", got, tc.partial)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("wrote\n%q\nwant\n%q", got, tc.want)
			}
			// net/http reads back what was meant.
			req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(got)))
			if err != nil {
				t.Fatalf("net/http cannot read it: %v", err)
			}
			b, err := io.ReadAll(req.Body)
			if err != nil || string(b) != tc.body {
				t.Fatalf("net/http read the body %q, %v", b, err)
			}
		})
	}
}

// A trailer section over the limit is refused whole: no last chunk.
func TestBodyWriterLimitsTrailers(t *testing.T) {
	for _, tc := range []struct {
		value string
		ok    bool
	}{{strings.Repeat("v", 4096-len("X-Big: \r\n\r\n")), true}, {strings.Repeat("v", 4096-len("X-Big: \r\n\r\n")+1), false}} {
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		var b BodyWriter
		b.LimitTrailers(4096)
		b.Reset(w, Chunked, 0)
		err := b.Close(http.Header{"X-Big": {tc.value}})
		w.Flush()
		if (err == nil) != tc.ok {
			t.Fatalf("%d-byte value: %v, want accepted %v", len(tc.value), err, tc.ok)
		}
		if !tc.ok && out.Len() != 0 {
			t.Fatalf("a refused trailer section wrote %q", out.String())
		}
		if tc.ok && len(out.String()) != len("0\r\n")+4096 {
			t.Fatalf("wrote %d bytes", out.Len())
		}
	}
}

// A Length body refuses a write past its length without writing any of it.
func TestBodyWriterLengthIsExact(t *testing.T) {
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	var b BodyWriter
	b.Reset(w, Length, 2)
	if _, err := b.Write([]byte("abc")); !errors.Is(err, ErrBodyLength) {
		t.Fatalf("write of 3 into 2: %v", err)
	}
	w.Flush()
	if out.Len() != 0 {
		t.Fatalf("wrote %q", out.String())
	}
}
