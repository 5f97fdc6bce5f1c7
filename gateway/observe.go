package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"

	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/causewayhq/causeway/gateway/internal/admin"
	"github.com/causewayhq/causeway/routes"
)

// observer serves the admin API's views of the running configuration:
// /routes (what matches what, and how much traffic each route took),
// /upstreams (endpoints, health, load) and the dashboard at /. Counts come
// from the metrics registry, so the views cost nothing on the request path
// and agree with what Prometheus scrapes.
type observer struct {
	role   string // "edge" or "sidecar"
	gather prometheus.Gatherer
	// runtimes returns the configurations serving now, by listener
	// ("" for the edge; "inbound" and "outbound" for a sidecar).
	runtimes func() []listenerRuntime
	now      func() time.Time
}

type listenerRuntime struct {
	listener string
	rt       *runtime
}

func newObserver(role string, gather prometheus.Gatherer, runtimes func() []listenerRuntime) *observer {
	return &observer{role: role, gather: gather, runtimes: runtimes, now: time.Now}
}

// register adds the observer's pages to an admin mux.
func (o *observer) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /routes", o.serveRoutes)
	mux.HandleFunc("GET /upstreams", o.serveUpstreams)
	mux.Handle("GET /{$}", admin.Dashboard(o.role))
}

// RouteView is one route on /routes.
type RouteView struct {
	Name          string      `json:"name"`
	Listener      string      `json:"listener,omitempty"`
	Match         MatchView   `json:"match"`
	Upstream      string      `json:"upstream,omitempty"`
	Split         []SplitView `json:"split,omitempty"`
	Auth          []string    `json:"auth,omitempty"`
	RateLimit     []string    `json:"rate_limit,omitempty"`
	Plugins       []string    `json:"plugins,omitempty"`
	RequireClaims []string    `json:"require_claims,omitempty"` // the claim names, sorted
	StripPrefix   bool        `json:"strip_prefix,omitempty"`
	Traffic       TrafficView `json:"traffic"`
}

// MatchView is a route's match with the routes file's key names.
type MatchView struct {
	Host       string            `json:"host,omitempty"`
	Path       string            `json:"path,omitempty"`
	PathPrefix string            `json:"path_prefix,omitempty"`
	Methods    []string          `json:"methods,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
	Query      map[string]string `json:"query,omitempty"`
}

// SplitView is one weighted target of a split route; Headers send the
// requests carrying all of them to it whatever the weights say.
type SplitView struct {
	Upstream string            `json:"upstream"`
	Weight   int               `json:"weight"`
	Headers  map[string]string `json:"headers,omitempty"`
}

// matchView copies field by field: a new match key must be added here on
// purpose, not appear under a Go field name.
func matchView(m routes.Match) MatchView {
	return MatchView{Host: m.Host, Path: m.Path, PathPrefix: m.PathPrefix, Methods: m.Methods,
		// A route may match on a static credential: never shown.
		Headers: routes.RedactNamed(m.Headers), Query: routes.RedactNamed(m.Query)}
}

func splitView(s []routes.SplitTarget) []SplitView {
	var out []SplitView
	for _, t := range s {
		out = append(out, SplitView{Upstream: t.Upstream, Weight: t.Weight, Headers: routes.RedactNamed(t.Headers)})
	}
	return out
}

// TrafficView counts requests since the process started (the counters of
// causeway_requests_total / causeway_upstream_requests_total): the
// dashboard turns two readings into rates.
type TrafficView struct {
	Requests float64            `json:"requests"`
	ByClass  map[string]float64 `json:"by_class"` // "2xx", "3xx", "4xx", "5xx"
	Errors   float64            `json:"errors"`   // 5xx
	// MeanMS is the mean duration in milliseconds (0 without requests).
	MeanMS float64 `json:"mean_ms"`
}

// RoutesView is the body of /routes.
type RoutesView struct {
	Role      string      `json:"role"`
	At        time.Time   `json:"at"`
	Routes    []RouteView `json:"routes"`
	Unmatched TrafficView `json:"unmatched"`
}

func (o *observer) serveRoutes(w http.ResponseWriter, r *http.Request) {
	fams, err := o.gather.Gather()
	if err != nil {
		admin.WriteJSON(w, http.StatusInternalServerError, map[string]string{"error": "gathering metrics: " + err.Error()})
		return
	}
	byRoute := trafficBy(fams, "causeway_requests_total", "causeway_request_duration_seconds", "route")
	view := RoutesView{Role: o.role, At: o.now().UTC(), Routes: []RouteView{}}
	for _, lr := range o.runtimes() {
		for _, rc := range lr.rt.file.Routes {
			view.Routes = append(view.Routes, RouteView{
				Name: rc.Name, Listener: lr.listener, Match: matchView(rc.Match), Upstream: rc.Upstream, Split: splitView(rc.Split),
				Auth: rc.Auth, RateLimit: rc.RateLimit, Plugins: rc.Plugins, RequireClaims: slices.Sorted(maps.Keys(rc.RequireClaims)), StripPrefix: rc.StripPrefix,
				Traffic: byRoute.get(rc.Name),
			})
		}
	}
	view.Unmatched = byRoute.get("_unmatched")
	admin.WriteJSON(w, http.StatusOK, view)
}

// EndpointView is one endpoint on /upstreams. Healthy, InFlight and EWMAMS
// are null when the running build does not track them (see
// EndpointStatser).
type EndpointView struct {
	Endpoint string      `json:"endpoint"`
	Healthy  *bool       `json:"healthy"`
	InFlight *int64      `json:"in_flight"`
	EWMAMS   *float64    `json:"ewma_ms"`
	Traffic  TrafficView `json:"traffic"`
}

// UpstreamView is one upstream on /upstreams.
type UpstreamView struct {
	Name         string         `json:"name"`
	Listener     string         `json:"listener,omitempty"`
	Balance      string         `json:"balance"`
	MeshIdentity string         `json:"mesh_identity,omitempty"`
	Healthy      int            `json:"healthy"`
	Endpoints    []EndpointView `json:"endpoints"`
	Traffic      TrafficView    `json:"traffic"`
}

// UpstreamsView is the body of /upstreams.
type UpstreamsView struct {
	Role      string         `json:"role"`
	At        time.Time      `json:"at"`
	Upstreams []UpstreamView `json:"upstreams"`
}

func (o *observer) serveUpstreams(w http.ResponseWriter, r *http.Request) {
	fams, err := o.gather.Gather()
	if err != nil {
		admin.WriteJSON(w, http.StatusInternalServerError, map[string]string{"error": "gathering metrics: " + err.Error()})
		return
	}
	byUp := trafficBy(fams, "causeway_upstream_requests_total", "causeway_upstream_duration_seconds", "upstream")
	health := gaugeBy(fams, "causeway_upstream_endpoint_healthy", "upstream", "endpoint")
	epTraffic := trafficBy2(fams, "causeway_upstream_requests_total", "upstream", "endpoint")
	view := UpstreamsView{Role: o.role, At: o.now().UTC(), Upstreams: []UpstreamView{}}
	for _, lr := range o.runtimes() {
		for _, name := range slices.Sorted(maps.Keys(lr.rt.upstreams)) {
			u := lr.rt.upstreams[name]
			uv := UpstreamView{Name: name, Listener: lr.listener, Balance: u.Cfg.Balance, MeshIdentity: u.Cfg.MeshIdentity,
				Traffic: byUp.get(name), Endpoints: []EndpointView{}}
			for _, st := range endpointStatsOf(u, health[name]) {
				ev := EndpointView{Endpoint: st.Endpoint, Healthy: st.Healthy, InFlight: st.InFlight, Traffic: epTraffic.get(name + "\x00" + st.Endpoint)}
				if st.EWMA != nil {
					ms := float64(st.EWMA.Microseconds()) / 1000
					ev.EWMAMS = &ms
				}
				if ev.Healthy != nil && *ev.Healthy {
					uv.Healthy++
				}
				uv.Endpoints = append(uv.Endpoints, ev)
			}
			view.Upstreams = append(view.Upstreams, uv)
		}
	}
	admin.WriteJSON(w, http.StatusOK, view)
}

// endpointStatsOf asks the upstream, or falls back on its configuration and
// the health gauge.
func endpointStatsOf(u *proxy.Upstream, health map[string]float64) []proxy.EndpointStats {
	if s, ok := any(u).(proxy.EndpointStatser); ok {
		return s.EndpointStats()
	}
	var out []proxy.EndpointStats
	seen := map[string]bool{}
	add := func(ep string) {
		if ep == "" || seen[ep] {
			return
		}
		seen[ep] = true
		st := proxy.EndpointStats{Endpoint: ep}
		if v, ok := health[ep]; ok {
			h := v == 1
			st.Healthy = &h
		}
		out = append(out, st)
	}
	for _, ep := range u.Cfg.Endpoints {
		add(strings.TrimSpace(ep))
	}
	add(u.Cfg.DNS)
	// Endpoints found by discovery show up in the gauge.
	for _, ep := range slices.Sorted(maps.Keys(health)) {
		add(ep)
	}
	return out
}

// traffic sums counter and histogram samples by one label.
type traffic map[string]*TrafficView

func (t traffic) get(key string) TrafficView {
	if v := t[key]; v != nil {
		return *v
	}
	return TrafficView{ByClass: map[string]float64{}}
}

func (t traffic) add(key, code string, n float64) {
	v := t[key]
	if v == nil {
		v = &TrafficView{ByClass: map[string]float64{}}
		t[key] = v
	}
	v.Requests += n
	if len(code) == 3 && code[0] >= '1' && code[0] <= '5' {
		v.ByClass[code[:1]+"xx"] += n
		if code[0] == '5' {
			v.Errors += n
		}
	}
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func family(fams []*dto.MetricFamily, name string) *dto.MetricFamily {
	for _, f := range fams {
		if f.GetName() == name {
			return f
		}
	}
	return nil
}

// trafficBy reads a requests counter (with a code label) and a duration
// histogram keyed by the same label.
func trafficBy(fams []*dto.MetricFamily, counter, histogram, key string) traffic {
	t := traffic{}
	if f := family(fams, counter); f != nil {
		for _, m := range f.GetMetric() {
			t.add(labelOf(m, key), labelOf(m, "code"), m.GetCounter().GetValue())
		}
	}
	if f := family(fams, histogram); f != nil {
		for _, m := range f.GetMetric() {
			h := m.GetHistogram()
			if v := t[labelOf(m, key)]; v != nil && h.GetSampleCount() > 0 {
				v.MeanMS = h.GetSampleSum() / float64(h.GetSampleCount()) * 1000
			}
		}
	}
	return t
}

// trafficBy2 reads a requests counter keyed by two labels, joined by NUL.
func trafficBy2(fams []*dto.MetricFamily, counter, k1, k2 string) traffic {
	t := traffic{}
	if f := family(fams, counter); f != nil {
		for _, m := range f.GetMetric() {
			t.add(labelOf(m, k1)+"\x00"+labelOf(m, k2), labelOf(m, "code"), m.GetCounter().GetValue())
		}
	}
	return t
}

// gaugeBy reads a gauge keyed by two labels.
func gaugeBy(fams []*dto.MetricFamily, gauge, k1, k2 string) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	if f := family(fams, gauge); f != nil {
		for _, m := range f.GetMetric() {
			a, b := labelOf(m, k1), labelOf(m, k2)
			if out[a] == nil {
				out[a] = map[string]float64{}
			}
			out[a][b] = m.GetGauge().GetValue()
		}
	}
	return out
}

// observer is the edge's: the one configuration serving now.
func (e *Edge) observer() *observer {
	return newObserver("edge", e.registry, func() []listenerRuntime {
		if rt := e.live.Load().runtime(0); rt != nil {
			return []listenerRuntime{{rt: rt}}
		}
		return nil
	})
}

// observer is the sidecar's: its inbound and outbound configurations.
func (s *Sidecar) observer() *observer {
	return newObserver("sidecar", s.registry, func() []listenerRuntime {
		var out []listenerRuntime
		g := s.live.Load()
		if rt := g.runtime(0); rt != nil {
			out = append(out, listenerRuntime{"inbound", rt})
		}
		if rt := g.runtime(1); rt != nil {
			out = append(out, listenerRuntime{"outbound", rt})
		}
		return out
	})
}
