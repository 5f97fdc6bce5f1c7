package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/internal/testutil"
)

// Through the whole edge: an upstream answer that two HTTP/1.1 parsers
// could frame two ways is a 502 for the client, and the whole response the
// upstream hid behind it never reaches anyone: the next request, on the
// same client connection, gets its own answer. The smuggled response
// would be served as the next answer by a reader that took the first
// one's framing the other way and kept the connection.
func TestH1EdgeRefusesAmbiguousUpstreamResponses(t *testing.T) {
	const smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"
	for _, tc := range []struct{ name, resp string }{
		{"CL.TE", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"TE.CL", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 46\r\n\r\n0\r\n\r\n"},
		{"two Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n Content-Length: 46\r\nContent-Length: 0\r\n\r\n"},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n"},
		{"space before the colon", "HTTP/1.1 200 OK\r\nContent-Length : 46\r\nContent-Length: 0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := testutil.ServeConns(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if strings.HasPrefix(req.URL.Path, "/bad") {
						io.WriteString(c, tc.resp+smuggled)
						continue
					}
					body := "resp:" + req.URL.Path
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				}
			})
			te := startEdge(t, edgeConfig(addr))
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			t.Cleanup(client.CloseIdleConnections)
			for i := range 30 {
				resp, err := client.Get(fmt.Sprintf("%s/bad/%d", te.url, i))
				if err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadGateway || strings.Contains(string(b), "SMUGGLED") {
					t.Fatalf("round %d: %d %q, want 502", i, resp.StatusCode, b)
				}
				next := fmt.Sprintf("/next/%d", i)
				resp, err = client.Get(te.url + next)
				if err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
				b, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(b) != "resp:"+next {
					t.Fatalf("round %d: GET %s got %d %q", i, next, resp.StatusCode, b)
				}
			}
		})
	}
}
