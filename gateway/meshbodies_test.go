package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// meshBodiesRounds is how many times each case runs in the suite; the
// cases run on many connections at once, so the interleavings of the
// edge's and the sidecar's body copies vary from round to round. With
// CAUSEWAY_SOAK=1 (`make soak`) each runs 200 times; the
// mutations docs/reliability.md lists were caught within 25 rounds.
var meshBodiesRounds = soakOr(50, 200)

// soakOr is suite, or soak when the soak runs (CAUSEWAY_SOAK=1, `make
// soak`): how many rounds a case of the body and pool tests runs.
func soakOr(suite, soak int) int {
	if os.Getenv("CAUSEWAY_SOAK") == "1" {
		return soak
	}
	return suite
}

// rawService is a service behind a sidecar that speaks HTTP/1.1 from the
// socket, so it can answer in ways net/http never would (a cut body, a
// reset, bytes after a bodiless answer). answer writes the answer to
// request n of the connection and says whether the connection goes on.
func rawService(t *testing.T, answer func(c *net.TCPConn, req *http.Request) bool) string {
	t.Helper()
	return testutil.ServeConns(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return
			}
			if !answer(c.(*net.TCPConn), req) {
				return
			}
		}
	})
}

// meshToService starts client -> edge -mTLS-> sidecar -> service and
// returns the edge's address (host:port, plain listener).
func meshToService(t *testing.T, service string, inboundExtra string) string {
	t.Helper()
	edgeFiles, inbound := sidecarToService(t, service, inboundExtra)
	te := startEdge(t, meshEdgeConfig(edgeFiles, inbound, ordersID))
	return strings.TrimPrefix(te.url, "http://")
}

// sidecarToService starts a sidecar in front of service and returns the
// files of an identity it lets in and its inbound address.
func sidecarToService(t *testing.T, service string, inboundExtra string) (meshtest.Files, string) {
	t.Helper()
	ca := meshtest.NewCA(t, "example.org")
	edgeFiles := ca.IssueFiles(t.TempDir(), edgeID)
	ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
	cfg := sidecarConfig(ordersFiles, service, []string{edgeID}, nil)
	if inboundExtra != "" {
		cfg = strings.Replace(cfg, "inbound:\n", "inbound:\n"+inboundExtra, 1)
	}
	sc := startSidecar(t, cfg)
	return edgeFiles, sc.Addr("inbound")
}

// meshTLSEdge is an edge serving TLS only (certificate for "a.example",
// trusted by the returned config) in front of the sidecar at inbound.
func meshTLSEdge(t *testing.T, edgeFiles meshtest.Files, inbound string) (string, *tls.Config) {
	t.Helper()
	certFile, keyFile, pool := selfSigned(t, t.TempDir(), "a.example")
	cfg := strings.Replace(meshEdgeConfig(edgeFiles, inbound, ordersID), listenHeader,
		"version: 1\nlisten: {https: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: off}\n"+
			fmt.Sprintf("tls:\n  certificates: [{cert_file: %q, key_file: %q}]\n", certFile, keyFile), 1)
	te := startEdge(t, cfg)
	return te.Addr("https"), &tls.Config{RootCAs: pool, ServerName: "a.example", NextProtos: []string{"http/1.1"}}
}

// The service crashes in the middle of its answer: a Content-Length body
// short of its length, a chunked body without its last chunk, a
// close-delimited body ended by a reset. It crashes only once the client
// has the answer's head, so the cut falls in a body already on its way.
// Through the sidecar (which re-frames the answer and speaks mTLS to the
// edge) and the edge, the client must see the body cut: HTTP/1.1 without
// its last chunk or short of its length, HTTP/1.0 by a reset, HTTP/2 by
// the stream's reset; never a whole-looking short body. The control, a
// close-delimited body ended by a FIN, is whole: over plain TCP that is how
// such a body ends.
func TestMeshServiceCrashMidAnswerReachesClientCut(t *testing.T) {
	part, svc, crash := crashingService(t)
	edgeFiles, inbound := sidecarToService(t, svc, "")
	te := startEdge(t, meshEdgeConfig(edgeFiles, inbound, ordersID))
	addr := strings.TrimPrefix(te.url, "http://")
	tlsAddr, tlsConfig := meshTLSEdge(t, edgeFiles, inbound)
	h2 := h2cClient()
	defer h2.CloseIdleConnections()
	// get sends one request and returns the answer's head, crashing the
	// service once the head is in (or the request failed).
	type getter func(path string) (*http.Response, func(), error)
	h1 := func(proto string, secure bool) getter {
		return func(path string) (*http.Response, func(), error) {
			defer func() { crash <- struct{}{} }()
			var c net.Conn
			var err error
			if secure {
				c, err = tls.Dial("tcp", tlsAddr, tlsConfig)
			} else {
				c, err = net.Dial("tcp", addr)
			}
			if err != nil {
				return nil, nil, err
			}
			_ = c.SetDeadline(time.Now().Add(20 * time.Second)) // hang guard
			fmt.Fprintf(c, "GET %s %s\r\nHost: a.test\r\n\r\n", path, proto)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				c.Close()
				return nil, nil, err
			}
			return resp, func() { c.Close() }, nil
		}
	}
	clients := map[string]getter{
		"HTTP/1.1":     h1("HTTP/1.1", false),
		"HTTP/1.0":     h1("HTTP/1.0", false),
		"TLS-HTTP/1.1": h1("HTTP/1.1", true),
		"TLS-HTTP/1.0": h1("HTTP/1.0", true),
		"h2": func(path string) (*http.Response, func(), error) {
			defer func() { crash <- struct{}{} }()
			resp, err := h2.Get("http://" + addr + path)
			if err != nil {
				return nil, nil, err
			}
			return resp, func() { resp.Body.Close() }, nil
		},
	}
	for _, client := range []string{"HTTP/1.1", "HTTP/1.0", "TLS-HTTP/1.1", "TLS-HTTP/1.0", "h2"} {
		for _, path := range []string{"/orders/length", "/orders/chunked", "/orders/mid-chunk", "/orders/close-reset", "/orders/close-fin"} {
			whole := path == "/orders/close-fin"
			t.Run(client+path, func(t *testing.T) {
				for round := range meshBodiesRounds {
					resp, done, err := clients[client](path)
					checkCrashedAnswer(t, round, resp, done, err, part, whole)
				}
			})
		}
	}
}

// crashingService is the service of TestMeshServiceCrashMidAnswerReachesClientCut:
// at /orders/length, /orders/chunked, /orders/mid-chunk and
// /orders/close-reset it sends part of an answer's body (part) and dies
// once crash is sent to (a reset for close-reset); /orders/close-fin is
// the control, part as a close-delimited body ended by a FIN.
func crashingService(t *testing.T) (part, addr string, crash chan struct{}) {
	part = strings.Repeat("part of the body. ", 1000) // 18,000 bytes: past every copy buffer
	crash = make(chan struct{}, 1)
	addr = rawService(t, func(c *net.TCPConn, req *http.Request) bool {
		switch req.URL.Path {
		case "/orders/length":
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", 2*len(part), part)
		case "/orders/chunked":
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(part), part)
		case "/orders/mid-chunk":
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s", 2*len(part), part)
		case "/orders/close-reset":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"+part)
			_ = c.SetLinger(0) // the close below sends a reset: the process died
		case "/orders/close-fin":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"+part)
		}
		<-crash
		return false
	})
	return part, addr, crash
}

// The same for a gRPC call, which the sidecar forwards to its service on
// h2c: the service's stream is reset once the client has the answer's
// head (the handler aborts), and the client's read of the body must fail;
// the control, the same answer ended normally, is read whole.
func TestMeshGRPCServiceCrashMidAnswerReachesClientCut(t *testing.T) {
	part := strings.Repeat("part of the body. ", 1000)
	crash := make(chan struct{}, 1)
	svc := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		_, _ = io.WriteString(w, part)
		_ = http.NewResponseController(w).Flush()
		<-crash
		if r.URL.Path == "/orders/cut" {
			panic(http.ErrAbortHandler) // RST_STREAM: the call broke off
		}
	}))
	svc.Config.Protocols = new(http.Protocols)
	svc.Config.Protocols.SetUnencryptedHTTP2(true)
	svc.Start()
	t.Cleanup(svc.Close)
	addr := meshToService(t, strings.TrimPrefix(svc.URL, "http://"), "")
	client := h2cClient()
	defer client.CloseIdleConnections()
	for _, path := range []string{"/orders/cut", "/orders/whole"} {
		t.Run(path, func(t *testing.T) {
			for round := range meshBodiesRounds {
				req, _ := http.NewRequest(http.MethodPost, "http://"+addr+path, strings.NewReader("call"))
				req.Header.Set("Content-Type", "application/grpc")
				resp, err := client.Do(req)
				crash <- struct{}{}
				if err != nil {
					t.Fatalf("round %d: no head: %v", round, err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || !strings.HasPrefix(part, string(b)) {
					t.Fatalf("round %d: %d with a body that is not the service's: %.60q", round, resp.StatusCode, b)
				}
				if path == "/orders/whole" && (err != nil || len(b) != len(part)) {
					t.Fatalf("round %d: control read %d of %d bytes, err %v", round, len(b), len(part), err)
				}
				if path == "/orders/cut" && err == nil {
					t.Fatalf("round %d: the client read a whole-looking %d-byte answer of a call the service reset", round, len(b))
				}
			}
		})
	}
}

// bodyFor is the body a request tagged tag carries: the tag over and over,
// so a body sent with another request's head shows.
func bodyFor(tag string, n int) []byte {
	return bytes.Repeat([]byte(tag+"."), n/(len(tag)+1)+1)[:n]
}

// The client abandons its request body part way: HTTP/1.1 closes the
// connection in the middle of a Content-Length or chunked body, HTTP/2
// resets the stream in the middle or after every declared byte (without
// END_STREAM). Through the edge and the sidecar, the service's read of the
// body must fail every time; a control request of each kind, sent whole,
// is read whole; every body the service reads belongs to the head it came
// with. Four clients at a time, so requests share the edge's and the
// sidecar's pooled connections.
func TestMeshClientAbortMidBodyNeverCompletesAtService(t *testing.T) {
	svc, register := abortService(t)
	abortCases(t, meshToService(t, svc, ""), "a.test", meshBodiesRounds, register)
}

// abortWaiter is what abortService tells about the request of one tag:
// when the service has it, and what it read of its body.
type abortWaiter struct {
	started chan struct{}
	done    chan abortOutcome
}

type abortOutcome struct {
	n     int
	err   error
	proto int // the HTTP major version the service was called with
}

// abortService is a service speaking HTTP/1.1 and h2c that reads the body
// of each request tagged (X-Tag) by a registered abortWaiter and reports
// it there; it returns its address and register.
func abortService(t *testing.T) (string, func(tag string) *abortWaiter) {
	var mu sync.Mutex
	waiters := map[string]*abortWaiter{}
	register := func(tag string) *abortWaiter {
		w := &abortWaiter{started: make(chan struct{}), done: make(chan abortOutcome, 1)}
		mu.Lock()
		waiters[tag] = w
		mu.Unlock()
		return w
	}
	// The service speaks HTTP/1.1 and h2c: the sidecar forwards gRPC calls
	// on h2c, everything else on HTTP/1.1.
	svcServer := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		tag := r.Header.Get("X-Tag")
		mu.Lock()
		w := waiters[tag]
		delete(waiters, tag)
		mu.Unlock()
		if w == nil {
			t.Errorf("the service got a request of unknown or repeated tag %q", tag)
			return
		}
		close(w.started)
		b, err := io.ReadAll(r.Body)
		if !bytes.Equal(b, bodyFor(tag, len(b))) {
			t.Errorf("request %s: the service read a body that is not its own: %.40q", tag, b)
		}
		w.done <- abortOutcome{len(b), err, r.ProtoMajor}
		if err == nil {
			_, _ = io.WriteString(rw, tag)
		}
	}))
	svcServer.Config.Protocols = new(http.Protocols)
	svcServer.Config.Protocols.SetHTTP1(true)
	svcServer.Config.Protocols.SetUnencryptedHTTP2(true)
	svcServer.Start()
	t.Cleanup(svcServer.Close)
	return strings.TrimPrefix(svcServer.URL, "http://"), register
}

// abortCases sends the abandoned and whole requests of
// TestMeshClientAbortMidBodyNeverCompletesAtService to addr with Host host,
// four clients at a time, each case rounds times, and checks what
// abortService read of each.
func abortCases(t *testing.T, addr, host string, rounds int, register func(tag string) *abortWaiter) {
	type kind struct {
		name    string
		h2      bool
		chunked bool // h1: chunked; h2: no content-length
		send    func(size int) int
		reset   bool // h2: RST_STREAM after the bytes sent; h1: close
		grpc    bool // Content-Type application/grpc: h2c to the service
	}
	half := func(size int) int { return size / 2 }
	all := func(size int) int { return size }
	kinds := []kind{
		{name: "h1-length-close-half", send: half, reset: true},
		{name: "h1-chunked-close-half", chunked: true, send: half, reset: true},
		{name: "h2-length-rst-all", h2: true, send: all, reset: true},
		{name: "h2-length-rst-half", h2: true, send: half, reset: true},
		{name: "h2-nolength-rst-half", h2: true, chunked: true, send: half, reset: true},
		{name: "h1-length-whole", send: all},
		{name: "h1-chunked-whole", chunked: true, send: all},
		{name: "h2-length-whole", h2: true, send: all},
		{name: "h2-grpc-length-rst-all", h2: true, send: all, reset: true, grpc: true},
		{name: "h2-grpc-length-rst-half", h2: true, send: half, reset: true, grpc: true},
		{name: "h2-grpc-length-whole", h2: true, send: all, grpc: true},
	}
	sizes := []int{1000, 20000}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for worker := range 4 {
		wg.Go(func() {
			// Each kind and size runs rounds times over the four.
			for round := range rounds * len(kinds) * len(sizes) / 4 {
				k := kinds[(round+worker)%len(kinds)]
				size := sizes[(round/len(kinds)+worker)%len(sizes)]
				if k.send(size) == 0 {
					continue
				}
				tag := fmt.Sprintf("w%dr%d", worker, round)
				w := register(tag)
				if err := abortOne(addr, host, k.h2, k.chunked, k.reset, k.grpc, tag, size, k.send(size), w.started); err != nil {
					errs <- fmt.Errorf("%s %d B: %w", k.name, size, err)
					return
				}
				got := <-w.done
				if want := map[bool]int{false: 1, true: 2}[k.grpc]; got.proto != want {
					errs <- fmt.Errorf("%s: the service was called on HTTP/%d, want %d", k.name, got.proto, want)
					return
				}
				if k.reset && got.err == nil {
					errs <- fmt.Errorf("%s %d B (%s): the service read a whole %d-byte request its client abandoned", k.name, size, tag, got.n)
					return
				}
				if !k.reset && (got.err != nil || got.n != size) {
					errs <- fmt.Errorf("%s %d B (%s): control read %d bytes, err %w", k.name, size, tag, got.n, got.err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// abortOne sends one tagged POST of size declared bytes to addr with Host host,
// sends the first sent of them, waits until the service has the request,
// and then ends it: whole, or abandoned (h1: close; h2: RST_STREAM CANCEL).
func abortOne(addr, host string, h2, chunked, abandon, grpc bool, tag string, size, sent int, started <-chan struct{}) error {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second)) // hang guard
	body := bodyFor(tag, size)
	if !h2 {
		var head string
		if chunked {
			head = fmt.Sprintf("POST /orders/up HTTP/1.1\r\nHost: %s\r\nX-Tag: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n", host, tag, sent)
		} else {
			head = fmt.Sprintf("POST /orders/up HTTP/1.1\r\nHost: %s\r\nX-Tag: %s\r\nContent-Length: %d\r\n\r\n", host, tag, size)
		}
		if _, err := io.WriteString(nc, head); err != nil {
			return err
		}
		if _, err := nc.Write(body[:sent]); err != nil {
			return err
		}
		if !abandon {
			if chunked {
				_, _ = io.WriteString(nc, "\r\n0\r\n\r\n")
			}
			resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
			if err != nil {
				return err
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil || string(b) != tag {
				return fmt.Errorf("control answer %q, %w", b, err)
			}
			return nil
		}
		<-started
		return nil // the deferred close abandons the body
	}
	if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
		return err
	}
	fr := http2.NewFramer(nc, nc)
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	fields := [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", host}, {":path", "/orders/up"}, {"x-tag", tag}}
	if !chunked {
		fields = append(fields, [2]string{"content-length", strconv.Itoa(size)})
	}
	if grpc {
		fields = append(fields, [2]string{"content-type", "application/grpc"})
	}
	for _, f := range fields {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteSettings(); err != nil {
		return err
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hbuf.Bytes(), EndHeaders: true}); err != nil {
		return err
	}
	data := body[:sent]
	for len(data) > 0 {
		n := min(len(data), 16384)
		if err := fr.WriteData(1, !abandon && n == len(data), data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	<-started
	if abandon {
		return fr.WriteRSTStream(1, http2.ErrCodeCancel)
	}
	// Whole: keep the connection until the answer has ended, or closing
	// it would cancel the request.
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		if f.Header().StreamID != 1 {
			continue
		}
		if _, ok := f.(*http2.RSTStreamFrame); ok {
			return fmt.Errorf("control stream reset")
		}
		if f.Header().Flags.Has(http2.FlagDataEndStream) {
			return nil
		}
	}
}

// The sidecar's own pool toward its service: a service that sends bytes
// after an answer that has no body (204, 304, the answer to a HEAD), in the
// same write or the next, and a service that answers only after the
// sidecar's timeout has given up on it. The next request through the mesh
// must get its own answer, never those bytes or the late answer. Requests
// go one after another on one client connection, so the edge and the
// sidecar reuse their pooled connections whenever they may.
func TestMeshSidecarPoolNextRequestGetsItsOwnAnswer(t *testing.T) {
	late := make(chan struct{}, meshBodiesRounds)
	answer := strayAnswers(late)
	svc := rawService(t, func(c *net.TCPConn, req *http.Request) bool { return answer(c, req) })
	// A short inbound timeout for the late answers; an own-tag request slow
	// enough to run into it gets a 504, which the checks accept.
	addr := meshToService(t, svc, "  timeout: 200ms\n")
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	// The stray-byte cases are quick and their race is rare (a pool that
	// kept the connection after a 204 failed at rounds 80 and 110), so
	// they run 8 times the rounds; the late answer waits out the timeout
	// in every round.
	nextRequestCases(t, late, 8*meshBodiesRounds, meshBodiesRounds, func(method, path string) (int, string, error) {
		req, _ := http.NewRequest(method, "http://"+addr+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b), err
	})
}

// strayAnswers answers the requests of nextRequestCases the way a
// hostile peer would: bytes after an answer without a body, past the
// Content-Length, a body for a HEAD, and /orders/late only once late
// says (after the caller's timeout); any other request with its ?tag.
func strayAnswers(late <-chan struct{}) func(c net.Conn, req *http.Request) bool {
	const stray = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"
	return func(c net.Conn, req *http.Request) bool {
		tag := req.URL.Query().Get("tag")
		switch req.URL.Path {
		case "/orders/204":
			_, _ = io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n"+stray)
		case "/orders/204-later":
			_, _ = io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
			_, _ = io.WriteString(c, stray)
		case "/orders/long":
			// More bytes than the Content-Length says.
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"+stray)
		case "/orders/304":
			_, _ = io.WriteString(c, "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"+stray)
		case "/orders/head":
			// A HEAD answered with the body it describes.
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
		case "/orders/late":
			// Answered once the client has had its 504: the caller has
			// given up on this request by then.
			<-late
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
		default:
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(tag), tag)
		}
		return true
	}
}

// nextRequestCases sends each of strayAnswers' cases with do (the
// stray-byte ones strayRounds times, the late answer lateRounds times),
// each followed by a request of its own tag, which must get its own answer
// (or a 504 of its own); late, of capacity lateRounds, is released once per
// late case and at the end as often as it holds, so no peer goroutine
// stays blocked.
func nextRequestCases(t *testing.T, late chan<- struct{}, strayRounds, lateRounds int, do func(method, path string) (int, string, error)) {
	t.Helper()
	defer func() {
		for range lateRounds {
			late <- struct{}{}
		}
	}()
	cases := []struct {
		name, method, path string
		status             int
		rounds             int
	}{
		{"204 then bytes", http.MethodGet, "/orders/204", http.StatusNoContent, strayRounds},
		{"204 then bytes in a second write", http.MethodGet, "/orders/204-later", http.StatusNoContent, strayRounds},
		{"304 then bytes", http.MethodGet, "/orders/304", http.StatusNotModified, strayRounds},
		{"bytes past the Content-Length", http.MethodGet, "/orders/long", http.StatusOK, strayRounds},
		{"HEAD answered with a body", http.MethodHead, "/orders/head", http.StatusOK, strayRounds},
		{"answer after the timeout", http.MethodGet, "/orders/late", http.StatusGatewayTimeout, lateRounds},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for round := range tc.rounds {
				status, body, err := do(tc.method, tc.path)
				if err != nil || status != tc.status {
					t.Fatalf("round %d: %s %s: %d %q %v, want %d", round, tc.method, tc.path, status, body, err, tc.status)
				}
				if tc.status == http.StatusGatewayTimeout {
					late <- struct{}{}
				} else if body != "" && (tc.path != "/orders/long" || body != "ok") {
					t.Fatalf("round %d: %s %s has a body %q", round, tc.method, tc.path, body)
				}
				tag := fmt.Sprintf("r%d", round)
				status, body, err = do(http.MethodGet, "/orders/echo?tag="+tag)
				if err != nil {
					t.Fatalf("round %d: next request: %v", round, err)
				}
				if status == http.StatusGatewayTimeout {
					continue // slow under load, but never another's answer
				}
				if status != http.StatusOK || body != tag {
					t.Fatalf("round %d: the next request got %d %q, want its own 200 %q", round, status, body, tag)
				}
			}
		})
	}
}

// The edge's pool toward a sidecar: the edge's upstream timeout (200ms) is
// shorter than the sidecar's, so the edge gives up on a request (the
// client gets its 504) while the sidecar still waits on the service; the
// service then answers, and the sidecar passes that late answer on to the
// edge's mTLS connection. The next request through the mesh must get its
// own answer, never the late one.
func TestMeshEdgePoolLateAnswerNeverReachesNextRequest(t *testing.T) {
	late := make(chan struct{}, meshBodiesRounds)
	svc := rawService(t, func(c *net.TCPConn, req *http.Request) bool {
		if req.URL.Path == "/orders/late" {
			<-late
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
			return true
		}
		tag := req.URL.Query().Get("tag")
		_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(tag), tag)
		return true
	})
	edgeFiles, inbound := sidecarToService(t, svc, "")
	cfg := strings.Replace(meshEdgeConfig(edgeFiles, inbound, ordersID), "mesh_identity:", "timeout: 200ms, mesh_identity:", 1)
	te := startEdge(t, cfg)
	defer func() {
		for range meshBodiesRounds {
			late <- struct{}{}
		}
	}()
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	do := func(path string) (int, string, error) {
		resp, err := client.Get(te.url + path)
		if err != nil {
			return 0, "", err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b), err
	}
	for round := range meshBodiesRounds {
		status, body, err := do("/orders/late")
		if err != nil || status != http.StatusGatewayTimeout {
			t.Fatalf("round %d: late: %d %q %v, want 504", round, status, body, err)
		}
		late <- struct{}{}
		tag := fmt.Sprintf("r%d", round)
		status, body, err = do("/orders/echo?tag=" + tag)
		if err != nil {
			t.Fatalf("round %d: next request: %v", round, err)
		}
		if status == http.StatusGatewayTimeout {
			continue // slow under load, but never another's answer
		}
		if status != http.StatusOK || body != tag {
			t.Fatalf("round %d: the next request got %d %q, want its own 200 %q", round, status, body, tag)
		}
	}
}

// checkCrashedAnswer reads one answer of a service that crashes mid-answer
// (crashingService): its body must be the service's bytes, whole for the
// control (whole) and failing, never whole-looking, for every cut one.
func checkCrashedAnswer(t *testing.T, round int, resp *http.Response, done func(), err error, part string, whole bool) {
	t.Helper()
	if err != nil {
		t.Fatalf("round %d: no head: %v", round, err)
	}
	b, err := io.ReadAll(resp.Body)
	done()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(part, string(b)) {
		t.Fatalf("round %d: %d with a body that is not the service's: %.60q", round, resp.StatusCode, b)
	}
	if whole && (err != nil || len(b) != len(part)) {
		t.Fatalf("round %d: control read %d of %d bytes, err %v", round, len(b), len(part), err)
	}
	if !whole && err == nil {
		t.Fatalf("round %d: the client read a whole-looking %d-byte body of an answer the service cut (Content-Length %d, chunked %v)", round, len(b), resp.ContentLength, resp.TransferEncoding)
	}
}
