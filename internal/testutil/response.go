package testutil

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
)

// ReadSizedResponse reads one HTTP/1.1 200 response framed by its
// Content-Length from br, with no allocation per call beyond the
// length's: the raw client of server benchmarks, so that their numbers
// are the server's rather than a client's parser.
func ReadSizedResponse(br *bufio.Reader) error {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("response %q", line)
	}
	n := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) == 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			if n, err = strconv.Atoi(string(bytes.TrimSpace(v))); err != nil {
				return err
			}
		}
	}
	if n < 0 {
		return io.ErrUnexpectedEOF
	}
	_, err = br.Discard(n)
	return err
}
