package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"strings"
	"testing"
)

func TestParseAccepts(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in string
		check    func(t *testing.T, r *Request)
	}{
		{"GET", "GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nUser-Agent: x\r\n\r\n", func(t *testing.T, r *Request) {
			if string(r.Method) != "GET" || string(r.Target) != "/a?b=c" || r.Minor != 1 || string(r.Host) != "example.com" ||
				r.ContentLength != -1 || r.Chunked || r.Close || len(r.Headers) != 2 {
				t.Fatalf("%+v", r)
			}
		}},
		{"values trimmed", "GET / HTTP/1.1\r\nHost:\t example.com \t\r\nX-Empty:\r\n\r\n", func(t *testing.T, r *Request) {
			if string(r.Host) != "example.com" || len(r.Headers[1].Value) != 0 {
				t.Fatalf("%q %q", r.Host, r.Headers[1].Value)
			}
		}},
		{"POST with length", "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\n\r\n", func(t *testing.T, r *Request) {
			if r.ContentLength != 42 {
				t.Fatal(r.ContentLength)
			}
		}},
		{"chunked", "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n", func(t *testing.T, r *Request) {
			if !r.Chunked || r.ContentLength != -1 {
				t.Fatalf("%+v", r)
			}
		}},
		{"HTTP/1.0 closes by default", "GET / HTTP/1.0\r\n\r\n", func(t *testing.T, r *Request) {
			if r.Minor != 0 || !r.Close {
				t.Fatalf("%+v", r)
			}
		}},
		{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", func(t *testing.T, r *Request) {
			if r.Close {
				t.Fatal("closes")
			}
		}},
		{"Connection list", "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, , Upgrade\r\nUpgrade: websocket\r\n\r\n", func(t *testing.T, r *Request) {
			if !r.Upgrade || r.Close {
				t.Fatalf("%+v", r)
			}
		}},
		{"close", "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", func(t *testing.T, r *Request) {
			if !r.Close {
				t.Fatal("keeps alive")
			}
		}},
		{"expect", "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nExpect: 100-Continue\r\n\r\n", func(t *testing.T, r *Request) {
			if !r.Expect100 {
				t.Fatal("no Expect100")
			}
		}},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", nil},
		{"absolute-form", "GET http://payments/pay HTTP/1.1\r\nHost: payments\r\n\r\n", nil},
		{"CONNECT without Host", "CONNECT example.com:443 HTTP/1.1\r\n\r\n", nil},
		{"obs-text in a value", "GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in + "NEXT"
			var r Request
			n, err := Parse([]byte(in), &r, DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			if in[n:] != "NEXT" {
				t.Fatalf("consumed %d, rest %q", n, in[n:])
			}
			if tc.check != nil {
				tc.check(t, &r)
			}
		})
	}
}

// TestParseRefuses: every smuggling form of docs/reliability.md and every
// other ambiguity gets its status, never a parse.
func TestParseRefuses(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 9000)
	cases := []struct {
		name, in string
		status   int
	}{
		{"CL and TE", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE and CL", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400},
		{"two equal CL", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400},
		{"two differing CL", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
		{"CL list", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n", 400},
		{"CL signed", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", 400},
		{"CL hex", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n", 400},
		{"CL overflow", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
		{"obfuscated TE", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", 501},
		{"TE list", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"two TE", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"space before the colon", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\n", 400},
		{"tab before the colon", "GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", 400},
		{"two Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"no Host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", 400},
		{"NUL in a value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400},
		{"bare CR in a value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400},
		{"DEL in a value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n", 400},
		{"control in a name", "GET / HTTP/1.1\r\nHost: h\r\nX\x01: y\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400},
		{"bare LF line", "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400},
		{"bare LF request line", "GET / HTTP/1.1\nHost: h\r\n\r\n", 400},
		{"two spaces", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"space in the target", "GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"control in the target", "GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"high byte in the target", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"lower-case version", "GET / http/1.1\r\nHost: h\r\n\r\n", 400},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505},
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505},
		{"relative target", "GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"asterisk not OPTIONS", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"method not a token", "G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400},
		{"empty name", "GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", 400},
		{"bad Connection", "GET / HTTP/1.1\r\nHost: h\r\nConnection: a b\r\n\r\n", 400},
		{"unknown Expect", "GET / HTTP/1.1\r\nHost: h\r\nExpect: nope\r\n\r\n", 417},
		{"request line too long", "GET /" + long + " HTTP/1.1\r\nHost: h\r\n\r\n", 414},
		{"request line too long, unfinished", "GET /" + long, 414},
		{"head too large", "GET / HTTP/1.1\r\nHost: h\r\n" + strings.Repeat("X-A: "+strings.Repeat("b", 1000)+"\r\n", 70) + "\r\n", 431},
		{"too many fields", "GET / HTTP/1.1\r\nHost: h\r\n" + strings.Repeat("X: y\r\n", 200) + "\r\n", 431},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r Request
			_, err := Parse([]byte(tc.in), &r, DefaultLimits)
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want status %d", err, tc.status)
			}
			if pe.Status != tc.status {
				t.Fatalf("status %d (%s), want %d", pe.Status, pe.Msg, tc.status)
			}
		})
	}
}

func TestParseIncomplete(t *testing.T) {
	t.Parallel()
	full := "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"
	for i := range len(full) {
		var r Request
		if _, err := Parse([]byte(full[:i]), &r, DefaultLimits); !errors.Is(err, ErrIncomplete) {
			t.Fatalf("prefix %q: %v", full[:i], err)
		}
	}
}

func TestChunked(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in, body string
		ok             bool
		trailers       int
	}{
		{"plain", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", true, 0},
		{"upper hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789", true, 0},
		{"extensions", "5;a=b;c=\"d;e\";f\r\nhello\r\n0;last\r\n\r\n", "hello", true, 0},
		{"trailers", "5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n", "hello", true, 2},
		{"leading zeros", "0005\r\nhello\r\n0\r\n\r\n", "hello", true, 0},
		{"size with space", "5 \r\nhello\r\n0\r\n\r\n", "", false, 0},
		{"size with sign", "+5\r\nhello\r\n0\r\n\r\n", "", false, 0},
		{"size 0x", "0x5\r\nhello\r\n0\r\n\r\n", "", false, 0},
		{"no size", "\r\nhello\r\n0\r\n\r\n", "", false, 0},
		{"too many digits", "0000000000000005\r\nhello\r\n0\r\n\r\n", "", false, 0},
		{"bare LF after size", "5\nhello\r\n0\r\n\r\n", "", false, 0},
		{"data longer than size", "5\r\nhello!\r\n0\r\n\r\n", "", false, 0},
		{"data shorter than size", "6\r\nhello\r\n0\r\n\r\n", "", false, 0},
		{"no CRLF after data", "5\r\nhelloXX0\r\n\r\n", "", false, 0},
		{"bad extension", "5;=x\r\nhello\r\n0\r\n\r\n", "", false, 0},
		{"space before extension", "5 ;a=b\r\nhello\r\n0\r\n\r\n", "", false, 0},
		{"tab before extension", "5\t;a\r\nhello\r\n0\r\n\r\n", "", false, 0},
		{"padded with extensions", strings.Repeat("1;"+strings.Repeat("e", 100)+"\r\nx\r\n", 200) + "0\r\n\r\n", "", false, 0},
		{"some extensions", strings.Repeat("1;"+strings.Repeat("e", 100)+"\r\nx\r\n", 150) + "0\r\n\r\n", strings.Repeat("x", 150), true, 0},
		{"unterminated quoted extension", "5;a=\"x\r\nhello\r\n0\r\n\r\n", "", false, 0},
		{"bad trailer", "5\r\nhello\r\n0\r\nX : y\r\n\r\n", "", false, 0},
		{"trailer with NUL", "5\r\nhello\r\n0\r\nX: a\x00\r\n\r\n", "", false, 0},
		{"cut short", "5\r\nhel", "", false, 0},
		{"no end", "5\r\nhello\r\n", "", false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.in + "NEXT"))
			c := NewChunkedReader(br)
			body, err := io.ReadAll(c)
			if !tc.ok {
				if err == nil {
					t.Fatalf("accepted, body %q", body)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(body) != tc.body || len(c.Trailers()) != tc.trailers {
				t.Fatalf("body %q trailers %v", body, c.Trailers())
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != "NEXT" {
				t.Fatalf("left %q for the next request", rest)
			}
		})
	}
}

// The overhead bound is net/http's to the byte: a body padded with
// extensions is refused by both or by neither, on either side of the
// bound.
func TestChunkedOverheadAsNetHTTP(t *testing.T) {
	t.Parallel()
	for _, ext := range []int{0, 10, 100, 1000} {
		for chunks := 1; chunks < 400; chunks++ {
			in := strings.Repeat("1;"+strings.Repeat("e", ext)+"\r\nx\r\n", chunks) + "0\r\n\r\n"
			if ext == 0 {
				in = strings.ReplaceAll(in, ";", "")
			}
			_, ours := io.ReadAll(NewChunkedReader(bufio.NewReader(strings.NewReader(in))))
			_, theirs := io.ReadAll(httputil.NewChunkedReader(bufio.NewReader(strings.NewReader(in))))
			if (ours == nil) != (theirs == nil) {
				t.Fatalf("%d chunks with %d-byte extensions: h1 %v, net/http %v", chunks, ext, ours, theirs)
			}
		}
	}
}

// LimitTrailers bounds the trailer section to the byte, fields and the
// empty line that ends it, and survives Reset.
func TestChunkedTrailerLimit(t *testing.T) {
	t.Parallel()
	section := func(n int) string { // a trailer section of exactly n bytes
		return "X: " + strings.Repeat("v", n-len("X: \r\n\r\n")) + "\r\n\r\n"
	}
	var c ChunkedReader
	c.LimitTrailers(64)
	for _, tc := range []struct {
		size int
		ok   bool
	}{{64, true}, {65, false}, {20, true}} {
		c.Reset(bufio.NewReader(strings.NewReader("1\r\nx\r\n0\r\n" + section(tc.size))))
		body, err := io.ReadAll(&c)
		if (err == nil) != tc.ok {
			t.Fatalf("%d-byte trailer section: %v, want ok=%v", tc.size, err, tc.ok)
		}
		if tc.ok && (string(body) != "x" || len(c.Trailers()) != 1) {
			t.Fatalf("%d-byte trailer section: body %q trailers %q", tc.size, body, c.Trailers())
		}
	}
	c.LimitTrailers(1 << 30) // never above the default
	c.Reset(bufio.NewReaderSize(strings.NewReader("0\r\n"+section(maxTrailerBytes+1)), 64<<10))
	if _, err := io.ReadAll(&c); err == nil {
		t.Fatal("a trailer section over 16 KiB was accepted")
	}
}

// FuzzParseDifferential: whatever Parse accepts, net/http reads too, as the
// same method, target, version and headers.
func FuzzParseDifferential(f *testing.F) {
	for _, s := range seedRequests {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var r Request
		n, err := Parse([]byte(in), &r, DefaultLimits)
		if err != nil {
			var pe *Error
			if !errors.Is(err, ErrIncomplete) && !errors.As(err, &pe) {
				t.Fatalf("error without a status: %v", err)
			}
			return
		}
		if n > len(in) {
			t.Fatalf("consumed %d of %d", n, len(in))
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(in[:n])))
		if err != nil {
			t.Fatalf("accepted what net/http refuses (%v): %q", err, in[:n])
		}
		if req.Method != string(r.Method) || req.RequestURI != string(r.Target) || req.ProtoMinor != r.Minor || req.ProtoMajor != 1 {
			t.Fatalf("request line: net/http %s %s %d, h1 %s %s %d", req.Method, req.RequestURI, req.ProtoMinor, r.Method, r.Target, r.Minor)
		}
		if string(r.Host) != req.Host {
			t.Fatalf("Host: net/http %q, h1 %q", req.Host, r.Host)
		}
		if r.Chunked {
			if len(req.TransferEncoding) != 1 || req.TransferEncoding[0] != "chunked" {
				t.Fatalf("chunked here, net/http: %v", req.TransferEncoding)
			}
		} else if req.ContentLength != max(r.ContentLength, 0) {
			t.Fatalf("Content-Length: net/http %d, h1 %d", req.ContentLength, r.ContentLength)
		}
		// net/http moves Host out of the header map.
		sameFields(t, r.Headers, req.Header, "Host")
		if r.Close != req.Close {
			t.Fatalf("Close: net/http %v, h1 %v", req.Close, r.Close)
		}
	})
}

// FuzzChunkedDifferential: whatever the chunked reader accepts, net/http's
// decodes to the same bytes.
func FuzzChunkedDifferential(f *testing.F) {
	for _, s := range []string{"5\r\nhello\r\n0\r\n\r\n", "3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n", "0\r\n\r\n", "5 \r\nhello\r\n0\r\n\r\n", "5\nhello\n0\n\n",
		"5;name=\"v\\\"x\";k=v\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n", // quoted-string extension with an escape, a trailer
		"5;name=\"v\r\nhello\r\n0\r\n\r\n",                             // unterminated quoted-string
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		br := bufio.NewReader(strings.NewReader(in))
		ours, err := io.ReadAll(NewChunkedReader(br))
		if err != nil {
			return
		}
		theirs, err := io.ReadAll(httputil.NewChunkedReader(bufio.NewReader(strings.NewReader(in))))
		if err != nil {
			t.Fatalf("accepted what net/http refuses (%v): %q", err, in)
		}
		if !bytes.Equal(ours, theirs) {
			t.Fatalf("decoded %q, net/http %q", ours, theirs)
		}
	})
}

// seedRequests holds every smuggling form of docs/reliability.md and the
// ordinary requests, for the fuzzers.
var seedRequests = []string{
	"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
	// A chunked body with a quoted extension and a trailer, holding a
	// request, and the request pipelined behind it.
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n23;e=\"q\\\"x\"\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n\r\n0\r\nX-T: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n",
	// Expect: 100-continue with the body sent at once, a request behind it.
	"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: h\r\n\r\n",
}

func TestParseResponse(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in string
		status   int // 0: refused
		framing  Framing
		method   string
	}{
		{"200 length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 200, Length, "GET"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 200, Chunked, "GET"},
		{"to close", "HTTP/1.1 200 OK\r\n\r\n", 200, ToClose, "GET"},
		{"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 200, NoBody, "HEAD"},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", 204, NoBody, "GET"},
		{"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", 304, NoBody, "GET"},
		{"103", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", 103, NoBody, "GET"},
		{"no reason", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", 200, Length, "GET"},
		{"empty reason", "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", 200, Length, "GET"},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 200, Length, "GET"},
		{"CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0, "GET"},
		{"two CL", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 0, 0, "GET"},
		{"gzip TE", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0, 0, "GET"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", 0, 0, "GET"},
		{"NUL", "HTTP/1.1 200 OK\r\nX: a\x00\r\n\r\n", 0, 0, "GET"},
		{"bare LF", "HTTP/1.1 200 OK\nX: a\r\n\r\n", 0, 0, "GET"},
		{"two-digit status", "HTTP/1.1 20 OK\r\n\r\n", 0, 0, "GET"},
		{"status 000", "HTTP/1.1 000 OK\r\n\r\n", 0, 0, "GET"},
		{"HTTP/2", "HTTP/2.0 200 OK\r\n\r\n", 0, 0, "GET"},
		{"no space after the status", "HTTP/1.1 200OK\r\n\r\n", 0, 0, "GET"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r Response
			n, err := ParseResponse([]byte(tc.in), &r, DefaultLimits)
			if tc.status == 0 {
				var pe *Error
				if !errors.As(err, &pe) || pe.Status != http.StatusBadGateway {
					t.Fatalf("err = %v, want a 502 refusal", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n != len(tc.in) || r.Status != tc.status || r.Framing(tc.method) != tc.framing {
				t.Fatalf("n %d status %d framing %d", n, r.Status, r.Framing(tc.method))
			}
		})
	}
}

// FuzzResponseDifferential: whatever ParseResponse accepts, net/http's
// response reader reads the same way.
func FuzzResponseDifferential(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nleaked\r\n0\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nread to the close",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var r Response
		n, err := ParseResponse([]byte(in), &r, DefaultLimits)
		if err != nil {
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(in[:n])), &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("accepted what net/http refuses (%v): %q", err, in[:n])
		}
		defer resp.Body.Close()
		if resp.StatusCode != r.Status || resp.ProtoMinor != r.Minor {
			t.Fatalf("status: net/http %d 1.%d, h1 %d 1.%d", resp.StatusCode, resp.ProtoMinor, r.Status, r.Minor)
		}
		sameFields(t, r.Headers, resp.Header)
		if r.Framing(http.MethodGet) == Length && resp.ContentLength != r.ContentLength && r.Status/100 != 1 && r.Status != 204 && r.Status != 304 {
			t.Fatalf("Content-Length: net/http %d, h1 %d", resp.ContentLength, r.ContentLength)
		}
		if r.Closes(http.MethodGet) != resp.Close {
			t.Fatalf("Close: net/http %v, h1 %v", resp.Close, r.Closes(http.MethodGet))
		}
	})
}

// sameFields fails unless fields hold what net/http read into want, but
// for Transfer-Encoding (which net/http drops once it has applied it) and
// the names in skip.
func sameFields(t *testing.T, fields []Header, want http.Header, skip ...string) {
	t.Helper()
	got := http.Header{}
	for _, h := range fields {
		got.Add(string(h.Name), string(h.Value))
	}
	want = want.Clone()
	for _, k := range append(skip, "Transfer-Encoding") {
		got.Del(k)
		want.Del(k)
	}
	if len(got) != len(want) {
		t.Fatalf("headers: net/http %v, h1 %v", want, got)
	}
	for k, vs := range want {
		if strings.Join(got[k], "\x00") != strings.Join(vs, "\x00") {
			t.Fatalf("header %s: net/http %q, h1 %q", k, vs, got[k])
		}
	}
}
