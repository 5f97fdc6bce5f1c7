package h1server

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sentTrailers is a response's trailer as a client read it: the fields
// with values, sorted, "Name=v1|v2" each.
func sentTrailers(t http.Header) string {
	var out []string
	for k, vv := range t {
		if len(vv) > 0 {
			out = append(out, k+"="+strings.Join(vv, "|"))
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// TestHandlerTrailersAsHTTP2: the trailers a handler declares (Trailer
// header) or adds late (http.TrailerPrefix) reach an HTTP/1.1 client of
// the engine exactly as they reach an HTTP/2 client of the same server
// (net/http's HTTP/2 server behind h2c): a field RFC 9110 6.5.1 keeps out
// of trailers (Content-Type, Content-Length, Host, Authorization, ...) is
// never written after the body, and a declared one stays in the head, as
// net/http's HTTP/1.1 server keeps it there. Before, the engine wrote them
// all except Transfer-Encoding, Trailer and Content-Length, and moved a
// declared Content-Type out of the head into the trailer section.
func TestHandlerTrailersAsHTTP2(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		declare  string
		late     map[string]string // set after the body, TrailerPrefix'd when prefixed
		prefixed bool
		want     string // the client's trailer: sentTrailers
		wantType string // the head's Content-Type
	}{
		{name: "declared, allowed", declare: "X-Sum, Grpc-Status", late: map[string]string{"X-Sum": "42", "Grpc-Status": "0"},
			want: "Grpc-Status=0 X-Sum=42", wantType: "text/plain"},
		{name: "declared, forbidden", declare: "Content-Type, Host, Authorization, Cache-Control, If-Match, X-Ok",
			late: map[string]string{"Content-Type": "text/evil", "Host": "evil", "Authorization": "evil", "Cache-Control": "evil", "If-Match": "evil", "X-Ok": "1"},
			want: "X-Ok=1", wantType: "text/plain"}, // the head as written, not excluded as a declared trailer
		{name: "prefixed, forbidden", prefixed: true,
			late: map[string]string{"Content-Length": "5", "Host": "evil", "Transfer-Encoding": "chunked", "Www-Authenticate": "evil", "Trailer": "X", "X-Late": "1"},
			want: "X-Late=1", wantType: "text/plain"},
		{name: "prefixed, invalid name", prefixed: true, late: map[string]string{"Bad Name": "1", "X-Late": "1"}, want: "X-Late=1", wantType: "text/plain"},
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i, _ := strconv.Atoi(r.URL.Query().Get("case"))
		c := cases[i]
		w.Header().Set("Content-Type", "text/plain")
		if c.declare != "" {
			w.Header().Set("Trailer", c.declare)
		}
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		for k, v := range c.late {
			if c.prefixed {
				k = http.TrailerPrefix + k
			}
			w.Header()[k] = []string{v}
		}
	})
	_, addr := serveOurs(t, h, func(s *Server) { s.H2C = true })
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 10 * time.Second}
	t.Cleanup(h2c.CloseIdleConnections)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, br := dial(t, addr)
			fmt.Fprintf(conn, "GET /?case=%d HTTP/1.1\r\nHost: h\r\n\r\n", i)
			res1, body1 := mustRead(t, br, "GET")
			res2, err := h2c.Get(fmt.Sprintf("http://%s/?case=%d", addr, i))
			if err != nil {
				t.Fatal(err)
			}
			body2, err := io.ReadAll(res2.Body)
			res2.Body.Close()
			if err != nil || res2.ProtoMajor != 2 {
				t.Fatalf("HTTP/2: %v, %s", err, res2.Proto)
			}
			for _, got := range []struct {
				proto, body, trailer, ctype string
			}{
				{"HTTP/1.1", body1, sentTrailers(res1.Trailer), res1.Header.Get("Content-Type")},
				{"HTTP/2", string(body2), sentTrailers(res2.Trailer), res2.Header.Get("Content-Type")},
			} {
				if got.body != "body" || got.trailer != c.want {
					t.Errorf("%s: body %q, trailer %q; want %q", got.proto, got.body, got.trailer, c.want)
				}
				if got.proto == "HTTP/1.1" && got.ctype != c.wantType {
					t.Errorf("%s: Content-Type %q in the head, want %q", got.proto, got.ctype, c.wantType)
				}
			}
		})
	}
}
