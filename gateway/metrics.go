package gateway

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/proxy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics holds the edge's Prometheus collectors, registered once in the
// registry passed in (never the global one) and shared by every
// configuration a reload produces.
type metrics struct {
	// routeMu guards routes: each route's collectors once bound, kept
	// across generations. Route series are never deleted, so a route name
	// always binds the same children; looking them up again for every
	// route of every generation was a seventh of a 10,000-route build.
	routeMu sync.Mutex
	routes  map[string]routeMetrics
	// upstreams: each upstream's collectors once bound (forUpstream),
	// for the same reason; guarded by routeMu.
	upstreams map[string]upstreamMetrics

	requests         *prometheus.CounterVec
	requestDuration  *prometheus.HistogramVec
	upstreamRequests *prometheus.CounterVec
	upstreamDuration *prometheus.HistogramVec
	reloads          *prometheus.CounterVec
	configInfo       *prometheus.GaugeVec
	inflight         prometheus.Gauge
	// unmatched counts requests no route took (404), under a route label
	// no route can have: names start with a letter or digit.
	unmatched routeMetrics

	// Vectors owned by the feature packages, created here so that they live
	// in the same registry and survive reloads.
	authFailures      *prometheus.CounterVec
	ratelimitDecision *prometheus.CounterVec
	certExpiry        *prometheus.GaugeVec
	certReloads       *prometheus.CounterVec
	acmeOrders        *prometheus.CounterVec
	endpointHealthy   *prometheus.GaugeVec
	// endpointHealth holds a handle on each of endpointHealthy's series
	// across generations (proxy.HealthSeries).
	endpointHealth *proxy.HealthSeries
	meshRequests   *prometheus.CounterVec
	callerTokens   *prometheus.CounterVec
	workloadAPIUp  *prometheus.GaugeVec
	// outboundEndpoints is a sidecar's view of the cluster
	// (outbound.kubernetes): endpoints callable and left out.
	outboundEndpoints *prometheus.GaugeVec
	// statusLeader and statusWrites are an edge's Kubernetes status
	// writer: whether this replica holds the status Lease, and what it
	// wrote.
	statusLeader *prometheus.GaugeVec
	statusWrites *prometheus.CounterVec
}

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causeway_requests_total", Help: "Requests answered, by route, method and status code.",
		}, []string{"route", "method", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "causeway_request_duration_seconds", Help: "Time from request to the end of the response, by route.", Buckets: latencyBuckets,
		}, []string{"route"}),
		upstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causeway_upstream_requests_total", Help: "Requests sent to upstream endpoints, by upstream, endpoint and status code (502/504 for failures).",
		}, []string{"upstream", "endpoint", "code"}),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "causeway_upstream_duration_seconds", Help: "Time until the upstream's response headers, by upstream.", Buckets: latencyBuckets,
		}, []string{"upstream"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causeway_config_reloads_total", Help: "Routes file loads, by result (success or failure).",
		}, []string{"result"}),
		configInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "causeway_config_last_reload_success_timestamp_seconds", Help: "When the active routes file was loaded.",
		}, nil),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "causeway_requests_in_flight", Help: "Requests being served.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causeway_auth_failures_total", Help: "Refused authentications, by authenticator and reason.",
		}, []string{"authenticator", "reason"}),
		ratelimitDecision: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causeway_ratelimit_decisions_total", Help: "Rate-limit decisions, by limit and decision (allowed, limited, error).",
		}, []string{"limit", "decision"}),
		certExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "causeway_certificate_expiry_timestamp_seconds", Help: "Expiry (Unix time) of every served certificate, by name.",
		}, []string{"name"}),
		certReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causeway_tls_certificate_reloads_total", Help: "Re-reads of the edge's certificate files, by result (success, or failure: the previous certificates stay served).",
		}, []string{"result"}),
		acmeOrders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causeway_acme_orders_total", Help: "ACME certificate orders this edge started, by result (ok, error, rate_limited: refused by the edge's own order limit).",
		}, []string{"result"}),
		endpointHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "causeway_upstream_endpoint_healthy", Help: "1 when the endpoint takes traffic, 0 when it is ejected or failing its health check.",
		}, []string{"upstream", "endpoint"}),
		meshRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causeway_mesh_requests_total", Help: "Requests crossing the mesh, by direction (inbound, outbound), peer identity and status code.",
		}, []string{"direction", "peer", "code"}),
		callerTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causeway_caller_tokens_total", Help: "Caller tokens a sidecar checked, by direction (inbound: received from a peer; outbound: passed on by its service) and result (ok, exchanged, missing, a refusal reason, or rule_401/rule_403 for an inbound rule).",
		}, []string{"direction", "result"}),
		workloadAPIUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "causeway_workload_api_connected", Help: "1 while the SPIFFE Workload API (identity source spire) answers, 0 while it is unreachable and the current SVID is kept; by socket.",
		}, []string{"socket"}),
		outboundEndpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "causeway_mesh_outbound_endpoints", Help: "Endpoints of the cluster's mesh Services in a sidecar's latest view (outbound.kubernetes), by state: callable, or left_out (no resolvable pod, ServiceAccount or port).",
		}, []string{"state"}),
		statusLeader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "causeway_kubernetes_status_leader", Help: "1 while this edge replica holds the Lease that makes it the writer of Gateway API status, 0 while another replica does; by Lease (NAMESPACE/NAME).",
		}, []string{"lease"}),
		statusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causeway_kubernetes_status_writes_total", Help: "Objects whose Gateway API status this edge wrote (result written) or failed to write (failed, retried with backoff); objects already right are not written.",
		}, []string{"result"}),
	}
	reg.MustRegister(m.requests, m.requestDuration, m.upstreamRequests, m.upstreamDuration, m.reloads,
		m.configInfo, m.inflight, m.authFailures, m.ratelimitDecision, m.certExpiry, m.certReloads, m.acmeOrders, m.endpointHealthy, m.meshRequests, m.workloadAPIUp,
		m.callerTokens, m.outboundEndpoints, m.statusLeader, m.statusWrites, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.endpointHealth = proxy.NewHealthSeries(m.endpointHealthy)
	m.unmatched = m.forRoute("_unmatched")
	for _, r := range []string{"success", "failure"} {
		m.reloads.WithLabelValues(r) // export zeros so rate() works from the start
	}
	return m
}

// routeMetrics are a route's collectors with the route label bound at load
// time, and its request counters found by method and status without a
// label lookup on each request (codeCounters).
type routeMetrics struct {
	requests *codeCounters
	duration prometheus.Observer
}

func (m *metrics) forRoute(route string) routeMetrics {
	return bindOnce(&m.routeMu, &m.routes, route, func() routeMetrics {
		return routeMetrics{
			requests: &codeCounters{vec: m.requests.MustCurryWith(prometheus.Labels{"route": route})},
			duration: m.requestDuration.WithLabelValues(route),
		}
	})
}

// bindOnce is (*into)[key], bound by bind the first time it is asked for:
// a route's or an upstream's collectors are bound once, whichever
// generation asks first, and shared by every later one.
func bindOnce[T any](mu *sync.Mutex, into *map[string]T, key string, bind func() T) T {
	mu.Lock()
	defer mu.Unlock()
	if v, ok := (*into)[key]; ok {
		return v
	}
	v := bind()
	if *into == nil {
		*into = map[string]T{}
	}
	(*into)[key] = v
	return v
}

func (rm routeMetrics) observe(method string, status int, d time.Duration) {
	rm.requests.counter(methodLabel(method), status).Inc()
	rm.duration.Observe(d.Seconds())
}

// upstreamMetrics are an upstream's collectors with the upstream label
// bound at load time (forUpstream), as routeMetrics are a route's.
type upstreamMetrics struct {
	requests *codeCounters // by endpoint and status
	duration prometheus.Observer
}

func (m *metrics) forUpstream(up string) upstreamMetrics {
	return bindOnce(&m.routeMu, &m.upstreams, up, func() upstreamMetrics {
		return upstreamMetrics{
			requests: &codeCounters{vec: m.upstreamRequests.MustCurryWith(prometheus.Labels{"upstream": up})},
			duration: m.upstreamDuration.WithLabelValues(up),
		}
	})
}

func (um upstreamMetrics) observe(endpoint string, status int, d time.Duration) {
	um.requests.counter(endpoint, status).Inc()
	if d > 0 {
		um.duration.Observe(d.Seconds())
	}
}

func (m *metrics) upstreamRequest(up, endpoint string, status int, d time.Duration) {
	m.forUpstream(up).observe(endpoint, status, d)
}

// codeCounters finds the counters of a vector curried down to two labels,
// a name and a status code, by the exact name and code. The vector's
// WithLabelValues checks and hashes every label value and takes a lock on
// every call, once or twice per request (a percent of the edge's CPU under
// load); a request here scans a short list of the pairs seen so far. The
// counters are the vector's own, so what is exported does not change, and
// a pair is only ever matched by its own name and code. The list is
// replaced whole (copy on write) and stops growing at codeCountersMax
// pairs, past which a pair is looked up in the vector as before: the
// statuses an upstream answers and the endpoints discovery names are
// bounded, but not by the edge.
type codeCounters struct {
	vec   *prometheus.CounterVec
	mu    sync.Mutex // serializes the list's replacements
	pairs atomic.Pointer[[]codeCounter]
}

type codeCounter struct {
	name string
	code int
	c    prometheus.Counter
}

const codeCountersMax = 32

func (cc *codeCounters) counter(name string, code int) prometheus.Counter {
	if p := cc.pairs.Load(); p != nil {
		for i := range *p {
			if e := &(*p)[i]; e.code == code && e.name == name {
				return e.c
			}
		}
	}
	c := cc.vec.WithLabelValues(name, statusLabel(code))
	cc.mu.Lock()
	defer cc.mu.Unlock()
	var old []codeCounter
	if p := cc.pairs.Load(); p != nil {
		old = *p
	}
	if len(old) >= codeCountersMax {
		return c
	}
	for _, e := range old {
		if e.code == code && e.name == name {
			return c // added meanwhile
		}
	}
	pairs := append(append(make([]codeCounter, 0, len(old)+1), old...), codeCounter{name: name, code: code, c: c})
	cc.pairs.Store(&pairs)
	return c
}

// methodLabel bounds the method label: any method not in the standard set
// becomes OTHER, so a client cannot mint label values.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "OTHER"
}

var statusLabels [600]string

func init() {
	for i := range statusLabels {
		statusLabels[i] = strconv.Itoa(i)
	}
}

func statusLabel(code int) string {
	if code >= 0 && code < len(statusLabels) {
		return statusLabels[code]
	}
	return "other"
}

// leading records whether this replica holds the status Lease
// (kubernetes.Options.Leading).
func (m *metrics) leading(lease string, leading bool) {
	v := 0.0
	if leading {
		v = 1
	}
	m.statusLeader.WithLabelValues(lease).Set(v)
}

// statusWritten counts one object's status write
// (kubernetes.Options.StatusWritten).
func (m *metrics) statusWritten(err error) {
	if err != nil {
		m.statusWrites.WithLabelValues("failed").Inc()
		return
	}
	m.statusWrites.WithLabelValues("written").Inc()
}
