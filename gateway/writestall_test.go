package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// streamingUpstream writes a response without end until the edge goes away,
// and reports when its request's context is cancelled.
func streamingUpstream(t *testing.T) (addr string, cancelled <-chan string) {
	t.Helper()
	done := make(chan string, 16)
	chunk := []byte(strings.Repeat("x", 32<<10))
	addr = httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		rc := http.NewResponseController(w)
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				break
			}
			_ = rc.Flush()
		}
		<-r.Context().Done()
		done <- r.URL.Path
	})
	return addr, done
}

// A client that stops reading a large streamed response is cut after
// write_stall_timeout, over HTTP/1.1 and HTTP/2 (one stream), and the
// upstream request is cancelled instead of being held open forever.
func TestWriteStallCancelsUpstream(t *testing.T) {
	up, cancelled := streamingUpstream(t)
	te := startEdge(t, listenHeader+fmt.Sprintf("server: {write_stall_timeout: 300ms}\nupstreams:\n  a: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: a}\n", up))
	waitCancelled := func(t *testing.T, path string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case p := <-cancelled:
				if p == path {
					return
				}
			case <-timeout:
				t.Fatalf("the upstream request %s was not cancelled while the client did not read", path)
			}
		}
	}
	t.Run("HTTP/1.1", func(t *testing.T) {
		c, err := net.Dial("tcp", te.Addr("http"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /h1 HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("response %v %v", resp, err)
		}
		// Read a little, then stop reading with the connection open.
		if _, err := io.ReadFull(resp.Body, make([]byte, 1<<10)); err != nil {
			t.Fatal(err)
		}
		waitCancelled(t, "/h1")
	})
	t.Run("HTTP/2", func(t *testing.T) {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: &p}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(te.url + "/h2")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("over %s, want HTTP/2", resp.Proto)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 1<<10)); err != nil {
			t.Fatal(err)
		}
		waitCancelled(t, "/h2")
	})
}

// The stall deadline a response leaves on its keep-alive connection (armed
// at its end, for what the server writes after the handler returns) must
// not cut the next request's first write, which the engine may make before
// any write of the handler arms a deadline of its own: here the 100
// Continue it sends when the request's body is first read, after the
// connection sat idle for longer than write_stall_timeout.
func TestWriteStallDeadlineOfPreviousResponse(t *testing.T) {
	up := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "%s %d", r.URL.Path, len(b))
	})
	const stall = 150 * time.Millisecond
	for _, engine := range []string{"causeway", "net/http"} {
		t.Run(engine, func(t *testing.T) {
			te := startEdge(t, listenHeader+fmt.Sprintf("server: {http1_engine: %q, write_stall_timeout: %s}\nupstreams:\n  a: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: a}\n", engine, stall, up))
			c, err := net.Dial("tcp", te.Addr("http"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			if _, err := io.WriteString(c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || string(b) != "/first 0" {
				t.Fatalf("first: %d %q", resp.StatusCode, b)
			}
			// Idle past the deadline the first response left.
			time.Sleep(3 * stall)
			if _, err := io.WriteString(c, "POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			line, err := br.ReadString('\n')
			if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
				t.Fatalf("second: got %q %v, want a 100 Continue", line, err)
			}
			if blank, err := br.ReadString('\n'); err != nil || blank != "\r\n" {
				t.Fatalf("after the 100 Continue: %q %v", blank, err)
			}
			if _, err := io.WriteString(c, "hello"); err != nil {
				t.Fatal(err)
			}
			resp, err = http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || string(b) != "/second 5" {
				t.Fatalf("second: %d %q", resp.StatusCode, b)
			}
		})
	}
}
