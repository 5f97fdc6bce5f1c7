package proxy

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/causewayhq/causeway/routes"
)

// maxEjectionFactor caps the growth of repeated ejections: the n-th
// ejection in a row lasts n x eject_for, at most this many times it.
const maxEjectionFactor = 10

// healthState is an upstream's passive outlier detection and the export of
// endpoint health: consecutive failures (5xx, connect failures, resets,
// timeouts) eject an endpoint for eject_for, longer on repeat, but never
// more than max_ejected_percent of the endpoints at once, so a bad
// deployment cannot eject a whole upstream and turn a partial outage into a
// total one.
type healthState struct {
	upstream string
	log      *slog.Logger
	now      func() time.Time
	series   *HealthSeries // nil: no metrics
	// lookupGauge: see Deps.lookupGauge.
	lookupGauge bool

	consecutive int32 // 0: outlier detection off
	ejectFor    time.Duration
	maxPercent  int32

	ejected atomic.Int32
	total   atomic.Int32
	// EjectionsTotal counts every ejection since the upstream was built.
	EjectionsTotal atomic.Int64
}

func NewHealthState(name string, cb *routes.CircuitBreaker, series *HealthSeries, now func() time.Time) *healthState {
	h := &healthState{upstream: name, log: slog.Default(), now: now, series: series}
	if cb != nil && cb.Consecutive5xx > 0 {
		h.consecutive = int32(cb.Consecutive5xx)
		h.ejectFor = cb.EjectFor.D()
		h.maxPercent = int32(cb.MaxEjectedPercent)
	}
	return h
}

// observe records the outcome of one attempt on e.
func (h *healthState) observe(e *Endpoint, failed bool) {
	if h == nil || h.consecutive == 0 {
		return
	}
	if !failed {
		if e.consecFail.Load() != 0 {
			e.consecFail.Store(0)
		}
		// A long healthy stretch forgets earlier ejections.
		if e.ejections.Load() != 0 && h.now().UnixNano()-e.lastEjected.Load() > int64(maxEjectionFactor*h.ejectFor) {
			e.ejections.Store(0)
		}
		return
	}
	if e.consecFail.Add(1) < h.consecutive {
		return
	}
	h.eject(e)
}

// eject takes e out of rotation unless that would exceed the ejection cap.
func (h *healthState) eject(e *Endpoint) bool {
	for {
		n, total := h.ejected.Load(), h.total.Load()
		if (n+1)*100 > total*h.maxPercent {
			return false
		}
		if h.ejected.CompareAndSwap(n, n+1) {
			break
		}
	}
	k := min(e.ejections.Add(1), maxEjectionFactor)
	now := h.now().UnixNano()
	if !e.ejectedUntil.CompareAndSwap(0, now+int64(k)*int64(h.ejectFor)) {
		h.ejected.Add(-1) // ejected already by a concurrent failure
		e.ejections.Add(-1)
		return false
	}
	e.lastEjected.Store(now)
	e.consecFail.Store(0)
	h.EjectionsTotal.Add(1)
	h.set(e, false)
	h.log.Warn("upstream endpoint ejected", "upstream", h.upstream, "endpoint", e.Label, "for", time.Duration(int64(k)*int64(h.ejectFor)).String())
	return true
}

// returned is called once when an ejection has run out.
func (h *healthState) returned(e *Endpoint) {
	h.ejected.Add(-1)
	h.set(e, !e.Down.Load())
}

func (h *healthState) added(e *Endpoint) { h.set(e, true) }

// removed forgets e; dropLabel deletes its metric series.
func (h *healthState) removed(e *Endpoint, dropLabel bool) {
	if e.ejectedUntil.Swap(0) != 0 {
		h.ejected.Add(-1)
	}
	if dropLabel && h.series != nil {
		h.series.drop(h.upstream, e.Label)
	}
}

// HealthSeries is causeway_upstream_endpoint_healthy with a handle on
// each endpoint's series that outlives generations: an endpoint object
// keeps the handle, the next generation's object of that address takes it
// over (Upstream.inherit), and only a new address looks its series up.
// Looking up 100,000 series again on every build was a tenth of the
// build. One HealthSeries per vector, shared by every generation, so that
// there is one handle per series: deleting the series marks it gone for
// every holder, which then looks the series up again, exactly as a lookup
// on every write would, instead of writing to a series no longer
// exported.
type HealthSeries struct {
	vec *prometheus.GaugeVec // labels upstream, endpoint

	mu   sync.Mutex
	refs map[[2]string]*gaugeRef // none of them gone
}

// NewHealthSeries wraps vec, whose labels are upstream and endpoint.
func NewHealthSeries(vec *prometheus.GaugeVec) *HealthSeries {
	return &HealthSeries{vec: vec, refs: map[[2]string]*gaugeRef{}}
}

// gaugeRef is the handle on one series; gone is set when it was deleted.
type gaugeRef struct {
	g    prometheus.Gauge
	gone atomic.Bool
}

func (s *HealthSeries) ref(upstream, endpoint string) *gaugeRef {
	k := [2]string{upstream, endpoint}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.refs[k]
	if r == nil {
		r = &gaugeRef{g: s.vec.WithLabelValues(upstream, endpoint)}
		s.refs[k] = r
	}
	return r
}

// drop deletes the series; every holder of its handle sees it gone.
func (s *HealthSeries) drop(upstream, endpoint string) {
	k := [2]string{upstream, endpoint}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.refs[k]; r != nil {
		r.gone.Store(true)
		delete(s.refs, k)
	}
	s.vec.DeleteLabelValues(upstream, endpoint)
}

func (h *healthState) set(e *Endpoint, up bool) {
	if h.series == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	if h.lookupGauge {
		h.series.vec.WithLabelValues(h.upstream, e.Label).Set(v)
		return
	}
	g := e.gauge
	if g == nil || g.gone.Load() {
		g = h.series.ref(h.upstream, e.Label)
		if e.gauge == nil {
			// Only an endpoint not yet published has none (added,
			// inherit): a live one's field is never written.
			e.gauge = g
		}
	}
	g.g.Set(v)
}

// markDown and markUp are the active checker's verdicts.
func (h *healthState) markDown(e *Endpoint) {
	if !e.Down.Swap(true) {
		h.set(e, false)
		h.log.Warn("upstream endpoint failing its health check", "upstream", h.upstream, "endpoint", e.Label)
	}
}

func (h *healthState) markUp(e *Endpoint) {
	if e.Down.Swap(false) {
		h.set(e, e.ejectedUntil.Load() == 0)
		h.log.Info("upstream endpoint passing its health check again", "upstream", h.upstream, "endpoint", e.Label)
	}
}

// HealthChecker probes every endpoint of an upstream on an interval. An
// endpoint starts healthy (a new configuration serves at once), goes down
// after unhealthy_threshold failed probes in a row and comes back after
// healthy_threshold good ones.
type HealthChecker struct {
	Up     *Upstream
	Cfg    routes.HealthCheck
	client *http.Client
}

func (u *Upstream) startHealthCheck(cfg routes.HealthCheck) {
	// A configuration built in code may leave out what the loader defaults.
	if cfg.Interval <= 0 {
		cfg.Interval = routes.Duration(routes.DefaultHealthInterval)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = routes.Duration(min(routes.DefaultHealthTimeout, cfg.Interval.D()))
	}
	if cfg.HealthyThreshold <= 0 {
		cfg.HealthyThreshold = routes.DefaultHealthyThreshold
	}
	if cfg.UnhealthyThreshold <= 0 {
		cfg.UnhealthyThreshold = routes.DefaultUnhealthyThreshold
	}
	hc := &HealthChecker{Up: u, Cfg: cfg, client: &http.Client{
		Transport: u.Pool.Transport,
		// A redirect is an answer: 3xx counts as healthy, not followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	u.goBackground("health check", func(ctx context.Context) {
		t := time.NewTicker(cfg.Interval.D())
		defer t.Stop()
		for {
			hc.checkAll(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
}

// checkAll probes every endpoint at once and returns when all are done, so
// one slow endpoint does not delay the verdict on the others.
func (hc *HealthChecker) checkAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, e := range hc.Up.Endpoints() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok := hc.probe(ctx, e)
			if ctx.Err() != nil {
				// The upstream is closing (a refused or retired
				// generation): a probe it cut short is no verdict, and
				// the endpoint's health series is shared with the live
				// generation's endpoint of this address.
				return
			}
			hc.Record(e, ok)
		}()
	}
	wg.Wait()
}

func (hc *HealthChecker) probe(ctx context.Context, e *Endpoint) bool {
	ctx, cancel := context.WithTimeout(ctx, hc.Cfg.Timeout.D())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, hc.Up.Scheme+"://"+e.Addr+hc.Cfg.Path, nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "causeway-health-check")
	resp, err := hc.client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

func (hc *HealthChecker) Record(e *Endpoint, ok bool) {
	h := hc.Up.Health
	if ok {
		e.checkFail.Store(0)
		if e.checkOK.Add(1) >= int32(hc.Cfg.HealthyThreshold) {
			h.markUp(e)
		}
		return
	}
	e.checkOK.Store(0)
	if e.checkFail.Add(1) >= int32(hc.Cfg.UnhealthyThreshold) {
		h.markDown(e)
	}
}

// EndpointHealth is one endpoint's state as /readyz shows it.
type EndpointHealth struct {
	Endpoint string `json:"endpoint"`
	Healthy  bool   `json:"healthy"`
	Ejected  bool   `json:"ejected,omitempty"`
	Failing  bool   `json:"failing_health_check,omitempty"`
	Inflight int64  `json:"inflight"`
}

// UpstreamHealth sums up an upstream for /readyz.
type UpstreamHealth struct {
	Healthy   int              `json:"healthy"`
	Total     int              `json:"total"`
	Endpoints []EndpointHealth `json:"endpoints"`
}

// Readiness is the upstream's endpoints as /readyz shows them.
func (u *Upstream) Readiness() UpstreamHealth {
	var uh UpstreamHealth
	for _, e := range u.Endpoints() {
		ok := e.Available()
		eh := EndpointHealth{Endpoint: e.Label, Healthy: ok, Ejected: e.ejectedUntil.Load() != 0, Failing: e.Down.Load(), Inflight: e.Inflight.Load()}
		if ok {
			uh.Healthy++
		}
		uh.Total++
		uh.Endpoints = append(uh.Endpoints, eh)
	}
	return uh
}
