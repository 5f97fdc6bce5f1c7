package h1

import (
	"bytes"
	"net/http"
)

// Response is a parsed response head from an upstream. Its byte slices
// alias the buffer given to ParseResponse.
type Response struct {
	Minor   int
	Status  int
	Reason  []byte
	Headers []Header
	// ContentLength is -1 when the body is chunked, delimited by close, or
	// absent by rule (see Framing).
	ContentLength int64
	Chunked       bool
	// Close: the upstream said it closes after this response (Connection:
	// close, or HTTP/1.0 without keep-alive). See Closes.
	Close bool
}

// Closes reports whether the connection ends with this response, the
// answer to a request with method: announced, or a body read to the close.
func (r *Response) Closes(method string) bool {
	return r.Close || r.Framing(method) == ToClose
}

// Framing says how the body of a response ends.
type Framing int

// The ways a response body ends (RFC 9112 6.3).
const (
	NoBody  Framing = iota // HEAD, 1xx, 204, 304, 2xx to CONNECT
	Length                 // Content-Length bytes
	Chunked                // chunked coding
	ToClose                // read until the upstream closes
)

// Reset empties r for reuse, keeping the Headers array.
func (r *Response) Reset() {
	h := r.Headers[:0]
	*r = Response{Headers: h, ContentLength: -1}
}

// Framing is how the body of r, the answer to a request with method,
// ends.
func (r *Response) Framing(method string) Framing {
	switch {
	case method == http.MethodHead, r.Status/100 == 1, r.Status == http.StatusNoContent, r.Status == http.StatusNotModified,
		method == http.MethodConnect && r.Status/100 == 2:
		return NoBody
	case r.Chunked:
		return Chunked
	case r.ContentLength >= 0:
		return Length
	}
	return ToClose
}

// ParseResponse reads one response head from buf into r. It returns the
// bytes the head took, ErrIncomplete, or an *Error (Status 502: the
// upstream's answer cannot be relayed safely).
func ParseResponse(buf []byte, r *Response, lim Limits) (int, error) {
	r.Reset()
	eol := bytes.IndexByte(buf, '\n')
	if eol < 0 {
		if len(buf) > lim.MaxRequestLine {
			return 0, badUpstream("status line too long")
		}
		return 0, ErrIncomplete
	}
	if eol+1 > lim.MaxRequestLine || eol == 0 || buf[eol-1] != '\r' {
		return 0, badUpstream("malformed status line")
	}
	if err := r.parseStatusLine(buf[:eol-1]); err != nil {
		return 0, err
	}
	var f framing
	p, err := readFields(buf, eol+1, lim, &r.Headers, &f, responseProblem, nil)
	if err != nil {
		return 0, err
	}
	if err := f.check(r.Minor, responseProblem); err != nil {
		return 0, err
	}
	r.Chunked, r.ContentLength = f.chunked, f.bodyLength()
	r.Close = f.closes(r.Minor)
	return p, nil
}

func (r *Response) parseStatusLine(line []byte) error {
	// HTTP-version SP 3DIGIT [ SP reason-phrase ]
	if len(line) < 12 {
		return badUpstream("malformed status line")
	}
	switch string(line[:8]) {
	case "HTTP/1.1":
		r.Minor = 1
	case "HTTP/1.0":
		r.Minor = 0
	default:
		return badUpstream("unsupported HTTP version")
	}
	if line[8] != ' ' || !isDigit(line[9]) || !isDigit(line[10]) || !isDigit(line[11]) || line[9] == '0' {
		return badUpstream("malformed status code")
	}
	r.Status = int(line[9]-'0')*100 + int(line[10]-'0')*10 + int(line[11]-'0')
	if len(line) > 12 {
		if line[12] != ' ' {
			return badUpstream("malformed status line")
		}
		r.Reason = line[13:]
		if !validValue(r.Reason) {
			return badUpstream("invalid character in the reason phrase")
		}
	}
	return nil
}

// responseProblem: whatever is wrong with an upstream's head, the client
// gets 502.
func responseProblem(_ problem, msg string) error { return badUpstream(msg) }

func badUpstream(msg string) *Error {
	return &Error{Status: http.StatusBadGateway, Msg: "upstream: " + msg}
}
