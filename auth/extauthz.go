package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http/httpguts"

	"github.com/causewayhq/causeway/internal/httperr"
	"github.com/causewayhq/causeway/routes"
)

// Bounds on what an authorization server may hand back: its answer is
// copied into requests and responses, so a hostile or broken one must not
// be able to make them arbitrarily large.
const (
	maxAuthzHeaders     = 64
	maxAuthzHeaderBytes = 16 << 10
	maxAuthzBodyBytes   = 64 << 10
)

// Metrics are the ext_authz authenticators' own metrics; register
// Collectors once per process and hand the same Metrics to every Set.
type Metrics struct {
	// Checks counts checks by result: allow, deny, error_allow, error_deny,
	// cache_hit.
	Checks *prometheus.CounterVec
	// Duration is the time a check took, cache hits excluded.
	Duration *prometheus.HistogramVec
}

// NewMetrics returns unregistered ext_authz metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		Checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causeway_ext_authz_checks_total",
			Help: "External authorization checks by authenticator and result (allow, deny, error_allow, error_deny, cache_hit).",
		}, []string{"authenticator", "result"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "causeway_ext_authz_duration_seconds",
			Help:    "Time an external authorization check took, by authenticator (cache hits excluded).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"authenticator"}),
	}
}

// Collectors are the metrics to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Checks, m.Duration}
}

// decision is what an authorization server said about one request.
type decision struct {
	allow bool
	// On allow: headers set (or appended) on the upstream request, headers
	// removed from it, and claims for the principal.
	set, add http.Header
	remove   []string
	claims   map[string]any
	// On deny: the answer to the client.
	status int
	header http.Header
	body   []byte
	// bare: a denial whose headers or body broke the bounds; the client
	// gets the edge's own refusal with status (see deniedOverBounds).
	bare bool
}

// deniedOverBounds is the decision of a server that denied with an answer
// past the bounds, returned with the error that says which: a denial it
// stays, whatever on_error says (on_error is for a server that could not
// decide), answered without the server's headers and body.
func deniedOverBounds(code int) *decision {
	return &decision{status: denialStatus(code), bare: true}
}

// checkInput is the request as the servers are told about it.
type checkInput struct {
	r       *http.Request
	headers http.Header // the ones to send
	body    []byte
	// partial: body is the first max_bytes of a longer body
	// (allow_partial). The server is told (partialBodyHeader); OPA gets no
	// parsed_body of it.
	partial  bool
	clientIP string
	now      time.Time
}

// authzClient is one protocol's way of asking: gRPC, forward-auth or OPA.
type authzClient interface {
	check(ctx context.Context, in *checkInput) (*decision, error)
	close()
	kind() string
}

// extAuthz authenticates by asking an external authorization server.
type extAuthz struct {
	authName      string
	client        authzClient
	timeout       time.Duration
	headers       []string // nil: all but hop-by-hop
	bodyMax       int
	bodyPartial   bool
	onErrorAllow  bool
	statusOnError int
	forwardClaims map[string]string // claim -> canonical header
	forwarded     []string          // every header a decision or forward_claims may set upstream
	cache         *tokenCache
	cacheTTL      time.Duration
	cacheKey      []string
	clientIP      func(*http.Request) string
	metrics       *Metrics
	log           *slog.Logger
	now           func() time.Time
}

var _ authenticator = (*extAuthz)(nil)

func newExtAuthz(name string, c *routes.ExtAuthz, opts Options) (*extAuthz, error) {
	a := &extAuthz{
		authName:      name,
		timeout:       c.Timeout.D(),
		onErrorAllow:  c.OnError == "allow",
		statusOnError: c.StatusOnError,
		clientIP:      opts.ClientIP,
		metrics:       opts.Metrics,
		log:           opts.Logger.With("authenticator", name),
		now:           opts.Now,
		forwardClaims: map[string]string{},
	}
	if a.timeout <= 0 {
		a.timeout = routes.DefaultExtAuthzTimeout
	}
	if a.statusOnError == 0 {
		a.statusOnError = routes.DefaultExtAuthzStatusOnError
	}
	for _, h := range c.Headers {
		a.headers = append(a.headers, http.CanonicalHeaderKey(h))
	}
	if b := c.Body; b != nil {
		a.bodyMax, a.bodyPartial = b.MaxBytes, b.AllowPartial
	}
	for claim, h := range c.ForwardClaims {
		a.forwardClaims[claim] = http.CanonicalHeaderKey(h)
		a.forwarded = append(a.forwarded, http.CanonicalHeaderKey(h))
	}
	claimsFrom := map[string]string{}
	for h, claim := range c.ClaimsFromHeaders {
		claimsFrom[http.CanonicalHeaderKey(h)] = claim
	}
	var upstream []string
	for _, h := range c.UpstreamHeaders {
		if routes.EdgeStatedHeader(h) {
			return nil, fmt.Errorf("upstream_headers: %q is set by the edge itself", h)
		}
		upstream = append(upstream, http.CanonicalHeaderKey(h))
	}
	// Client copies of what the server may vouch for are removed, so an
	// upstream never takes a client's X-User-Id for the server's.
	a.forwarded = append(a.forwarded, upstream...)
	if ca := c.Cache; ca != nil {
		a.cache = newTokenCache(ca.Size)
		a.cacheTTL = ca.TTL.D()
		a.cacheKey = ca.Key
	}
	tlsConf, err := authzTLS(c.CAFile)
	if err != nil {
		return nil, &keyError{key: "ext_authz.ca_file", err: err}
	}
	switch {
	case c.GRPCAddress != "":
		a.client, err = newGRPCAuthz(c.GRPCAddress, c.GRPCTLS, tlsConf)
	case c.HTTPURL != "":
		a.client, err = newHTTPAuthz(c.HTTPURL, tlsConf, upstream, claimsFrom, false, opts.ExtAuthzTransport)
	case c.OPAURL != "":
		a.client, err = newHTTPAuthz(c.OPAURL, tlsConf, upstream, claimsFrom, true, opts.ExtAuthzTransport)
	default:
		err = errors.New("set exactly one of grpc_address, http_url or opa_url")
	}
	if err != nil {
		return nil, err
	}
	return a, nil
}

func authzTLS(caFile string) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return conf, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading the CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", caFile)
	}
	conf.RootCAs = pool
	return conf, nil
}

func (a *extAuthz) name() string     { return a.authName }
func (a *extAuthz) realm() string    { return a.authName }
func (a *extAuthz) scheme() string   { return "" } // no challenge: the server writes its own
func (a *extAuthz) source() source   { return source{kind: fromNowhere} }
func (a *extAuthz) keepToken() bool  { return true } // the server says what to remove
func (a *extAuthz) jwksCache() *jwks { return nil }
func (a *extAuthz) close()           { a.client.close() }

func (a *extAuthz) forwardedHeaders() []string { return a.forwarded }

func (a *extAuthz) forwardTo(h http.Header, p *Principal) {
	if d := p.authz; d != nil {
		for _, name := range d.remove {
			h.Del(name)
		}
		for k, vs := range d.set {
			// A copy: d is shared by every request the cache serves, and a
			// later stage may append to the upstream request's header.
			h[k] = slices.Clone(vs)
		}
		for k, vs := range d.add {
			h[k] = append(h[k], vs...)
		}
	}
	for claim, header := range a.forwardClaims {
		if v, ok := p.Claim(claim); ok && httpguts.ValidHeaderFieldValue(v) {
			h[header] = []string{v}
		}
	}
}

func (a *extAuthz) authenticate(r *http.Request) (*Principal, Reason) {
	p, reason, _ := a.check(r)
	return p, reason
}

func (a *extAuthz) count(result string) {
	if a.metrics != nil {
		a.metrics.Checks.WithLabelValues(a.authName, result).Inc()
	}
}

func (a *extAuthz) check(r *http.Request) (*Principal, Reason, refusal) {
	var key string
	// A request whose body the server reads is checked every time: no
	// cache key covers a body, so a cached allow of one body (or of a
	// bodiless request) would let any other through unseen.
	sendsBody := a.bodyMax > 0 && r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	useCache := a.cache != nil && !sendsBody
	if useCache {
		key = a.key(r)
		if p, ok := a.cache.get(key, a.now(), 0); ok {
			a.count("cache_hit")
			return p, ReasonNone, nil
		}
	}
	in := &checkInput{r: r, headers: a.sentHeaders(r.Header), clientIP: a.clientIP(r), now: a.now()}
	if sendsBody {
		body, whole, err := peekBody(r, a.bodyMax)
		if err != nil {
			return nil, ReasonMalformed, nil
		}
		if !whole && !a.bodyPartial {
			return nil, ReasonBodyTooLarge, func(w http.ResponseWriter, r *http.Request) {
				httperr.Write(w, r, http.StatusRequestEntityTooLarge, ReasonBodyTooLarge.description())
			}
		}
		in.body, in.partial = body, !whole
	}
	ctx, span := tracer(r.Context()).Start(r.Context(), "ext_authz "+a.authName, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("causeway.authenticator", a.authName), attribute.String("causeway.ext_authz.protocol", a.client.kind())))
	defer span.End()
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	start := time.Now()
	d, err := a.client.check(ctx, in)
	if a.metrics != nil {
		a.metrics.Duration.WithLabelValues(a.authName).Observe(time.Since(start).Seconds())
	}
	if err != nil && d != nil && !d.allow {
		// The server said no and only its answer could not be relayed:
		// on_error: allow must not turn that into a yes.
		a.log.Warn("ext_authz: a denial past the bounds, refused without its headers and body", "error", err)
		err = nil
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "authorization server unavailable")
		if r.Context().Err() != nil {
			// The client went away: nobody to answer, nothing to count as
			// the server's failure.
			return nil, ReasonAuthzUnavailable, nil
		}
		a.log.Warn("ext_authz: check failed", "error", err, "on_error", map[bool]string{true: "allow", false: "deny"}[a.onErrorAllow])
		if a.onErrorAllow {
			a.count("error_allow")
			return &Principal{Authenticator: a.authName}, ReasonNone, nil
		}
		a.count("error_deny")
		return nil, ReasonAuthzUnavailable, unavailable(a.statusOnError)
	}
	span.SetAttributes(attribute.Bool("causeway.ext_authz.allowed", d.allow))
	if !d.allow {
		a.count("deny")
		return nil, ReasonDenied, d.writeDenial
	}
	a.count("allow")
	p := &Principal{Authenticator: a.authName, Claims: d.claims, authz: d}
	if sub, ok := d.claims["sub"].(string); ok {
		p.Subject = sub
	}
	if useCache {
		now := a.now()
		a.cache.put(key, cacheEntry{p: p, until: now.Add(a.cacheTTL)}, now)
	}
	return p, ReasonNone, nil
}

// tracer is the tracer of the request's span, so the check is its child
// in whatever provider the edge traces with (a no-op one without tracing).
func tracer(ctx context.Context) trace.Tracer {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer("github.com/causewayhq/causeway/auth")
}

// injectTrace puts the W3C trace context of ctx into h, so the server's
// own spans join the request's trace.
func injectTrace(ctx context.Context, h propagation.TextMapCarrier) {
	propagation.TraceContext{}.Inject(ctx, h)
}

// writeDenial answers the client as the server said: its status, headers
// and body, as Envoy and Traefik do. A gRPC client gets the status as a
// gRPC error, in the trailers-only form of every other refusal of the
// edge, as Envoy's local replies to gRPC requests: an HTTP status and a
// body the server wrote for browsers are no answer a gRPC client can read.
func (d *decision) writeDenial(w http.ResponseWriter, r *http.Request) {
	if d.bare {
		httperr.Write(w, r, d.status, "denied by the authorization server")
		return
	}
	for k, vs := range d.header {
		w.Header()[k] = vs
	}
	if httperr.IsGRPC(r) {
		httperr.Write(w, r, d.status, "denied by the authorization server")
		return
	}
	if len(d.body) > 0 && w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(d.status)
	_, _ = w.Write(d.body)
}

// key identifies a request for the allow cache. Values are length-prefixed
// so that no two different requests share a key by concatenation, then
// hashed to bound the cache's memory whatever clients send.
func (a *extAuthz) key(r *http.Request) string {
	h := sha256.New()
	for _, k := range a.cacheKey {
		var v string
		switch {
		case k == "method":
			v = r.Method
		case k == "host":
			v = r.Host
		case k == "path":
			v = r.URL.RequestURI()
		case k == "client_ip":
			v = a.clientIP(r)
		case len(k) == len("header:Host") && strings.EqualFold(k, "header:Host"):
			// The host the request was routed on, as "host": neither
			// HTTP/1.1 server keeps a Host field in the header map, and
			// the edge takes an HTTP/2 client's host field off, so read
			// from there the key would be empty for every request, and
			// a decision cached for one host would serve every other.
			v = r.Host
		case strings.HasPrefix(k, "header:"):
			v = headerKey(r.Header, http.CanonicalHeaderKey(strings.TrimPrefix(k, "header:")))
		}
		fmt.Fprintf(h, "%d:%s;", len(v), v)
	}
	return string(h.Sum(nil))
}

// headerKey is the cache key part of header name: its values and those of
// every other spelling of it with '_' (X_User for X-User), each under its
// own name. Under server.allow_underscore_headers those reach the server
// too, and a CGI-style policy reads them as the same variable, so a key of
// name's values alone would let requests that differ there share a
// decision.
func headerKey(h http.Header, name string) string {
	v := strings.Join(h.Values(name), "\x00")
	var twins []string
	for k := range h {
		if foldedTwin(k, name) {
			twins = append(twins, k)
		}
	}
	// Always length-prefixed, twins or not: a value alone could spell
	// another request's value-and-twins.
	slices.Sort(twins)
	var b strings.Builder
	fmt.Fprintf(&b, "%d:%s;", len(v), v)
	for _, k := range twins {
		tv := strings.Join(h[k], "\x00")
		fmt.Fprintf(&b, "%d:%s%d:%s;", len(k), k, len(tv), tv)
	}
	return b.String()
}

// partialBodyHeader says, in a check that carries the body, whether it is
// the first max_bytes of a longer one ("true") or whole ("false"), as
// Envoy's with_request_body says it: a policy that reads the body cannot
// otherwise tell a cut one from a whole one ("1000000" cut to "100"). A
// client's copy never reaches the server.
const partialBodyHeader = "X-Envoy-Auth-Partial-Body"

// A Host field is never sent either: the host the edge routed on is
// r.Host, stated as :authority and the host attribute (gRPC, OPA) or
// X-Forwarded-Host (forward-auth). An HTTP/2 client may send a "host"
// field beside :authority, which net/http keeps in the header map; passed
// on, a policy reading headers.host would judge a host the request was
// not routed to.

// neverSent reports the fields no configuration sends to an authorization
// server: the partial-body marker and Host (see above).
func neverSent(k string) bool { return k == partialBodyHeader || k == "Host" }

// hopByHop are never sent to an authorization server: they describe the
// client's connection to the edge, not the request.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

func (a *extAuthz) sentHeaders(h http.Header) http.Header {
	out := make(http.Header, len(h))
	if a.headers != nil {
		for _, k := range a.headers {
			if vs, ok := h[k]; ok && !neverSent(k) {
				out[k] = vs
			}
		}
		return out
	}
	for k, vs := range h {
		if !hopByHop[k] && !neverSent(k) {
			out[k] = vs
		}
	}
	return out
}

// withPartialBody is in.headers with partialBodyHeader stated, when the
// check carries a body.
func (in *checkInput) withPartialBody() http.Header {
	if in.body == nil {
		return in.headers
	}
	h := make(http.Header, len(in.headers)+1)
	for k, vs := range in.headers {
		h[k] = vs
	}
	h[partialBodyHeader] = []string{strconv.FormatBool(in.partial)}
	return h
}

// peekBody reads up to limit bytes of r's body and puts them back in front
// of the rest, so the upstream still gets the whole body. whole is false
// when the body is longer than limit.
func peekBody(r *http.Request, limit int) (body []byte, whole bool, err error) {
	buf, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return nil, false, fmt.Errorf("reading the body for ext_authz: %w", err)
	}
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	if len(buf) > limit {
		return buf[:limit], false, nil
	}
	return buf, true, nil
}

// headerSink collects the headers a server hands back, dropping what it
// may not set and counting what it sends, so that a hostile server cannot
// forge the edge's own headers, split a header, or grow a request without
// bound. A server over the bounds is a server error.
type headerSink struct {
	n, bytes int
	err      error
}

func (s *headerSink) accept(name, value string, upstream bool) (string, bool) {
	s.n++
	s.bytes += len(name) + len(value)
	if s.n > maxAuthzHeaders || s.bytes > maxAuthzHeaderBytes {
		s.err = fmt.Errorf("the authorization server sent more than %d headers or %d bytes of them", maxAuthzHeaders, maxAuthzHeaderBytes)
		return "", false
	}
	if !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
		return "", false
	}
	k := http.CanonicalHeaderKey(name)
	if upstream && routes.EdgeStatedHeader(name) {
		return "", false
	}
	if !upstream && (hopByHop[k] || k == "Content-Length" || k == "Content-Encoding" || strings.HasPrefix(k, ":")) {
		return "", false
	}
	return k, true
}

// denialStatus is the status a denial is answered with: the server's, when
// it is one a denial can be (a redirect to a login page, a 4xx or 5xx),
// else 403.
func denialStatus(code int) int {
	if code >= 300 && code <= 599 && code != http.StatusNotModified {
		return code
	}
	return http.StatusForbidden
}
