package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/causewayhq/causeway/internal/testutil"
)

// authzServer is a real grpc-go Authorization server on loopback whose
// answer the test chooses per request.
type authzServer struct {
	authv3.UnimplementedAuthorizationServer
	addr   string
	calls  atomic.Int64
	mu     sync.Mutex
	last   *authv3.CheckRequest
	lastMD metadata.MD
	answer func(*authv3.CheckRequest) (*authv3.CheckResponse, error)
}

func newAuthzServer(t testing.TB, answer func(*authv3.CheckRequest) (*authv3.CheckResponse, error)) *authzServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveAuthz(t, ln, answer)
}

// serveAuthz serves an authzServer on ln until the test ends.
func serveAuthz(t testing.TB, ln net.Listener, answer func(*authv3.CheckRequest) (*authv3.CheckResponse, error)) *authzServer {
	s := &authzServer{addr: ln.Addr().String(), answer: answer}
	g := grpc.NewServer()
	authv3.RegisterAuthorizationServer(g, s)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(ln) }()
	t.Cleanup(func() { g.Stop(); <-done })
	return s
}

func (s *authzServer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	s.calls.Add(1)
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	s.last, s.lastMD = req, md
	answer := s.answer
	s.mu.Unlock()
	return answer(req)
}

func (s *authzServer) lastRequest() (*authv3.CheckRequest, metadata.MD) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.lastMD
}

func hv(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}

func okResponse(headers []*corev3.HeaderValueOption, remove []string, meta map[string]any) *authv3.CheckResponse {
	resp := &authv3.CheckResponse{
		Status:       &status.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: headers, HeadersToRemove: remove}},
	}
	if meta != nil {
		st, err := structpb.NewStruct(meta)
		if err != nil {
			panic(err)
		}
		resp.DynamicMetadata = st
	}
	return resp
}

func deniedResponse(code typev3.StatusCode, body string, headers ...*corev3.HeaderValueOption) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &status.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: code}, Headers: headers, Body: body,
		}},
	}
}

// policy allows "Bearer good-<user>" as user, with the user as metadata
// and X-User-Id upstream, removes Authorization, and denies the rest
// with a 401 and a challenge of its own.
func policy(req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	user, ok := strings.CutPrefix(req.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"], "Bearer good-")
	if !ok {
		return deniedResponse(typev3.StatusCode_Unauthorized, `{"error":"who are you"}`,
			hv("WWW-Authenticate", `Bearer realm="policy"`), hv("Content-Type", "application/json")), nil
	}
	return okResponse([]*corev3.HeaderValueOption{hv("X-User-Id", user)}, []string{"authorization"},
		map[string]any{"sub": user, "scope": "orders:read orders:write", "tenant": map[string]any{"id": "t-" + user}}), nil
}

func extAuthzYAML(target, extra string) string {
	return "  authz:\n    ext_authz:\n      " + target + "\n      timeout: 1m" + extra
}

func grpcTarget(s *authzServer) string { return "grpc_address: " + s.addr }

func TestExtAuthzGRPC(t *testing.T) {
	srv := newAuthzServer(t, policy)
	f := parse(t, extAuthzYAML(grpcTarget(srv), "\n      forward_claims: {tenant.id: X-Tenant}"),
		`{name: r, match: {path_prefix: /}, upstream: up, auth: authz, require_claims: {scope: "orders:read"}}`,
		`{name: w, match: {path_prefix: /admin}, upstream: up, auth: authz, require_claims: {scope: "admin"}}`)
	m := NewMetrics()
	fails := failuresVec()
	s := testSet(t, f, Options{Metrics: m, Failures: fails})
	h, up := handler(t, s, f, 0)

	w := do(h, "/orders/7?x=1", http.Header{"Authorization": {"Bearer good-alice"}, "X-Tenant": {"spoofed"}, "X-Forwarded-For": {"198.51.100.1"}})
	if w.Code != 204 {
		t.Fatalf("allowed: %d %s", w.Code, w.Body)
	}
	if up.p == nil || up.p.Subject != "alice" || up.header.Get("X-User-Id") != "alice" || up.header.Get("X-Tenant") != "t-alice" {
		t.Fatalf("upstream: principal %+v, headers %v", up.p, up.header)
	}
	if _, ok := up.header["Authorization"]; ok {
		t.Fatal("headers_to_remove: the upstream got Authorization")
	}
	req, _ := srv.lastRequest()
	hr := req.GetAttributes().GetRequest().GetHttp()
	if hr.GetMethod() != "GET" || hr.GetPath() != "/orders/7?x=1" || hr.GetQuery() != "x=1" || hr.GetHost() != "example.com" ||
		hr.GetHeaders()[":authority"] != "example.com" || hr.GetHeaders()["x-forwarded-for"] != "198.51.100.1" {
		t.Fatalf("CheckRequest http %v", hr)
	}
	if got := req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress(); got != "192.0.2.1" {
		t.Fatalf("source address %q", got)
	}

	w = do(h, "/orders/7", http.Header{"Authorization": {"Bearer bad"}})
	if w.Code != 401 || w.Body.String() != `{"error":"who are you"}` || w.Header().Get("WWW-Authenticate") != `Bearer realm="policy"` ||
		w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("denied: %d %q %v", w.Code, w.Body, w.Header())
	}
	if counter(fails, "authz", "denied") != 1 || counter(m.Checks, "authz", "deny") != 1 || counter(m.Checks, "authz", "allow") != 1 {
		t.Fatal("metrics")
	}
	if got := w.Header().Values("WWW-Authenticate"); len(got) != 1 {
		t.Fatalf("challenges %q", got)
	}
	// Claims from dynamic metadata feed require_claims.
	h2, _ := handler(t, s, f, 1)
	if w := do(h2, "/admin", http.Header{"Authorization": {"Bearer good-alice"}}); w.Code != 403 {
		t.Fatalf("missing claim: %d", w.Code)
	}
}

// An HTTP/2 request may carry a "host" field beside :authority (net/http
// keeps it in the header map, r.Host is :authority): the server is told
// the host the edge routed on, never the other one.
func TestExtAuthzHostFieldNotSent(t *testing.T) {
	srv := newAuthzServer(t, func(*authv3.CheckRequest) (*authv3.CheckResponse, error) { return okResponse(nil, nil, nil), nil })
	for _, extra := range []string{"", "\n      headers: [Host, Authorization]"} {
		f := parse(t, extAuthzYAML(grpcTarget(srv), extra), `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
		h, _ := handler(t, testSet(t, f, Options{}), f, 0)
		r := httptestRequest("/admin", http.Header{"Host": {"public.example.com"}, "Authorization": {"Bearer x"}})
		r.Host = "admin.example.com"
		if w := recorder(h, r); w.Code != 204 {
			t.Fatalf("%q: status %d", extra, w.Code)
		}
		req, _ := srv.lastRequest()
		hr := req.GetAttributes().GetRequest().GetHttp()
		if got, ok := hr.GetHeaders()["host"]; ok || hr.GetHeaders()[":authority"] != "admin.example.com" || hr.GetHost() != "admin.example.com" {
			t.Fatalf("%q: headers.host %q (sent: %v), :authority %q, host %q", extra, got, ok, hr.GetHeaders()[":authority"], hr.GetHost())
		}
	}
}

// A gRPC allow that does not set a header the server may set: the
// client's copy of a listed header never reaches the upstream.
func TestExtAuthzGRPCUpstreamHeadersStripped(t *testing.T) {
	srv := newAuthzServer(t, func(*authv3.CheckRequest) (*authv3.CheckResponse, error) { return okResponse(nil, nil, nil), nil })
	f := parse(t, extAuthzYAML(grpcTarget(srv), "\n      upstream_headers: [X-User-Id]"), `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
	h, up := handler(t, testSet(t, f, Options{}), f, 0)
	if w := do(h, "/", http.Header{"X-User-Id": {"admin"}}); w.Code != 204 || up.header.Get("X-User-Id") != "" {
		t.Fatalf("%d, upstream X-User-Id %q", w.Code, up.header.Get("X-User-Id"))
	}
}

// A server that denies with a redirect sends the client to its login page,
// as oauth2-proxy and Authelia do; the edge never follows it.
func TestExtAuthzDeniedRedirect(t *testing.T) {
	srv := newAuthzServer(t, func(*authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return deniedResponse(typev3.StatusCode_Found, "", hv("Location", "https://login.example/?rd=x"), hv("Set-Cookie", "csrf=1; Secure")), nil
	})
	f := parse(t, extAuthzYAML(grpcTarget(srv), ""), `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
	h, up := handler(t, testSet(t, f, Options{}), f, 0)
	w := do(h, "/", nil)
	if w.Code != 302 || w.Header().Get("Location") != "https://login.example/?rd=x" || w.Header().Get("Set-Cookie") != "csrf=1; Secure" || up.calls != 0 {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
}

// What a hostile or broken server answers: headers the edge owns are not
// taken, a header that would split is dropped, and an answer past the
// bounds is a server error (on_error).
func TestExtAuthzHostileServer(t *testing.T) {
	many := make([]*corev3.HeaderValueOption, 100)
	for i := range many {
		many[i] = hv(fmt.Sprintf("X-H%d", i), "v")
	}
	tests := []struct {
		name   string
		resp   *authv3.CheckResponse
		status int
		check  func(t *testing.T, up *upstream, w *httptest.ResponseRecorder)
	}{
		{"edge-owned headers ignored", okResponse([]*corev3.HeaderValueOption{
			hv("X-Forwarded-For", "10.0.0.1"), hv("X-Forwarded-Host", "evil"), hv("Host", "evil"), hv("Connection", "close"),
			hv("Transfer-Encoding", "chunked"), hv("Content-Length", "5"), hv("X-Request-Id", "forged"), hv(":path", "/admin"),
			hv("X-Split", "a\r\nX-Injected: 1"), hv("X-Ok", "fine"),
		}, []string{"host", "x-forwarded-for"}, nil), 204, func(t *testing.T, up *upstream, _ *httptest.ResponseRecorder) {
			for _, k := range []string{"X-Forwarded-Host", "Connection", "Transfer-Encoding", "Content-Length", "X-Split", "X-Injected"} {
				if v, ok := up.header[k]; ok {
					t.Errorf("upstream got %s: %q", k, v)
				}
			}
			if up.header.Get("X-Forwarded-For") != "198.51.100.9" || up.header.Get("X-Request-Id") != "rid-1" || up.header.Get("X-Ok") != "fine" {
				t.Errorf("upstream headers %v", up.header)
			}
		}},
		{"too many headers", okResponse(many, nil, nil), 403, nil},
		{"huge header", okResponse([]*corev3.HeaderValueOption{hv("X-Big", strings.Repeat("a", 20<<10))}, nil, nil), 403, nil},
		{"huge denial body", deniedResponse(typev3.StatusCode_Forbidden, strings.Repeat("b", 100<<10)), 403, func(t *testing.T, _ *upstream, w *httptest.ResponseRecorder) {
			if w.Body.Len() > 1000 {
				t.Errorf("the huge body was relayed")
			}
		}},
		{"denial with a 200", deniedResponse(typev3.StatusCode_OK, "x"), 403, nil},
		{"denial sets framing", deniedResponse(typev3.StatusCode_Forbidden, "no", hv("Content-Length", "9999"), hv("Transfer-Encoding", "chunked"), hv("Connection", "keep-alive, X-Foo")), 403,
			func(t *testing.T, _ *upstream, w *httptest.ResponseRecorder) {
				if w.Header().Get("Content-Length") != "" || w.Header().Get("Connection") != "" || w.Body.String() != "no" {
					t.Errorf("denial %v %q", w.Header(), w.Body)
				}
			}},
		{"error response", &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.Internal)}, HttpResponse: &authv3.CheckResponse_ErrorResponse{ErrorResponse: &authv3.DeniedHttpResponse{}}}, 403, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newAuthzServer(t, func(*authv3.CheckRequest) (*authv3.CheckResponse, error) { return tt.resp, nil })
			f := parse(t, extAuthzYAML(grpcTarget(srv), ""), `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
			h, up := handler(t, testSet(t, f, Options{}), f, 0)
			w := do(h, "/", http.Header{"X-Forwarded-For": {"198.51.100.9"}, "X-Request-Id": {"rid-1"}})
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if tt.check != nil {
				tt.check(t, up, w)
			}
		})
	}
}

// A slow server, a server that is down, and a server that fails: on_error
// decides, both ways; the request waits no longer than the timeout.
func TestExtAuthzOnError(t *testing.T) {
	release := make(chan struct{})
	slow := newAuthzServer(t, func(*authv3.CheckRequest) (*authv3.CheckResponse, error) {
		<-release
		return okResponse(nil, nil, nil), nil
	})
	t.Cleanup(func() { close(release) })
	failing := newAuthzServer(t, func(*authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return nil, fmt.Errorf("policy engine exploded")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	for _, target := range []struct{ name, yaml string }{
		{"slow", "grpc_address: " + slow.addr + "\n      timeout: 100ms"},
		{"down", "grpc_address: " + down},
		{"failing", "grpc_address: " + failing.addr},
		{"http down", "http_url: http://" + down + "/auth"},
	} {
		for _, onError := range []string{"deny", "allow"} {
			t.Run(target.name+"/"+onError, func(t *testing.T) {
				f := parse(t, "  authz:\n    ext_authz:\n      "+target.yaml+"\n      on_error: "+onError+"\n      status_on_error: 503",
					`{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`,
					`{name: c, match: {path_prefix: /c}, upstream: up, auth: authz, require_claims: {sub: x}}`)
				m := NewMetrics()
				log, logs := logBuffer()
				s := testSet(t, f, Options{Metrics: m, Logger: log})
				h, up := handler(t, s, f, 0)
				w := do(h, "/", http.Header{"Authorization": {"Bearer secret-token-value"}})
				if onError == "deny" {
					if w.Code != 503 || up.calls != 0 || counter(m.Checks, "authz", "error_deny") != 1 {
						t.Fatalf("deny: %d, upstream calls %d", w.Code, up.calls)
					}
				} else {
					if w.Code != 204 || up.calls != 1 || counter(m.Checks, "authz", "error_allow") != 1 || up.p.Claims != nil {
						t.Fatalf("allow: %d, upstream calls %d", w.Code, up.calls)
					}
					// Allowed on error, but with no claims: a route that
					// needs one still refuses.
					hc, _ := handler(t, s, f, 1)
					if w := do(hc, "/c", nil); w.Code != 403 {
						t.Fatalf("require_claims on error_allow: %d", w.Code)
					}
				}
				if !strings.Contains(logs.String(), "ext_authz: check failed") || strings.Contains(logs.String(), "secret-token-value") {
					t.Fatalf("log: %s", logs.String())
				}
			})
		}
	}
}

// A gRPC authorization server that is down (its port accepts and drops
// connections, as while it restarts) is tried again at most about a second
// apart, and once it is back the next requests are asked, not answered
// on_error for as long as grpc-go's default backoff (up to 2 minutes)
// would hold them.
func TestExtAuthzGRPCReconnects(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	var attempts atomic.Int64
	accepting := make(chan struct{})
	go func() {
		defer close(accepting)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			attempts.Add(1)
			c.Close()
		}
	}()
	f := parse(t, "  authz:\n    ext_authz:\n      grpc_address: "+addr+"\n      on_error: deny\n      status_on_error: 503",
		`{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
	log, _ := logBuffer()
	s := testSet(t, f, Options{Metrics: NewMetrics(), Logger: log})
	h, up := handler(t, s, f, 0)
	const down = 6 * time.Second
	for end := time.Now().Add(down); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if w := do(h, "/", nil); w.Code != 503 {
			t.Fatalf("server down: %d, want 503 (on_error: deny)", w.Code)
		}
	}
	// grpc-go's default (1 s, then 1.6 times more each time) makes at most
	// 4 attempts in 6 s; at most a second apart makes about 10.
	if n := attempts.Load(); n < 6 {
		t.Errorf("%d connection attempts in %s while the server was down, want at least 6", n, down)
	}
	ln.Close()
	<-accepting
	back, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := serveAuthz(t, back, func(*authv3.CheckRequest) (*authv3.CheckResponse, error) { return okResponse(nil, nil, nil), nil })
	start := time.Now()
	for {
		w := do(h, "/", nil)
		if w.Code == 204 {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("the server has been back for %s and requests still get %d", time.Since(start), w.Code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if srv.calls.Load() == 0 || up.calls != 1 {
		t.Fatalf("server asked %d times, upstream called %d times", srv.calls.Load(), up.calls)
	}
}

// Many clients at once, each with its own identity: every request reaching
// the upstream carries the identity the server gave to that request, with
// and without the allow cache.
func TestExtAuthzConcurrent(t *testing.T) {
	srv := newAuthzServer(t, policy)
	for _, cache := range []string{"", "\n      cache: {ttl: 1m, key: [header:Authorization]}"} {
		t.Run("cache="+fmt.Sprint(cache != ""), func(t *testing.T) {
			f := parse(t, extAuthzYAML(grpcTarget(srv), cache), `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
			mw, err := testSet(t, f, Options{}).Middleware(f.Routes[0])
			if err != nil {
				t.Fatal(err)
			}
			var bad atomic.Int64
			h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-User-Id") != r.Header.Get("X-Want") || FromContext(r.Context()).Subject != r.Header.Get("X-Want") {
					bad.Add(1)
				}
				w.WriteHeader(http.StatusNoContent)
			}))
			var wg sync.WaitGroup
			var denied atomic.Int64
			for g := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 60 {
						user := fmt.Sprintf("u%d-%d", g, i%7)
						hdr := http.Header{"Authorization": {"Bearer good-" + user}, "X-Want": {user}, "X-User-Id": {"spoof"}}
						if i%5 == 0 {
							hdr = http.Header{"Authorization": {"Bearer nope-" + user}, "X-Want": {"-"}}
						}
						w := do(h, "/", hdr)
						if w.Code == 401 {
							denied.Add(1)
						} else if w.Code != 204 {
							t.Errorf("status %d", w.Code)
						}
					}
				}()
			}
			wg.Wait()
			if bad.Load() != 0 || denied.Load() != 16*12 {
				t.Fatalf("%d requests with another's identity, %d denied", bad.Load(), denied.Load())
			}
		})
	}
}

func TestExtAuthzCache(t *testing.T) {
	srv := newAuthzServer(t, policy)
	clock := newClock()
	f := parse(t, extAuthzYAML(grpcTarget(srv), "\n      cache: {ttl: 5s, key: [header:Authorization, method]}"), `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
	m := NewMetrics()
	h, up := handler(t, testSet(t, f, Options{Now: clock.Now, Metrics: m}), f, 0)
	alice := http.Header{"Authorization": {"Bearer good-alice"}}
	for range 3 {
		if w := do(h, "/", alice); w.Code != 204 || up.header.Get("X-User-Id") != "alice" {
			t.Fatalf("%d", w.Code)
		}
	}
	do(h, "/", http.Header{"Authorization": {"Bearer good-bob"}})
	// Denials are never cached.
	do(h, "/", http.Header{"Authorization": {"Bearer bad"}})
	do(h, "/", http.Header{"Authorization": {"Bearer bad"}})
	if got := srv.calls.Load(); got != 4 {
		t.Fatalf("%d checks, want 4", got)
	}
	if counter(m.Checks, "authz", "cache_hit") != 2 {
		t.Fatal("cache hits not counted")
	}
	clock.Add(6 * time.Second)
	do(h, "/", alice)
	if got := srv.calls.Load(); got != 5 {
		t.Fatalf("after the TTL: %d checks, want 5", got)
	}
}

// A cache key header:Host is the host the request was routed on (as the
// key "host"): no server keeps a Host field in the header map (the edge
// takes an HTTP/2 client's off), so read from there it was empty for every
// request, and a decision cached for one host served the others.
func TestExtAuthzCacheKeyHeaderHost(t *testing.T) {
	for _, key := range []string{"header:Host", "header:host"} {
		t.Run(key, func(t *testing.T) {
			srv := newAuthzServer(t, policy)
			f := parse(t, extAuthzYAML(grpcTarget(srv), "\n      cache: {ttl: 1m, key: [header:Authorization, "+key+"]}"), `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
			h, _ := handler(t, testSet(t, f, Options{}), f, 0)
			for _, host := range []string{"a.example.com", "b.example.com", "a.example.com"} {
				r := httptestRequest("/", http.Header{"Authorization": {"Bearer good-alice"}})
				r.Host = host
				if w := recorder(h, r); w.Code != 204 {
					t.Fatalf("%s: status %d", host, w.Code)
				}
			}
			if got := srv.calls.Load(); got != 2 {
				t.Fatalf("%d checks for two hosts, want 2 (one per host)", got)
			}
		})
	}
}

// The body, when asked for, reaches the server up to max_bytes and the
// upstream whole; a longer one gets 413 unless allow_partial.
func TestExtAuthzBody(t *testing.T) {
	srv := newAuthzServer(t, func(*authv3.CheckRequest) (*authv3.CheckResponse, error) { return okResponse(nil, nil, nil), nil })
	for _, tt := range []struct {
		name, extra string
		body        string
		status      int
		sent        string
	}{
		{"fits", "\n      body: {max_bytes: 16}", `{"amount": 10}`, 204, `{"amount": 10}`},
		{"too long", "\n      body: {max_bytes: 8}", `{"amount": 10}`, 413, ""},
		{"partial", "\n      body: {max_bytes: 8, allow_partial: true}", `{"amount": 10}`, 204, `{"amount`},
		{"not asked", "", `{"amount": 10}`, 204, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := parse(t, extAuthzYAML(grpcTarget(srv), tt.extra), `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
			mw, err := testSet(t, f, Options{}).Middleware(f.Routes[0])
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got, _ = io.ReadAll(r.Body)
				w.WriteHeader(http.StatusNoContent)
			}))
			srv.mu.Lock()
			srv.last = nil
			srv.mu.Unlock()
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.body))
			w := recorder(h, r)
			if w.Code != tt.status {
				t.Fatalf("status %d", w.Code)
			}
			if tt.status == 204 && string(got) != tt.body {
				t.Fatalf("upstream body %q", got)
			}
			if req, _ := srv.lastRequest(); tt.status == 204 && string(req.GetAttributes().GetRequest().GetHttp().GetRawBody()) != tt.sent {
				t.Fatalf("sent %q", req.GetAttributes().GetRequest().GetHttp().GetRawBody())
			}
		})
	}
}

// The check is a child span of the request's, and the server gets the
// trace context.
func TestExtAuthzSpan(t *testing.T) {
	srv := newAuthzServer(t, policy)
	f := parse(t, extAuthzYAML(grpcTarget(srv), ""), `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
	h, _ := handler(t, testSet(t, f, Options{}), f, 0)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
	r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer good-alice")
	if w := recorder(h, r); w.Code != 204 {
		t.Fatalf("%d", w.Code)
	}
	parent.End()
	spans := rec.Ended()
	if len(spans) != 2 || spans[0].Name() != "ext_authz authz" || spans[0].Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Fatalf("spans %v", spans)
	}
	_, md := srv.lastRequest()
	if tp := md.Get("traceparent"); len(tp) != 1 || !strings.Contains(tp[0], parent.SpanContext().TraceID().String()) {
		t.Fatalf("traceparent %q", tp)
	}
}

// forwardAuthServer is a Traefik-style forward-auth endpoint.
func forwardAuthServer(t *testing.T, h http.HandlerFunc) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL + "/verify"
}

func TestExtAuthzForwardAuth(t *testing.T) {
	var mu sync.Mutex
	var seen http.Header
	var seenMethod string
	url := forwardAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen, seenMethod = r.Header.Clone(), r.Method
		mu.Unlock()
		switch r.Header.Get("Cookie") {
		case "session=good":
			w.Header().Set("X-Auth-User", "alice")
			w.Header().Set("X-Auth-Groups", "admins")
			w.Header().Set("X-Not-Listed", "x")
			w.WriteHeader(http.StatusOK)
		case "session=huge":
			w.Header().Set("X-Auth-User", strings.Repeat("a", 40<<10))
			w.WriteHeader(http.StatusOK)
		default:
			w.Header().Set("Location", "https://auth.example/login")
			w.Header().Set("Set-Cookie", "rd=1")
			w.WriteHeader(http.StatusFound)
			_, _ = io.WriteString(w, "login first")
		}
	})
	f := parse(t, "  authz:\n    ext_authz:\n      http_url: "+url+"\n      timeout: 1m\n      headers: [Cookie, X-Forwarded-For]\n      upstream_headers: [X-Auth-User]\n      claims_from_headers: {X-Auth-Groups: groups}\n      forward_claims: {groups: X-Groups}",
		`{name: r, match: {path_prefix: /}, upstream: up, auth: authz, require_claims: {groups: admins}}`)
	h, up := handler(t, testSet(t, f, Options{}), f, 0)
	r := httptest.NewRequest(http.MethodPost, "http://app.example/a/b?c=d", strings.NewReader("body"))
	r.Header = http.Header{"Cookie": {"session=good"}, "X-Auth-User": {"spoof"}, "X-Other": {"not sent"}, "X-Forwarded-For": {"203.0.113.1"}}
	// All headers sent, the client's forwarding headers excepted.
	f2 := parse(t, "  authz:\n    ext_authz:\n      timeout: 1m\n      http_url: "+url, `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
	h2, _ := handler(t, testSet(t, f2, Options{}), f2, 0)
	if w := do(h2, "/", http.Header{"Cookie": {"session=good"}, "X-Forwarded-Prefix": {"/evil"}, "Forwarded": {"for=1.2.3.4"}, "X-Real-Ip": {"1.2.3.4"}, "X-Other": {"sent"}}); w.Code != 204 {
		t.Fatalf("all headers: %d", w.Code)
	}
	mu.Lock()
	if seen.Get("X-Forwarded-Prefix") != "" || seen.Get("Forwarded") != "" || seen.Get("X-Real-Ip") != "" || seen.Get("X-Other") != "sent" || seen.Get("X-Forwarded-For") != "192.0.2.1" {
		t.Fatalf("the auth server saw %v", seen)
	}
	mu.Unlock()
	if w := recorder(h, r); w.Code != 204 {
		t.Fatalf("allowed: %d %s", w.Code, w.Body)
	}
	if up.header.Get("X-Auth-User") != "alice" || up.header.Get("X-Groups") != "admins" || up.header.Get("X-Not-Listed") != "" {
		t.Fatalf("upstream %v", up.header)
	}
	mu.Lock()
	if seenMethod != "GET" || seen.Get("X-Forwarded-Method") != "POST" || seen.Get("X-Forwarded-Host") != "app.example" ||
		seen.Get("X-Forwarded-Uri") != "/a/b?c=d" || seen.Get("X-Forwarded-Proto") != "http" || seen.Get("X-Other") != "" ||
		seen.Get("X-Forwarded-For") != "192.0.2.1" {
		t.Fatalf("the auth server saw %s %v", seenMethod, seen)
	}
	mu.Unlock()
	w := do(h, "/", http.Header{"Cookie": {"session=none"}})
	if w.Code != 302 || w.Header().Get("Location") != "https://auth.example/login" || w.Header().Get("Set-Cookie") != "rd=1" || w.Body.String() != "login first" {
		t.Fatalf("denied: %d %v %q", w.Code, w.Header(), w.Body)
	}
	if w := do(h, "/", http.Header{"Cookie": {"session=huge"}}); w.Code != 403 {
		t.Fatalf("huge header: %d", w.Code)
	}
}

// OPA itself, with a Rego policy over Envoy's CheckRequest (the input of
// OPA's Envoy plugin) served by its data API.
func TestExtAuthzOPA(t *testing.T) {
	opa := startOPA(t, `package envoy.authz

default allow := false

token := t if {
	t := trim_prefix(input.attributes.request.http.headers.authorization, "Bearer ")
}

users := {"tok-alice": {"sub": "alice", "scope": "orders:read"}, "tok-bob": {"sub": "bob", "scope": "orders:write"}}

allow if {
	users[token]
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "orders"
}

result := {"allowed": true, "headers": {"x-user-id": users[token].sub}, "request_headers_to_remove": ["authorization"], "dynamic_metadata": users[token]} if allow

result := {"allowed": false, "http_status": 401, "body": "{\"error\":\"denied by policy\"}", "response_headers_to_add": {"content-type": "application/json", "www-authenticate": "Bearer realm=\"opa\""}} if not allow
`)
	f := parse(t, "  authz:\n    ext_authz:\n      opa_url: "+opa+"/v1/data/envoy/authz/result\n      timeout: 1m\n      forward_claims: {scope: X-Scope}",
		`{name: r, match: {path_prefix: /}, upstream: up, auth: authz, require_claims: {scope: "orders:read"}}`)
	h, up := handler(t, testSet(t, f, Options{}), f, 0)
	tests := []struct {
		name, method, path, token string
		status                    int
	}{
		{"alice reads", "GET", "/orders/1", "tok-alice", 204},
		{"bob lacks the scope", "GET", "/orders/1", "tok-bob", 403},
		{"unknown token", "GET", "/orders/1", "tok-eve", 401},
		{"wrong method", "DELETE", "/orders/1", "tok-alice", 401},
		{"wrong path", "GET", "/admin", "tok-alice", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up.calls = 0
			r := httptest.NewRequest(tt.method, tt.path, nil)
			r.Header.Set("Authorization", "Bearer "+tt.token)
			w := recorder(h, r)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			switch tt.status {
			case 204:
				if up.header.Get("X-User-Id") != "alice" || up.header.Get("X-Scope") != "orders:read" || up.header.Get("Authorization") != "" || up.p.Subject != "alice" {
					t.Fatalf("upstream %v", up.header)
				}
			case 401:
				if w.Body.String() != `{"error":"denied by policy"}` || w.Header().Get("WWW-Authenticate") != `Bearer realm="opa"` || up.calls != 0 {
					t.Fatalf("denial %v %q", w.Header(), w.Body)
				}
			}
		})
	}
	t.Run("undefined decision denies", func(t *testing.T) {
		f := parse(t, "  authz:\n    ext_authz:\n      opa_url: "+opa+"/v1/data/envoy/authz/nothing_here\n      timeout: 1m", `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
		h, _ := handler(t, testSet(t, f, Options{}), f, 0)
		if w := do(h, "/orders/1", http.Header{"Authorization": {"Bearer tok-alice"}}); w.Code != 403 {
			t.Fatalf("%d", w.Code)
		}
	})
}

// startOPA runs the real OPA server (make deps builds it into .tools/bin)
// on a free loopback port with policy, until the test ends.
func startOPA(t *testing.T, policy string) string {
	t.Helper()
	url, _ := startOPAProcess(t, policy)
	return url
}

// startOPAProcess is startOPA that also returns the process, for tests
// that freeze it.
func startOPAProcess(t *testing.T, policy string) (string, *os.Process) {
	t.Helper()
	bin := needTool(t, "opa", "the Go module github.com/open-policy-agent/opa")
	path := writeFile(t, "policy.rego", []byte(policy))
	addr := testutil.FreeAddr(t)
	cmd := exec.Command(bin, "run", "--server", "--addr", addr, "--log-level", "error", "--disable-telemetry", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	url := "http://" + addr
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("opa exited: %s", stderr.String())
		default:
		}
		if resp, err := http.Get(url + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url, cmd.Process
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("opa did not start: %s", stderr.String())
		}
	}
}

// A denial is a denial even when the server's answer breaks the bounds (a
// denial page over max body bytes, too many headers, headers OPA cannot
// read): on_error: allow is for a server that could not decide, and must
// not turn a "no" it could not relay into a "yes". The client gets the
// edge's own JSON refusal with the server's status, never the oversized
// parts, and the upstream is never called. Over gRPC, forward-auth and an
// OPA-shaped decision document.
func TestExtAuthzDenialOverBoundsStaysDenied(t *testing.T) {
	many := make([]*corev3.HeaderValueOption, 100)
	for i := range many {
		many[i] = hv(fmt.Sprintf("X-H%d", i), "v")
	}
	huge := strings.Repeat("b", 100<<10)
	grpcAnswer := func(resp *authv3.CheckResponse) string {
		srv := newAuthzServer(t, func(*authv3.CheckRequest) (*authv3.CheckResponse, error) { return resp, nil })
		return grpcTarget(srv)
	}
	httpAnswer := func(kind string, answer func(w http.ResponseWriter)) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { answer(w) }))
		t.Cleanup(srv.Close)
		return kind + ": " + srv.URL
	}
	tests := []struct {
		name   string
		target string
		status int
	}{
		{"grpc: huge denial body", grpcAnswer(deniedResponse(typev3.StatusCode_Unauthorized, huge)), 401},
		{"grpc: denial with too many headers", grpcAnswer(deniedResponse(typev3.StatusCode_Forbidden, "no", many...)), 403},
		{"forward-auth: huge denial body", httpAnswer("http_url", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, huge)
		}), 403},
		{"forward-auth: denial with too many headers", httpAnswer("http_url", func(w http.ResponseWriter) {
			for i := range 100 {
				w.Header().Set(fmt.Sprintf("X-H%d", i), "v")
			}
			w.WriteHeader(http.StatusUnauthorized)
		}), 401},
		{"opa: huge denial body", httpAnswer("opa_url", func(w http.ResponseWriter) {
			_ = json.NewEncoder(w).Encode(map[string]any{"result": map[string]any{"allowed": false, "http_status": 403, "body": huge}})
		}), 403},
		{"opa: denial headers of the wrong type", httpAnswer("opa_url", func(w http.ResponseWriter) {
			_ = json.NewEncoder(w).Encode(map[string]any{"result": map[string]any{"allowed": false, "http_status": 401, "response_headers_to_add": map[string]any{"X-A": 1}}})
		}), 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := parse(t, extAuthzYAML(tt.target, "\n      on_error: allow"), `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
			h, up := handler(t, testSet(t, f, Options{}), f, 0)
			w := do(h, "/", nil)
			if w.Code != tt.status || up.calls != 0 {
				t.Fatalf("status %d, want %d; upstream calls %d", w.Code, tt.status, up.calls)
			}
			if !strings.Contains(w.Body.String(), `"status":`) || w.Body.Len() > 1000 || w.Header().Get("X-H1") != "" {
				t.Fatalf("the refusal is not the edge's own: %v %.200q", w.Header(), w.Body)
			}
		})
	}
}

// TestExtAuthzCacheUnderLoad: 1,200 concurrent requests of 20 users and a
// forger, through a small decision cache (keyed by Authorization, evicting
// as it fills): every allowed request reaches the upstream as its own
// user, with that user's headers and principal, and a forged credential
// is never served another user's cached allow.
func TestExtAuthzCacheUnderLoad(t *testing.T) {
	srv := newAuthzServer(t, policy)
	f := parse(t, extAuthzYAML(grpcTarget(srv), "\n      cache: {ttl: 1m, size: 8, key: [header:Authorization]}\n      upstream_headers: [X-User-Id]"),
		`{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
	s := testSet(t, f, Options{Now: newClock().Now})
	mw, err := s.Middleware(f.Routes[0])
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int64
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		want := r.Header.Get("X-Expect")
		if p := FromContext(r.Context()); p == nil || p.Subject != want || r.Header.Get("X-User-Id") != want || r.Header.Get("Authorization") != "" {
			t.Errorf("upstream for %s: principal %+v, X-User-Id %q", want, p, r.Header.Get("X-User-Id"))
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	const workers, each = 8, 150
	var forged atomic.Int64
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := range each {
				user := fmt.Sprintf("u%d", (g*7+i)%20)
				hdr := http.Header{"Authorization": {"Bearer good-" + user}, "X-Expect": {user}, "X-User-Id": {"admin"}}
				if i%10 == 0 {
					// Not "good-": denied by the server, whatever is cached.
					forged.Add(1)
					hdr = http.Header{"Authorization": {"Bearer goodu1"}, "X-Expect": {"nobody"}}
				}
				w := do(h, "/", hdr)
				if hdr.Get("X-Expect") == "nobody" && w.Code != http.StatusUnauthorized {
					t.Errorf("forged credential: %d", w.Code)
				}
			}
		})
	}
	wg.Wait()
	if got, want := reached.Load(), int64(workers*each)-forged.Load(); got != want {
		t.Fatalf("%d requests reached the upstream, want %d", got, want)
	}
}
