package test

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/causewayhq/causeway/plugins/standard" // ip_filter
)

// Header and request-line sanitising (issue 15, items 4 and 7-12): what a
// hostile client sends against what the upstream really received.

// headerUpstream records the request line and headers of every request
// that reached it, by the X-Test-Id the test gave the request.
type headerUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen map[string]seenRequest
}

type seenRequest struct {
	Method, Host, Path, RawURI string
	Header                     http.Header
}

func newHeaderUpstream(t *testing.T) *headerUpstream {
	t.Helper()
	u := &headerUpstream{seen: map[string]seenRequest{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		u.mu.Lock()
		u.seen[r.Header.Get("X-Test-Id")] = seenRequest{Method: r.Method, Host: r.Host, Path: r.URL.Path, RawURI: r.RequestURI, Header: r.Header.Clone()}
		u.mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(u.Close)
	return u
}

// got returns what the upstream saw for id; ok is false when the request
// never reached it.
func (u *headerUpstream) got(id string) (seenRequest, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s, ok := u.seen[id]
	return s, ok
}

func (u *headerUpstream) addr() string { return strings.TrimPrefix(u.URL, "http://") }

// protocols are the client sides every case runs over: HTTP/1.1 and
// HTTP/2 with prior knowledge (h2c) on the edge's plain listener.
func protocols(t *testing.T) map[string]*http.Client {
	t.Helper()
	h1 := &http.Transport{DisableCompression: true}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Transport{Protocols: &p, DisableCompression: true}
	t.Cleanup(h1.CloseIdleConnections)
	t.Cleanup(h2.CloseIdleConnections)
	return map[string]*http.Client{"HTTP/1.1": {Transport: h1}, "HTTP/2": {Transport: h2}}
}

// send makes one request with headers set verbatim (names not
// canonicalised, so underscores and case reach the wire as written).
func send(t *testing.T, c *http.Client, method, url, host string, hdr [][2]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for _, kv := range hdr {
		req.Header[kv[0]] = append(req.Header[kv[0]], kv[1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	if tr, ok := c.Transport.(*http.Transport); ok && tr.Protocols != nil && resp.ProtoMajor != 2 {
		t.Fatalf("the HTTP/2 client spoke %s", resp.Proto)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// wantJSONError checks a refusal: the status and Causeway's JSON body.
func wantJSONError(t *testing.T, status int, resp *http.Response, body string) {
	t.Helper()
	var e struct {
		Error     string `json:"error"`
		Status    int    `json:"status"`
		RequestID string `json:"request_id"`
	}
	if resp.StatusCode != status || json.Unmarshal([]byte(body), &e) != nil || e.Status != status || e.Error == "" || e.RequestID == "" {
		t.Fatalf("want %d with a JSON error body; got %d %q", status, resp.StatusCode, body)
	}
}

// spoofable are headers upstream frameworks build URLs, schemes and client
// addresses from; each value names the header so a leak is visible.
var spoofable = [][2]string{
	{"X-Forwarded-For", "6.6.6.6"}, {"X-Forwarded-Proto", "https"}, {"X-Forwarded-Host", "evil.example"},
	{"X-Forwarded-Port", "6666"}, {"X-Forwarded-Prefix", "/evil"}, {"X-Forwarded-Ssl", "on"},
	{"X-Forwarded-Scheme", "https"}, {"X-Forwarded-Server", "evil"}, {"X-Forwarded-Uri", "/evil"},
	{"X-Forwarded-Client-Cert", "Hash=evil"}, {"x-forwarded-anything-at-all-longer-than-thirty-two", "evil"},
	{"Forwarded", "for=6.6.6.6;proto=https"},
	{"X-Real-IP", "6.6.6.6"}, {"True-Client-IP", "6.6.6.6"}, {"X-Client-IP", "6.6.6.6"}, {"Client-IP", "6.6.6.6"},
	{"X-Cluster-Client-IP", "6.6.6.6"}, {"CF-Connecting-IP", "6.6.6.6"}, {"X-Original-Forwarded-For", "6.6.6.6"},
	{"X-Causeway-Mirror", "evil"}, // the mark a shadow service tells mirrored requests by
	// Envoy's statement of the client's address and of an internal
	// request, which services behind Envoy (and Envoy itself, from a
	// trusted hop) believe; and other client-address names frameworks read.
	{"X-Envoy-External-Address", "6.6.6.6"}, {"X-Envoy-Internal", "evil"}, {"x-envoy-retry-on", "evil"},
	{"X-Forwarded", "for=6.6.6.6"}, {"Fastly-Client-IP", "6.6.6.6"}, {"X-Originating-IP", "6.6.6.6"},
	{"X-Remote-IP", "6.6.6.6"}, {"X-Remote-Addr", "6.6.6.6"},
}

var urlOverrides = [][2]string{
	{"X-Original-URL", "/admin"}, {"X-Rewrite-URL", "/admin"}, {"X-Override-URL", "/admin"},
	{"X-Original-URI", "/admin"}, {"X-Envoy-Original-Path", "/admin"}, {"x-original-url", "/admin"},
	// Not URL overrides, but removed from every client all the same: the
	// headers a sidecar sets from a verified peer and caller token.
	{"X-Causeway-Peer-Id", "/admin"}, {"X-Causeway-Caller-Subject", "/admin"},
	{"x-causeway-caller-authenticator-and-then-some", "/admin"},
}

func TestForwardedHeadersFromUntrustedPeer(t *testing.T) {
	up := newHeaderUpstream(t)
	for _, allowUnderscore := range []bool{false, true} {
		srv := ""
		if allowUnderscore {
			srv = "server: {allow_underscore_headers: true}\n"
		}
		e := startEdge(t, header+srv+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, up.addr()))
		addr := e.Addr("http")
		_, port, _ := net.SplitHostPort(addr)
		for proto, c := range protocols(t) {
			t.Run(fmt.Sprintf("%s/allow_underscore_headers=%v", proto, allowUnderscore), func(t *testing.T) {
				id := fmt.Sprintf("untrusted-%s-%v", proto, allowUnderscore)
				hdr := append([][2]string{{"X-Test-Id", id}, {"X_Forwarded_Prefix", "/evil"}, {"X_Real_IP", "6.6.6.6"}, {"X_Original_URL", "/admin"}, {"X_Client_Cert_Subject", "CN=evil"}, {"X_Envoy_External_Address", "6.6.6.6"}}, spoofable...)
				hdr = append(hdr, urlOverrides...)
				resp, body := send(t, c, "GET", "http://"+addr+"/x", "", hdr)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d %q", resp.StatusCode, body)
				}
				s, ok := up.got(id)
				if !ok {
					t.Fatal("the upstream saw nothing")
				}
				for name, vs := range s.Header {
					for _, v := range vs {
						if strings.Contains(v, "6.6.6.6") || strings.Contains(v, "evil") || v == "/admin" || v == "on" || v == "6666" {
							t.Errorf("client's %s: %q reached the upstream", name, v)
						}
					}
				}
				want := map[string]string{
					"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": addr,
					"X-Forwarded-Port": port, "X-Real-Ip": "127.0.0.1",
					"Forwarded": fmt.Sprintf(`for=127.0.0.1;host=%q;proto=http`, addr),
				}
				for name, v := range want {
					if got := s.Header.Values(name); len(got) != 1 || got[0] != v {
						t.Errorf("%s: upstream got %q, want the edge's %q", name, got, v)
					}
				}
			})
		}
	}
}

// trustedProxyEdge starts an edge that trusts every loopback peer as a
// proxy and sends everything to up; it returns the plain listener's
// address.
func trustedProxyEdge(t *testing.T, up *headerUpstream) string {
	t.Helper()
	e := startEdge(t, header+fmt.Sprintf(`trusted_proxies: [127.0.0.0/8]
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, up.addr()))
	return e.Addr("http")
}

func TestForwardedHeadersFromTrustedProxy(t *testing.T) {
	up := newHeaderUpstream(t)
	addr := trustedProxyEdge(t, up)
	for proto, c := range protocols(t) {
		t.Run(proto, func(t *testing.T) {
			id := "trusted-" + proto
			hdr := [][2]string{
				{"X-Test-Id", id}, {"X-Forwarded-For", "198.51.100.1, 203.0.113.7"}, {"X-Forwarded-Proto", "https"},
				{"X-Forwarded-Host", "api.example.com"}, {"X-Forwarded-Port", "443"}, {"X-Forwarded-Prefix", "/shop"},
				{"X-Real-IP", "198.51.100.1"}, {"CF-Connecting-IP", "203.0.113.7"},
			}
			hdr = append(hdr, urlOverrides...)
			resp, body := send(t, c, "GET", "http://"+addr+"/x", "", hdr)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d %q", resp.StatusCode, body)
			}
			s, _ := up.got(id)
			want := map[string]string{
				"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 127.0.0.1", "X-Forwarded-Proto": "https",
				"X-Forwarded-Host": "api.example.com", "X-Forwarded-Port": "443", "X-Forwarded-Prefix": "/shop",
				"Cf-Connecting-Ip": "203.0.113.7",
				// The client the edge decided on, not the proxy's claim.
				"X-Real-Ip": "203.0.113.7",
			}
			for name, v := range want {
				if got := s.Header.Values(name); len(got) != 1 || got[0] != v {
					t.Errorf("%s: upstream got %q, want %q", name, got, v)
				}
			}
			for _, kv := range urlOverrides {
				if v := s.Header.Values(kv[0]); len(v) > 0 {
					t.Errorf("URL override %s reached the upstream from a trusted proxy: %q", kv[0], v)
				}
			}
		})
	}
}

// rawExchange writes one HTTP/1.1 request on a fresh connection and reads
// one response.
func rawExchange(t *testing.T, addr, req string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// A guard against a hang, not a speed limit: an exchange that takes a
	// few seconds under the race detector on a loaded machine (10,000
	// one-byte chunks while hostile connections time out around it) is
	// not a failure.
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", req, err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body = io.NopCloser(strings.NewReader(string(b)))
	return resp
}

func TestH2CUpgradeNotForwarded(t *testing.T) {
	up := newHeaderUpstream(t)
	e := startEdge(t, header+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, up.addr()))
	for _, tc := range []struct {
		name, headers string
		wantUpgrade   string
	}{
		{"h2c", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n", ""},
		{"h2c in another case", "Connection: upgrade\r\nUpgrade: H2C\r\nHttp2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n", ""},
		{"h2c listed with websocket", "Connection: Upgrade\r\nUpgrade: websocket, h2c\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "websocket"},
		{"h2 listed with websocket", "Connection: Upgrade\r\nUpgrade: h2, websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "websocket"},
		{"websocket passes", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "websocket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "h2c-" + tc.name
			resp := rawExchange(t, e.Addr("http"), "GET /x HTTP/1.1\r\nHost: a.example\r\nX-Test-Id: "+id+"\r\n"+tc.headers+"\r\n")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			s, ok := up.got(id)
			if !ok {
				t.Fatal("the upstream saw nothing")
			}
			if got := s.Header.Get("Upgrade"); got != tc.wantUpgrade {
				t.Errorf("upstream got Upgrade %q, want %q", got, tc.wantUpgrade)
			}
			if v, ok := s.Header["Http2-Settings"]; ok {
				t.Errorf("HTTP2-Settings reached the upstream: %q", v)
			}
			if conn := s.Header.Get("Connection"); (tc.wantUpgrade == "") != (conn == "") {
				t.Errorf("upstream got Connection %q with Upgrade %q", conn, s.Header.Get("Upgrade"))
			}
		})
	}
}

// An offer to switch to HTTP/2 (`Upgrade: h2c` with HTTP2-Settings, or
// `Upgrade: h2`, which names HTTP/2 over TLS and is no Upgrade token) is
// ignored, as nginx and Envoy ignore it: the request is served as the
// HTTP/1.1 request it also is, body included, on both engines, over plain
// and TLS listeners, to an HTTP/1.1 and to an h2c upstream, and none of
// the offer reaches the upstream. Before, `Upgrade: h2` went down the
// upgrade path with `Connection: Upgrade`: to an h2c upstream (and any
// upstream reached over HTTP/2) a 502, since Go's HTTP/2 transport refuses
// to send an Upgrade; to an HTTP/1.1 one, the offer itself.
func TestHTTP2UpgradeOfferIgnored(t *testing.T) {
	type seen struct {
		proto, upgrade, settings, connection, body string
	}
	var mu sync.Mutex
	got := map[string]seen{}
	record := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got[r.Header.Get("X-Test-Id")] = seen{r.Proto, r.Header.Get("Upgrade"), r.Header.Get("Http2-Settings"), r.Header.Get("Connection"), string(b)}
		mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	})
	h1up := httptest.NewServer(record)
	t.Cleanup(h1up.Close)
	h2cup := httptest.NewUnstartedServer(record)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2cup.Config.Protocols = &p
	h2cup.Start()
	t.Cleanup(h2cup.Close)

	certFile, keyFile, pool := serverCert(t, t.TempDir(), "api.example.com")
	offers := []struct{ name, headers string }{
		{"h2c", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"},
		{"h2", "Connection: Upgrade\r\nUpgrade: h2\r\n"},
		{"h2 and h2c", "Connection: upgrade, http2-settings\r\nUpgrade: H2C, h2\r\nHttp2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"},
	}
	for _, engine := range engines {
		for _, tlsListener := range []bool{false, true} {
			listen := `listen: {http: "127.0.0.1:0", admin: "127.0.0.1:0"}`
			listener, dial := "http", func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) }
			if tlsListener {
				listen = fmt.Sprintf(`listen: {https: "127.0.0.1:0", admin: "127.0.0.1:0"}
tls:
  certificates: [{cert_file: %q, key_file: %q}]`, certFile, keyFile)
				cfg := &tls.Config{RootCAs: pool, ServerName: "api.example.com", NextProtos: []string{"http/1.1"}}
				listener, dial = "https", func(addr string) (net.Conn, error) { return tls.Dial("tcp", addr, cfg) }
			}
			e := startEdge(t, fmt.Sprintf(`version: 1
%s
access_log: {output: "off"}
server: {http1_engine: %q}
upstreams:
  h1: {endpoints: [%q]}
  h2c: {endpoints: [%q], protocol: h2c}
routes:
  - {name: h1, match: {path_prefix: /h1}, upstream: h1}
  - {name: h2c, match: {path_prefix: /h2c}, upstream: h2c}
`, listen, engine, h1up.Listener.Addr().String(), h2cup.Listener.Addr().String()))
			for _, upstream := range []struct{ path, proto string }{{"/h1", "HTTP/1.1"}, {"/h2c", "HTTP/2.0"}} {
				for _, offer := range offers {
					name := fmt.Sprintf("%s/%s/%s/%s", engine, listener, strings.TrimPrefix(upstream.path, "/"), offer.name)
					t.Run(name, func(t *testing.T) {
						c, err := dial(e.Addr(listener))
						if err != nil {
							t.Fatal(err)
						}
						defer c.Close()
						_ = c.SetDeadline(time.Now().Add(30 * time.Second))
						id, body := name, "body of "+name
						fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: a.example\r\nX-Test-Id: %s\r\nContent-Length: %d\r\n%s\r\n%s", upstream.path, id, len(body), offer.headers, body)
						br := bufio.NewReader(c)
						resp, err := http.ReadResponse(br, nil)
						if err != nil {
							t.Fatal(err)
						}
						answer, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK || string(answer) != "ok" {
							t.Fatalf("%d %q, want 200 ok", resp.StatusCode, answer)
						}
						mu.Lock()
						s, ok := got[id]
						mu.Unlock()
						switch {
						case !ok:
							t.Fatal("the upstream saw nothing")
						case s.proto != upstream.proto || s.body != body:
							t.Errorf("the upstream read %s with body %q, want %s with %q", s.proto, s.body, upstream.proto, body)
						case s.upgrade != "" || s.settings != "" || s.connection != "":
							t.Errorf("the offer reached the upstream: Upgrade %q, HTTP2-Settings %q, Connection %q", s.upgrade, s.settings, s.connection)
						}
						// The connection was not switched: it serves the next request.
						fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a.example\r\nX-Test-Id: %s-next\r\n\r\n", upstream.path, id)
						resp, err = http.ReadResponse(br, nil)
						if err != nil {
							t.Fatalf("the next request on the connection: %v", err)
						}
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							t.Fatalf("the next request on the connection: %d", resp.StatusCode)
						}
					})
				}
			}
		}
	}
}

func TestConnectionCannotNominateEdgeHeaders(t *testing.T) {
	up := newHeaderUpstream(t)
	dir := t.TempDir()
	sum := sha256.Sum256([]byte("partner-secret"))
	keys := filepath.Join(dir, "keys.txt")
	if err := os.WriteFile(keys, []byte("acme:"+hex.EncodeToString(sum[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, trusted := range []bool{false, true} {
		tp := ""
		if trusted {
			tp = "trusted_proxies: [127.0.0.0/8]\n"
		}
		e := startEdge(t, header+tp+fmt.Sprintf(`authenticators:
  partners: {api_key: {header: X-API-Key, keys_file: %q, forward_name: X-Partner}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, auth: partners, upstream: u}
`, keys, up.addr()))
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			id := fmt.Sprintf("conn-%v", trusted)
			nominated := "X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-Port, Forwarded, X-Real-IP, X-Request-Id, traceparent, X-Partner, X-Client-Hop"
			resp := rawExchange(t, e.Addr("http"), "GET /x HTTP/1.1\r\nHost: a.example\r\nX-Test-Id: "+id+
				"\r\nX-API-Key: partner-secret\r\nX-Client-Hop: drop-me\r\nConnection: keep-alive, "+nominated+"\r\n\r\n")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			s, ok := up.got(id)
			if !ok {
				t.Fatal("the upstream saw nothing")
			}
			for _, name := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "Forwarded", "X-Real-Ip", "X-Request-Id", "Traceparent"} {
				if s.Header.Get(name) == "" {
					t.Errorf("the client's Connection header removed the edge's %s", name)
				}
			}
			if got := s.Header.Get("X-Partner"); got != "acme" {
				t.Errorf("forward_name X-Partner: upstream got %q, want acme", got)
			}
			if got := s.Header.Get("X-Client-Hop"); got != "" {
				t.Errorf("a header the client nominated as hop-by-hop was forwarded: %q", got)
			}
			if got := resp.Header.Get("X-Request-Id"); got == "" || got != s.Header.Get("X-Request-Id") {
				t.Errorf("request id: client %q, upstream %q", got, s.Header.Get("X-Request-Id"))
			}
		})
	}
}

func TestMethodCaseRefused(t *testing.T) {
	up := newHeaderUpstream(t)
	e := startEdge(t, header+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, up.addr()))
	for proto, c := range protocols(t) {
		for _, tc := range []struct {
			method string
			status int
		}{{"post", 400}, {"Get", 400}, {"gET", 400}, {"Delete", 400}, {"patch", 400}, {"options", 400}, {"GET", 200}, {"POST", 200}, {"PROPFIND", 200}, {"purge", 200}} {
			t.Run(proto+"/"+tc.method, func(t *testing.T) {
				id := "method-" + proto + tc.method
				resp, body := send(t, c, tc.method, "http://"+e.Addr("http")+"/x", "", [][2]string{{"X-Test-Id", id}})
				s, reached := up.got(id)
				if tc.status != 200 {
					wantJSONError(t, tc.status, resp, body)
					if reached {
						t.Errorf("upstream received %s", s.Method)
					}
					return
				}
				if resp.StatusCode != http.StatusOK || !reached || s.Method != tc.method {
					t.Errorf("status %d, upstream saw %q", resp.StatusCode, s.Method)
				}
			})
		}
	}
}

// pathCases: what each mode answers for a path; 200 means forwarded.
var pathCases = []struct {
	path            string
	def, strictWant int
}{
	{"/a%00b", 400, 400}, {"/a%0ab", 400, 400}, {"/a%0D%0Ab", 400, 400}, {"/a%1fb", 400, 400},
	{"/a%7Fb", 400, 400}, {"/a%09b", 400, 400},
	{"/public/%252e%252e/admin", 200, 400}, {"/public%252fadmin", 200, 400}, {"/public%255Cadmin", 200, 400},
	{"/public/%5c../admin", 200, 400}, {"/public/..;/admin", 200, 400}, {"/a;jsessionid=1", 200, 400},
	{"/public/%3b/admin", 200, 400},
	{"/a/b%20c", 200, 200}, {"/a/%2e%2e/b", 200, 200}, {"/a%2Fb", 200, 200}, {"/a%25b", 200, 200},
}

func testPaths(t *testing.T, strict bool) {
	up := newHeaderUpstream(t)
	srv := ""
	if strict {
		srv = "server: {path_normalization: strict}\n"
	}
	e := startEdge(t, header+srv+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, up.addr()))
	for proto, c := range protocols(t) {
		for _, tc := range pathCases {
			want := tc.def
			if strict {
				want = tc.strictWant
			}
			t.Run(proto+tc.path, func(t *testing.T) {
				id := proto + tc.path
				resp, body := send(t, c, "GET", "http://"+e.Addr("http")+tc.path, "", [][2]string{{"X-Test-Id", id}})
				s, reached := up.got(id)
				if want != 200 {
					wantJSONError(t, want, resp, body)
					if reached {
						t.Errorf("a refused path reached the upstream as %q", s.RawURI)
					}
					return
				}
				if resp.StatusCode != http.StatusOK || !reached {
					t.Fatalf("status %d %q", resp.StatusCode, body)
				}
				// Forwarded as sent, unless dot segments had to be resolved.
				fwd := tc.path
				if tc.path == "/a/%2e%2e/b" {
					fwd = "/b"
				}
				if s.RawURI != fwd {
					t.Errorf("upstream got %q, want %q", s.RawURI, fwd)
				}
			})
		}
	}
}

func TestPathRefusals(t *testing.T)            { testPaths(t, false) }
func TestPathStrictNormalization(t *testing.T) { testPaths(t, true) }

func TestHostValidation(t *testing.T) {
	up := newHeaderUpstream(t)
	e := startEdge(t, header+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {host: a.example, path_prefix: /}, upstream: u}
`, up.addr()))
	for proto, c := range protocols(t) {
		for _, tc := range []struct {
			host, want string // want "": refused with 400
		}{
			{"a.example..", ""}, {"a.example:443:80", ""}, {".a.example", ""}, {"a..example", ""},
			{"a.example:99999", ""}, {"a.example:8x", ""}, {"a.example..:80", ""}, {".", ""},
			{"a.example.", "a.example"}, {"A.Example.:8080", "A.Example:8080"}, {"a.example", "a.example"},
			{"a.example:8080", "a.example:8080"},
		} {
			t.Run(proto+"/"+tc.host, func(t *testing.T) {
				id := proto + tc.host
				resp, body := send(t, c, "GET", "http://"+e.Addr("http")+"/x", tc.host, [][2]string{{"X-Test-Id", id}})
				s, reached := up.got(id)
				if tc.want == "" {
					wantJSONError(t, 400, resp, body)
					if reached {
						t.Errorf("upstream received Host %q", s.Host)
					}
					return
				}
				if resp.StatusCode != http.StatusOK || !reached {
					t.Fatalf("status %d %q", resp.StatusCode, body)
				}
				if s.Host != tc.want || s.Header.Get("X-Forwarded-Host") != tc.want {
					t.Errorf("upstream got Host %q, X-Forwarded-Host %q; want %q", s.Host, s.Header.Get("X-Forwarded-Host"), tc.want)
				}
			})
		}
	}
}

func TestUnderscoreHeaders(t *testing.T) {
	up := newHeaderUpstream(t)
	cfg := `upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`
	for _, allow := range []bool{false, true} {
		srv := ""
		if allow {
			srv = "server: {allow_underscore_headers: true}\n"
		}
		e := startEdge(t, header+srv+fmt.Sprintf(cfg, up.addr()))
		for proto, c := range protocols(t) {
			t.Run(fmt.Sprintf("%s/allow=%v", proto, allow), func(t *testing.T) {
				id := fmt.Sprintf("underscore-%s-%v", proto, allow)
				resp, _ := send(t, c, "GET", "http://"+e.Addr("http")+"/x", "", [][2]string{{"X-Test-Id", id}, {"X_User_Id", "admin"}, {"X-User-Id", "alice"}})
				s, ok := up.got(id)
				if resp.StatusCode != http.StatusOK || !ok {
					t.Fatalf("status %d", resp.StatusCode)
				}
				if got := s.Header.Get("X-User-Id"); got != "alice" {
					t.Errorf("X-User-Id %q", got)
				}
				var underscored []string
				for name, v := range s.Header {
					if strings.Contains(name, "_") {
						underscored = append(underscored, name+": "+strings.Join(v, ","))
					}
				}
				if allow && len(underscored) != 1 {
					t.Errorf("allow_underscore_headers: upstream got %q, want X_User_Id", underscored)
				}
				if !allow && len(underscored) != 0 {
					t.Errorf("underscore headers reached the upstream: %q", underscored)
				}
			})
		}
	}
}

// TestClientAddressResolvedOnce: rate limits and ip_filter read the address
// the edge resolved, with the same reading of X-Forwarded-For; a trusted
// proxy's garbled entry is refused by an allow list rather than answered
// with the proxy's own address.
func TestClientAddressResolvedOnce(t *testing.T) {
	up := newHeaderUpstream(t)
	e := startEdge(t, header+fmt.Sprintf(`trusted_proxies: [127.0.0.0/8]
rate_limits:
  per-ip: {key: client_ip, limit: 1, per: 1h}
plugins:
  inside: {use: ip_filter, config: {allow: [127.0.0.0/8, 203.0.113.0/24]}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: limited, match: {path_prefix: /limited}, rate_limit: per-ip, upstream: u}
  - {name: filtered, match: {path_prefix: /filtered}, plugins: [inside], upstream: u}
`, up.addr()))
	c := protocols(t)["HTTP/1.1"]
	base := "http://" + e.Addr("http")
	for _, tc := range []struct {
		name, path, xff string
		want            int
		realIP          string
	}{
		{"first request of a client", "/limited", "203.0.113.1", 200, "203.0.113.1"},
		{"same client, empty entries and a port", "/limited", ", 203.0.113.1:5555 ,", 429, ""},
		{"another client, its own bucket", "/limited", "203.0.113.2", 200, "203.0.113.2"},
		{"allowed client", "/filtered", "203.0.113.9", 200, "203.0.113.9"},
		{"denied client", "/filtered", "198.51.100.1", 403, ""},
		{"forged entries left of the client", "/filtered", "203.0.113.5, 198.51.100.1", 403, ""},
		{"garbled entry from the trusted proxy", "/filtered", "unknown", 403, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "resolve-" + tc.name
			resp, body := send(t, c, "GET", base+tc.path, "", [][2]string{{"X-Test-Id", id}, {"X-Forwarded-For", tc.xff}})
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, body)
			}
			if tc.want == 200 {
				s, _ := up.got(id)
				if got := s.Header.Get("X-Real-Ip"); got != tc.realIP {
					t.Errorf("X-Real-IP %q, want %q", got, tc.realIP)
				}
			}
		})
	}
}
