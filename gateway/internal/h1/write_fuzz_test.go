package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// FuzzRequestWriter is the differential test of the request writer against
// net/http's reader: whatever RequestHead and BodyWriter write for a
// request, http.ReadRequest reads as the same method, target, Host, header
// fields, body and trailer fields, with nothing left over after it (no
// second request hidden in a value, a target or a trailer). A request the
// writer refuses leaves nothing written.
//
//	go test -run '^$' -fuzz FuzzRequestWriter ./gateway/internal/h1
func FuzzRequestWriter(f *testing.F) {
	f.Add("POST", "/a?b=c", "up:8080", "Accept: */*\nX-Tag: one\nX-Tag: two", "hello", uint8(1), uint8(3), "X-Sum", "X-Sum: 1")
	f.Add("PUT", "/", "up", "User-Agent: a\nUser-Agent: b\nConnection: close", "", uint8(2), uint8(1), "", "")
	f.Add("GET", "/x", "up", "Pragma: no-cache\nExpect: 100-continue", "", uint8(0), uint8(1), "", "")
	f.Add("POST", "/", "up", "X: a\r\nEvil: 1", "body", uint8(1), uint8(2), "", "")
	f.Add("POST", "/", "up", "", "body", uint8(2), uint8(2), "Host", "Host: evil")
	f.Add("POST", "/", "up", "", "body", uint8(2), uint8(2), "X-A", "X-A: 1\r\n\r\nGET /s HTTP/1.1")
	f.Add("PATCH", "/%zz", "[::1]:80", "  Spaced  :  v  ", strings.Repeat("x", 300), uint8(1), uint8(7), "", "")
	f.Fuzz(func(t *testing.T, method, target, host, fields, body string, framing, step uint8, announce, trailers string) {
		u, err := url.Parse(target)
		if err != nil || u.Scheme != "" || u.Host != "" {
			return
		}
		target = u.RequestURI() // what the transport writes
		if !strings.HasPrefix(target, "/") {
			return
		}
		h := RequestHead{Method: method, Target: target, Host: host, Header: http.Header{}}
		for line := range strings.SplitSeq(fields, "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				h.Header.Add(k, v)
			}
		}
		switch framing % 3 {
		case 0:
			h.Framing = NoBody
			body = ""
		case 1:
			h.Framing, h.ContentLength = Length, int64(len(body))
		case 2:
			h.Framing = Chunked
			for name := range strings.SplitSeq(announce, ",") {
				if name = strings.TrimSpace(name); name != "" {
					if h.Trailer == nil {
						h.Trailer = http.Header{}
					}
					h.Trailer[http.CanonicalHeaderKey(name)] = nil
				}
			}
		}
		var sent http.Header
		if h.Framing == Chunked {
			for line := range strings.SplitSeq(trailers, "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok {
					if sent == nil {
						sent = http.Header{}
					}
					sent.Add(k, v)
				}
			}
		}
		if method == "CONNECT" {
			return // never sent by the transport: http.Transport takes it
		}
		out, err := writeRequest(&h, body, max(int(step), 1), sent)
		if err != nil {
			if h.Check() != nil && out != "" {
				t.Fatalf("a refused head wrote %q", out)
			}
			// Refused at the end of the body (a trailer): what was written
			// must never read as a complete request.
			if req, rerr := http.ReadRequest(bufio.NewReader(strings.NewReader(out))); rerr == nil {
				if _, rerr := io.ReadAll(req.Body); rerr == nil {
					t.Fatalf("a refused body (%v) reads as complete: %q", err, out)
				}
			}
			return
		}
		br := bufio.NewReader(strings.NewReader(out))
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("net/http refuses what was written: %v\n%q", err, out)
		}
		got, err := io.ReadAll(req.Body)
		if err != nil {
			t.Fatalf("net/http refuses the body: %v\n%q", err, out)
		}
		if !bytes.Equal(got, []byte(body)) {
			t.Fatalf("body %q, want %q", got, body)
		}
		if br.Buffered() > 0 {
			t.Fatalf("bytes after the request: %q", out[len(out)-br.Buffered():])
		}
		if req.Method != method || req.RequestURI != target || req.Host != host {
			t.Fatalf("read %s %s Host %s, want %s %s Host %s", req.Method, req.RequestURI, req.Host, method, target, host)
		}
		if want := expectedHeader(h.Header); !reflect.DeepEqual(comparableHeader(req.Header), want) {
			t.Fatalf("header %q, want %q\n%q", comparableHeader(req.Header), want, out)
		}
		if h.Framing == Chunked {
			want := http.Header{}
			for k := range h.Trailer {
				want[k] = nil
			}
			for k, vv := range sent {
				want[k] = nil
				for _, v := range vv {
					want[k] = append(want[k], strings.Trim(v, " \t"))
				}
			}
			if len(want) == 0 {
				want = nil
			}
			if !reflect.DeepEqual(req.Trailer, want) {
				t.Fatalf("trailer %q, want %q\n%q", req.Trailer, want, out)
			}
		}
	})
}

// expectedHeader is h as a reader should see it: the fields the head owns
// left out, User-Agent's first value only, values without the
// whitespace around them.
func expectedHeader(h http.Header) http.Header {
	want := http.Header{}
	for k, vv := range h {
		if ownedField(k) {
			continue
		}
		for _, v := range vv {
			want[k] = append(want[k], strings.Trim(v, " \t"))
		}
	}
	if ua := h["User-Agent"]; len(ua) > 0 && strings.Trim(ua[0], " \t") != "" {
		want["User-Agent"] = []string{strings.Trim(ua[0], " \t")}
	}
	return want
}

// comparable is what ReadRequest read, without the framing fields it
// keeps and the Cache-Control it adds for Pragma: no-cache.
func comparableHeader(h http.Header) http.Header {
	c := h.Clone()
	delete(c, "Content-Length")
	if p := c["Pragma"]; len(p) > 0 && p[0] == "no-cache" {
		delete(c, "Cache-Control")
	}
	return c
}
