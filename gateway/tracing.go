package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/causewayhq/causeway/gateway/internal/pipeline"
	"github.com/causewayhq/causeway/internal/refpool"
	"github.com/causewayhq/causeway/routes"
)

// W3C Trace Context (https://www.w3.org/TR/trace-context/).
//
// Every request leaves the edge (and every sidecar) with a traceparent, so
// the trace id in the access log follows the request across hops whether or
// not tracing is configured:
//
//   - tracing off: a valid traceparent from the client is passed on as it
//     came (the proxy is not a participant) and its trace id is logged; when
//     there is none (or it is malformed) a new trace is started with the
//     sampled flag off, since nobody records it here.
//   - tracing on: the route's server span continues the client's trace (or
//     the one started above, with the same trace id) and every hop after it
//     sees its own span as the parent.
const (
	traceparentHeader = "Traceparent"
	tracestateHeader  = "Tracestate"
)

// propagateTrace makes sure r carries a valid traceparent and records the
// trace id for the access log. It costs no allocation when the client sent
// one, and one string when it starts a trace.
func (st *reqState) propagateTrace(r *http.Request) { st.propagateTraceInto(r, nil, "") }

// propagateTraceInto is propagateTrace with the slice (length 1) that
// holds a traceparent it starts, so that the caller can allocate it with
// others (nil allocates one), and the traceparent to start when the
// caller made one already, having found r's invalid or missing ("": make
// one).
func (st *reqState) propagateTraceInto(r *http.Request, slot []string, made string) {
	tp := made
	if tp == "" {
		if tp = r.Header.Get(traceparentHeader); validTraceparent(tp) {
			st.traceID = tp[3:35]
			return
		}
		tp = newTraceparent()
	}
	// A tracestate without a valid traceparent is meaningless (spec 3.3).
	r.Header.Del(tracestateHeader)
	if slot == nil {
		slot = make([]string, 1)
	}
	slot[0] = tp
	r.Header[traceparentHeader] = slot
	st.traceID = tp[3:35]
	st.traceStarted = true
}

// validTraceparent accepts version 00 exactly and later versions by their
// 00 prefix, as the spec asks of a version-00 parser.
func validTraceparent(s string) bool {
	if len(s) < 55 || (len(s) > 55 && s[55] != '-') {
		return false
	}
	if s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	if !lowerHex(s[0:2]) || s[0:2] == "ff" || (s[0:2] == "00" && len(s) != 55) {
		return false
	}
	return lowerHex(s[3:35]) && !allZero(s[3:35]) && lowerHex(s[36:52]) && !allZero(s[36:52]) && lowerHex(s[53:55])
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}

// newTraceparent starts a trace: random ids, not sampled. Trace ids need to
// be unique, not secret; math/rand/v2's generator is seeded from the OS.
func newTraceparent() string {
	var b [traceparentLen]byte
	putTraceparent(&b)
	return string(b[:])
}

const traceparentLen = 55

// newRequestIDs is a new request id (pipeline.NewUUID's) and a new
// traceparent (newTraceparent's), for a request that brought neither:
// both views of one string, one allocation instead of two.
func newRequestIDs() (id, traceparent string) {
	var b [pipeline.UUIDLen + traceparentLen]byte
	pipeline.PutUUID((*[pipeline.UUIDLen]byte)(b[:pipeline.UUIDLen]))
	putTraceparent((*[traceparentLen]byte)(b[pipeline.UUIDLen:]))
	both := string(b[:])
	return both[:pipeline.UUIDLen], both[pipeline.UUIDLen:]
}

// putTraceparent writes a new traceparent (newTraceparent's) into b.
func putTraceparent(b *[traceparentLen]byte) {
	const hexdigits = "0123456789abcdef"
	copy(b[:], "00-")
	put := func(at int, v uint64) {
		for i := 15; i >= 0; i-- {
			b[at+i] = hexdigits[v&0xf]
			v >>= 4
		}
	}
	hi := rand.Uint64()
	if hi == 0 {
		hi = 1 // an all-zero trace id is invalid
	}
	put(3, hi)
	put(19, rand.Uint64())
	b[35] = '-'
	put(36, rand.Uint64()|1) // never all zero
	copy(b[52:], "-00")
}

// reqTrace is a request's tracing state when tracing is on; reqState.trace
// is nil otherwise, and that nil is the only check the hot path pays.
type reqTrace struct {
	t    *tracer
	span trace.Span // the route's server span
	// stage is the span of the stage running now (auth, rate limit, ...),
	// ended when the stage passes the request on or answers it itself.
	stage trace.Span
}

// tracer exports spans of one tracing configuration. It is shared (through
// the server's tracer pool) by the generations of successive reloads while
// the tracing section is the same, and shut down (flushing what is queued)
// when the last one is retired.
type tracer struct {
	cfg      routes.Tracing
	provider *sdktrace.TracerProvider
	tr       trace.Tracer
	prop     propagation.TextMapPropagator
}

// tracerShutdownTimeout bounds the flush of queued spans at shutdown, so an
// unreachable collector cannot hold a reload or a stop.
const tracerShutdownTimeout = 5 * time.Second

func newTracer(ctx context.Context, cfg routes.Tracing, log *slog.Logger) (*tracer, error) {
	endpoint, err := otlpTracesURL(cfg.OTLPEndpoint)
	if err != nil {
		return nil, err
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint), otlptracehttp.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter for %s: %w", cfg.OTLPEndpoint, err)
	}
	return newTracerWith(cfg, &loggingExporter{SpanExporter: exp, log: log, endpoint: cfg.OTLPEndpoint}), nil
}

// loggingExporter reports failed exports on the edge's own logger, at most
// once a minute with a count of those in between, instead of OpenTelemetry's
// process-wide error handler (the standard logger, once per batch).
type loggingExporter struct {
	sdktrace.SpanExporter
	log        *slog.Logger
	endpoint   string
	mu         sync.Mutex
	lastLogged time.Time
	suppressed int
}

func (l *loggingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := l.SpanExporter.ExportSpans(ctx, spans)
	if err == nil || l.log == nil {
		return err
	}
	l.mu.Lock()
	now := time.Now()
	if !l.lastLogged.IsZero() && now.Sub(l.lastLogged) < time.Minute {
		l.suppressed++
		l.mu.Unlock()
		return nil
	}
	n := l.suppressed
	l.lastLogged, l.suppressed = now, 0
	l.mu.Unlock()
	l.log.Warn("tracing: spans lost: the OTLP collector did not take them", "endpoint", l.endpoint, "spans", len(spans), "failed_exports_since_last_report", n, "error", err.Error())
	return nil
}

func newTracerWith(cfg routes.Tracing, exp sdktrace.SpanExporter) *tracer {
	ratio := 1.0
	if cfg.SampleRatio != nil {
		ratio = *cfg.SampleRatio
	}
	provider := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		// A caller's decision is kept, so one trace is recorded across
		// all hops or not at all; only new traces are sampled here.
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithIDGenerator(stateIDs{}),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", cfg.ServiceName))),
	)
	return &tracer{
		cfg:      cfg,
		provider: provider,
		tr:       provider.Tracer("github.com/causewayhq/causeway/gateway"),
		prop:     propagation.TraceContext{},
	}
}

// otlpTracesURL is the exporter's POST URL: the base URL's path with
// /v1/traces appended, as the OTLP/HTTP specification has it.
func otlpTracesURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("tracing: otlp_endpoint %q is not an http(s) URL", base)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
	return u.String(), nil
}

// shutdown flushes what is queued, bounded by tracerShutdownTimeout so an
// unreachable collector cannot hold up a reload or a stop.
func (t *tracer) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), tracerShutdownTimeout)
	defer cancel()
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: flushing spans to %s: %w", t.cfg.OTLPEndpoint, err)
	}
	return nil
}

// newTracerPool shares a tracer between generations whose tracing sections
// are the same (tracingKey).
func newTracerPool() *refpool.Pool[string, *tracer] {
	return refpool.New[string]((*tracer).shutdown)
}

// tracingKey identifies a tracing section: generations with the same key
// share one tracer.
func tracingKey(cfg routes.Tracing) string {
	ratio := 1.0
	if cfg.SampleRatio != nil {
		ratio = *cfg.SampleRatio
	}
	return fmt.Sprintf("%s\x00%s\x00%g", cfg.OTLPEndpoint, cfg.ServiceName, ratio)
}

// stateIDs makes the server span of a trace the edge started keep the trace
// id already written to traceparent (and so to the access log); every other
// id is random.
type stateIDs struct{}

func (stateIDs) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	var tid trace.TraceID
	if st := stateIn(ctx); st != nil && st.traceStarted && st.trace != nil && st.trace.span == nil {
		if id, err := trace.TraceIDFromHex(st.traceID); err == nil {
			tid = id
		}
	}
	if !tid.IsValid() {
		fillRandom(tid[:])
	}
	return tid, newSpanID()
}

func (stateIDs) NewSpanID(context.Context, trace.TraceID) trace.SpanID { return newSpanID() }

func newSpanID() trace.SpanID {
	var s trace.SpanID
	for !s.IsValid() {
		fillRandom(s[:])
	}
	return s
}

func fillRandom(b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rand.Uint64()
		for j := i; j < i+8 && j < len(b); j++ {
			b[j] = byte(v)
			v >>= 8
		}
	}
}

// Middleware is the tracer as the first stage of every route: the server
// span covers auth, rate limits, plugins and the upstream attempts; its
// start is the request's arrival, before routing.
func (t *tracer) Middleware(rc routes.Route) (func(http.Handler) http.Handler, error) {
	name := rc.Name
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			st := stateFrom(r.Context())
			ctx := r.Context()
			if !st.traceStarted {
				ctx = t.prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
			}
			st.trace = &reqTrace{t: t}
			ctx, span := t.tr.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(st.start),
				trace.WithAttributes(
					attribute.String("http.request.method", methodLabel(r.Method)),
					attribute.String("http.route", name),
					attribute.String("url.path", r.URL.Path),
					attribute.String("server.address", r.Host),
					attribute.String("causeway.request_id", st.requestID),
				))
			st.trace.span = span
			// Whatever follows (a plugin calling out, the upstream) sees
			// this span as its parent.
			t.prop.Inject(ctx, propagation.HeaderCarrier(r.Header))
			defer func() {
				status := st.rec.status
				if status == 0 {
					status = http.StatusOK
				}
				span.SetAttributes(attribute.Int("http.response.status_code", status))
				if status >= 500 {
					span.SetStatus(codes.Error, http.StatusText(status))
				}
				if st.principal != "" {
					span.SetAttributes(attribute.String("enduser.id", st.principal))
				}
				span.End()
			}()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}, nil
}

var _ Stage = (*tracer)(nil)

// namedStage gives a stage the name of its spans.
type namedStage struct {
	name string
	Stage
}

// stageSpanName is the span name of a stage, or "" for stages without spans.
func stageSpanName(s Stage) string {
	if s, ok := s.(namedStage); ok {
		return s.name
	}
	return ""
}

// tracingStages reports whether stages include a tracer, so routes of a
// configuration without tracing get no span wrappers at all.
func tracingStages(stages []Stage) bool {
	for _, s := range stages {
		if _, ok := s.(*tracer); ok {
			return true
		}
	}
	return false
}

// withStageSpan wraps one stage's middleware in a span that ends when the
// stage passes the request on (its own work done) or answers it itself
// (a refusal: 401, 403, 429). The span is a sibling of the upstream
// attempts, under the server span.
func withStageSpan(s Stage, mw func(http.Handler) http.Handler, traced bool) func(http.Handler) http.Handler {
	name := stageSpanName(s)
	if !traced || name == "" {
		return mw
	}
	return func(next http.Handler) http.Handler {
		inner := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			st := stateFrom(r.Context())
			if st.trace != nil && st.trace.stage != nil {
				st.trace.stage.End()
				st.trace.stage = nil
			}
			next.ServeHTTP(w, r)
		}))
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			st := stateFrom(r.Context())
			if st.trace == nil || st.trace.span == nil {
				inner.ServeHTTP(w, r)
				return
			}
			_, sp := st.trace.t.tr.Start(trace.ContextWithSpan(r.Context(), st.trace.span), name)
			st.trace.stage = sp
			inner.ServeHTTP(w, r)
			if st.trace.stage == sp {
				// The stage answered: the request went no further.
				sp.SetAttributes(attribute.Bool("causeway.refused", true), attribute.Int("http.response.status_code", st.rec.status))
				if st.rec.status >= 500 {
					sp.SetStatus(codes.Error, http.StatusText(st.rec.status))
				}
				sp.End()
				st.trace.stage = nil
			}
		})
	}
}

// tracedTransport gives every upstream attempt (a retry is another
// attempt) a client span, and sends that span as the next hop's parent.
// Without tracing it is one context lookup and a nil check.
type tracedTransport struct {
	next     http.RoundTripper
	upstream string
}

func traceTransport(next http.RoundTripper, upstream string) http.RoundTripper {
	return &tracedTransport{next: next, upstream: upstream}
}

func (t *tracedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st := stateFrom(req.Context())
	if st.trace == nil || st.trace.span == nil {
		return t.next.RoundTrip(req)
	}
	tr := st.trace.t
	ctx, sp := tr.tr.Start(trace.ContextWithSpan(req.Context(), st.trace.span), "upstream "+t.upstream,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("causeway.upstream", t.upstream),
			attribute.String("server.address", req.URL.Host),
			attribute.String("http.request.method", methodLabel(req.Method)),
		))
	// A RoundTripper must not change the request it is given.
	out := req.Clone(req.Context())
	// The same Trailer map, not a copy: the forwarder fills its values
	// in at the end of the client's body (reqtrailer.go).
	out.Trailer = req.Trailer
	tr.prop.Inject(ctx, propagation.HeaderCarrier(out.Header))
	resp, err := t.next.RoundTrip(out)
	if err != nil {
		sp.RecordError(err)
		sp.SetStatus(codes.Error, "upstream attempt failed")
		sp.End()
		return nil, err
	}
	sp.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode >= 500 {
		sp.SetStatus(codes.Error, http.StatusText(resp.StatusCode))
	}
	// The span ends at the response headers, as upstream_duration_seconds
	// does; the body streams to the client under the server span.
	sp.End()
	return resp, nil
}

// tracingFeature gives each generation the tracer of its tracing section,
// from the server's tracer pool, and knows the committed one.
type tracingFeature struct {
	pool *refpool.Pool[string, *tracer]
	// log receives export failures.
	log *slog.Logger
	mu  sync.Mutex
	cur *tracer // the committed generation's; nil without tracing
}

// acquire returns the tracer for cfg (nil when cfg is nil) with one
// reference held for the caller until release: the tracer in use while
// cfg is unchanged, a new one otherwise. commit makes it the current one.
func (tf *tracingFeature) acquire(ctx context.Context, cfg *routes.Tracing) (t *tracer, release func(), commit func(), err error) {
	commit = func() {
		tf.mu.Lock()
		tf.cur = t
		tf.mu.Unlock()
	}
	if cfg == nil {
		return nil, nil, commit, nil
	}
	key := tracingKey(*cfg)
	t, _, err = tf.pool.Acquire(key, func() (*tracer, error) { return newTracer(ctx, *cfg, tf.log) })
	if err != nil {
		return nil, nil, nil, err
	}
	return t, func() { _, _ = tf.pool.Release(key) }, commit, nil
}

// prepare is the edge's feature hook: the tracer lives as long as the
// generations that name it.
func (tf *tracingFeature) prepare(ctx context.Context, f, _ *routes.File) (prepared, func() error, error) {
	t, release, commit, err := tf.acquire(ctx, f.Tracing)
	if err != nil {
		return prepared{}, nil, &routes.Error{File: f.Path, Pos: f.At("tracing"), Path: "tracing", Msg: err.Error()}
	}
	p := prepared{commit: commit}
	if t == nil {
		return p, nil, nil
	}
	p.stages = map[string]Stage{stageTracing: t}
	return p, func() error { release(); return nil }, nil
}

func (tf *tracingFeature) ready() error { return nil }

// close is a no-op: each tracer is shut down when the last generation that
// uses it is released.
func (tf *tracingFeature) close() error { return nil }

// tracedStages puts the tracer (when there is one) before the other stages.
func tracedStages(t *tracer, rest ...Stage) []Stage {
	if t == nil {
		return rest
	}
	return append([]Stage{t}, rest...)
}
