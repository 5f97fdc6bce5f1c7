package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// wsEcho is a WebSocket server that echoes every message.
func wsEcho(t *testing.T) *httptest.Server {
	up := websocket.Upgrader{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, append([]byte("echo: "), msg...)); err != nil {
				return
			}
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func wsRoundTrip(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	_, got, err := c.ReadMessage()
	if err != nil || string(got) != "echo: "+msg {
		t.Fatalf("read after %q: %q %v", msg, got, err)
	}
}

// A WebSocket opened through the edge stays open, and working, across ten
// reloads of the routes file.
func TestWebSocketAcrossReloads(t *testing.T) {
	up := wsEcho(t)
	cfg := func(i int) string {
		return oneUpstream(fmt.Sprintf("[%q]", hostPort(up)), fmt.Sprintf("    timeout: %ds\n    retries: {attempts: 1}\n    circuit_breaker: {max_requests: 100}\n", 30+i))
	}
	te := startEdge(t, cfg(0))
	c, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(te.url, "http")+"/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	wsRoundTrip(t, c, "before")
	for i := 1; i <= 10; i++ {
		prev := te.Active()
		writeFile(t, te.path, cfg(i))
		waitFor(t, func() bool { return te.Active() != prev })
		wsRoundTrip(t, c, fmt.Sprintf("after reload %d", i))
	}
	// New connections use the newest configuration and work as well.
	c2, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(te.url, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	wsRoundTrip(t, c2, "new")
	c2.Close()
	wsRoundTrip(t, c, "last")
}

// Server-sent events reach the client as each is written, not when the
// upstream's response ends.
func TestSSEFlushedPromptly(t *testing.T) {
	next := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: second\n\n")
	}))
	t.Cleanup(up.Close)
	te := startEdge(t, oneUpstream(fmt.Sprintf("[%q]", hostPort(up)), "    retries: {attempts: 2, per_try_timeout: 5s}\n"))
	resp, err := trafficClient.Get(te.url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string)
	go func() {
		defer close(lines)
		br := bufio.NewReader(resp.Body)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(l, "data:") {
				lines <- strings.TrimSpace(l)
			}
		}
	}()
	read := func(want string) {
		t.Helper()
		select {
		case l := <-lines:
			if l != "data: "+want {
				t.Fatalf("got %q, want %q", l, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("event %q not delivered while the stream is open", want)
		}
	}
	read("first") // the upstream is still waiting: only a flush can deliver it
	// A reload does not end the stream.
	prev := te.Active()
	writeFile(t, te.path, oneUpstream(fmt.Sprintf("[%q]", hostPort(up)), "    timeout: 20s\n"))
	waitFor(t, func() bool { return te.Active() != prev })
	close(next)
	read("second")
}

// A large upload of unknown length streams to the upstream as it is sent:
// the upstream has the first megabyte while the client still holds the rest.
func TestLargeUploadStreamed(t *testing.T) {
	const chunk = 1 << 20
	gotFirst := make(chan struct{})
	total := make(chan int64, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.CopyN(io.Discard, r.Body, chunk)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		close(gotFirst)
		m, _ := io.Copy(io.Discard, r.Body)
		total <- n + m
	}))
	t.Cleanup(up.Close)
	// Retries are on: a body of unknown length must still not be buffered.
	te := startEdge(t, oneUpstream(fmt.Sprintf("[%q]", hostPort(up)), "    retries: {attempts: 2, non_idempotent: true}\n"))
	pr, pw := io.Pipe()
	writeErr := make(chan error, 1)
	go func() {
		buf := make([]byte, chunk)
		if _, err := pw.Write(buf); err != nil {
			writeErr <- err
			return
		}
		select {
		case <-gotFirst:
		case <-time.After(10 * time.Second):
			pw.CloseWithError(fmt.Errorf("the upstream did not get the first megabyte while the upload was open"))
			writeErr <- fmt.Errorf("upload buffered by the edge")
			return
		}
		for i := 0; i < 15; i++ {
			if _, err := pw.Write(buf); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- pw.Close()
	}()
	resp, err := trafficClient.Post(te.url+"/upload", "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if n := <-total; n != 16*chunk {
		t.Fatalf("upstream got %d bytes", n)
	}
}

// gRPC through the edge: HTTP/2 in (h2c here), HTTP/2 to the upstream
// (protocol: h2c), trailers and server streams intact.
func TestGRPCThroughEdge(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(ln)
	}()
	t.Cleanup(func() {
		hs.Shutdown()
		gs.Stop()
		<-served
	})
	hs.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)

	grpcCfg := func(timeout int) string {
		return oneUpstream(fmt.Sprintf("[%q]", ln.Addr().String()), fmt.Sprintf("    protocol: h2c\n    timeout: %ds\n    retries: {attempts: 1, on: [connect_failure]}\n", timeout))
	}
	te := startEdge(t, grpcCfg(30))
	// The edge's engine behind an HTTP/2-without-TLS server, as a gRPC
	// client inside a cluster reaches it.
	front := httptest.NewUnstartedServer(te.Edge)
	front.Config.Protocols = new(http.Protocols)
	front.Config.Protocols.SetHTTP1(true)
	front.Config.Protocols.SetUnencryptedHTTP2(true)
	front.Start()
	t.Cleanup(front.Close)

	cc, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(front.URL, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("unary", func(t *testing.T) {
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "orders"})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%v %v", resp, err)
		}
	})
	t.Run("status in trailers", func(t *testing.T) {
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("got %v, want NotFound", err)
		}
	})
	t.Run("server stream", func(t *testing.T) {
		sctx, scancel := context.WithCancel(ctx)
		defer scancel()
		stream, err := client.Watch(sctx, &healthpb.HealthCheckRequest{Service: "orders"})
		if err != nil {
			t.Fatal(err)
		}
		first, err := stream.Recv()
		if err != nil || first.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("first: %v %v", first, err)
		}
		// The second message exists only after this: it must come through
		// while the stream stays open.
		hs.SetServingStatus("orders", healthpb.HealthCheckResponse_NOT_SERVING)
		second, err := stream.Recv()
		if err != nil || second.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("second: %v %v", second, err)
		}
		scancel()
		if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
			t.Fatalf("after cancel: %v", err)
		}
	})
	t.Run("stream open across reloads", func(t *testing.T) {
		hs.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)
		sctx, scancel := context.WithCancel(ctx)
		defer scancel()
		stream, err := client.Watch(sctx, &healthpb.HealthCheckRequest{Service: "orders"})
		if err != nil {
			t.Fatal(err)
		}
		if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("first: %v %v", m, err)
		}
		for i := 1; i <= 3; i++ {
			prev := te.Active()
			writeFile(t, te.path, grpcCfg(30+i))
			waitFor(t, func() bool { return te.Active() != prev })
			want := healthpb.HealthCheckResponse_NOT_SERVING
			if i%2 == 0 {
				want = healthpb.HealthCheckResponse_SERVING
			}
			hs.SetServingStatus("orders", want)
			if m, err := stream.Recv(); err != nil || m.Status != want {
				t.Fatalf("after reload %d: %v %v", i, m, err)
			}
		}
	})
}

// An endpoint change (here the endpoints file) never closes a WebSocket
// already open to an endpoint that left the set.
func TestWebSocketAcrossEndpointChange(t *testing.T) {
	a, b := wsEcho(t), wsEcho(t)
	path := t.TempDir() + "/endpoints.txt"
	writeFile(t, path, hostPort(a)+"\n")
	te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  u: {endpoints_file: %q}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, path))
	ws := "ws" + strings.TrimPrefix(te.url, "http") + "/ws"
	c, _, err := websocket.DefaultDialer.Dial(ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wsRoundTrip(t, c, "on a")
	writeFile(t, path, hostPort(b)+"\n")
	waitFor(t, func() bool {
		eps := te.live.Load().runtime(0).upstreams["u"].Endpoints()
		return len(eps) == 1 && eps[0].Addr == hostPort(b)
	})
	wsRoundTrip(t, c, "still on a")
	c2, _, err := websocket.DefaultDialer.Dial(ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	wsRoundTrip(t, c2, "on b")
	c2.Close()
}
