// Package h1 is the HTTP/1.1 wire format as the edge's own engine reads it:
// a strict RFC 9112 request-head parser that works in place over the
// connection's read buffer (no allocation per request), and a strict
// chunked-body decoder.
//
// Strict means: every form that two parsers could read differently is
// refused rather than interpreted, so nothing behind the edge can be made
// to see a different request than the edge routed (request smuggling).
// Differential fuzzing holds the parser to net/http's: whatever it accepts,
// net/http accepts too and reads the same way (request_fuzz_test.go).
package h1

import (
	"bytes"
	"errors"
	"net/http"
)

// Limits bound what a request head may take.
type Limits struct {
	// MaxRequestLine is the longest request line (414 beyond).
	MaxRequestLine int
	// MaxHeaderBytes bounds the whole head, request line included (431).
	MaxHeaderBytes int
	// MaxHeaders bounds the number of header fields (431).
	MaxHeaders int
}

// DefaultLimits are the edge's defaults (server.max_header_bytes is 64 KiB).
var DefaultLimits = Limits{MaxRequestLine: 8 << 10, MaxHeaderBytes: 64 << 10, MaxHeaders: 128}

// Header is one field as received; Name and Value alias the read buffer.
// Value has no leading or trailing whitespace.
type Header struct {
	Name, Value []byte
}

// Request is a parsed request head. Its byte slices alias the buffer given
// to Parse and are valid until the caller reuses that buffer.
type Request struct {
	Method []byte
	Target []byte
	// Minor is the HTTP/1 minor version: 0 or 1.
	Minor   int
	Headers []Header
	// Host is the Host header's value (empty for HTTP/1.0 without one).
	Host []byte
	// ContentLength is the body's length, -1 when the body is chunked or
	// there is no Content-Length (then a request has no body).
	ContentLength int64
	Chunked       bool
	// Close: the client asked to close after this request (Connection:
	// close, or HTTP/1.0 without keep-alive).
	Close bool
	// Expect100: Expect: 100-continue.
	Expect100 bool
	// Upgrade: Connection lists upgrade and an Upgrade header is present.
	Upgrade bool
}

// Reset empties r for reuse, keeping the Headers array.
func (r *Request) Reset() {
	h := r.Headers[:0]
	*r = Request{Headers: h, ContentLength: -1}
}

// Error is a refused request head: Status is what the client is told
// (400, 414, 431, 501, 505); the connection is closed after it.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

func bad(msg string) *Error { return &Error{Status: http.StatusBadRequest, Msg: msg} }

// ErrIncomplete means the buffer does not hold a whole head yet: read more
// and call Parse again with the longer buffer (it starts over; heads are
// small).
var ErrIncomplete = errors.New("h1: incomplete request head")

var (
	errLineTooLong = &Error{Status: http.StatusRequestURITooLong, Msg: "request line too long"}
	errVersion     = &Error{Status: http.StatusHTTPVersionNotSupported, Msg: "HTTP version not supported"}
)

// requestProblem is a refused request's status: 431 for size, 501 for a
// coding, 400 otherwise.
func requestProblem(p problem, msg string) error {
	switch p {
	case tooLarge, tooMany:
		return &Error{Status: http.StatusRequestHeaderFieldsTooLarge, Msg: "request " + msg}
	case coding:
		return &Error{Status: http.StatusNotImplemented, Msg: msg}
	}
	return bad(msg)
}

// Parse reads one request head from buf into r (which it resets). It
// returns the number of bytes the head took, ErrIncomplete when buf holds
// only part of one (within the limits), or an *Error.
func Parse(buf []byte, r *Request, lim Limits) (int, error) {
	r.Reset()
	// The request line.
	eol := bytes.IndexByte(buf, '\n')
	if eol < 0 {
		if len(buf) > lim.MaxRequestLine {
			return 0, errLineTooLong
		}
		return 0, ErrIncomplete
	}
	if eol+1 > lim.MaxRequestLine {
		return 0, errLineTooLong
	}
	if eol == 0 || buf[eol-1] != '\r' {
		return 0, bad("request line must end in CRLF")
	}
	if err := r.parseRequestLine(buf[:eol-1]); err != nil {
		return 0, err
	}
	// The header fields, up to the empty line.
	var f framing
	var sawHost, sawUpgrade bool
	p, err := readFields(buf, eol+1, lim, &r.Headers, &f, requestProblem, func(name, value []byte) error {
		switch {
		case equalFold(name, "host"):
			if sawHost {
				return bad("more than one Host")
			}
			sawHost = true
			r.Host = value
		case equalFold(name, "upgrade"):
			sawUpgrade = true
		case equalFold(name, "expect"):
			if !equalFold(value, "100-continue") {
				return &Error{Status: http.StatusExpectationFailed, Msg: "unsupported Expect"}
			}
			r.Expect100 = true
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if err := f.check(r.Minor, requestProblem); err != nil {
		return 0, err
	}
	if r.Minor == 1 && !sawHost && !bytes.Equal(r.Method, []byte("CONNECT")) {
		return 0, bad("missing Host header")
	}
	r.Chunked, r.ContentLength = f.chunked, f.bodyLength()
	if a := absoluteAuthority(r.Target); a != nil {
		// RFC 9112 3.2.2: the target's authority, not the Host header.
		r.Host = a
	}
	r.Close = f.closes(r.Minor)
	r.Upgrade = f.upgrade && sawUpgrade
	return p, nil
}

func (r *Request) parseRequestLine(line []byte) error {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return bad("malformed request line")
	}
	r.Method = line[:sp1]
	if !isToken(r.Method) {
		return bad("invalid method")
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return bad("malformed request line")
	}
	r.Target = rest[:sp2]
	version := rest[sp2+1:]
	switch string(version) {
	case "HTTP/1.1":
		r.Minor = 1
	case "HTTP/1.0":
		r.Minor = 0
	default:
		if len(version) == 8 && bytes.HasPrefix(version, []byte("HTTP/")) && version[6] == '.' &&
			isDigit(version[5]) && isDigit(version[7]) {
			return errVersion
		}
		return bad("malformed HTTP version")
	}
	for i, c := range r.Target {
		// No fragment either: a request target never carries one.
		if c <= ' ' || c == 0x7f || c >= 0x80 || c == '#' {
			return bad("invalid character in the request target")
		}
		if c == '%' {
			// Every escape is %XX, in the query too.
			if i+2 >= len(r.Target) {
				return bad("invalid escape in the request target")
			}
			_, ok1 := hexVal(r.Target[i+1])
			_, ok2 := hexVal(r.Target[i+2])
			if !ok1 || !ok2 {
				return bad("invalid escape in the request target")
			}
		}
	}
	switch {
	case r.Target[0] == '/':
	case len(r.Target) == 1 && r.Target[0] == '*':
		if !bytes.Equal(r.Method, []byte("OPTIONS")) {
			return bad("asterisk-form is for OPTIONS only")
		}
	case bytes.Equal(r.Method, []byte("CONNECT")):
		// authority-form; the edge answers CONNECT itself (405).
	case hasPrefixFold(r.Target, "http://") || hasPrefixFold(r.Target, "https://"):
		// absolute-form (a proxy request): the sidecar's outbound side
		// takes the service from it. No userinfo: deprecated (RFC 9110
		// 4.2.4) and a classic way to make two parsers see two hosts.
		if !validAuthority(absoluteAuthority(r.Target)) {
			return bad("invalid authority in the request target")
		}
	default:
		return bad("invalid request target")
	}
	return nil
}

// absoluteAuthority is the authority of an absolute-form target, nil for
// any other form.
func absoluteAuthority(target []byte) []byte {
	i := bytes.Index(target, []byte("://"))
	if i < 0 || target[0] == '/' {
		return nil
	}
	a := target[i+3:]
	if j := bytes.IndexAny(a, "/?#"); j >= 0 {
		a = a[:j]
	}
	return a
}

// validAuthority accepts host[:port] with a host of letters, digits, '-',
// '.', '_' and '~', or a bracketed IPv6 literal; the port is digits.
// Narrower than RFC 3986 on purpose: no userinfo, no percent-encoding, no
// sub-delims, nothing two URL parsers could split differently.
func validAuthority(a []byte) bool {
	host, port := a, []byte(nil)
	if len(a) > 0 && a[0] == '[' {
		end := bytes.IndexByte(a, ']')
		if end < 0 {
			return false
		}
		for _, c := range a[1:end] {
			if _, ok := hexVal(c); !ok && c != ':' && c != '.' {
				return false
			}
		}
		host, port = a[:end+1], a[end+1:]
		if len(port) > 0 {
			if port[0] != ':' {
				return false
			}
			port = port[1:]
		}
	} else {
		if i := bytes.IndexByte(a, ':'); i >= 0 {
			host, port = a[:i], a[i+1:]
		}
		for _, c := range host {
			if !hostChar(c) {
				return false
			}
		}
	}
	if len(host) == 0 {
		return false
	}
	for _, c := range port {
		if !isDigit(c) {
			return false
		}
	}
	return true
}

func hostChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || isDigit(c) || c == '-' || c == '.' || c == '_' || c == '~'
}

// tchar per RFC 9110 5.6.2.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tchar[c] {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// validValue: field-content is VCHAR, obs-text, SP and HTAB; every other
// control character (NUL, bare CR, DEL) is refused.
func validValue(v []byte) bool {
	for _, c := range v {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// parseLength reads a Content-Length: 1*DIGIT, no sign, no list, at most
// 18 digits (no overflow).
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// eachToken calls f with each element of a comma-separated token list
// (empty elements allowed, as RFC 9110 5.6.1 says); false if an element is
// not a token.
func eachToken(v []byte, f func([]byte)) bool {
	for len(v) > 0 {
		var t []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			t, v = v[:i], v[i+1:]
		} else {
			t, v = v, nil
		}
		t = trimOWS(t)
		if len(t) == 0 {
			continue
		}
		if !isToken(t) {
			return false
		}
		f(t)
	}
	return true
}

// equalFold compares b with the lower-case ASCII s, ignoring b's case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, s string) bool {
	return len(b) >= len(s) && equalFold(b[:len(s)], s)
}
