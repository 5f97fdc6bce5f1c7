package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	_ "github.com/causewayhq/causeway/plugins/respond"
)

// A real grpc-go client through the edge's own h2c listener sees every
// refusal the edge decides itself as a gRPC status, not as "unexpected HTTP
// status code", and the upstream never sees a refused call.
func TestGRPCClientSeesEdgeErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int64
	hs := health.NewServer()
	hs.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)
	// Slow.Wait answers only when its caller gives up: the edge's route
	// timeout is what ends it.
	gs := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			reached.Add(1)
			return h(ctx, req)
		}),
		grpc.UnknownServiceHandler(func(srv any, stream grpc.ServerStream) error {
			reached.Add(1)
			<-stream.Context().Done()
			return stream.Context().Err()
		}))
	healthpb.RegisterHealthServer(gs, hs)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(ln)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-served
	})
	const key = "k-grpc-0123456789"
	keys := writeKeys(t, map[string]string{"acme": key})
	te := startEdge(t, listenHeader+fmt.Sprintf(`authenticators:
  partners: {api_key: {header: X-API-Key, keys_file: %q}}
rate_limits:
  one: {key: api_key, limit: 1, per: 1h}
upstreams:
  grpc: {endpoints: [%q], protocol: h2c, timeout: 200ms, retries: {attempts: 1, on: [connect_failure]}}
  dead: {endpoints: [%q], protocol: h2c}
routes:
  - {name: health, match: {path_prefix: /grpc.health.v1.Health/}, auth: partners, rate_limit: one, upstream: grpc}
  - {name: slow, match: {path_prefix: /test.Slow/}, upstream: grpc}
  - {name: dead, match: {path_prefix: /test.Dead/}, upstream: dead}
`, keys, ln.Addr().String(), freeAddr(t)))

	cc, err := grpc.NewClient("passthrough:///"+te.Addr("http"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	withKey := func(k string) context.Context { return metadata.AppendToOutgoingContext(ctx, "x-api-key", k) }
	invoke := func(ctx context.Context, method string) error {
		return cc.Invoke(ctx, method, &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	}

	// In order: the rate limit allows one call an hour.
	tests := []struct {
		name      string
		call      func() error
		code      codes.Code
		msg       string
		reachesUp bool
	}{
		{"no credentials", func() error { _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "orders"}); return err }, codes.Unauthenticated, "", false},
		{"wrong key", func() error {
			_, err := client.Check(withKey("nope"), &healthpb.HealthCheckRequest{Service: "orders"})
			return err
		}, codes.Unauthenticated, "", false},
		{"allowed call", func() error {
			_, err := client.Check(withKey(key), &healthpb.HealthCheckRequest{Service: "orders"})
			return err
		}, codes.OK, "", true},
		{"over the rate limit", func() error {
			_, err := client.Check(withKey(key), &healthpb.HealthCheckRequest{Service: "orders"})
			return err
		}, codes.ResourceExhausted, "too many requests", false},
		{"no route", func() error { return invoke(ctx, "/test.Nowhere/Call") }, codes.Unimplemented, "no route matches this request", false},
		{"upstream down", func() error { return invoke(ctx, "/test.Dead/Call") }, codes.Unavailable, "", false},
		{"upstream too slow", func() error { return invoke(ctx, "/test.Slow/Wait") }, codes.DeadlineExceeded, "upstream timed out", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := reached.Load()
			err := tt.call()
			st, ok := status.FromError(err)
			if !ok || st.Code() != tt.code {
				t.Fatalf("got %v, want code %v", err, tt.code)
			}
			if tt.code != codes.OK && st.Message() == "" {
				t.Fatalf("no grpc-message: %v", err)
			}
			if tt.msg != "" && st.Message() != tt.msg {
				t.Fatalf("message %q, want %q", st.Message(), tt.msg)
			}
			if got := reached.Load() > before; got != tt.reachesUp {
				t.Fatalf("upstream reached = %v, want %v", got, tt.reachesUp)
			}
		})
	}

	// The wire form: trailers-only, so HTTP 200, the status in the one
	// HEADERS frame, no body and no separate trailers.
	t.Run("trailers-only on the wire", func(t *testing.T) {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		hc := &http.Client{Transport: &http.Transport{Protocols: &p}}
		defer hc.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodPost, te.url+"/grpc.health.v1.Health/Check", strings.NewReader("\x00\x00\x00\x00\x00"))
		req.Header.Set("Content-Type", "application/grpc+proto")
		req.Header.Set("TE", "trailers")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := make([]byte, 1)
		n, _ := resp.Body.Read(body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || n != 0 || len(resp.Trailer) != 0 {
			t.Fatalf("status %d over %s, %d body bytes, trailers %v", resp.StatusCode, resp.Proto, n, resp.Trailer)
		}
		if got := resp.Header.Get("Grpc-Status"); got != "16" {
			t.Fatalf("grpc-status %q, want 16 (UNAUTHENTICATED); headers %v", got, resp.Header)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/grpc" {
			t.Fatalf("content-type %q", ct)
		}
	})
}

// A real grpc-go client, over h2c and over TLS with ALPN h2, gets the
// respond plugin's answers as gRPC statuses mapped from their HTTP status,
// with the configured message, unless the answer was written for gRPC
// already or is a 200 with a body. Before the fix only an `error:` answer
// was converted: the 403 with a text body reached the client as
// "Unknown: unexpected HTTP status code received from server: 403", the
// 503 and the 410 likewise.
func TestGRPCClientSeesRespondAnswers(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir(), "api.example.com")
	te := startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: off}
tls:
  certificates: [{cert_file: %q, key_file: %q}]
  redirect_http: false
plugins:
  forbidden: {use: respond, config: {status: 403, body: "not for you"}}
  maintenance: {use: respond, config: {status: 503, body: "<h1>Back soon</h1>", content_type: text/html, headers: {Retry-After: "60"}}}
  retired: {use: respond, config: {status: 410, error: "retired; use v2"}}
  gone: {use: respond, config: {status: 410}}
  precondition: {use: respond, config: {status: 400, body: "not yet", headers: {grpc-status: "9"}}}
  handwritten: {use: respond, config: {content_type: application/grpc, headers: {grpc-status: "14", grpc-message: "drained%%20here"}}}
  page: {use: respond, config: {body: "ok"}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: forbidden, match: {path_prefix: /test.Forbidden/}, plugins: [forbidden], upstream: u}
  - {name: maintenance, match: {path_prefix: /test.Maintenance/}, plugins: [maintenance], upstream: u}
  - {name: retired, match: {path_prefix: /test.Retired/}, plugins: [retired], upstream: u}
  - {name: gone, match: {path_prefix: /test.Gone/}, plugins: [gone], upstream: u}
  - {name: precondition, match: {path_prefix: /test.Precondition/}, plugins: [precondition], upstream: u}
  - {name: handwritten, match: {path_prefix: /test.Handwritten/}, plugins: [handwritten], upstream: u}
  - {name: page, match: {path_prefix: /test.Page/}, plugins: [page], upstream: u}
`, certFile, keyFile, freeAddr(t)))

	transports := []struct {
		name string
		addr string
		cred credentials.TransportCredentials
	}{
		{"h2c", te.Addr("http"), insecure.NewCredentials()},
		{"tls h2", te.Addr("https"), credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "api.example.com"})},
	}
	tests := []struct {
		method string
		code   codes.Code
		msg    string // "" : only checked to be there
	}{
		{"/test.Forbidden/Call", codes.PermissionDenied, "not for you"},
		{"/test.Maintenance/Call", codes.Unavailable, "Service Unavailable"},
		{"/test.Retired/Call", codes.Unknown, "retired; use v2"},
		{"/test.Gone/Call", codes.Unknown, "Gone"},
		{"/test.Precondition/Call", codes.FailedPrecondition, "not yet"},
		{"/test.Handwritten/Call", codes.Unavailable, "drained here"},
		// Content served with a 200 goes out as configured: the client
		// reports the text/plain answer itself.
		{"/test.Page/Call", codes.Unknown, ""},
	}
	for _, tr := range transports {
		cc, err := grpc.NewClient("passthrough:///"+tr.addr, grpc.WithTransportCredentials(tr.cred))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		for _, tt := range tests {
			t.Run(tr.name+tt.method, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				var hdr, trl metadata.MD
				err := cc.Invoke(ctx, tt.method, &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{}, grpc.Header(&hdr), grpc.Trailer(&trl))
				st, ok := status.FromError(err)
				if !ok || st.Code() != tt.code {
					t.Fatalf("got %v, want code %v", err, tt.code)
				}
				if tt.msg != "" && st.Message() != tt.msg {
					t.Fatalf("message %q, want %q", st.Message(), tt.msg)
				}
				if tt.msg == "" && !strings.Contains(st.Message(), "content-type") {
					t.Fatalf("message %q: want the client's own report of the text/plain answer", st.Message())
				}
				if tt.msg != "" && strings.Contains(st.Message(), "unexpected HTTP status") {
					t.Fatalf("the client saw the HTTP status: %v", err)
				}
				if tt.method == "/test.Maintenance/Call" && len(trl.Get("retry-after")) != 1 {
					t.Fatalf("the configured Retry-After did not reach the client: %v %v", hdr, trl)
				}
			})
		}
	}
}
