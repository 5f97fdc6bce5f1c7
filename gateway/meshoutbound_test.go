package gateway

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// outboundRounds is how many times each case of the outbound direction's
// body and pool tests runs in the suite (the stray-byte cases 5 times
// more, the late answer, which waits out a timeout, half as often); with
// CAUSEWAY_SOAK=1 (`make soak`) 200 (stray bytes 1,000).
var outboundRounds = soakOr(20, 200)

// outboundCall sends one request from the calling service (the test) to
// the service named host through the sidecar's outbound listener at out.
func outboundCall(c *http.Client, out, host, method, path string, body io.Reader, hdr http.Header) (int, string, error) {
	req, err := http.NewRequest(method, "http://"+out+path, body)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	for k, vv := range hdr {
		req.Header[k] = vv
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Grpc-Status") == "14" {
		// A gRPC call's 502 (trailers-only UNAVAILABLE, httperr.GRPCCode).
		return http.StatusBadGateway, string(b), err
	}
	return resp.StatusCode, string(b), err
}

// The remote sidecar's root leaves the calling sidecar's bundle while the
// calling sidecar holds a pooled mTLS connection to it (made when the root
// was trusted). Removing a root is how a compromised CA is cut off; the
// inbound side already checks its callers' chains again on open
// connections (TestSidecarRefusesCallerNoLongerValidOnOpenConnection). The
// outbound side must not send the next request over the connection it
// verified against the old bundle: the call fails (502) and the remote
// service receives nothing. Plain requests (HTTP/1.1 pool) and gRPC calls
// (HTTP/2 pool). The control rewrites the bundle with both roots: the
// call goes on.
func TestOutboundPooledConnectionNotReusedAfterTrustRemoved(t *testing.T) {
	tests := []struct {
		desc    string
		grpc    bool
		removed bool
	}{
		{desc: "bundle rewritten, root kept/http1"},
		{desc: "bundle rewritten, root kept/grpc", grpc: true},
		{desc: "remote root removed/http1", removed: true},
		{desc: "remote root removed/grpc", grpc: true, removed: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			own, other := meshtest.NewCA(t, "example.org"), meshtest.NewCA(t, "example.org")
			both := string(own.BundlePEM()) + string(other.BundlePEM())
			var served atomic.Int64
			svc := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
				served.Add(1)
				_, _ = io.WriteString(w, r.Header.Get(PeerIDHeader))
			})
			if tc.grpc {
				svc = h2cService(t, func(w http.ResponseWriter, r *http.Request) {
					served.Add(1)
					_, _ = io.WriteString(w, r.Header.Get(PeerIDHeader))
				})
			}
			// payments holds a certificate of the other CA and trusts both.
			paymentsDir := t.TempDir()
			paymentsFiles := other.IssueFiles(paymentsDir, paymentsID)
			writeFile(t, paymentsFiles.Bundle, both)
			payments := startSidecar(t, sidecarConfig(paymentsFiles, svc, []string{ordersID}, nil))
			// orders trusts both, and reaches payments under two names: two
			// pools to the same sidecar, the second unused until the
			// bundle changed, so its first call dials.
			ordersDir := t.TempDir()
			ordersFiles := own.IssueFiles(ordersDir, ordersID)
			writeFile(t, ordersFiles.Bundle, both)
			orders := startSidecar(t, sidecarConfig(ordersFiles, "127.0.0.1:1", []string{edgeID}, map[string][2]string{
				"payments": {payments.Addr("inbound"), paymentsID},
				"probe":    {payments.Addr("inbound"), paymentsID},
			}))
			out := orders.Addr("outbound")
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1}}
			if tc.grpc {
				client = h2cClient()
			}
			defer client.CloseIdleConnections()
			var hdr http.Header
			if tc.grpc {
				hdr = http.Header{"Content-Type": {"application/grpc"}}
			}
			call := func(host string) (int, string) {
				t.Helper()
				code, body, err := outboundCall(client, out, host, http.MethodPost, "/charge", strings.NewReader("x"), hdr)
				if err != nil {
					t.Fatalf("%s: %v", host, err)
				}
				return code, body
			}
			if code, body := call("payments"); code != http.StatusOK || body != ordersID {
				t.Fatalf("first call: %d %q", code, body)
			}
			if !tc.removed {
				writeFile(t, ordersFiles.Bundle, both)
			} else {
				writeFile(t, ordersFiles.Bundle, string(own.BundlePEM()))
				// The reload is in force once orders' identity source no
				// longer verifies a certificate of the other CA.
				probe := other.Issue(paymentsID).Leaf
				deadline := time.Now().Add(10 * time.Second)
				for {
					if _, err := orders.current().source.Verify([]*x509.Certificate{probe}); err != nil {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("orders did not reload its bundle")
					}
					time.Sleep(20 * time.Millisecond)
				}
				// A new connection is refused (probe's pool is empty): so
				// must the pooled one be.
				if code, body := call("probe"); code != http.StatusBadGateway {
					t.Fatalf("a new connection to a sidecar whose root was removed: %d %q, want 502", code, body)
				}
			}
			before := served.Load()
			code, body := call("payments")
			if !tc.removed {
				if code != http.StatusOK || served.Load() != before+1 {
					t.Fatalf("control: %d %q, the service got %d more; want 200 and 1", code, body, served.Load()-before)
				}
				return
			}
			if code != http.StatusBadGateway {
				t.Fatalf("a call to a sidecar whose root was removed got %d %q, want 502", code, body)
			}
			if n := served.Load() - before; n != 0 {
				t.Fatalf("the remote service received %d calls over a connection no longer trusted", n)
			}
		})
	}
}

// h2cService is a service speaking HTTP/1.1 and h2c (a gRPC server
// without TLS), serving h.
func h2cService(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetHTTP1(true)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Start()
	t.Cleanup(s.Close)
	return hostPort(s)
}

// outboundToService starts payments' sidecar in front of service
// (inboundExtra added to its inbound section) and orders' sidecar, whose
// outbound side reaches it as the service "payments" (svcExtra added to
// that service's entry, as "timeout: 200ms, "); it returns orders'
// outbound address, where the calling service (the test) sends plain
// HTTP.
func outboundToService(t *testing.T, service, inboundExtra, svcExtra string) string {
	t.Helper()
	ca := meshtest.NewCA(t, "example.org")
	cfg := sidecarConfig(ca.IssueFiles(t.TempDir(), paymentsID), service, []string{ordersID}, nil)
	if inboundExtra != "" {
		cfg = strings.Replace(cfg, "inbound:\n", "inbound:\n"+inboundExtra, 1)
	}
	payments := startSidecar(t, cfg)
	return outboundTo(t, ca, payments.Addr("inbound"), paymentsID, svcExtra)
}

// outboundTo starts orders' sidecar (a certificate of ca) whose outbound
// side reaches the sidecar at addr as "payments", wanting id, and returns
// its outbound address.
func outboundTo(t *testing.T, ca *meshtest.CA, addr, id, svcExtra string) string {
	t.Helper()
	cfg := sidecarConfig(ca.IssueFiles(t.TempDir(), ordersID), "127.0.0.1:1", []string{edgeID}, map[string][2]string{"payments": {addr, id}})
	// The file's own identity section is "identity: {": only the
	// service's entry has "identity: \"".
	cfg = strings.Replace(cfg, `identity: "`, svcExtra+`identity: "`, 1)
	return startSidecar(t, cfg).Addr("outbound")
}

// rawSidecar is a remote sidecar that speaks HTTP/1.1 from its TLS
// socket: it presents cert, asks for a client certificate (any), and
// answers each request it reads with answer. It returns its address and
// the count of requests it read.
func rawSidecar(t *testing.T, cert tls.Certificate, answer func(c net.Conn, req *http.Request) bool) (string, *atomic.Int64) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	var reads atomic.Int64
	addr := testutil.ServeListener(t, ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			reads.Add(1)
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return
			}
			if !answer(c, req) {
				return
			}
		}
	})
	return addr, &reads
}

// The calling service abandons its request body part way, on plain
// HTTP/1.1 (the connection closed in a Content-Length or chunked body) and
// h2c (RST_STREAM half way or after every declared byte, plain requests
// and gRPC calls): through its sidecar's outbound side, the mesh hop and
// the remote sidecar, the remote service's read of the body fails every
// time; controls sent whole are read whole; every body read is its own
// request's. The cases and checks are the edge's
// (TestMeshClientAbortMidBodyNeverCompletesAtService), four callers at a
// time, so requests share the outbound pools.
func TestOutboundCallerAbortMidBodyNeverCompletesAtRemoteService(t *testing.T) {
	svc, register := abortService(t)
	abortCases(t, outboundToService(t, svc, "", ""), "payments", outboundRounds, register)
}

// The remote service crashes in the middle of its answer (Content-Length
// body short of its length, chunked without its last chunk or in the
// middle of one, close-delimited ended by a reset) once the calling
// service has the answer's head. Through the remote sidecar, the mesh hop
// and the outbound side, the caller must see the answer cut (HTTP/1.1: no
// last chunk or short of its length; HTTP/1.0: a reset; h2c: the stream
// reset), never a whole-looking short body; the control, a close-delimited
// body ended by a FIN, is whole.
func TestOutboundRemoteCrashMidAnswerReachesCallerCut(t *testing.T) {
	part, svc, crash := crashingService(t)
	out := outboundToService(t, svc, "", "")
	h2 := h2cClient()
	defer h2.CloseIdleConnections()
	type getter func(path string) (*http.Response, func(), error)
	h1 := func(proto string) getter {
		return func(path string) (*http.Response, func(), error) {
			defer func() { crash <- struct{}{} }()
			c, err := net.Dial("tcp", out)
			if err != nil {
				return nil, nil, err
			}
			_ = c.SetDeadline(time.Now().Add(20 * time.Second)) // hang guard
			fmt.Fprintf(c, "GET %s %s\r\nHost: payments\r\n\r\n", path, proto)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				c.Close()
				return nil, nil, err
			}
			return resp, func() { c.Close() }, nil
		}
	}
	clients := []struct {
		name string
		get  getter
	}{
		{"HTTP/1.1", h1("HTTP/1.1")},
		{"HTTP/1.0", h1("HTTP/1.0")},
		{"h2c", func(path string) (*http.Response, func(), error) {
			defer func() { crash <- struct{}{} }()
			req, _ := http.NewRequest(http.MethodGet, "http://"+out+path, nil)
			req.Host = "payments"
			resp, err := h2.Do(req)
			if err != nil {
				return nil, nil, err
			}
			return resp, func() { resp.Body.Close() }, nil
		}},
	}
	for _, client := range clients {
		for _, path := range []string{"/orders/length", "/orders/chunked", "/orders/mid-chunk", "/orders/close-reset", "/orders/close-fin"} {
			whole := path == "/orders/close-fin"
			t.Run(client.name+path, func(t *testing.T) {
				for round := range outboundRounds {
					resp, done, err := client.get(path)
					checkCrashedAnswer(t, round, resp, done, err, part, whole)
				}
			})
		}
	}
}

// The outbound side's own pool toward a remote sidecar that misbehaves:
// it holds payments' certificate but sends bytes after a 204, a 304, a
// HEAD's answer or past the Content-Length, and answers only after the
// outbound service's timeout (200ms) has given the caller its 504. The
// next request of the calling service must get its own answer, never
// those bytes or the late answer (nextRequestCases, one caller
// connection, so the outbound side reuses its connection whenever it
// may).
func TestOutboundPoolNextRequestGetsItsOwnAnswer(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	late := make(chan struct{}, outboundRounds/2)
	remote, _ := rawSidecar(t, ca.Issue(paymentsID).TLS, strayAnswers(late))
	out := outboundTo(t, ca, remote, paymentsID, "timeout: 200ms, ")
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	nextRequestCases(t, late, 5*outboundRounds, outboundRounds/2, func(method, path string) (int, string, error) {
		return outboundCall(client, out, "payments", method, path, nil, nil)
	})
}

// sendRaw writes raw to a new connection to addr and reads the
// answers to n requests; it returns their statuses and bodies, and the
// error that ended the reading, if any.
func sendRaw(addr, raw string, n int) (codes []int, bodies []string, err error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second)) // hang guard
	if _, err := io.WriteString(c, raw); err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(c)
	for range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return codes, bodies, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		codes, bodies = append(codes, resp.StatusCode), append(bodies, string(b))
		if err != nil {
			return codes, bodies, err
		}
	}
	return codes, bodies, nil
}

// The calling workload tries to pick the identity the remote side sees
// and to steer the outbound hop. Headers naming a caller (X-Causeway-Peer-Id,
// the caller headers and token, X-Client-Cert-Subject, Envoy's and Istio's
// X-Forwarded-Client-Cert), also nominated by Connection, over HTTP/1.1
// and h2c: the remote service sees orders' verified ID once and none of
// them. A request line or Host naming a host that is not a configured
// service (absolute-form target, CONNECT, a bare address, a look-alike
// name, two Hosts): refused, and the host named, a live listener, is
// never connected to; a request that still names payments reaches
// payments' service only.
func TestOutboundCallerCannotPickIdentityOrDestination(t *testing.T) {
	var dialed atomic.Int64
	evil := testutil.ServeConns(t, func(c net.Conn) { dialed.Add(1) })
	svc := echoUpstream(t, "payments")
	out := outboundToService(t, hostPort(svc), "", "")

	t.Run("identity", func(t *testing.T) {
		claims := [][2]string{
			{"X-Causeway-Peer-Id", edgeID},
			{"x-causeway-caller-subject", "root"},
			{"Causeway-Caller", "forged"},
			{"X-Client-Cert-Subject", "CN=gateway"},
			{"X-Forwarded-Client-Cert", "By=" + paymentsID + ";URI=" + edgeID},
			{"x-forwarded-client-cert", "URI=" + edgeID},
		}
		for _, tc := range []struct {
			name     string
			h2c      bool
			nominate bool
		}{{"HTTP/1.1", false, false}, {"HTTP/1.1/nominated by Connection", false, true}, {"h2c", true, false}} {
			t.Run(tc.name, func(t *testing.T) {
				client := &http.Client{Timeout: 10 * time.Second}
				if tc.h2c {
					client = h2cClient()
				}
				defer client.CloseIdleConnections()
				hdr := http.Header{}
				for _, kv := range claims {
					hdr[kv[0]] = append(hdr[kv[0]], kv[1])
				}
				if tc.nominate {
					hdr.Set("Connection", "keep-alive, X-Forwarded-Client-Cert, X-Causeway-Peer-Id")
				}
				code, body, err := outboundCall(client, out, "payments", http.MethodGet, "/charge", nil, hdr)
				if err != nil || code != http.StatusOK {
					t.Fatalf("%d %q %v", code, body, err)
				}
				seen := decodeEcho(t, []byte(body)).Header
				if got := seen.Values(PeerIDHeader); len(got) != 1 || got[0] != ordersID {
					t.Errorf("the remote service saw caller %q, want %q", got, ordersID)
				}
				for _, name := range []string{"X-Causeway-Caller-Subject", "Causeway-Caller", "X-Client-Cert-Subject", "X-Forwarded-Client-Cert"} {
					if v := seen.Values(name); len(v) > 0 {
						t.Errorf("the remote service received %s: %q", name, v)
					}
				}
			})
		}
	})

	t.Run("destination", func(t *testing.T) {
		for _, tc := range []struct {
			name, raw string
			// want: the status; 200 only from payments' service.
			want int
		}{
			{"absolute-form elsewhere, Host payments", "GET http://" + evil + "/x HTTP/1.1\r\nHost: payments\r\n\r\n", http.StatusNotFound},
			{"absolute-form payments, Host elsewhere", "GET http://payments/x HTTP/1.1\r\nHost: " + evil + "\r\n\r\n", http.StatusOK},
			{"CONNECT elsewhere", "CONNECT " + evil + " HTTP/1.1\r\nHost: " + evil + "\r\n\r\n", http.StatusMethodNotAllowed},
			{"CONNECT payments", "CONNECT payments:80 HTTP/1.1\r\nHost: payments:80\r\n\r\n", http.StatusMethodNotAllowed},
			{"Host a bare address", "GET /x HTTP/1.1\r\nHost: " + evil + "\r\n\r\n", http.StatusNotFound},
			{"Host a look-alike", "GET /x HTTP/1.1\r\nHost: payments." + evil + "\r\n\r\n", http.StatusNotFound},
			{"Host with userinfo", "GET /x HTTP/1.1\r\nHost: payments@" + evil + "\r\n\r\n", http.StatusBadRequest},
			{"two Hosts", "GET /x HTTP/1.1\r\nHost: payments\r\nHost: " + evil + "\r\n\r\n", http.StatusBadRequest},
			{"Host payments, X-Forwarded-Host elsewhere", "GET /x HTTP/1.1\r\nHost: payments\r\nX-Forwarded-Host: " + evil + "\r\n\r\n", http.StatusOK},
			{"Host payments with a port", "GET /x HTTP/1.1\r\nHost: payments:8080\r\n\r\n", http.StatusOK},
		} {
			t.Run(tc.name, func(t *testing.T) {
				codes, bodies, err := sendRaw(out, tc.raw, 1)
				if err != nil {
					t.Fatalf("%v %q: %v", codes, bodies, err)
				}
				if codes[0] != tc.want {
					t.Fatalf("%d %.80q, want %d", codes[0], bodies[0], tc.want)
				}
				if tc.want == http.StatusOK {
					if e := decodeEcho(t, []byte(bodies[0])); e.Upstream != "payments" || e.Path != "/x" {
						t.Fatalf("answered by %+v", e)
					}
				}
			})
		}
		if n := dialed.Load(); n != 0 {
			t.Fatalf("the outbound side connected %d times to a host no service names", n)
		}
	})
}

// A remote sidecar that presents another workload's SPIFFE ID, an expired
// certificate of payments' ID, or one from a CA outside the bundle: the
// outbound side refuses it at the handshake, the caller gets 502 and the
// remote reads no request; the control, payments' own certificate, is
// served.
func TestOutboundRefusesRemoteSidecarIdentity(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	foreign := meshtest.NewCA(t, "example.org")
	ok := func(c net.Conn, req *http.Request) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	}
	for _, tc := range []struct {
		name string
		cert *meshtest.Cert
		want int
	}{
		{"payments' own certificate", ca.Issue(paymentsID), http.StatusOK},
		{"another workload's ID", ca.Issue("spiffe://example.org/ns/shop/sa/cart"), http.StatusBadGateway},
		{"expired", ca.Issue(paymentsID, meshtest.Expired()), http.StatusBadGateway},
		{"a CA outside the bundle", foreign.Issue(paymentsID), http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			remote, reads := rawSidecar(t, tc.cert.TLS, ok)
			out := outboundTo(t, ca, remote, paymentsID, "")
			client := &http.Client{Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			code, body, err := outboundCall(client, out, "payments", http.MethodPost, "/charge", strings.NewReader("secret"), nil)
			if err != nil || code != tc.want {
				t.Fatalf("%d %q %v, want %d", code, body, err, tc.want)
			}
			if tc.want != http.StatusOK && reads.Load() != 0 {
				t.Fatalf("the impostor read %d requests", reads.Load())
			}
		})
	}
}

// The calling service pipelines requests with bodies (Content-Length and
// chunked) in one write, ends one with Connection: close, and waits for
// 100 Continue before sending a body: every answer is its own request's,
// in order, the remote service reads each body once and whole, the close
// is honoured after its answer, and the 100 comes before the body is sent.
func TestOutboundCallerFramingReachesRemoteAsSent(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	svc := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		if r.Method == http.MethodPost {
			mu.Lock()
			seen[string(b)]++
			mu.Unlock()
		}
		_, _ = io.WriteString(w, r.URL.Path+":"+string(b))
	})
	out := outboundToService(t, svc, "", "")
	for round := range outboundRounds {
		var raw strings.Builder
		var want []string
		for i := range 5 {
			path, body := fmt.Sprintf("/p%d-%d", round, i), fmt.Sprintf("body-%d-%d", round, i)
			if i%2 == 0 {
				fmt.Fprintf(&raw, "POST %s HTTP/1.1\r\nHost: payments\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
			} else {
				fmt.Fprintf(&raw, "POST %s HTTP/1.1\r\nHost: payments\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", path, len(body), body)
			}
			want = append(want, path+":"+body)
		}
		// The close: its answer comes, then nothing more is answered.
		fmt.Fprintf(&raw, "GET /last%d HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\nGET /after%d HTTP/1.1\r\nHost: payments\r\n\r\n", round, round)
		want = append(want, fmt.Sprintf("/last%d:", round))
		codes, bodies, err := sendRaw(out, raw.String(), 7)
		if len(codes) != 6 || !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("round %d: %d answers (%v), err %v; want 6 and the close", round, len(codes), bodies, err)
		}
		for i := range want {
			if codes[i] != http.StatusOK || bodies[i] != want[i] {
				t.Fatalf("round %d: answer %d is %d %q, want %q", round, i, codes[i], bodies[i], want[i])
			}
		}
	}
	mu.Lock()
	for b, n := range seen {
		if n != 1 {
			t.Errorf("the remote service read body %q %d times", b, n)
		}
	}
	if len(seen) != 5*outboundRounds {
		t.Errorf("the remote service read %d distinct bodies, want %d", len(seen), 5*outboundRounds)
	}
	mu.Unlock()

	t.Run("Expect: 100-continue", func(t *testing.T) {
		c, err := net.Dial("tcp", out)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second)) // hang guard
		fmt.Fprintf(c, "POST /expect HTTP/1.1\r\nHost: payments\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n")
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
			t.Fatalf("before the body: %q %v, want 100 Continue", line, err)
		}
		if _, err := br.ReadString('\n'); err != nil { // the empty line
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "payload")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(b) != "/expect:payload" {
			t.Fatalf("%d %q", resp.StatusCode, b)
		}
	})
}
