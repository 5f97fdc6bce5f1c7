package gateway

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// An HTTP/2 request with a declared content-length ends only with
// END_STREAM: a client that sends every declared byte and then resets the
// stream (RST_STREAM CANCEL) instead has abandoned the request. Forwarded to
// an HTTP/1.1 upstream with a Content-Length, the last bytes must not go out
// before the client's body has ended, or the upstream reads a complete
// request the client reset and serves it. (Go's own HTTP/2 client reads the
// end of its body before it sends the last DATA frame; this client is
// written frame by frame.) Bodies over the 4 KiB write buffer are the ones
// at risk: smaller ones sat in the buffer until the end anyway. Before the
// fix the upstream read every body of 5,000 bytes and more whole.
func TestH2ClientResetAfterDeclaredBodyNeverCompletesUpstream(t *testing.T) {
	type outcome struct {
		n   int
		err error
	}
	started := make(chan struct{}, 1)
	results := make(chan outcome, 1)
	up := atkServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		b, err := io.ReadAll(r.Body)
		results <- outcome{len(b), err}
		if err == nil {
			_, _ = io.WriteString(w, "served")
		}
	}))
	te := startEdge(t, edgeConfig(up))
	addr := strings.TrimPrefix(te.url, "http://")
	for _, size := range []int{1, 4095, 5000, 20000, 60000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			for round := range 10 {
				// Round 0 is the control: the same request ended with
				// END_STREAM is read whole.
				control := round == 0
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
					t.Fatal(err)
				}
				fr := http2.NewFramer(nc, nc)
				var hbuf bytes.Buffer
				enc := hpack.NewEncoder(&hbuf)
				for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "a.test"}, {":path", "/upload"}, {"content-length", strconv.Itoa(size)}} {
					_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
				}
				if err := fr.WriteSettings(); err != nil {
					t.Fatal(err)
				}
				if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hbuf.Bytes(), EndHeaders: true}); err != nil {
					t.Fatal(err)
				}
				// Every declared byte, within the initial 65,535-byte
				// windows, and no END_STREAM.
				data := bytes.Repeat([]byte("b"), size)
				for len(data) > 0 {
					n := min(len(data), 16384)
					if err := fr.WriteData(1, control && n == len(data), data[:n]); err != nil {
						t.Fatal(err)
					}
					data = data[n:]
				}
				<-started
				if control {
					got := <-results
					nc.Close()
					if got.err != nil || got.n != size {
						t.Fatalf("control: the upstream read %d of %d bytes, err %v", got.n, size, got.err)
					}
					continue
				}
				// Give the bytes time to reach the upstream (before the fix
				// they did at once); a correct edge holds back the last of
				// them however long this is.
				var got outcome
				timer := time.NewTimer(100 * time.Millisecond)
				select {
				case got = <-results:
					timer.Stop()
				case <-timer.C:
				}
				if err := fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
					t.Fatal(err)
				}
				if got == (outcome{}) {
					got = <-results
				}
				nc.Close()
				if got.err == nil {
					t.Fatalf("round %d: the upstream read the whole %d-byte body of a request its client reset before END_STREAM", round, got.n)
				}
			}
		})
	}
}
