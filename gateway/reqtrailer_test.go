package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// trailerUpstream is a raw HTTP/1.1 upstream that keeps, by X-Request-Id,
// exactly what it read for each request: the head and the body with its
// trailer section as they came on the wire, and "<cut>" where the body
// broke off. hangUp makes it read each request whole and close the
// connection without an answer (an endpoint that fails the attempt).
type trailerUpstream struct {
	addr   string
	hangUp bool
	mu     sync.Mutex
	got    map[string][]string
}

func startTrailerUpstream(t *testing.T, hangUp bool) *trailerUpstream {
	u := &trailerUpstream{hangUp: hangUp, got: map[string][]string{}}
	u.addr = testutil.ServeConns(t, u.serve)
	return u
}

func (u *trailerUpstream) serve(nc net.Conn) {
	c := &recordingConn{Conn: nc}
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		head := c.take(br)
		_, err = io.Copy(io.Discard, req.Body)
		raw := head + c.take(br)
		if err != nil {
			raw += "<cut>"
		}
		u.mu.Lock()
		id := req.Header.Get("X-Request-Id")
		u.got[id] = append(u.got[id], raw)
		u.mu.Unlock()
		if err != nil || u.hangUp {
			return
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
	}
}

func (u *trailerUpstream) received(id string) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.got[id])
}

func (u *trailerUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, v := range u.got {
		n += len(v)
	}
	return n
}

// upstreamTrailer reads a raw request as the upstream got it: the names
// its Trailer header announced and its trailer section, each sorted and
// joined by ", " ("<none>" for a section without fields), and "<cut>" for
// a body without its end.
func upstreamTrailer(raw string) (announced, section string) {
	if strings.HasSuffix(raw, "<cut>") {
		return "", "<cut>"
	}
	head, body, _ := strings.Cut(raw, "\r\n\r\n")
	var names []string
	for _, l := range strings.Split(head, "\r\n")[1:] {
		if k, v, _ := strings.Cut(l, ":"); strings.EqualFold(k, "Trailer") {
			for n := range strings.SplitSeq(v, ",") {
				names = append(names, strings.TrimSpace(n))
			}
		}
	}
	slices.Sort(names)
	if !strings.Contains(strings.ToLower(head), "\r\ntransfer-encoding: chunked") {
		return strings.Join(names, ", "), "<none>" // a body of known length: no trailer section
	}
	// The last chunk of a chunked body: the trailer section follows it.
	i := strings.LastIndex("\r\n"+body, "\r\n0\r\n")
	if i < 0 {
		return strings.Join(names, ", "), "<no last chunk>"
	}
	rest := body[i+3:]
	if rest == "\r\n" {
		return strings.Join(names, ", "), "<none>"
	}
	fields := strings.Split(strings.TrimSuffix(rest, "\r\n\r\n"), "\r\n")
	slices.Sort(fields)
	return strings.Join(names, ", "), strings.Join(fields, ", ")
}

type trailerCase struct {
	name string
	// announce is the client's Trailer header; fields its trailer
	// section, one "Name: value" each.
	announce string
	fields   []string
	// header is more of the client's header (HTTP/1.1 only).
	header string
	// h1Only: HTTP/2 cannot state it (an unannounced field, a Connection
	// header), or net/http's HTTP/2 server refuses it itself (a field it
	// keeps out of trailers: the stream is reset).
	h1Only bool
	// What the upstream must get: its Trailer header and trailer section.
	wantAnnounced, wantSection string
}

func trailerCases() []trailerCase {
	return []trailerCase{
		{name: "one field", announce: "X-Check", fields: []string{"X-Check: 1"}, wantAnnounced: "X-Check", wantSection: "X-Check: 1"},
		{name: "several fields and values", announce: "X-Check, Grpc-Status", fields: []string{"X-Check: 1", "X-Check: 2", "Grpc-Status: 0"},
			wantAnnounced: "Grpc-Status, X-Check", wantSection: "Grpc-Status: 0, X-Check: 1, X-Check: 2"},
		{name: "spoofed edge-owned names", announce: "X-Forwarded-For, X-Forwarded-Proto, X-Real-Ip, Forwarded, True-Client-Ip, X-Original-Url, X-Envoy-Original-Path, X-Causeway-Peer-Id, X-Causeway-Caller-Subject, X-Causeway-Mirror, X-Check",
			fields: []string{"X-Forwarded-For: 6.6.6.6", "X-Forwarded-Proto: https", "X-Real-Ip: 6.6.6.6", "Forwarded: for=6.6.6.6", "True-Client-Ip: 6.6.6.6",
				"X-Original-Url: /admin", "X-Envoy-Original-Path: /admin", "X-Causeway-Peer-Id: spiffe://evil", "X-Causeway-Caller-Subject: root", "X-Causeway-Mirror: 1", "X-Check: 1"},
			wantAnnounced: "X-Check", wantSection: "X-Check: 1"},
		{name: "spoofed names folded the CGI way", h1Only: true, announce: "X_Forwarded_For, X_Real_IP, X-Check",
			fields: []string{"X_Forwarded_For: 6.6.6.6", "X_Real_IP: 6.6.6.6", "X-Check: 1"}, wantAnnounced: "X-Check", wantSection: "X-Check: 1"},
		{name: "names with '_', as the header's are dropped", announce: "X_Request_Id, User_Agent, X_Check, X-Check",
			fields: []string{"X_Request_Id: other", "User_Agent: evil", "X_Check: evil", "X-Check: 1"}, wantAnnounced: "X-Check", wantSection: "X-Check: 1"},
		{name: "a name the edge states in the header", announce: "X-Request-Id, User-Agent, X-Check",
			fields: []string{"X-Request-Id: other", "User-Agent: evil", "X-Check: 1"}, wantAnnounced: "X-Check", wantSection: "X-Check: 1"},
		{name: "fields net/http keeps out of trailers", h1Only: true,
			announce: "Authorization, Host, Te, Connection, Keep-Alive, Proxy-Authorization, Cache-Control, If-Match, Content-Type, Range, X-Check",
			fields: []string{"Authorization: Bearer smuggled", "Host: evil.example", "Te: trailers", "Connection: close", "Keep-Alive: 1", "Proxy-Authorization: x",
				"Cache-Control: no-cache", "If-Match: *", "Content-Type: text/evil", "Range: bytes=0-1", "X-Check: 1"},
			wantAnnounced: "X-Check", wantSection: "X-Check: 1"},
		{name: "hop-by-hop and nominated by Connection", h1Only: true, header: "Connection: X-Secret\r\n",
			announce: "Upgrade, Proxy-Connection, X-Secret, X-Check", fields: []string{"Upgrade: h2c", "Proxy-Connection: x", "X-Secret: s", "X-Check: 1"},
			wantAnnounced: "X-Check", wantSection: "X-Check: 1"},
		// The edge starts a trace of its own (the client sent no valid
		// traceparent) and drops the client's tracestate: a trailer
		// must not bring them back.
		{name: "trace context, the edge starts the trace", announce: "Traceparent, Tracestate, X-Check",
			fields:        []string{"Traceparent: 00-eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-eeeeeeeeeeeeeeee-01", "Tracestate: evil=1", "X-Check: 1"},
			wantAnnounced: "X-Check", wantSection: "X-Check: 1"},
		{name: "trace context, the client's trace", h1Only: true, header: "Traceparent: 00-0123456789abcdef0123456789abcdef-0123456789abcdef-01\r\n",
			announce: "Tracestate, Traceparent, X-Check", fields: []string{"Tracestate: evil=1", "Traceparent: 00-eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-eeeeeeeeeeeeeeee-01", "X-Check: 1"},
			wantAnnounced: "X-Check", wantSection: "X-Check: 1"},
		{name: "unannounced fields", h1Only: true, fields: []string{"X-Late: 1"}, wantSection: "<none>"},
		{name: "announced and unannounced", h1Only: true, announce: "X-Check", fields: []string{"X-Check: 1", "X-Late: 1"},
			wantAnnounced: "X-Check", wantSection: "X-Check: 1"},
		{name: "announced, never sent", announce: "X-Check", wantAnnounced: "X-Check", wantSection: "<none>"},
		{name: "only stripped names", announce: "X-Forwarded-For", fields: []string{"X-Forwarded-For: 6.6.6.6"}, wantSection: "<none>"},
	}
}

func h1TrailerRequest(id string, tc trailerCase) string {
	var b strings.Builder
	fmt.Fprintf(&b, "POST /t HTTP/1.1\r\nHost: a.example\r\nX-Request-Id: %s\r\nTransfer-Encoding: chunked\r\n%s", id, tc.header)
	if tc.announce != "" {
		fmt.Fprintf(&b, "Trailer: %s\r\n", tc.announce)
	}
	b.WriteString("\r\n5\r\nhello\r\n0\r\n")
	for _, f := range tc.fields {
		b.WriteString(f + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// trailerExchange sends raw to addr and reads one answer.
func trailerExchange(t *testing.T, addr, raw string) (int, string) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(nc, raw); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res.StatusCode, string(body)
}

// h2TrailerRequest is tc as an HTTP/2 request: a body of known length
// (content-length) or of unknown length, and tc's fields as trailers.
func h2TrailerRequest(t *testing.T, url, id string, tc trailerCase, knownLength bool) *http.Request {
	t.Helper()
	var body io.Reader = strings.NewReader("hello")
	if !knownLength {
		body = io.MultiReader(body) // hides the length
	}
	req, err := http.NewRequest(http.MethodPost, url+"/t", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "a.example"
	req.Header.Set("X-Request-Id", id)
	req.Trailer = http.Header{}
	for n := range strings.SplitSeq(tc.announce, ",") {
		if n = strings.TrimSpace(n); n != "" {
			req.Trailer[http.CanonicalHeaderKey(n)] = nil
		}
	}
	for _, f := range tc.fields {
		k, v, _ := strings.Cut(f, ": ")
		req.Trailer.Add(k, v)
	}
	return req
}

func trailerH2CClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 10 * time.Second}
}

// TestRequestTrailersForwarded: the trailer fields a client sends go on to
// an HTTP/1.1 upstream in the chunked body's trailer section, over
// HTTP/1.1, h2c and h2 alike, without the names the edge owns, hop-by-hop
// and framing names, and fields net/http keeps out of trailers. What the
// upstream read is checked byte for byte.
func TestRequestTrailersForwarded(t *testing.T) {
	u := startTrailerUpstream(t, false)
	cfg := "upstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n"
	plain := startEdge(t, listenHeader+fmt.Sprintf(cfg, u.addr))
	certFile, keyFile, pool := selfSigned(t, t.TempDir(), "a.example")
	tlsEdge := startEdge(t, fmt.Sprintf("version: 1\nlisten: {https: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: off}\n"+
		"tls:\n  certificates: [{cert_file: %q, key_file: %q}]\n", certFile, keyFile)+fmt.Sprintf(cfg, u.addr))
	h2 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "a.example"}, ForceAttemptHTTP2: true}}
	h2c := trailerH2CClient()
	t.Cleanup(h2.CloseIdleConnections)
	t.Cleanup(h2c.CloseIdleConnections)

	for i, tc := range trailerCases() {
		fronts := []string{"HTTP/1.1", "h2c, content-length", "h2c, unknown length", "h2, content-length", "h2, unknown length"}
		for _, front := range fronts {
			if tc.h1Only && front != "HTTP/1.1" {
				continue
			}
			t.Run(tc.name+"/"+front, func(t *testing.T) {
				id := fmt.Sprintf("c%d-%s", i, sanitizeID(front))
				var status int
				switch front {
				case "HTTP/1.1":
					status, _ = trailerExchange(t, strings.TrimPrefix(plain.url, "http://"), h1TrailerRequest(id, tc))
				default:
					client, url := h2c, plain.url
					if strings.HasPrefix(front, "h2,") {
						client, url = h2, "https://"+tlsEdge.Addr("https")
					}
					res, err := client.Do(h2TrailerRequest(t, url, id, tc, strings.HasSuffix(front, "content-length")))
					if err != nil {
						t.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.ProtoMajor != 2 {
						t.Fatalf("the client spoke %s", res.Proto)
					}
					status = res.StatusCode
				}
				got := checkTrailerReceived(t, u, id, status, tc)
				for _, bad := range []string{"6.6.6.6", "evil", "smuggled", "/admin", "X-Secret: s", "X-Causeway-Mirror", "eeeeeeeeeeeeeeee"} {
					if strings.Contains(got[0], bad) {
						t.Errorf("the upstream received %q:\n%s", bad, got[0])
					}
				}
			})
		}
	}
}

// TestRequestTrailersHostile: trailer sections the edge's server cannot
// accept, or that do not fit what the upstream side can read, end the
// request with a clear error, and the upstream never sees the body end:
// no last chunk, so no field of such a section is forwarded and no half
// of one reads as complete.
func TestRequestTrailersHostile(t *testing.T) {
	u := startTrailerUpstream(t, false)
	e := startEdge(t, listenHeader+fmt.Sprintf("upstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", u.addr))
	addr := strings.TrimPrefix(e.url, "http://")
	big := func(n int) trailerCase {
		var tc trailerCase
		var names []string
		for i := 0; i < n; i++ {
			names = append(names, fmt.Sprintf("X-Fill-%d", i))
			tc.fields = append(tc.fields, fmt.Sprintf("X-Fill-%d: %s", i, strings.Repeat("v", 100)))
		}
		tc.announce = strings.Join(names, ", ")
		return tc
	}
	cases := []struct {
		name       string
		tc         trailerCase
		wantStatus int
	}{
		{name: "obs-fold in a value", tc: trailerCase{announce: "X-Check", fields: []string{"X-Check: a", " folded"}}, wantStatus: http.StatusBadRequest},
		{name: "bare CR in a value", tc: trailerCase{announce: "X-Check", fields: []string{"X-Check: a\rInjected: 1"}}, wantStatus: http.StatusBadRequest},
		{name: "NUL in a value", tc: trailerCase{announce: "X-Check", fields: []string{"X-Check: a\x00b"}}, wantStatus: http.StatusBadRequest},
		{name: "field without a colon", tc: trailerCase{announce: "X-Check", fields: []string{"X-Check 1"}}, wantStatus: http.StatusBadRequest},
		// Over the edge's own bound on a trailer section (16 KiB).
		{name: "20 KiB section", tc: big(200), wantStatus: http.StatusBadRequest},
		// Within the edge's bound, over what net/http's server behind
		// the edge can read (its 4 KiB buffer): refused before the end
		// of the body is written.
		{name: "8 KiB section", tc: big(80), wantStatus: http.StatusBadRequest},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := fmt.Sprintf("h%d", i)
			status, body := trailerExchange(t, addr, h1TrailerRequest(id, c.tc))
			if status != c.wantStatus || !strings.Contains(body, fmt.Sprintf(`"status":%d`, c.wantStatus)) {
				t.Errorf("status %d %s, want %d in the edge's format", status, body, c.wantStatus)
			}
			waitFor(t, func() bool { return len(u.received(id)) == 1 })
			got := u.received(id)
			if _, section := upstreamTrailer(got[0]); section != "<cut>" {
				t.Errorf("the upstream read the body's end (%s):\n%q", section, got[0])
			}
			for _, bad := range []string{"X-Check", "X-Fill", "Injected", "folded"} {
				if strings.Contains(got[0], bad+":") {
					t.Errorf("the upstream received %q:\n%q", bad, got[0])
				}
			}
		})
	}
}

// TestRequestTrailersRetryAndMirror: a request whose body is kept to be
// sent again (HTTP/2, of known length, under max_body) carries its
// trailers to every attempt and to the mirror; a chunked HTTP/1.1 body,
// never kept, is sent once, and no attempt or copy gets a body without its
// trailers or another request's.
func TestRequestTrailersRetryAndMirror(t *testing.T) {
	bad := startTrailerUpstream(t, true)
	good := startTrailerUpstream(t, false)
	shadow := startTrailerUpstream(t, false)
	e := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u:
    endpoints: [%q, %q]
    retries: {attempts: 2, on: [reset], budget_percent: 100, non_idempotent: true}
    mirror: {upstream: shadow}
  shadow: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, bad.addr, good.addr, shadow.addr))
	h2c := trailerH2CClient()
	defer h2c.CloseIdleConnections()
	const n = 20
	tc := trailerCase{announce: "X-Check, X-Forwarded-For", fields: []string{"X-Forwarded-For: 6.6.6.6"}}
	for i := range n {
		id := fmt.Sprintf("rm%d", i)
		tc.fields = []string{"X-Check: " + id, "X-Forwarded-For: 6.6.6.6"}
		res, err := h2c.Do(h2TrailerRequest(t, e.url, id, tc, true))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", id, res.StatusCode)
		}
		status, _ := trailerExchange(t, strings.TrimPrefix(e.url, "http://"), h1TrailerRequest("h1-"+id, tc))
		if status != http.StatusOK && status != http.StatusBadGateway {
			t.Fatalf("h1-%s: status %d", id, status)
		}
	}
	waitFor(t, func() bool { return shadow.count() == n })
	if bad.count() == 0 {
		t.Fatal("no attempt went to the failing endpoint: nothing was retried")
	}
	for i := range n {
		id := fmt.Sprintf("rm%d", i)
		for _, who := range []struct {
			name string
			u    *trailerUpstream
		}{{"failing endpoint", bad}, {"serving endpoint", good}, {"mirror", shadow}} {
			for _, reqID := range []string{id, "h1-" + id} {
				for _, raw := range who.u.received(reqID) {
					announced, section := upstreamTrailer(raw)
					if section == "<cut>" || announced != "X-Check" || section != "X-Check: "+id {
						t.Errorf("%s: %s received Trailer %q and section %q, want X-Check: %s\n%s", reqID, who.name, announced, section, id, raw)
					}
				}
			}
		}
		if len(good.received(id)) != 1 || len(shadow.received(id)) != 1 {
			t.Errorf("%s: the serving endpoint received %d copies, the mirror %d, want 1 each", id, len(good.received(id)), len(shadow.received(id)))
		}
		if len(shadow.received("h1-"+id)) != 0 {
			t.Errorf("h1-%s: a chunked body reached the mirror", id)
		}
	}
}

// TestRequestTrailersConcurrent sends thousands of requests, each with
// its own trailer, over a few HTTP/1.1 keep-alive connections and over
// one HTTP/2 connection with many streams at once, to one upstream whose
// connections the edge reuses: each request the upstream reads carries
// exactly its own trailer. The forwarder's per-request state and the
// transport's connections are reused between requests, so a trailer map
// kept too long would show here as another request's value.
func TestRequestTrailersConcurrent(t *testing.T) {
	h1Conns, h1Per, h2Streams, h2Per := 4, 400, 16, 100
	if testing.Short() {
		h1Conns, h1Per, h2Streams, h2Per = 2, 100, 4, 50
	}
	u := startTrailerUpstream(t, false)
	e := startEdge(t, listenHeader+fmt.Sprintf("upstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", u.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h2c := trailerH2CClient()
	defer h2c.CloseIdleConnections()
	// Workers 0 to h1Conns-1 each hold one HTTP/1.1 connection; the rest
	// are streams of the one h2c client.
	concurrently(t, h1Conns+h2Streams, func(w int) error {
		if s := w - h1Conns; s >= 0 {
			for i := range h2Per {
				id := fmt.Sprintf("h2-%d-%d", s, i)
				tc := trailerCase{announce: "X-Seq", fields: []string{"X-Seq: " + id}}
				req := h2TrailerRequest(t, e.url, id, tc, i%2 == 0).WithContext(ctx)
				if err := wantOK(id)(h2c.Do(req)); err != nil {
					return err
				}
			}
			return nil
		}
		c := w
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(e.url, "http://"))
		if err != nil {
			return err
		}
		defer nc.Close()
		context.AfterFunc(ctx, func() { nc.Close() })
		br := bufio.NewReader(nc)
		for i := range h1Per {
			id := fmt.Sprintf("h1-%d-%d", c, i)
			tc := trailerCase{announce: "X-Seq", fields: []string{"X-Seq: " + id}}
			if i%3 == 0 { // some without a trailer between them
				tc = trailerCase{}
			}
			if _, err := io.WriteString(nc, h1TrailerRequest(id, tc)); err != nil {
				return err
			}
			if err := wantOK(id)(http.ReadResponse(br, nil)); err != nil {
				return err
			}
		}
		return nil
	})
	if t.Failed() {
		t.FailNow()
	}
	check := func(id string, withTrailer bool) {
		got := u.received(id)
		if len(got) != 1 {
			t.Fatalf("%s: the upstream received %d copies", id, len(got))
		}
		announced, section := upstreamTrailer(got[0])
		want, wantA := "X-Seq: "+id, "X-Seq"
		if !withTrailer {
			want, wantA = "<none>", ""
		}
		if section != want || announced != wantA {
			t.Fatalf("%s: the upstream received Trailer %q and section %q, want %q", id, announced, section, want)
		}
	}
	for c := range h1Conns {
		for i := range h1Per {
			check(fmt.Sprintf("h1-%d-%d", c, i), i%3 != 0)
		}
	}
	for s := range h2Streams {
		for i := range h2Per {
			check(fmt.Sprintf("h2-%d-%d", s, i), true)
		}
	}
}

// wantOK returns a check of request id's answer: read to its end and
// closed, it must be 200.
func wantOK(id string) func(*http.Response, error) error {
	return func(res *http.Response, err error) error {
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: status %d", id, res.StatusCode)
		}
		return nil
	}
}
