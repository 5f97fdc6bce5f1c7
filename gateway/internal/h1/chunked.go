package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Chunked-body limits: a chunk-size line (size and extensions), the whole
// trailer section (unless LimitTrailers says less), and the overhead a body
// may carry beyond its data (see nextChunk).
const (
	maxChunkLine    = 4096
	maxTrailerBytes = 16 << 10
	maxHexDigits    = 15 // < 2^60: no overflow, far above any real chunk
	maxExcess       = 16 << 10
)

// ErrChunked is a malformed chunked body: the request is refused (400) and
// the connection closed, since where the next request starts is unknown.
var ErrChunked = errors.New("h1: malformed chunked body")

// ChunkedReader decodes a chunked body (RFC 9112 7.1) strictly: a size is
// 1 to 15 hex digits, extensions are `;name` or `;name=value` with token or
// quoted-string values, every line ends in CRLF, and the trailer section's
// fields are checked as header fields are. It reads through br and stops at
// the end of the trailer section, so br is positioned at the next request.
type ChunkedReader struct {
	br         *bufio.Reader
	left       int64 // bytes left in the current chunk
	excess     int64 // overhead read beyond what the data so far allows
	maxTrailer int   // 0: maxTrailerBytes
	done       bool
	err        error
	trailers   []Header
}

// NewChunkedReader returns a reader of the chunked body at br.
func NewChunkedReader(br *bufio.Reader) *ChunkedReader { return &ChunkedReader{br: br} }

// Reset makes c read a new body from br, keeping its trailer array and
// its trailer limit.
func (c *ChunkedReader) Reset(br *bufio.Reader) {
	*c = ChunkedReader{br: br, maxTrailer: c.maxTrailer, trailers: c.trailers[:0]}
}

// LimitTrailers bounds the trailer section, its fields and the empty line
// that ends it, to n bytes (at most the default 16 KiB). A reader that
// stands in for net/http's needs it: net/http refuses a trailer section
// that does not fit its read buffer, and a body one side accepts must not
// be one the other refuses.
func (c *ChunkedReader) LimitTrailers(n int) {
	c.maxTrailer = min(n, maxTrailerBytes)
}

// Trailers are the trailer fields, once Read has returned io.EOF. They are
// copies: valid after the buffer moves on.
func (c *ChunkedReader) Trailers() []Header { return c.trailers }

func (c *ChunkedReader) Read(p []byte) (n int, err error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.done {
		return 0, io.EOF
	}
	for n < len(p) {
		if c.left == 0 {
			// With data in hand, go on into the next chunk only when its
			// size line is already buffered and it is not the last one
			// (whose trailer section may still be on its way): a Read
			// never waits once it has something to return. A sender of
			// tiny chunks would otherwise cost a Read, and a write and a
			// flush downstream, per chunk: 1-byte chunks, a syscall per
			// byte. net/http's chunked reader coalesces the same way.
			if n > 0 && !c.dataChunkBuffered() {
				return n, nil
			}
			if err := c.nextChunk(); err != nil {
				c.err = err
				return n, err
			}
			if c.done {
				return n, io.EOF
			}
		}
		if n > 0 && c.br.Buffered() == 0 {
			return n, nil
		}
		q := p[n:]
		if int64(len(q)) > c.left {
			q = q[:c.left]
		}
		m, err := c.br.Read(q)
		n += m
		c.left -= int64(m)
		if err = unexpected(err); err != nil {
			c.err = err
			return n, err
		}
		if c.left == 0 {
			// The chunk's data ends in CRLF, nothing else.
			if err := c.expectCRLF(); err != nil {
				c.err = err
				return n, err
			}
		}
	}
	return n, nil
}

// dataChunkBuffered reports whether br holds the whole size line of a
// chunk that is not the last one, so that reading it does not wait. A
// line that does not start with a hex digit is left to the next Read,
// which refuses it.
func (c *ChunkedReader) dataChunkBuffered() bool {
	b, _ := c.br.Peek(c.br.Buffered())
	if bytes.IndexByte(b, '\n') < 0 {
		return false
	}
	for _, ch := range b {
		d, ok := hexVal(ch)
		if !ok {
			return false
		}
		if d != 0 {
			return true
		}
	}
	return false
}

func (c *ChunkedReader) expectCRLF() error {
	b, err := c.br.Peek(2)
	if err != nil {
		return unexpected(err)
	}
	if b[0] != '\r' || b[1] != '\n' {
		return ErrChunked
	}
	_, _ = c.br.Discard(2)
	return nil
}

// line reads one CRLF-terminated line of at most limit bytes, without the
// CRLF. The slice aliases br's buffer until the next read.
func (c *ChunkedReader) line(limit int) ([]byte, error) {
	l, err := c.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, ErrChunked
		}
		return nil, unexpected(err)
	}
	if len(l) > limit || len(l) < 2 || l[len(l)-2] != '\r' {
		return nil, ErrChunked
	}
	return l[:len(l)-2], nil
}

func (c *ChunkedReader) nextChunk() error {
	l, err := c.line(maxChunkLine)
	if err != nil {
		return err
	}
	size, ok := parseChunkLine(l)
	if !ok {
		return ErrChunked
	}
	// Extensions let a sender pad every byte of data with any amount of
	// bytes the reader must parse and throw away. The same bound as
	// net/http's: 16 bytes of overhead per chunk plus twice the chunk's
	// data are free, beyond that at most 16 KiB in all.
	c.excess = max(c.excess+int64(len(l))+2-16-2*size, 0)
	if c.excess > maxExcess {
		return ErrChunked
	}
	if size > 0 {
		c.left = size
		return nil
	}
	// The last chunk: trailer fields, then the empty line.
	limit := maxTrailerBytes
	if c.maxTrailer > 0 {
		limit = c.maxTrailer
	}
	total := 0
	for {
		l, err := c.line(limit)
		if err != nil {
			return err
		}
		total += len(l) + 2
		if total > limit {
			return ErrChunked
		}
		if len(l) == 0 {
			c.done = true
			return nil
		}
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 || !isToken(l[:colon]) {
			return ErrChunked
		}
		v := trimOWS(l[colon+1:])
		if !validValue(v) {
			return ErrChunked
		}
		c.trailers = append(c.trailers, Header{Name: bytes.Clone(l[:colon]), Value: bytes.Clone(v)})
	}
}

// parseChunkLine reads chunk-size [chunk-ext].
func parseChunkLine(l []byte) (int64, bool) {
	i := 0
	var n int64
	for i < len(l) && i < maxHexDigits+1 {
		d, ok := hexVal(l[i])
		if !ok {
			break
		}
		n = n<<4 | int64(d)
		i++
	}
	if i == 0 || i > maxHexDigits {
		return 0, false
	}
	// No whitespace between the size and the first ';': RFC 9112 allows
	// BWS there, net/http does not, and neither side may accept a body
	// the other refuses.
	if i < len(l) && l[i] != ';' {
		return 0, false
	}
	return n, validChunkExt(l[i:])
}

// validChunkExt: *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ).
func validChunkExt(b []byte) bool {
	for len(b) > 0 {
		b = trimLeftBWS(b)
		if len(b) == 0 || b[0] != ';' {
			return false
		}
		b = trimLeftBWS(b[1:])
		j := 0
		for j < len(b) && tchar[b[j]] {
			j++
		}
		if j == 0 {
			return false
		}
		b = trimLeftBWS(b[j:])
		if len(b) == 0 || b[0] != '=' {
			continue
		}
		b = trimLeftBWS(b[1:])
		if len(b) > 0 && b[0] == '"' {
			k, ok := quotedString(b)
			if !ok {
				return false
			}
			b = b[k:]
			continue
		}
		j = 0
		for j < len(b) && tchar[b[j]] {
			j++
		}
		if j == 0 {
			return false
		}
		b = b[j:]
	}
	return true
}

// quotedString returns the length of the quoted-string at the start of b.
func quotedString(b []byte) (int, bool) {
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, true
		case c == '\\':
			i++
			if i == len(b) || (b[i] < ' ' && b[i] != '\t') || b[i] == 0x7f {
				return 0, false
			}
		case (c < ' ' && c != '\t') || c == 0x7f:
			return 0, false
		}
	}
	return 0, false
}

func trimLeftBWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
