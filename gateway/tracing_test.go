package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/causewayhq/causeway/mesh/meshtest"
	"github.com/causewayhq/causeway/routes"
)

func TestValidTraceparent(t *testing.T) {
	const ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"spec example", ok, true},
		{"not sampled", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
		{"future version with more fields", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", true},
		{"future version, exact length", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"version ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"version 00 with more fields", ok + "-extra", false},
		{"future version, no dash after flags", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", false},
		{"empty", "", false},
		{"short", ok[:54], false},
		{"upper-case hex", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},
		{"zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"zero parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
		{"bad separator", "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"non-hex flags", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", false},
		{"non-hex trace id", "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := validTraceparent(tt.in); got != tt.want {
				t.Fatalf("validTraceparent(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
	t.Run("started traces are valid, distinct and not sampled", func(t *testing.T) {
		seen := map[string]bool{}
		for range 1000 {
			tp := newTraceparent()
			if !validTraceparent(tp) || !strings.HasSuffix(tp, "-00") {
				t.Fatalf("newTraceparent() = %q", tp)
			}
			if seen[tp[3:35]] {
				t.Fatalf("trace id %s repeated", tp[3:35])
			}
			seen[tp[3:35]] = true
		}
	})
}

func TestOTLPTracesURL(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: "http://127.0.0.1:4318", want: "http://127.0.0.1:4318/v1/traces"},
		{in: "https://otel.example.com/", want: "https://otel.example.com/v1/traces"},
		{in: "http://c:4318/base", want: "http://c:4318/base/v1/traces"},
		{in: "otel:4318", err: "not an http(s) URL"},
		{in: "grpc://otel:4317", err: "not an http(s) URL"},
		{in: "http://", err: "not an http(s) URL"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := otlpTracesURL(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("= %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	t.Run("newTracer refuses a bad endpoint", func(t *testing.T) {
		if _, err := newTracer(context.Background(), routes.Tracing{OTLPEndpoint: "ftp://x", ServiceName: "s"}, nil); err == nil {
			t.Fatal("newTracer accepted ftp://x")
		}
	})
}

// accessLines reads the JSON access log at path.
func accessLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// With tracing off the edge still carries a trace id: the client's, passed
// on untouched, or a new unsampled one.
func TestTracePropagationWithoutTracing(t *testing.T) {
	up := echoUpstream(t, "up")
	logPath := filepath.Join(t.TempDir(), "access.log")
	te := startEdge(t, fmt.Sprintf("version: 1\nlisten: {http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: %q}\n", logPath)+fmt.Sprintf(`upstreams:
  up: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: up}
`, hostPort(up)))

	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name        string
		hdr         []string
		wantTP      string // "" for a new trace
		wantState   string
		wantTraceID string
	}{
		{"client trace passed on", []string{"traceparent", tp, "tracestate", "congo=t61rcWkgMzE"}, tp, "congo=t61rcWkgMzE", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"none: a trace is started", nil, "", "", ""},
		{"malformed: a trace is started, tracestate dropped", []string{"traceparent", "00-xyz", "tracestate", "a=b"}, "", "", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := append([]string{"X-Request-Id", fmt.Sprintf("req-%d", i)}, tt.hdr...)
			resp, body := get(t, te.url+"/x", hdr...)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			e := decodeEcho(t, body)
			got := e.Header.Get("Traceparent")
			if tt.wantTP != "" && got != tt.wantTP {
				t.Fatalf("upstream traceparent %q, want %q", got, tt.wantTP)
			}
			if tt.wantTP == "" && (!validTraceparent(got) || !strings.HasSuffix(got, "-00")) {
				t.Fatalf("upstream traceparent %q: want a new unsampled trace", got)
			}
			if s := e.Header.Get("Tracestate"); s != tt.wantState {
				t.Fatalf("upstream tracestate %q, want %q", s, tt.wantState)
			}
			want := tt.wantTraceID
			if want == "" {
				want = got[3:35]
			}
			// The line is written after the response is sent.
			waitFor(t, func() bool {
				for _, l := range accessLines(t, logPath) {
					if l["request_id"] == fmt.Sprintf("req-%d", i) {
						if l["trace_id"] != want {
							t.Fatalf("access log trace_id %v, want %s", l["trace_id"], want)
						}
						return true
					}
				}
				return false
			})
		})
	}
}

// collector is a real OTLP/HTTP endpoint: it decodes the protobuf export
// requests the SDK's exporter sends.
type collector struct {
	url   string
	mu    sync.Mutex
	spans []span
	posts atomic.Int64
}

type span struct {
	service, name, traceID, spanID, parentID string
	attrs                                    map[string]string
	errored                                  bool
}

func startCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.posts.Add(1)
		c.mu.Lock()
		for _, rs := range req.ResourceSpans {
			svc := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.Key == "service.name" {
					svc = a.Value.GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					sp := span{service: svc, name: s.Name, traceID: hex.EncodeToString(s.TraceId), spanID: hex.EncodeToString(s.SpanId),
						parentID: hex.EncodeToString(s.ParentSpanId), attrs: map[string]string{}, errored: s.GetStatus().GetCode() == 2}
					for _, a := range s.Attributes {
						v := a.Value.GetStringValue()
						if v == "" {
							if i := a.Value.GetIntValue(); i != 0 {
								v = fmt.Sprint(i)
							} else if a.Value.GetBoolValue() {
								v = "true"
							}
						}
						sp.attrs[a.Key] = v
					}
					c.spans = append(c.spans, sp)
				}
			}
		}
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	c.url = srv.URL
	return c
}

func (c *collector) byTrace(traceID string) []span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []span
	for _, s := range c.spans {
		if s.traceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

func find(spans []span, name string) (span, bool) {
	for _, s := range spans {
		if s.name == name {
			return s, true
		}
	}
	return span{}, false
}

// flushEdge pushes the edge's queued spans to the collector now.
func flushTracer(t *testing.T, tf *tracingFeature) {
	t.Helper()
	tf.mu.Lock()
	cur := tf.cur
	tf.mu.Unlock()
	if cur == nil {
		t.Fatal("no active tracer")
	}
	if err := cur.provider.ForceFlush(context.Background()); err != nil {
		t.Fatalf("flushing spans: %v", err)
	}
}

func edgeTracing(e *Edge) *tracingFeature {
	for _, f := range e.features {
		if tf, ok := f.(*tracingFeature); ok {
			return tf
		}
	}
	return nil
}

func writeKeys(t *testing.T, keys map[string]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.txt")
	var b strings.Builder
	for name, key := range keys {
		sum := sha256.Sum256([]byte(key))
		fmt.Fprintf(&b, "%s:%s\n", name, hex.EncodeToString(sum[:]))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Spans for the route, auth, the rate limit and the upstream attempt, in
// one trace, exported over OTLP/HTTP to a real endpoint.
func TestTracingExport(t *testing.T) {
	col := startCollector(t)
	up := echoUpstream(t, "up")
	keys := writeKeys(t, map[string]string{"acme": "s3cret-key"})
	logPath := filepath.Join(t.TempDir(), "access.log")
	config := func(ratio string) string {
		return fmt.Sprintf("version: 1\nlisten: {http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: %q}\n", logPath) +
			fmt.Sprintf(`tracing: {otlp_endpoint: %q, sample_ratio: %s, service_name: edge-test}
authenticators:
  partners: {api_key: {header: X-API-Key, keys_file: %q}}
rate_limits:
  per-key: {key: api_key, limit: 1000, per: 1s}
upstreams:
  up: {endpoints: [%q]}
routes:
  - {name: partners, match: {path_prefix: /p}, auth: partners, rate_limit: per-key, upstream: up}
`, col.url, ratio, keys, hostPort(up))
	}
	te := startEdge(t, config("1"))
	tf := edgeTracing(te.Edge)

	t.Run("a new trace, recorded", func(t *testing.T) {
		resp, body := get(t, te.url+"/p/1", "X-API-Key", "s3cret-key", "X-Request-Id", "new-trace-1")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		tp := decodeEcho(t, body).Header.Get("Traceparent")
		if !validTraceparent(tp) || !strings.HasSuffix(tp, "-01") {
			t.Fatalf("upstream traceparent %q: want a sampled trace", tp)
		}
		// The trace the edge started keeps the id the access log names.
		waitFor(t, func() bool {
			for _, l := range accessLines(t, logPath) {
				if l["request_id"] == "new-trace-1" {
					if l["trace_id"] != tp[3:35] {
						t.Fatalf("access log trace_id %v, upstream saw trace %s", l["trace_id"], tp[3:35])
					}
					return true
				}
			}
			return false
		})
		flushTracer(t, tf)
		spans := col.byTrace(tp[3:35])
		server, ok := find(spans, "partners")
		if !ok {
			t.Fatalf("no server span in %+v", spans)
		}
		if server.parentID != "" || server.service != "edge-test" || server.attrs["http.response.status_code"] != "200" || server.attrs["enduser.id"] != "acme" {
			t.Errorf("server span %+v", server)
		}
		for _, name := range []string{"auth", "ratelimit", "upstream up"} {
			s, ok := find(spans, name)
			if !ok {
				t.Fatalf("no %q span in %+v", name, spans)
			}
			if s.parentID != server.spanID {
				t.Errorf("%s span's parent %s, want the server span %s", name, s.parentID, server.spanID)
			}
		}
		attempt, _ := find(spans, "upstream up")
		if tp[36:52] != attempt.spanID {
			t.Errorf("upstream saw parent %s, want the attempt span %s", tp[36:52], attempt.spanID)
		}
		for _, s := range spans {
			for k, v := range s.attrs {
				if strings.Contains(v, "s3cret-key") {
					t.Errorf("span %s attribute %s carries the API key", s.name, k)
				}
			}
		}
	})

	t.Run("the client's trace continues", func(t *testing.T) {
		const tid = "0af7651916cd43dd8448eb211c80319c"
		resp, body := get(t, te.url+"/p/2", "X-API-Key", "s3cret-key", "traceparent", "00-"+tid+"-b7ad6b7169203331-01", "tracestate", "vendor=x")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		e := decodeEcho(t, body)
		if tp := e.Header.Get("Traceparent"); tp[3:35] != tid {
			t.Fatalf("upstream traceparent %q: trace id changed", tp)
		}
		if s := e.Header.Get("Tracestate"); s != "vendor=x" {
			t.Errorf("tracestate %q not passed on", s)
		}
		flushTracer(t, tf)
		server, ok := find(col.byTrace(tid), "partners")
		if !ok || server.parentID != "b7ad6b7169203331" {
			t.Fatalf("server span %+v (found %v): want the client's span as parent", server, ok)
		}
	})

	t.Run("a refusal ends in the auth span", func(t *testing.T) {
		resp, _ := get(t, te.url+"/p/3", "X-API-Key", "wrong", "traceparent", "00-11111111111111111111111111111111-2222222222222222-01")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", resp.StatusCode)
		}
		flushTracer(t, tf)
		spans := col.byTrace("11111111111111111111111111111111")
		a, ok := find(spans, "auth")
		if !ok || a.attrs["causeway.refused"] != "true" || a.attrs["http.response.status_code"] != "401" {
			t.Fatalf("auth span %+v (found %v)", a, ok)
		}
		if _, ok := find(spans, "upstream up"); ok {
			t.Error("an upstream attempt span for a refused request")
		}
	})

	t.Run("ratio 0: new traces not recorded, sampled callers still are", func(t *testing.T) {
		writeFile(t, te.path, config("0"))
		if err := te.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		tf := edgeTracing(te.Edge)
		resp, body := get(t, te.url+"/p/4", "X-API-Key", "s3cret-key")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		tp := decodeEcho(t, body).Header.Get("Traceparent")
		if !strings.HasSuffix(tp, "-00") {
			t.Errorf("upstream traceparent %q: want unsampled", tp)
		}
		const sampled = "33333333333333333333333333333333"
		if resp, _ := get(t, te.url+"/p/5", "X-API-Key", "s3cret-key", "traceparent", "00-"+sampled+"-4444444444444444-01"); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		flushTracer(t, tf)
		if spans := col.byTrace(tp[3:35]); len(spans) != 0 {
			t.Errorf("unsampled trace exported: %+v", spans)
		}
		if _, ok := find(col.byTrace(sampled), "partners"); !ok {
			t.Error("the caller's sampled trace was not recorded")
		}
	})
}

// One trace id from the client through the edge and the sidecar to the
// service, with tracing off and on; with tracing on the spans of both hops
// chain up.
func TestTracePropagationMesh(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("tracing=%v", on), func(t *testing.T) {
			ca := meshtest.NewCA(t, "example.org")
			edgeFiles := ca.IssueFiles(t.TempDir(), edgeID)
			ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
			var col *collector
			tracing := ""
			if on {
				col = startCollector(t)
				tracing = fmt.Sprintf("tracing: {otlp_endpoint: %q}\n", col.url)
			}
			svc := echoUpstream(t, "orders")
			sc := startSidecar(t, sidecarConfig(ordersFiles, hostPort(svc), []string{edgeID}, nil)+tracing)
			te := startEdge(t, meshEdgeConfig(edgeFiles, sc.Addr("inbound"), ordersID)+tracing)

			const tid = "5b8aa5a2d2c872e8321cf37308d69df2"
			resp, body := get(t, te.url+"/orders/1", "traceparent", "00-"+tid+"-051581bf3cb55c13-01")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			tp := decodeEcho(t, body).Header.Get("Traceparent")
			if !validTraceparent(tp) || tp[3:35] != tid {
				t.Fatalf("service saw traceparent %q, want trace %s", tp, tid)
			}
			if !on {
				if tp[36:52] != "051581bf3cb55c13" {
					t.Errorf("without tracing the parent id changed: %q", tp)
				}
				return
			}
			flushTracer(t, edgeTracing(te.Edge))
			flushTracer(t, &sc.tracing)
			spans := col.byTrace(tid)
			edgeAttempt, ok1 := find(spans, "upstream orders")
			sidecarServer, ok2 := find(spans, "inbound")
			sidecarAttempt, ok3 := find(spans, "upstream local")
			if !ok1 || !ok2 || !ok3 {
				t.Fatalf("spans %+v: want the edge's attempt, the sidecar's server span and its attempt", spans)
			}
			if sidecarServer.parentID != edgeAttempt.spanID || sidecarServer.service != "causeway-sidecar" || edgeAttempt.service != "causeway-edge" {
				t.Errorf("sidecar span %+v is not a child of the edge's attempt %+v", sidecarServer, edgeAttempt)
			}
			if tp[36:52] != sidecarAttempt.spanID {
				t.Errorf("service saw parent %s, want the sidecar's attempt %s", tp[36:52], sidecarAttempt.spanID)
			}
		})
	}
}

// A reload that changes the tracing section starts a new tracer and shuts
// the old one down once its configuration is retired; TestMain's goleak
// check catches a batch processor left running.
func TestTracingReload(t *testing.T) {
	col := startCollector(t)
	up := echoUpstream(t, "up")
	body := fmt.Sprintf(`upstreams:
  up: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: up}
`, hostPort(up))
	te := startEdge(t, listenHeader+fmt.Sprintf("tracing: {otlp_endpoint: %q, service_name: a}\n", col.url)+body)
	first := edgeTracing(te.Edge).current()
	if first == nil {
		t.Fatal("no tracer")
	}
	tests := []struct {
		name    string
		tracing string
		same    bool
		none    bool
	}{
		{"unchanged", fmt.Sprintf("tracing: {otlp_endpoint: %q, service_name: a}\n", col.url), true, false},
		{"service renamed", fmt.Sprintf("tracing: {otlp_endpoint: %q, service_name: b}\n", col.url), false, false},
		{"removed", "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := edgeTracing(te.Edge).current()
			writeFile(t, te.path, listenHeader+tt.tracing+body+"# "+tt.name+"\n")
			if err := te.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			if resp, _ := get(t, te.url+"/"); resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			after := edgeTracing(te.Edge).current()
			switch {
			case tt.none && after != nil:
				waitFor(t, func() bool { return edgeTracing(te.Edge).current() == nil })
			case !tt.none && (after == before) != tt.same:
				t.Fatalf("tracer reused = %v, want %v", after == before, tt.same)
			}
		})
	}
}

// A tracing section whose exporter cannot be built refuses the file.
func TestTracingFeatureBadConfig(t *testing.T) {
	tf := &tracingFeature{pool: newTracerPool()}
	f := &routes.File{Path: "t.yaml", Tracing: &routes.Tracing{OTLPEndpoint: "nope", ServiceName: "x"}}
	if _, _, err := tf.prepare(context.Background(), f, nil); err == nil || !strings.Contains(err.Error(), "t.yaml:1:1: tracing:") {
		t.Fatalf("prepare = %v, want a located error", err)
	}
	if st, release, err := tf.prepare(context.Background(), &routes.File{}, nil); err != nil || st.stages != nil || release != nil {
		t.Fatalf("no tracing section: %+v %v", st, err)
	}
}

// An unreachable collector costs spans, never requests, and cannot hold up
// a stop for longer than the flush bound.
func TestTracingCollectorDown(t *testing.T) {
	up := echoUpstream(t, "up")
	te := startEdge(t, listenHeader+fmt.Sprintf(`tracing: {otlp_endpoint: "http://%s"}
upstreams:
  up: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: up}
`, freeAddr(t), hostPort(up)))
	for i := range 20 {
		if resp, _ := get(t, te.url+"/"); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
	// The stop waits for the flush, bounded by tracerShutdownTimeout;
	// testEdge.stop fails the run past 10s.
	te.stop()
	te.done <- nil // for the stop in Cleanup
	if !strings.Contains(te.logs.String(), "tracing: spans lost") {
		t.Errorf("no export failure in the edge's log:\n%s", te.logs.String())
	}
}

// current is the tracer a new configuration would reuse (tests only).
func (tf *tracingFeature) current() *tracer {
	tf.mu.Lock()
	defer tf.mu.Unlock()
	return tf.cur
}

type recordingTransport struct{ got *http.Request }

func (rt *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.got = r
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: r}, nil
}

// Without tracing, nothing of OpenTelemetry runs per request: stage
// middleware is used as it is, and the transport passes the very request it
// was given.
func TestTracingOffCostsNothing(t *testing.T) {
	mw := func(h http.Handler) http.Handler { return h }
	same := func(a, b func(http.Handler) http.Handler) bool {
		return reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer()
	}
	tests := []struct {
		name   string
		stage  Stage
		traced bool
		same   bool
	}{
		{"rate limit, tracing off", namedStage{"ratelimit", nil}, false, true},
		{"unnamed stage, tracing on", stageFunc(nil), true, true},
		{"rate limit, tracing on", namedStage{"ratelimit", nil}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := same(withStageSpan(tt.stage, mw, tt.traced), mw); got != tt.same {
				t.Fatalf("middleware used as is = %v, want %v", got, tt.same)
			}
		})
	}
	t.Run("transport", func(t *testing.T) {
		rec := &recordingTransport{}
		req := httptest.NewRequest(http.MethodGet, "http://up/x", nil)
		st := &reqState{}
		req = req.WithContext(context.WithValue(req.Context(), stateKey{}, st))
		if _, err := traceTransport(rec, "up").RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		if rec.got != req {
			t.Fatal("the transport copied the request with tracing off")
		}
	})
	t.Run("no tracing section, no tracer stage", func(t *testing.T) {
		if tracingStages([]Stage{stageFunc(nil), namedStage{"ratelimit", nil}}) {
			t.Fatal("tracing detected without a tracer")
		}
	})
}

// Each upstream attempt has its own span: a retry after a refused
// connection shows as a failed attempt and a successful one, both under
// the route's span, and the upstream sees the second as its parent.
func TestTracingRetryAttempts(t *testing.T) {
	col := startCollector(t)
	up := echoUpstream(t, "up")
	te := startEdge(t, listenHeader+fmt.Sprintf(`tracing: {otlp_endpoint: %q}
upstreams:
  up:
    endpoints: [%q, %q]
    retries: {attempts: 1, on: [connect_failure], budget_percent: 100}
routes:
  - {name: r, match: {path_prefix: /}, upstream: up}
`, col.url, freeAddr(t), hostPort(up)))
	// Round robin sends at least one of two requests to the dead endpoint
	// first (both, when the retry moved the counter on).
	var tps []string
	for i := range 2 {
		tid := fmt.Sprintf("%032x", i+1)
		resp, body := get(t, te.url+"/", "traceparent", "00-"+tid+"-00000000000000aa-01")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		tps = append(tps, decodeEcho(t, body).Header.Get("Traceparent"))
	}
	flushTracer(t, edgeTracing(te.Edge))
	retried := 0
	for i, tp := range tps {
		spans := col.byTrace(fmt.Sprintf("%032x", i+1))
		server, ok := find(spans, "r")
		if !ok {
			t.Fatalf("no server span in %+v", spans)
		}
		var attempts []span
		for _, s := range spans {
			if s.name == "upstream up" {
				if s.parentID != server.spanID {
					t.Errorf("attempt %+v not under the server span", s)
				}
				attempts = append(attempts, s)
			}
		}
		last := attempts[len(attempts)-1]
		for _, a := range attempts {
			if a.spanID == tp[36:52] {
				last = a
			}
		}
		if last.errored || last.spanID != tp[36:52] {
			t.Errorf("the upstream's parent %s is not the successful attempt %+v", tp[36:52], last)
		}
		if len(attempts) == 2 {
			retried++
			failed := attempts[0]
			if failed.spanID == last.spanID {
				failed = attempts[1]
			}
			if !failed.errored {
				t.Errorf("the refused attempt %+v is not marked as an error", failed)
			}
		}
	}
	if retried == 0 {
		t.Fatal("no request was retried")
	}
}

// Spans started outside a request (background work, a library's own
// spans) get IDs from the same generator, with no request state to read.
func TestSpanIDsOutsideARequest(t *testing.T) {
	var g stateIDs
	tid, sid := g.NewIDs(context.Background())
	if !tid.IsValid() || !sid.IsValid() {
		t.Fatalf("ids %v %v", tid, sid)
	}
	if sid2 := g.NewSpanID(context.Background(), tid); !sid2.IsValid() || sid2 == sid {
		t.Fatalf("span id %v after %v", sid2, sid)
	}
}
