package h1server

import (
	"strings"
	"testing"
)

// diffStreams are raw byte streams sent to both servers: ordinary
// requests, pipelined sequences, and every smuggling form of
// docs/reliability.md.
var diffStreams = []struct {
	name, in string
}{
	{"get", "GET /a?b=c HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n"},
	{"post length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"},
	{"post chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	{"chunked with extensions", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n"},
	{"chunked trailers", "POST / HTTP/1.1\r\nHost: h\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: v\r\nX-U: w\r\n\r\n"},
	{"pipelined", "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: h\r\n\r\n"},
	{"pipelined chunked then get", "POST /1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"},
	{"connection close stops the pipeline", "GET /1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"},
	{"http/1.0", "GET / HTTP/1.0\r\n\r\n"},
	{"http/1.0 keep-alive", "GET /1 HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\nGET /2 HTTP/1.0\r\n\r\n"},
	{"absolute form", "GET http://other/x?y HTTP/1.1\r\nHost: h\r\n\r\n"},
	{"options asterisk", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"},
	{"CL.TE", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n"},
	{"TE.CL", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n0\r\n\r\n"},
	{"duplicate CL", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"},
	{"unequal CL", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
	{"CL list", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello"},
	{"CL sign", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello"},
	{"TE obfuscated", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"},
	{"TE list", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
	{"TE twice", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"TE in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"space before colon", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\nhello"},
	{"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"},
	{"NUL in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n"},
	{"bare CR in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n"},
	{"bare LF line end", "GET / HTTP/1.1\nHost: h\n\n"},
	{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
	{"no host", "GET / HTTP/1.1\r\n\r\n"},
	{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"},
	{"chunk size with space", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"},
	{"chunk LF only", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"},
	{"huge chunk size", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nx\r\n0\r\n\r\n"},
	{"chunk data overrun", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"},
	{"short body", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc"},
	{"unsupported expect", "GET / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n"},
	{"expect continue", "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok"},
	{"http/2 version", "GET / HTTP/2.0\r\nHost: h\r\n\r\n"},
	{"bad version", "GET / HTTP/1.x\r\nHost: h\r\n\r\n"},
	{"fragment in target", "GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n"},
	{"bad escape", "GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n"},
	{"userinfo", "GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n"},
	{"lowercase method", "get / HTTP/1.1\r\nHost: h\r\n\r\n"},
	{"forbidden trailer declared", "POST / HTTP/1.1\r\nHost: h\r\nTrailer: Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"connect", "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"},
	{"underscore header", "GET / HTTP/1.1\r\nHost: h\r\nX_A: 1\r\n\r\n"},
	{"empty value and tabs", "GET / HTTP/1.1\r\nHost: h\r\nX-E:\r\nX-T:\t a \t\r\n\r\n"},
	{"quoted extension, trailer, request behind", "POST /1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n23;e=\"q\\\"x\"\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n\r\n0\r\nX-T: 1\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"},
	{"expect with the body at once, request behind", "POST /1 HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhelloGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"},
	{"large head behind a small one", "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nX-Pad: " + strings.Repeat("p", 5000) + "\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: h\r\n\r\n"},
}

// TestDifferential sends each stream to net/http's server and to this one,
// both running the echo handler: every answer of ours is either the same
// as net/http's (the handler saw the same method, target, header, body and
// trailers) or a refusal after which the connection closes; never an
// answer where net/http refused.
func TestDifferential(t *testing.T) {
	t.Parallel()
	_, ours := serveOurs(t, echo, nil)
	theirs := serveNetHTTP(t, echo)
	for _, tc := range diffStreams {
		t.Run(tc.name, func(t *testing.T) {
			compareServers(t, ours, theirs, tc.in)
		})
	}
}

func compareServers(t *testing.T, ours, theirs, in string) {
	t.Helper()
	method := func(int) string { return "GET" }
	a := readAnswers(exchange(t, ours, in), method)
	b := readAnswers(exchange(t, theirs, in), method)
	for i, x := range a {
		refused := x.status >= 400 && x.status != 404 && x.status != 405
		if refused {
			if i != len(a)-1 {
				t.Fatalf("answer %d is a refusal (%d) but the connection went on: %+v", i, x.status, a)
			}
			return
		}
		if i >= len(b) {
			t.Fatalf("answer %d: ours %d %q, net/http gave none (all: %+v)", i, x.status, x.body, b)
		}
		y := b[i]
		if x.status != y.status || x.body != y.body {
			t.Fatalf("answer %d differs:\nours    %d %q\nnet/http %d %q", i, x.status, x.body, y.status, y.body)
		}
	}
	if len(a) < len(b) {
		// Fewer answers without a refusal: only when ours closed where
		// net/http refused anyway.
		if y := b[len(a)]; y.status < 400 {
			t.Fatalf("ours answered %d requests and closed, net/http answered %d: next %d %q", len(a), len(b), y.status, y.body)
		}
	}
}

// FuzzServeDifferential is TestDifferential over arbitrary byte streams.
func FuzzServeDifferential(f *testing.F) {
	for _, tc := range diffStreams {
		f.Add(tc.in)
	}
	_, ours := serveOurs(f, echo, nil)
	theirs := serveNetHTTP(f, echo)
	f.Fuzz(func(t *testing.T, in string) {
		if strings.Contains(in, "HEAD") || strings.Contains(in, "PRI") {
			return // no body to compare; HTTP/2 has its own server
		}
		compareServers(t, ours, theirs, in)
	})
}
