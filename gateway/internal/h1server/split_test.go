package h1server

import (
	"crypto/tls"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// splitHandler is echo, made to take the paths the connection's reader
// takes besides reading a whole body at once: "slow" in the path runs the
// handler past backgroundReadDelay (the background read is then pending
// when the next request's bytes arrive), m=skip answers without reading
// the body (finish reads it away, or the connection closes), m=half reads
// ten bytes of it first.
var splitHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if strings.Contains(r.URL.Path, "slow") {
		time.Sleep(2 * backgroundReadDelay)
	}
	switch r.URL.Query().Get("m") {
	case "skip":
		_, _ = io.WriteString(w, "skipped "+r.URL.Path)
		return
	case "half":
		b := make([]byte, 10)
		n, _ := io.ReadFull(r.Body, b)
		_, _ = io.WriteString(w, "half "+r.URL.Path+" "+string(b[:n]))
		return
	}
	echo(w, r)
})

// splitPipeline is a pipeline of 12 random requests: heads large enough to
// move to the large reader (grow), Content-Length, chunked (extensions,
// trailers) and Expect: 100-continue bodies, handled by splitHandler's
// paths.
func splitPipeline(rng *mrand.Rand, round int) string {
	var b strings.Builder
	for i := range 12 {
		path := fmt.Sprintf("/r%d-%d", round, i)
		if rng.IntN(3) == 0 {
			path += "slow"
		}
		path += []string{"", "?m=skip", "?m=half"}[rng.IntN(3)]
		// Bodies that read as requests: read as one, the answers would
		// no longer match net/http's.
		body := strings.Repeat("x", rng.IntN(3000)) + "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
		switch rng.IntN(4) {
		case 0:
			fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: h\r\nX-Pad: %s\r\n\r\n", path, strings.Repeat("p", rng.IntN(6000)))
		case 1:
			fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
		case 2:
			fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n%x;e=\"q\\\"x\"\r\n%s\r\n1\r\ny\r\n0\r\nX-T: 1\r\n\r\n", path, len(body), body)
		case 3:
			fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
		}
	}
	return b.String()
}

// sendSplit writes in on c in pieces of 1 to 300 bytes, with pauses of up
// to 8 ms (past backgroundReadDelay and the wait before parking), shuts
// the write side, and returns all that came back.
func sendSplit(t *testing.T, c net.Conn, in string, seed uint64) []byte {
	t.Helper()
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	rng := mrand.New(mrand.NewPCG(seed, 1))
	done := make(chan []byte)
	go func() { out, _ := io.ReadAll(c); done <- out }()
	for len(in) > 0 {
		n := min(len(in), 1+rng.IntN(300))
		if _, err := io.WriteString(c, in[:n]); err != nil {
			break // the server closed (a refusal, a body it will not read)
		}
		in = in[n:]
		if rng.IntN(8) == 0 {
			time.Sleep(time.Duration(rng.IntN(9)) * time.Millisecond)
		}
	}
	type closeWriter interface{ CloseWrite() error }
	_ = c.(closeWriter).CloseWrite()
	return <-done
}

// Pipelines split at every place, over plain TCP and TLS, 45 of 12
// requests each (1080 per transport): the answers are net/http's for the
// same bytes sent at once, in order, none lost, none made of a body. One
// difference is deliberate: net/http closes after an Expect: 100-continue
// body the handler read only part of, though the client was told to send
// it; this server reads it away and goes on. So where net/http stops
// there, this server may answer more, never fewer.
func TestPipelinesSplitAnywhere(t *testing.T) {
	theirs := serveNetHTTP(t, splitHandler)
	_, plain := serveOurs(t, splitHandler, nil)
	_, overTLS, pool := serveOursTLS(t, splitHandler, nil)
	for _, tc := range []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"plain", func() (net.Conn, error) { return net.Dial("tcp", plain) }},
		{"TLS", func() (net.Conn, error) {
			return tls.Dial("tcp", overTLS, &tls.Config{RootCAs: pool, ServerName: "example.com", NextProtos: []string{"http/1.1"}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := mrand.New(mrand.NewPCG(3, 3))
			for round := range 45 {
				in := splitPipeline(rng, round)
				c, err := tc.dial()
				if err != nil {
					t.Fatal(err)
				}
				method := func(int) string { return "GET" }
				ours := readAnswers(sendSplit(t, c, in, uint64(round)), method)
				ref := readAnswers(exchange(t, theirs, in), method)
				if len(ours) < len(ref) {
					t.Fatalf("round %d: %d answers, net/http %d", round, len(ours), len(ref))
				}
				for i, a := range ref {
					if a.status != ours[i].status || a.body != ours[i].body {
						t.Fatalf("round %d, answer %d:\nours     %d %.300q\nnet/http %d %.300q", round, i, ours[i].status, ours[i].body, a.status, a.body)
					}
				}
				if len(ours) > len(ref) && !strings.HasPrefix(ref[len(ref)-1].body, "half ") {
					t.Fatalf("round %d: %d answers, net/http %d, ending with %d %.100q", round, len(ours), len(ref), ref[len(ref)-1].status, ref[len(ref)-1].body)
				}
			}
		})
	}
}
