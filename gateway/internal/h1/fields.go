package h1

import "bytes"

// problem is the kind of a refused field section; each side (request,
// response) turns it into its own error.
type problem int

const (
	malformed problem = iota // 400 from a client, 502 from an upstream
	tooLarge                 // the head exceeds MaxHeaderBytes
	tooMany                  // more than MaxHeaders fields
	coding                   // a transfer coding other than chunked
)

// framing is what the fields say about the body and the connection, read
// the same way for requests and responses.
type framing struct {
	sawCL, sawTE     bool
	length           int64
	chunked          bool
	close, keepAlive bool
	upgrade          bool // Connection lists upgrade
}

// readFields reads the field lines of buf from p up to the empty line,
// appending them to *hs, reading the framing fields into f and handing
// every other field to other (nil: none). It returns the offset after the
// empty line, ErrIncomplete, or fail's error.
func readFields(buf []byte, p int, lim Limits, hs *[]Header, f *framing,
	fail func(problem, string) error, other func(name, value []byte) error,
) (int, error) {
	for {
		if p > lim.MaxHeaderBytes {
			return 0, fail(tooLarge, "head too large")
		}
		rest := buf[p:]
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			if len(buf) > lim.MaxHeaderBytes {
				return 0, fail(tooLarge, "head too large")
			}
			return 0, ErrIncomplete
		}
		if p+nl+1 > lim.MaxHeaderBytes {
			return 0, fail(tooLarge, "head too large")
		}
		if nl == 0 || rest[nl-1] != '\r' {
			return 0, fail(malformed, "header line must end in CRLF")
		}
		line := rest[:nl-1]
		p += nl + 1
		if len(line) == 0 {
			return p, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return 0, fail(malformed, "obsolete line folding")
		}
		if len(*hs) == lim.MaxHeaders {
			return 0, fail(tooMany, "too many header fields")
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			// Spaces before the colon too.
			return 0, fail(malformed, "malformed header line")
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		if !validValue(value) {
			return 0, fail(malformed, "invalid character in a header value")
		}
		*hs = append(*hs, Header{Name: name, Value: value})
		var err error
		switch {
		case equalFold(name, "content-length"):
			err = f.setLength(value, fail)
		case equalFold(name, "transfer-encoding"):
			err = f.setCoding(value, fail)
		case equalFold(name, "connection"):
			if !eachToken(value, f.connectionToken) {
				err = fail(malformed, "invalid Connection header")
			}
		case other != nil:
			err = other(name, value)
		}
		if err != nil {
			return 0, err
		}
	}
}

func (f *framing) setLength(v []byte, fail func(problem, string) error) error {
	if f.sawCL {
		return fail(malformed, "more than one Content-Length")
	}
	f.sawCL = true
	n, ok := parseLength(v)
	if !ok {
		return fail(malformed, "invalid Content-Length")
	}
	f.length = n
	return nil
}

func (f *framing) setCoding(v []byte, fail func(problem, string) error) error {
	if f.sawTE {
		return fail(malformed, "more than one Transfer-Encoding")
	}
	f.sawTE = true
	if !equalFold(v, "chunked") {
		return fail(coding, "unsupported transfer coding")
	}
	f.chunked = true
	return nil
}

func (f *framing) connectionToken(t []byte) {
	switch {
	case equalFold(t, "close"):
		f.close = true
	case equalFold(t, "keep-alive"):
		f.keepAlive = true
	case equalFold(t, "upgrade"):
		f.upgrade = true
	}
}

// check is what holds for both sides once all fields are read: never a
// length and a coding together (RFC 9112 6.1 allows reading that as
// chunked; something behind the edge might not: CL.TE, TE.CL), and no
// coding in HTTP/1.0.
func (f *framing) check(minor int, fail func(problem, string) error) error {
	if f.sawCL && f.sawTE {
		return fail(malformed, "Content-Length with Transfer-Encoding")
	}
	if f.chunked && minor == 0 {
		return fail(malformed, "Transfer-Encoding in HTTP/1.0")
	}
	return nil
}

// closes: the sender closes after this message.
func (f *framing) closes(minor int) bool { return f.close || (minor == 0 && !f.keepAlive) }

// bodyLength is the body length the fields give (-1: chunked or none).
func (f *framing) bodyLength() int64 {
	if f.chunked || !f.sawCL {
		return -1
	}
	return f.length
}
