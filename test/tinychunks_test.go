package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// tinyChunkUpstream answers every request with a chunked body of n
// 1-byte chunks, head and body in one write, on a raw socket.
func tinyChunkUpstream(t *testing.T, n int) string {
	t.Helper()
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n" +
		strings.Repeat("1\r\nx\r\n", n) + "0\r\n\r\n")
	return testutil.ServeConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if _, err := c.Write(answer); err != nil {
				return
			}
		}
	})
}

// readChunks reads one chunked answer to a GET on a raw connection and
// returns its data length and how many chunks carried it.
func readChunks(t *testing.T, addr string) (data, chunks int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second)) // a hang guard
	if _, err := io.WriteString(c, "GET /tiny HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReaderSize(c, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || len(resp.TransferEncoding) == 0 {
		t.Fatalf("status %d, Transfer-Encoding %v: want 200 chunked", resp.StatusCode, resp.TransferEncoding)
	}
	// net/http's reader would join the chunks: they are counted here.
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d chunks: %v", chunks, err)
		}
		size, err := strconv.ParseInt(strings.TrimRight(line, "\r\n"), 16, 64)
		if err != nil {
			t.Fatalf("chunk size line %q", line)
		}
		if size == 0 {
			return data, chunks
		}
		if _, err := io.CopyN(io.Discard, br, size+2); err != nil {
			t.Fatal(err)
		}
		data += int(size)
		chunks++
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// An upstream that sends its body as 1-byte chunks (6 bytes on the wire
// per byte of data) must not make the edge pay a read, a write and a flush
// to the client, a syscall, per byte: the chunks it has buffered are read
// at once, and the client gets them in few chunks.
func TestTinyUpstreamChunksAreCoalesced(t *testing.T) {
	const n = 20000
	e := startEdge(t, header+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, tinyChunkUpstream(t, n)))
	const rounds = 10
	total := 0
	start := cpuTime()
	for range rounds {
		data, chunks := readChunks(t, e.Addr("http"))
		if data != n {
			t.Fatalf("the client got %d bytes of %d", data, n)
		}
		// The edge reads its upstream 4 KiB at a time: about 700
		// 1-byte chunks a read. A chunk to the client for every 50
		// sent is far more than that allows, and far less than the
		// chunk a byte that a Read per chunk gives.
		if chunks > n/50 {
			t.Fatalf("the client got %d bytes in %d chunks: the edge wrote a chunk per upstream chunk", data, chunks)
		}
		total += chunks
	}
	t.Logf("%d rounds of %d 1-byte upstream chunks: %d chunks to the client a round on average; test process CPU %v",
		rounds, n, total/rounds, (cpuTime() - start).Round(time.Millisecond))
}
