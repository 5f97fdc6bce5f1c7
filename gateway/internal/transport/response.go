package transport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"

	"github.com/causewayhq/causeway/gateway/internal/h1"
)

// The calling-goroutine path reads upstream responses with the edge's own
// HTTP/1.1 parser (internal/h1) instead of http.ReadResponse: the head is
// parsed in place in the connection's read buffer and turned into the
// *http.Response ReverseProxy expects with one string for all of its
// text, and the body is framed here. What h1 refuses and net/http would
// read (obs-fold, bare LF or CR, two Content-Lengths, Content-Length with
// Transfer-Encoding, codings other than chunked, a malformed chunk or
// trailer) is refused: a head with an error the edge answers 502, a body
// by failing it (the client's response is cut off, never completed).
// Either way the connection is closed, since where the next response
// starts is no longer known. Whatever is
// accepted reads exactly as http.ReadResponse reads it, header, framing,
// body and trailers alike (FuzzH1ResponseReader holds the two side by
// side).

// defaultResponseLimits bound an upstream's response head: an 8 KiB status
// line, a 64 KiB head and 128 fields, the limits the edge puts on its
// clients' request heads.
var defaultResponseLimits = h1.DefaultLimits

// responseLimits are defaultResponseLimits with the fallback transport's
// MaxResponseHeaderBytes, when it sets one, as the head's bound.
func responseLimits(maxBytes int64) h1.Limits {
	lim := defaultResponseLimits
	if maxBytes > 0 {
		lim.MaxHeaderBytes = int(min(maxBytes, 1<<30))
		lim.MaxRequestLine = min(lim.MaxRequestLine, lim.MaxHeaderBytes)
	}
	return lim
}

func badUpstream(msg string) error {
	return &h1.Error{Status: http.StatusBadGateway, Msg: "upstream: " + msg}
}

var errHeadTooLarge = badUpstream("head too large")

// readHead parses the next response head on c into c.head. The head is
// returned with the number of its bytes still in br: it is a view of br's
// buffer (valid until the next read from br) when it fits there, and a
// copy already consumed from br (0 left) when it does not.
func (c *h1Conn) readHead() (head []byte, inBuffer int, err error) {
	br, lim := c.br, c.t.lim
	n := max(br.Buffered(), 1)
	scanned := 0 // bytes already seen without a line end past the last parse
	for {
		b, perr := br.Peek(n)
		// A head can only end, or fail, at a new line end: parse again
		// only when one arrived.
		if bytes.IndexByte(b[scanned:], '\n') >= 0 {
			m, err := h1.ParseResponse(b, &c.head, lim)
			if err == nil {
				return b[:m], m, nil
			}
			if !errors.Is(err, h1.ErrIncomplete) {
				return nil, 0, err
			}
		}
		scanned = len(b)
		if perr != nil {
			if errors.Is(perr, bufio.ErrBufferFull) {
				return c.readBigHead(b)
			}
			return nil, 0, unexpectedEOF(perr)
		}
		if len(b) > lim.MaxHeaderBytes {
			return nil, 0, errHeadTooLarge
		}
		// One byte more than is buffered: Peek reads whatever has
		// arrived, and at most fills the buffer.
		n = len(b) + 1
	}
}

// readBigHead reads a head that does not fit br's buffer, start being the
// buffer's bytes (all of them part of the head). It copies the head line
// by line, so that it never reads past the empty line that ends it.
func (c *h1Conn) readBigHead(start []byte) ([]byte, int, error) {
	lim := c.t.lim
	if len(start) > lim.MaxHeaderBytes {
		return nil, 0, errHeadTooLarge
	}
	head := append(make([]byte, 0, 2*len(start)), start...)
	_, _ = c.br.Discard(len(start))
	for {
		line, err := c.br.ReadSlice('\n')
		head = append(head, line...)
		if len(head) > lim.MaxHeaderBytes {
			return nil, 0, errHeadTooLarge
		}
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				continue // a line longer than the buffer
			}
			return nil, 0, unexpectedEOF(err)
		}
		// Only an empty line can end the head; the parse says whether
		// this one does (it may end a line begun in the last slice).
		if len(line) > 2 {
			continue
		}
		m, err := h1.ParseResponse(head, &c.head, lim)
		if errors.Is(err, h1.ErrIncomplete) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		if m != len(head) {
			// The head ended before the bytes read: cannot happen, as
			// every line was looked at, but the bytes after it are gone.
			return nil, 0, badUpstream("malformed head")
		}
		return head, 0, nil
	}
}

// unexpectedEOF: a connection that ends inside a head is what net/http
// reports as io.ErrUnexpectedEOF (proxy.Classify counts it as a reset).
func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Proto strings and a shared TransferEncoding value: nothing in the edge
// writes to a response's TransferEncoding, and a full slice expression
// makes an append copy it.
var chunkedCoding = []string{"chunked"}[:1:1]

// newResponse builds the *http.Response for the head c.head, whose bytes
// are head, to req, exactly as http.ReadResponse builds it from the same
// bytes, with the slot for its body beside it. Its strings share one copy
// of head.
func (c *h1Conn) newResponse(req *http.Request, head []byte) (*responseAlloc, error) {
	r := &c.head
	s := string(head)
	a := new(responseAlloc)
	resp := &a.resp
	*resp = http.Response{
		Status:        s[len("HTTP/1.1 "):strings.IndexByte(s, '\r')],
		StatusCode:    r.Status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    r.Minor,
		ContentLength: -1,
		Request:       req,
		Body:          http.NoBody,
	}
	if r.Minor == 0 {
		resp.Proto = "HTTP/1.0"
	}
	resp.Header = newHeader(r.Headers, head, s, a.vals[:])
	h := resp.Header
	// What http.ReadResponse does to the header it read: a Pragma:
	// no-cache without Cache-Control gains one; Transfer-Encoding (never
	// put in h) goes once applied, and Connection: close in HTTP/1.1
	// once read into Close.
	if hp := h["Pragma"]; len(hp) > 0 && hp[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	if r.Minor == 1 && r.Close {
		// The other fields Connection nominates are hop-by-hop too (RFC
		// 9110 7.6.1), and the forwarder finds them by reading
		// Connection: they stay named. (http.ReadResponse drops the whole
		// field, and httputil.ReverseProxy then forwards what it named.)
		if rest := withoutClose(h["Connection"]); rest != "" {
			h["Connection"] = []string{rest}
		} else {
			delete(h, "Connection")
		}
	}
	if r.Chunked {
		resp.TransferEncoding = chunkedCoding
		if vv, ok := h["Trailer"]; ok {
			// The trailer fields announced; their values come at the end
			// of the body (h1Body fills them).
			delete(h, "Trailer")
			t, err := announcedTrailer(vv)
			if err != nil {
				return nil, err
			}
			resp.Trailer = t
		}
	}
	resp.Close = r.Closes(req.Method)
	switch {
	case req.Method == http.MethodHead:
		// The length the upstream would have sent, as net/http reports.
		resp.ContentLength = r.ContentLength
	case !bodyAllowed(r.Status):
		resp.ContentLength = 0
	default:
		resp.ContentLength = r.ContentLength
	}
	return a, nil
}

// responseAlloc is what a response from H1 allocates, in one allocation
// instead of one each: the response, its body (used when it has one), and
// the first values of its header fields. It is never pooled: the caller
// owns the response and may keep it, as it may keep http.Transport's.
type responseAlloc struct {
	resp http.Response
	body h1Body
	vals [inlineValues]string
}

// inlineValues is how many header fields' values responseAlloc holds; a
// response with more allocates their array apart.
const inlineValues = 8

// bodyAllowed: 1xx, 204 and 304 never have a body.
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// announcedTrailer reads the Trailer header's names as net/http does
// (comma-separated, canonical, each with no value yet) and refuses, as it
// does, Transfer-Encoding, Trailer and Content-Length. It refuses more:
// a name that is not a token, and every field CheckAnnouncedTrailer
// refuses.
func announcedTrailer(vv []string) (http.Header, error) {
	var t http.Header
	for _, v := range vv {
		for name := range strings.SplitSeq(v, ",") {
			name = strings.Trim(name, " \t")
			if name == "" {
				continue
			}
			if !isToken(name) {
				return nil, badUpstream(fmt.Sprintf("invalid Trailer name %q", name))
			}
			name = http.CanonicalHeaderKey(name)
			if t == nil {
				t = http.Header{}
			}
			t[name] = nil
		}
	}
	if err := CheckAnnouncedTrailer(t); err != nil {
		return nil, badUpstream(err.Error())
	}
	return t, nil
}

func isToken(s string) bool {
	for i := range len(s) {
		if !httpguts.IsTokenRune(rune(s[i])) {
			return false
		}
	}
	return s != ""
}

// newHeader builds the header from the parsed fields, which alias head;
// s is head as a string, whose substrings the keys (when already
// canonical) and the values are. All the fields' first values share one
// array, as in net/textproto. Transfer-Encoding is left out, as
// http.ReadResponse leaves it out once it has applied it.
//
// vals holds the values when it is long enough; otherwise an array is made.
func newHeader(fields []h1.Header, head []byte, s string, vals []string) http.Header {
	h, _ := headerMaps.Get().(http.Header)
	if h == nil {
		h = make(http.Header, len(fields))
	}
	if len(vals) < len(fields) {
		vals = make([]string, len(fields))
	}
	for _, f := range fields {
		key := canonicalKey(f.Name, head, s)
		if key == "Transfer-Encoding" {
			continue
		}
		v := substring(f.Value, head, s)
		if vv, ok := h[key]; ok {
			h[key] = append(vv, v)
			continue
		}
		vv := vals[:1:1]
		vals = vals[1:]
		vv[0] = v
		h[key] = vv
	}
	return h
}

// headerMaps holds response header maps given back by RecycleHeader.
var headerMaps sync.Pool

// headerKeepFields: a map that grew past this is not kept, so that one
// large response does not pin its table in the pool.
const headerKeepFields = 32

// RecycleHeader gives h, a response's header map, back for another
// response: made fresh, the map cost two allocations per response (a map
// header and its group; four past 8 fields). Only for the caller that
// knows nothing can still read or write h: the forwarder, once it has
// returned from a request sent by H1 itself (H1.KeepsNothingOf), whose
// response header it copied field by field. The value slices are not the
// map's and stay with whoever took them.
func RecycleHeader(h http.Header) bool {
	if h == nil || len(h) > headerKeepFields {
		return false
	}
	clear(h)
	headerMaps.Put(h)
	return true
}

// substring is the part of s that b, a slice of head, covers. Every h1
// field slices the buffer the head was parsed from, without moving its
// end, so the offset is the difference of the capacities.
func substring(b, head []byte, s string) string {
	off := cap(head) - cap(b)
	if off < 0 || off+len(b) > len(head) {
		return string(b) // not from head after all
	}
	return s[off : off+len(b)]
}

// canonicalKey is the canonical form of name, a field of head (s is head
// as a string): the interned constant for a common name, a substring of s
// for an already canonical one; only others allocate.
func canonicalKey(name, head []byte, s string) string {
	if k, same := h1.CanonicalKey(name); !same {
		return k
	}
	return substring(name, head, s)
}

// readTrailers turns the chunked body's trailer fields into resp.Trailer
// as net/http does at the end of a body: the fields received replace the
// announced names' empty values, and fields never announced are added.
// Then CheckTrailer: a field RFC 9110 6.5.1 keeps out of trailers
// (framing, routing, authentication, controls) fails the body, since
// something behind the client could merge it into the header, and so
// does a section over TrailerLimit.
func readTrailers(resp *http.Response, fields []h1.Header) error {
	if len(fields) == 0 {
		return nil
	}
	got := make(http.Header, len(fields))
	for _, f := range fields {
		key := http.CanonicalHeaderKey(string(f.Name))
		got[key] = append(got[key], string(f.Value))
	}
	if resp.Trailer == nil {
		resp.Trailer = got
	} else {
		for k, vv := range got {
			resp.Trailer[k] = vv
		}
	}
	return CheckTrailer(resp.Trailer)
}

// withoutClose is the tokens of a Connection field's values other than
// "close", joined by ", "; "" when there are none.
func withoutClose(vv []string) string {
	var b strings.Builder
	for _, v := range vv {
		for t := range strings.SplitSeq(v, ",") {
			if t = textproto.TrimString(t); t == "" || strings.EqualFold(t, "close") {
				continue
			}
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(t)
		}
	}
	return b.String()
}
