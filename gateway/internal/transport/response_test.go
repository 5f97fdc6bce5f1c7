package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/h1"
	"github.com/causewayhq/causeway/internal/testutil"
)

// smuggled is what a hostile upstream puts after an ambiguous response: a
// whole second response, which a reader that takes the first one's
// framing the other way would hand to the next request.
const smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"

// Responses that net/http reads one way and something else could read
// another, or that are plainly malformed, are refused: the head ones with
// a 502 error, the body ones by failing the body. Either way the connection
// is closed at once and never reused, so whatever follows on it reaches
// no other request. Each case runs many rounds of a refused response and a
// good one on the same transport, and counts the upstream's connections.
func TestH1TransportRefusesAmbiguousResponses(t *testing.T) {
	chunked := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	cases := []struct {
		name, resp string
		body       bool // refused while reading the body, not the head
	}{
		{"Content-Length then Transfer-Encoding", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
		{"Transfer-Encoding then Content-Length", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", false},
		{"two different Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nabcde", false},
		{"two equal Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde", false},
		{"Content-Length list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nabcde", false},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n Content-Length: 5\r\nContent-Length: 0\r\n\r\n", false},
		{"bare LF line ends", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", false},
		{"bare CR in a value", "HTTP/1.1 200 OK\r\nX-A: a\rContent-Length: 5\r\nContent-Length: 0\r\n\r\n", false},
		{"space before the colon", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nabcde", false},
		{"Transfer-Encoding in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n0\r\n\r\n", false},
		{"coding other than chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", false},
		{"forbidden trailer announced", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n0\r\n\r\n", false},
		{"HTTP/2 status line", "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", false},
		{"malformed 1xx before the answer", "HTTP/1.1 103 Early Hints\r\nX: a\r\n b\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false},
		{"chunk size overflow", chunked + "fffffffffffffffff\r\nabc\r\n0\r\n\r\n", true},
		{"space before a chunk extension", chunked + "3 ;x\r\nabc\r\n0\r\n\r\n", true},
		{"bare LF after a chunk size", chunked + "3\nabc\r\n0\r\n\r\n", true},
		{"chunk longer than its size", chunked + "3\r\nabcd\r\n0\r\n\r\n", true},
		{"forbidden trailer field", chunked + "3\r\nabc\r\n0\r\nHost: evil.example\r\n\r\n", true},
		{"Content-Length trailer field", chunked + "3\r\nabc\r\n0\r\nContent-Length: 99\r\n\r\n", true},
		{"trailer line beyond the read buffer", chunked + "0\r\nX-Big: " + strings.Repeat("t", 4<<10) + "\r\n\r\n", true},
		{"trailer section beyond the read buffer", chunked + "0\r\nX-A: " + strings.Repeat("a", 2000) + "\r\nX-B: " + strings.Repeat("b", 2081) + "\r\n\r\n", true},
	}
	const rounds = 100
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var conns, reusedAfterRefusal atomic.Int64
			addr := testutil.ServeConns(t, func(c net.Conn) {
				conns.Add(1)
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if req.URL.Path == "/bad" {
						io.WriteString(c, tc.resp+smuggled)
						if _, err := http.ReadRequest(br); err == nil {
							reusedAfterRefusal.Add(1)
						}
						return
					}
					body := "resp:" + req.URL.Path
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				}
			})
			tr := newTestPool(t, 4, notATimeout)
			for i := range rounds {
				req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/bad", nil)
				resp, err := tr.RoundTrip(req)
				if tc.body {
					if err != nil {
						t.Fatalf("round %d: head refused (%v), want the body refused", i, err)
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil {
						t.Fatalf("round %d: body %q trailer %v accepted", i, b, resp.Trailer)
					}
				} else {
					var he *h1.Error
					if !errors.As(err, &he) || he.Status != http.StatusBadGateway {
						t.Fatalf("round %d: got %v, want a 502 refusal", i, err)
					}
				}
				_, body, err := testutil.RoundTripGet(t, tr, context.Background(), fmt.Sprintf("http://%s/next/%d", addr, i))
				if err != nil || body != fmt.Sprintf("resp:/next/%d", i) {
					t.Fatalf("round %d: the next request got %q, %v", i, body, err)
				}
			}
			// Each refused response ended its connection; each good one
			// left it for the next /bad.
			if n := conns.Load(); n != rounds+1 {
				t.Fatalf("%d connections for %d rounds, want %d", n, rounds, rounds+1)
			}
			if n := reusedAfterRefusal.Load(); n != 0 {
				t.Fatalf("%d refused connections carried another request", n)
			}
		})
	}
}

// headOf is a response head of about n bytes in fields of 100 bytes,
// without its empty line.
func headOf(n int) string {
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\n")
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "X-F%04d: %s\r\n", i, strings.Repeat("v", 88))
	}
	return b.String()
}

// A head bigger than the limit (64 KiB, or the fallback's
// MaxResponseHeaderBytes) is refused with a 502 error as soon as the limit
// is passed, also when the upstream never ends it; smaller heads that do
// not fit the 4 KiB read buffer are read whole and as net/http reads them.
func TestH1TransportHeadSizeLimit(t *testing.T) {
	t.Parallel()
	few := func(n int) string { // fewer, longer fields: within MaxHeaders
		var b strings.Builder
		b.WriteString("HTTP/1.1 200 OK\r\n")
		for i := 0; b.Len() < n; i++ {
			fmt.Fprintf(&b, "X-F%d: %s\r\n", i, strings.Repeat("v", 1000))
		}
		return b.String()
	}
	cases := []struct {
		name, head string
		ends       bool  // the empty line and a body follow
		maxBytes   int64 // the fallback's MaxResponseHeaderBytes
		ok         bool
	}{
		{"6 KiB", headOf(6 << 10), true, 0, true},
		{"60 KiB in long fields", few(60 << 10), true, 0, true},
		{"one 20 KiB field", "HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("l", 20<<10) + "\r\n", true, 0, true},
		{"70 KiB", few(70 << 10), true, 0, false},
		{"70 KiB, never ended", few(70 << 10), false, 0, false},
		{"status line never ended", "HTTP/1.1 200 " + strings.Repeat("r", 70<<10), false, 0, false},
		{"129 fields", headOf(129 * 100), true, 0, false},
		{"6 KiB under an 8 KiB limit", headOf(6 << 10), true, 8 << 10, true},
		{"10 KiB over an 8 KiB limit", headOf(10 << 10), true, 8 << 10, false},
		{"3 KiB over a 2 KiB limit, never ended", headOf(3 << 10), false, 2 << 10, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp := tc.head
			if tc.ends {
				resp += "Content-Length: 2\r\n\r\nok"
			}
			addr := testutil.ServeConns(t, func(c net.Conn) {
				_, _ = http.ReadRequest(bufio.NewReader(c)) // what was asked does not matter here
				io.WriteString(c, resp)
				// Held open: only the limit can end the wait.
				_, _ = io.Copy(io.Discard, c)
			})
			tr := NewH1(&http.Transport{
				DialContext:            (&net.Dialer{Timeout: time.Second}).DialContext,
				MaxIdleConnsPerHost:    4,
				ResponseHeaderTimeout:  notATimeout,
				MaxResponseHeaderBytes: tc.maxBytes,
			})
			t.Cleanup(tr.CloseIdleConnections)
			start := time.Now()
			req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
			got, err := tr.RoundTrip(req)
			if !tc.ok {
				var he *h1.Error
				if !errors.As(err, &he) || he.Status != http.StatusBadGateway {
					t.Fatalf("got %v, want a 502 refusal", err)
				}
				if d := time.Since(start); d > notATimeout/3 {
					t.Fatalf("refused after %v: it waited for the upstream", d)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(got.Body)
			got.Body.Close()
			if err != nil || string(body) != "ok" {
				t.Fatalf("body %q, %v", body, err)
			}
			ref, err := http.ReadResponse(bufio.NewReader(strings.NewReader(resp)), req)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Header, ref.Header) {
				t.Fatalf("%d header fields, net/http read %d, or different values", len(got.Header), len(ref.Header))
			}
		})
	}
}

// The trailers of a chunked upstream response reach the client through
// ReverseProxy, announced ones and late ones alike, as they do with
// net/http's reader; a trailer field that must not be one ends the
// response instead of reaching the client.
func TestH1TransportTrailersThroughReverseProxy(t *testing.T) {
	t.Parallel()
	addr := testutil.ServeConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			trailer := "X-Checksum: 42\r\nX-Late: yes\r\nx-checksum: 43\r\n"
			if req.URL.Path == "/forbidden" {
				trailer = "X-Checksum: 42\r\nAuthorization: Basic eA==\r\n"
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum, X-Never\r\n\r\n"+
				"5\r\nhello\r\n6\r\n world\r\n0\r\n"+trailer+"\r\n")
		}
	})
	tr := newTestPool(t, 4, notATimeout)
	u, _ := url.Parse("http://" + addr)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = tr
	rp.ErrorLog = log.New(io.Discard, "", 0) // the forbidden trailer's abort is expected
	front := httptest.NewServer(rp)
	t.Cleanup(front.Close)
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)

	for i := range 50 {
		resp, err := client.Get(front.URL + "/ok")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "hello world" {
			t.Fatalf("round %d: body %q, %v", i, b, err)
		}
		want := http.Header{"X-Checksum": {"42", "43"}, "X-Never": nil, "X-Late": {"yes"}}
		if !reflect.DeepEqual(resp.Trailer, want) {
			t.Fatalf("round %d: trailer %v, want %v", i, resp.Trailer, want)
		}
	}
	resp, err := client.Get(front.URL + "/forbidden")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.Trailer.Get("Authorization") != "" {
			t.Fatalf("an Authorization trailer reached the client: %v", resp.Trailer)
		}
		if err == nil {
			t.Fatalf("the response with a forbidden trailer ended cleanly, trailer %v", resp.Trailer)
		}
	}
}

// canonicalKey is textproto's canonical form for every token name, and an
// already canonical one is a substring of the head (h1's TestCanonicalKey
// covers the forms).
func TestCanonicalKey(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"content-type", "Content-Type", "x-custom-lower", "X-Custom", strings.Repeat("x-long-name", 7)} {
		head := []byte("HTTP/1.1 200 OK\r\n" + name + ": v\r\n\r\n")
		s := string(head)
		field := head[len("HTTP/1.1 200 OK\r\n"):][:len(name)]
		if got, want := canonicalKey(field, head, s), textproto.CanonicalMIMEHeaderKey(name); got != want {
			t.Errorf("canonicalKey(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestRecycleHeader(t *testing.T) {
	big := http.Header{}
	for n := range headerKeepFields + 1 {
		big[fmt.Sprint("X-", n)] = []string{"v"}
	}
	for _, tc := range []struct {
		name string
		h    http.Header
		kept bool
	}{
		{"nil", nil, false},
		{"empty", http.Header{}, true},
		{"a response's", http.Header{"Content-Length": {"64"}, "Date": {"x"}}, true},
		{"too large to keep", big, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vv := tc.h["Content-Length"]
			if kept := RecycleHeader(tc.h); kept != tc.kept {
				t.Fatalf("kept %v, want %v", kept, tc.kept)
			}
			if tc.kept && len(tc.h) != 0 {
				t.Fatalf("kept with %d fields still in it", len(tc.h))
			}
			// The value slices are not the map's: whoever took them
			// keeps them as they were.
			if vv != nil && vv[0] != "64" {
				t.Fatalf("a value slice changed: %q", vv)
			}
		})
	}
}
