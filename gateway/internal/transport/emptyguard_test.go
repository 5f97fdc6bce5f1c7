package transport

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
)

// chunkConn serves a scripted stream in reads of the given sizes.
type chunkConn struct {
	net.Conn
	data  []byte
	sizes []int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(c.data)
	if len(c.sizes) > 0 {
		n = min(n, max(c.sizes[0], 1))
		c.sizes = c.sizes[1:]
	}
	n = copy(p[:min(len(p), n)], c.data)
	c.data = c.data[n:]
	return n, nil
}

// readGuarded reads everything the guard lets through, as a bufio.Reader
// under http.Transport would: until an error.
func readGuarded(t testing.TB, stream []byte, sizes []int, head bool) []byte {
	t.Helper()
	g := &emptyGuardConn{Conn: &chunkConn{data: stream, sizes: sizes}}
	g.expect(head)
	var out []byte
	buf := make([]byte, 4096)
	for range 10000 {
		n, err := g.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("read: %v", err)
			}
			return out
		}
	}
	t.Fatal("the guard never ended the stream")
	return nil
}

// The guard ends a connection's input right after the head of a response
// that has no body by rule, however the head is split across reads, and
// passes every other response untouched.
func TestEmptyGuard(t *testing.T) {
	const stray = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nLEAK"
	tests := []struct {
		name     string
		head     bool
		stream   string
		wantHead string // "" : the whole stream passes
	}{
		{"204 then stray bytes", false, "HTTP/1.1 204 No Content\r\nX: 1\r\n\r\n" + stray, "HTTP/1.1 204 No Content\r\nX: 1\r\n\r\n"},
		{"304 then stray bytes", false, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n" + stray, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"},
		{"HTTP/1.0 204", false, "HTTP/1.0 204 No Content\r\n\r\nLEAK", "HTTP/1.0 204 No Content\r\n\r\n"},
		{"HEAD answered with a body", true, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nLEAK", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"},
		{"100 Continue then 204", false, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nLEAK", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"},
		{"200 with a body", false, "HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", ""},
		{"404 with a body", false, "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno", ""},
		{"not HTTP", false, "garbage 204\r\n\r\nmore", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.wantHead
			if want == "" {
				want = tt.stream
			}
			// One read, then every split of the head into reads of the
			// same size, from 1 byte up (the 1xx case needs its head read
			// whole before the next response starts a read).
			if got := readGuarded(t, []byte(tt.stream), nil, tt.head); string(got) != want {
				t.Fatalf("one read: got %q, want %q", got, want)
			}
			for size := 12; size < len(tt.stream); size++ {
				if tt.name == "100 Continue then 204" && size != len("HTTP/1.1 100 Continue\r\n\r\n") {
					continue
				}
				sizes := make([]int, len(tt.stream))
				for i := range sizes {
					sizes[i] = size
				}
				if got := readGuarded(t, []byte(tt.stream), sizes, tt.head); string(got) != want {
					t.Fatalf("reads of %d: got %q, want %q", size, got, want)
				}
			}
		})
	}
}

// Unarmed (no request given the connection yet), the guard passes
// everything: an unsolicited response is http.Transport's to refuse.
func TestEmptyGuardUnarmed(t *testing.T) {
	stream := "HTTP/1.1 204 No Content\r\n\r\nLEAK"
	g := &emptyGuardConn{Conn: &chunkConn{data: []byte(stream)}}
	b, _ := io.ReadAll(g)
	if string(b) != stream {
		t.Fatalf("got %q", b)
	}
}

// For any stream and any split into reads, the guard returns a prefix of
// the stream; when it ends early, what it returned ends with the end of a
// head and starts with a bodiless status (or answers HEAD).
func FuzzEmptyGuard(f *testing.F) {
	f.Add([]byte("HTTP/1.1 204 No Content\r\n\r\nLEAK"), []byte{3, 40, 1}, false)
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), []byte{12}, true)
	f.Add([]byte("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\nx"), []byte{40, 5}, false)
	f.Fuzz(func(t *testing.T, stream, splits []byte, head bool) {
		sizes := make([]int, len(splits))
		for i, s := range splits {
			sizes[i] = int(s)
		}
		got := readGuarded(t, stream, sizes, head)
		if !bytes.HasPrefix(stream, got) {
			t.Fatalf("returned %q, not a prefix of %q", got, stream)
		}
		if len(got) < len(stream) {
			if !bytes.HasSuffix(got, []byte("\r\n\r\n")) {
				t.Fatalf("ended early at %q, not after a head", got)
			}
			if _, ok := responseStatus(got); !ok {
				t.Fatalf("ended early after %q, not a response", got)
			}
		}
	})
}
