package gateway

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestPlainRouteNotOverTLS: a route with match.plain answers only requests
// that reached the edge without TLS. Over the https listener, HTTP/1.1 or
// HTTP/2 by ALPN, and whatever X-Forwarded-Proto a client claims, its
// twin without plain answers; on the http listener the plain route does,
// whatever X-Forwarded-Proto says.
func TestPlainRouteNotOverTLS(t *testing.T) {
	plainB, anyB := newProbeBackend(t, "plain"), newProbeBackend(t, "any")
	certFile, keyFile, pool := selfSigned(t, t.TempDir(), "a.example")
	e := startEdge(t, fmt.Sprintf("version: 1\nlisten: {http: \"127.0.0.1:0\", https: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: off}\n"+
		"tls:\n  redirect_http: false\n  certificates: [{cert_file: %q, key_file: %q}]\n"+
		"upstreams:\n  p: {endpoints: [%q]}\n  a: {endpoints: [%q]}\n"+
		"routes:\n  - {name: any, match: {host: a.example, path_prefix: /}, upstream: a}\n"+
		"  - {name: plain, match: {host: a.example, path_prefix: /, plain: true}, upstream: p}\n",
		certFile, keyFile, hostPort(plainB.srv), hostPort(anyB.srv)))
	tlsClient := func(h2 bool) *http.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "a.example"}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		c := &http.Client{Timeout: 10 * time.Second, Transport: tr}
		t.Cleanup(c.CloseIdleConnections)
		return c
	}
	plainURL, tlsURL := e.url, "https://"+e.Addr("https")
	for _, tc := range []struct {
		name   string
		client *http.Client
		url    string
		xfp    string
		want   string
		proto  int
	}{
		{name: "http listener", client: http.DefaultClient, url: plainURL, want: "plain", proto: 1},
		{name: "http listener, X-Forwarded-Proto: https", client: http.DefaultClient, url: plainURL, xfp: "https", want: "plain", proto: 1},
		{name: "https, HTTP/1.1", client: tlsClient(false), url: tlsURL, want: "any", proto: 1},
		{name: "https, h2 by ALPN", client: tlsClient(true), url: tlsURL, want: "any", proto: 2},
		{name: "https, h2, X-Forwarded-Proto: http", client: tlsClient(true), url: tlsURL, xfp: "http", want: "any", proto: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, tc.url+"/x", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "a.example"
			if tc.xfp != "" {
				req.Header.Set("X-Forwarded-Proto", tc.xfp)
			}
			res, err := tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if got := res.Header.Get("X-Backend"); res.StatusCode != http.StatusOK || got != tc.want || res.ProtoMajor != tc.proto {
				t.Errorf("%s %d from %q; want 200 from %q over HTTP/%d", res.Proto, res.StatusCode, got, tc.want, tc.proto)
			}
		})
	}
}
