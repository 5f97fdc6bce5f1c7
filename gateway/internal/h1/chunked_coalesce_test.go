package h1

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
)

// countingReader counts the Reads that returned data.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.reads++
	}
	return n, err
}

// A body of tiny chunks that is already buffered comes out in few Reads,
// not one per chunk: each Read of the body becomes a write (and for a
// streamed answer a flush) to the other side, so a sender of 1-byte
// chunks would cost a syscall per byte of data. The last chunk and its
// trailers are still read whole, and the reader stops at the body's end.
func TestChunkedCoalescesBufferedChunks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		chunk     string // one data chunk, repeated
		chunks    int
		trailer   string
		bodyBytes int
	}{
		{"1-byte chunks", "1\r\nx\r\n", 20000, "", 20000},
		{"1-byte chunks with extensions", "1;a=b\r\nx\r\n", 5000, "", 5000},
		{"3-byte chunks, trailers", "3\r\nabc\r\n", 5000, "X-Sum: 1\r\n", 15000},
		{"leading zeros", "0001\r\nx\r\n", 3000, "", 3000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := strings.Repeat(tc.chunk, tc.chunks) + "0\r\n" + tc.trailer + "\r\n"
			const bufSize = 4 << 10
			br := bufio.NewReaderSize(strings.NewReader(in+"NEXT"), bufSize)
			c := NewChunkedReader(br)
			counted := &countingReader{r: c}
			body, err := io.ReadAll(counted)
			if err != nil || len(body) != tc.bodyBytes {
				t.Fatalf("body of %d bytes, %v; want %d", len(body), err, tc.bodyBytes)
			}
			// A Read per buffer fill, give or take the chunk cut at
			// each fill's end; before: a Read per chunk.
			if fills := len(in)/bufSize + 1; counted.reads > 2*fills+2 {
				t.Fatalf("%d Reads for %d chunks in %d buffer fills", counted.reads, tc.chunks, fills)
			}
			if want := strings.Count(tc.trailer, "\r\n"); len(c.Trailers()) != want {
				t.Fatalf("trailers %v, want %d", c.Trailers(), want)
			}
			if rest, _ := io.ReadAll(br); string(rest) != "NEXT" {
				t.Fatalf("left %q for the next message", rest)
			}
		})
	}
}

// A Read that has data never waits for more: not for the next chunk's
// size line, not for its data, not for the last chunk's trailers. The
// sender writes in pieces over a socket and waits for each Read's result
// before it sends more, so a Read that waited would hang the test.
func TestChunkedReadNeverWaitsWithDataInHand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		pieces []string // each sent once the previous Read returned
		want   []string // what each Read returns
	}{
		{"next size line cut", []string{"1\r\na\r\n1", "\r\nb\r\n0\r\n\r\n"}, []string{"a", "b"}},
		{"next chunk's data not yet sent", []string{"1\r\na\r\n2\r\n", "bc\r\n0\r\n\r\n"}, []string{"a", "bc"}},
		{"next chunk's data half sent", []string{"1\r\na\r\n2\r\nb", "c\r\n0\r\n\r\n"}, []string{"ab", "c"}},
		{"last chunk, trailers later", []string{"1\r\na\r\n0\r\n", "X: y\r\n\r\n"}, []string{"a", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			c := NewChunkedReader(bufio.NewReader(client))
			buf := make([]byte, 64)
			for i, piece := range tc.pieces {
				go func() { _, _ = server.Write([]byte(piece)) }()
				n, err := c.Read(buf)
				if i < len(tc.pieces)-1 && err != nil {
					t.Fatalf("read %d: %v", i, err)
				}
				if string(buf[:n]) != tc.want[i] {
					t.Fatalf("read %d: %q, want %q", i, buf[:n], tc.want[i])
				}
			}
		})
	}
}
