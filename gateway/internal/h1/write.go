package h1

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// The request side of the engine's writing: a request head and its body's
// framing, as the edge sends them to an upstream. Everything is checked
// before the first byte goes into the buffer, so a refused request leaves
// nothing on the wire that could be read as part of another one; what is
// written is read by net/http's ReadRequest as the same method, target,
// header, body and trailers (FuzzRequestWriter).

// RequestHead is one request head to write.
type RequestHead struct {
	Method string
	Target string // origin-form (the URL's RequestURI)
	Host   string
	// Header is written as is, except the fields the framing owns
	// (Content-Length, Transfer-Encoding, Trailer) and Host, which are
	// written from the fields below, and User-Agent, of which only the
	// first value goes out (as net/http writes it); an empty User-Agent
	// is left out.
	Header http.Header
	// Framing is NoBody, Length or Chunked.
	Framing       Framing
	ContentLength int64 // Length: the body's length (0 writes Content-Length: 0)
	// Trailer names the fields sent after a chunked body (only their
	// names are written here, in the Trailer field).
	Trailer http.Header
	// Close adds Connection: close unless the header already says it.
	Close bool
}

// WriteError is a request the writer refuses: nothing of it was written.
type WriteError struct{ Msg string }

func (e *WriteError) Error() string { return "h1: " + e.Msg }

// RequestFault says the request, not the upstream, is at fault: the
// proxy then neither retries it nor counts it against the endpoint.
func (e *WriteError) RequestFault() bool { return true }

func refuse(format string, a ...any) error { return &WriteError{Msg: fmt.Sprintf(format, a...)} }

// ownedFields are what RequestHead writes from its own fields, never from
// Header (net/http's Request.Write leaves out the same).
func ownedField(k string) bool {
	switch k {
	case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

// Check refuses a head that would split or corrupt the request on the wire
// (the checks http.Transport makes, plus the framing's): a method that is
// not a token, a target with a control character or a space, an invalid
// Host, a header field name that is not a token or a value with CR, LF or
// another control character, a trailer field RFC 9110 6.5.1 keeps out of
// trailers, trailers without chunked framing.
func (h *RequestHead) Check() error {
	if !isTokenString(h.Method) {
		return refuse("invalid method %q", h.Method)
	}
	if h.Target == "" {
		return refuse("empty request target")
	}
	for i := range len(h.Target) {
		if c := h.Target[i]; c <= ' ' || c == 0x7f {
			return refuse("control character or space in the request target")
		}
	}
	if h.Host == "" || !httpguts.ValidHostHeader(h.Host) || !asciiPrintable(h.Host) {
		return refuse("invalid Host %q", h.Host)
	}
	for k, vv := range h.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return refuse("invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return refuse("invalid header field value for %q", k)
			}
		}
	}
	switch h.Framing {
	case NoBody, Chunked:
	case Length:
		if h.ContentLength < 0 {
			return refuse("negative Content-Length")
		}
	default:
		return refuse("a request body is framed by length or chunked")
	}
	if len(h.Trailer) > 0 && h.Framing != Chunked {
		return refuse("trailers need a chunked body")
	}
	for k := range h.Trailer {
		if err := checkTrailerName(k); err != nil {
			return err
		}
	}
	return nil
}

// checkTrailerName refuses what the response side refuses to read
// (announcedTrailer, readTrailers): a name that is not a token, and the
// fields that must not come after a body (framing, routing,
// authentication, controls), which something behind the upstream could
// merge into the header.
func checkTrailerName(k string) error {
	if !httpguts.ValidHeaderFieldName(k) {
		return refuse("invalid trailer field name %q", k)
	}
	if !httpguts.ValidTrailerHeader(k) {
		return refuse("forbidden trailer field %s", http.CanonicalHeaderKey(k))
	}
	return nil
}

// Write checks h and writes it to w. Nothing is written when it is refused.
func (h *RequestHead) Write(w *bufio.Writer) error {
	if err := h.Check(); err != nil {
		return err
	}
	w.WriteString(h.Method)
	w.WriteByte(' ')
	w.WriteString(h.Target)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(h.Host)
	w.WriteString("\r\n")
	if ua := h.Header["User-Agent"]; len(ua) > 0 && trimOWSString(ua[0]) != "" {
		writeField(w, "User-Agent", ua[0])
	}
	for k, vv := range h.Header {
		if ownedField(k) {
			continue
		}
		for _, v := range vv {
			writeField(w, k, v)
		}
	}
	if h.Close && !hasCloseToken(h.Header["Connection"]) {
		w.WriteString("Connection: close\r\n")
	}
	switch h.Framing {
	case Length:
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(w.AvailableBuffer(), h.ContentLength, 10))
		w.WriteString("\r\n")
	case Chunked:
		w.WriteString("Transfer-Encoding: chunked\r\n")
		if len(h.Trailer) > 0 {
			w.WriteString("Trailer: ")
			first := true
			for k := range h.Trailer {
				if !first {
					w.WriteString(", ")
				}
				first = false
				w.WriteString(k)
			}
			w.WriteString("\r\n")
		}
	}
	_, err := w.WriteString("\r\n")
	return err
}

// writeField writes one field line; the value without the whitespace
// around it, as net/http writes it and as every reader takes it.
func writeField(w *bufio.Writer, k, v string) {
	w.WriteString(k)
	w.WriteString(": ")
	w.WriteString(trimOWSString(v))
	w.WriteString("\r\n")
}

func hasCloseToken(vv []string) bool {
	for _, v := range vv {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(trimOWSString(t), "close") {
				return true
			}
		}
	}
	return false
}

// ErrBodyLength is a body that does not match the Content-Length its head
// announced: the request cannot be completed and its connection must be
// closed (the upstream sees a short body and the close, never a complete
// request).
var ErrBodyLength = errors.New("h1: request body does not match its Content-Length")

// BodyWriter frames a request body as its head announced: Length bodies as
// they are, refusing a byte more or less than announced; Chunked bodies one
// chunk per Write, ended by Close with the last chunk and the trailer
// fields. A body that fails before Close must not be completed: the caller
// closes the connection instead, so the upstream never gets the last chunk
// (or the last bytes) of a body that was cut.
type BodyWriter struct {
	w          *bufio.Writer
	framing    Framing
	left       int64 // Length: bytes still announced
	maxTrailer int   // 0: maxTrailerBytes
}

// Reset makes b write a body with framing f (and length n for Length) to
// w, keeping its trailer limit.
func (b *BodyWriter) Reset(w *bufio.Writer, f Framing, n int64) {
	*b = BodyWriter{w: w, framing: f, left: n, maxTrailer: b.maxTrailer}
}

// LimitTrailers bounds the trailer section Close writes, its fields and
// the empty line that ends it, to n bytes (at most the default 16 KiB), as
// ChunkedReader.LimitTrailers bounds what is read: a section net/http
// would refuse to read is not sent.
func (b *BodyWriter) LimitTrailers(n int) {
	b.maxTrailer = min(n, maxTrailerBytes)
}

func (b *BodyWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil // an empty chunk would end the body
	}
	switch b.framing {
	case Length:
		if int64(len(p)) > b.left {
			return 0, ErrBodyLength
		}
		n, err := b.w.Write(p)
		b.left -= int64(n)
		return n, err
	case Chunked:
		b.w.Write(strconv.AppendInt(b.w.AvailableBuffer(), int64(len(p)), 16))
		b.w.WriteString("\r\n")
		n, err := b.w.Write(p)
		if err == nil {
			_, err = b.w.WriteString("\r\n")
		}
		return n, err
	}
	return 0, ErrBodyLength // no body was announced
}

// Left is how many bytes a Length body still has to get before it is
// complete (0 for other framings).
func (b *BodyWriter) Left() int64 {
	if b.framing != Length {
		return 0
	}
	return b.left
}

// FrameRoom is the room WriteFramed needs around a piece of data: before
// it, a chunk's size line (15 hex digits at most, and CRLF); after it, the
// CRLF that ends the chunk.
const (
	FrameHeadRoom = maxHexDigits + 2
	FrameTailRoom = 2
)

// WriteFramed writes the n bytes at buf[FrameHeadRoom:] as Write does, but
// a chunk's size line and end are put around the data in buf itself, so
// that the chunk goes out as one piece: a chunk larger than the write
// buffer reaches the socket in one write instead of three. buf must hold
// FrameTailRoom bytes after the data; those around it are overwritten.
func (b *BodyWriter) WriteFramed(buf []byte, n int) (int, error) {
	data := buf[FrameHeadRoom : FrameHeadRoom+n]
	if b.framing != Chunked || n == 0 {
		return b.Write(data)
	}
	var size [maxHexDigits + 2]byte
	line := append(strconv.AppendInt(size[:0], int64(n), 16), '\r', '\n')
	start := FrameHeadRoom - len(line)
	copy(buf[start:], line)
	end := FrameHeadRoom + n
	buf[end], buf[end+1] = '\r', '\n'
	if _, err := b.w.Write(buf[start : end+2]); err != nil {
		return 0, err
	}
	return n, nil
}

// Close ends the body: for Length it checks that every announced byte was
// written; for Chunked it checks trailer and writes the last chunk and the
// trailer fields. Nothing is written when it refuses.
func (b *BodyWriter) Close(trailer http.Header) error {
	switch b.framing {
	case Length, NoBody:
		if b.left != 0 {
			return ErrBodyLength
		}
		if len(trailer) > 0 {
			return refuse("trailers need a chunked body")
		}
		return nil
	}
	limit := maxTrailerBytes
	if b.maxTrailer > 0 {
		limit = b.maxTrailer
	}
	size := 2 // the empty line
	for k, vv := range trailer {
		if err := checkTrailerName(k); err != nil {
			return err
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return refuse("invalid trailer field value for %q", k)
			}
			size += len(k) + 2 + len(trimOWSString(v)) + 2
		}
	}
	if size > limit {
		return refuse("trailer section of %d bytes, more than %d", size, limit)
	}
	b.w.WriteString("0\r\n")
	for k, vv := range trailer {
		for _, v := range vv {
			writeField(b.w, k, v)
		}
	}
	_, err := b.w.WriteString("\r\n")
	return err
}

func isTokenString(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if !tchar[s[i]] {
			return false
		}
	}
	return true
}

// asciiPrintable: the Host goes out as it is (no IDNA conversion), so
// it must be ASCII already.
func asciiPrintable(s string) bool {
	for i := range len(s) {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

func trimOWSString(s string) string {
	return strings.Trim(s, " \t")
}
