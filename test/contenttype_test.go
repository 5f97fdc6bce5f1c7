package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// answersByPath is an HTTP/1.1 upstream that answers each request with the
// raw response named by its path.
func answersByPath(t *testing.T, answers map[string]string) string {
	t.Helper()
	up := newScriptedUpstream(t, func(u *scriptedUpstream, c net.Conn, req *http.Request) bool {
		_, _ = io.Copy(io.Discard, req.Body)
		a, ok := answers[req.URL.Path]
		if !ok {
			a = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
		}
		_, err := io.WriteString(c, a)
		return err == nil
	})
	return up.addr
}

// edgeClients are an edge in front of up for every client side a response
// reaches the client by: HTTP/1.1 on each engine, HTTP/2 over TLS (ALPN)
// and h2c. Each maps to the base URL and the client to use.
func edgeClients(t *testing.T, up string) map[string]struct {
	base   string
	client *http.Client
} {
	t.Helper()
	out := map[string]struct {
		base   string
		client *http.Client
	}{}
	routesFor := fmt.Sprintf(`upstreams:
  u: {endpoints: [%q], timeout: 10s}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, up)
	for _, engine := range engines {
		e := startEdge(t, engineHeader(engine)+routesFor)
		tr := &http.Transport{DisableCompression: true}
		t.Cleanup(tr.CloseIdleConnections)
		out["HTTP/1.1 "+engine] = struct {
			base   string
			client *http.Client
		}{"http://" + e.Addr("http"), &http.Client{Transport: tr, Timeout: 10 * time.Second}}
	}
	bases, pool := startH2Edges(t, up)
	for proto, tr := range h2Clients(t, pool) {
		tr.DisableCompression = true
		out[proto] = struct {
			base   string
			client *http.Client
		}{bases[proto], &http.Client{Transport: tr, Timeout: 10 * time.Second}}
	}
	return out
}

// An upstream answer without Content-Type reaches the client without one,
// on both HTTP/1.1 engines and over HTTP/2 (h2 and h2c), whatever the body
// looks like, with a known length or streamed; one with a Content-Type
// keeps it as sent; so does the refusal of a WebSocket offer (relayed by
// the tunnel, httputil.ReverseProxy). Envoy and nginx pass the upstream's head as it is.
// Before, net/http's servers (its HTTP/2 server, and its HTTP/1.1 one in
// the deprecated engine) sniffed a type from the first bytes written
// (DetectContentType): "text/html; charset=utf-8" for an HTML-looking
// body, telling a browser to render what the upstream never called HTML.
func TestUpstreamContentTypeNotInvented(t *testing.T) {
	const html = "<html><body>hi</body></html>"
	up := answersByPath(t, map[string]string{
		"/length":  fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(html), html),
		"/chunked": fmt.Sprintf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(html), html),
		"/404":     fmt.Sprintf("HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s", len(html), html),
		"/binary":  "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\x00\x01\x02\x03",
		"/typed":   fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(html), html),
		"/empty":   "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"/refused": fmt.Sprintf("HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n%s", len(html), html),
	})
	cases := []struct {
		path, body string
		status     int
		ctype      []string // nil: absent
		upgrade    bool     // a WebSocket offer (HTTP/1.1 only), the upstream refusing it
	}{
		{"/length", html, 200, nil, false},
		{"/chunked", html, 200, nil, false},
		{"/404", html, 404, nil, false},
		{"/binary", "\x00\x01\x02\x03", 200, nil, false},
		{"/typed", html, 200, []string{"text/plain"}, false},
		{"/empty", "", 200, nil, false},
		{"/refused", html, 403, nil, true},
	}
	for side, c := range edgeClients(t, up) {
		for _, tc := range cases {
			if tc.upgrade && !strings.HasPrefix(side, "HTTP/1.1") {
				continue
			}
			t.Run(side+tc.path, func(t *testing.T) {
				req, err := http.NewRequest(http.MethodGet, c.base+tc.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				if tc.upgrade {
					req.Header.Set("Connection", "Upgrade")
					req.Header.Set("Upgrade", "websocket")
				}
				resp, err := c.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != tc.status || string(b) != tc.body {
					t.Fatalf("%d %q (%v), want %d %q", resp.StatusCode, b, err, tc.status, tc.body)
				}
				if got := resp.Header["Content-Type"]; strings.Join(got, "\x00") != strings.Join(tc.ctype, "\x00") || (got == nil) != (tc.ctype == nil) {
					t.Fatalf("Content-Type %q, want %q", got, tc.ctype)
				}
			})
		}
	}
}

// A 304 reaches every client without Content-Type and Content-Length, and
// with its validators and caching fields: RFC 9110 15.4.5 asks a 304 for
// no other representation metadata, and a cache freshening its stored
// answer with the 304's fields (RFC 9111 4.3.4) would take the type over.
// Both HTTP/1.1 engines already dropped it (net/http's server as its
// suppressedHeaders304, the own engine as net/http); before, net/http's
// HTTP/2 server sent the upstream's Content-Type on to h2 and h2c clients.
func TestNotModifiedWithoutContentType(t *testing.T) {
	up := answersByPath(t, map[string]string{
		"/typed":   "HTTP/1.1 304 Not Modified\r\nContent-Type: text/html\r\nContent-Length: 10\r\nEtag: \"v1\"\r\nCache-Control: max-age=60\r\nVary: Accept\r\n\r\n",
		"/untyped": "HTTP/1.1 304 Not Modified\r\nEtag: \"v2\"\r\n\r\n",
	})
	cases := []struct {
		path string
		kept map[string]string
	}{
		{"/typed", map[string]string{"Etag": `"v1"`, "Cache-Control": "max-age=60", "Vary": "Accept"}},
		{"/untyped", map[string]string{"Etag": `"v2"`}},
	}
	for side, c := range edgeClients(t, up) {
		for _, tc := range cases {
			t.Run(side+tc.path, func(t *testing.T) {
				resp, err := c.client.Get(c.base + tc.path)
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusNotModified || len(b) > 0 {
					t.Fatalf("%d %q (%v), want a 304 without body", resp.StatusCode, b, err)
				}
				for _, k := range []string{"Content-Type", "Content-Length"} {
					if v, ok := resp.Header[k]; ok {
						t.Errorf("%s %q, want none", k, v)
					}
				}
				for k, want := range tc.kept {
					if got := resp.Header.Get(k); got != want {
						t.Errorf("%s %q, want %q", k, got, want)
					}
				}
			})
		}
	}
}
