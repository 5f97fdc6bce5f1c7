package proxy

import "time"

// EndpointStats is what an upstream knows about one of its endpoints at
// run time. Fields the upstream does not track stay nil.
type EndpointStats struct {
	Endpoint string
	Healthy  *bool
	InFlight *int64
	EWMA     *time.Duration
}

// EndpointStatser is implemented by upstreams that track their endpoints'
// state (health checks, ejection, in-flight counts, latency EWMA); it is
// how that state reaches /upstreams without this file knowing the
// balancers' internals. Without it, /upstreams lists the configured
// endpoints and takes health from causeway_upstream_endpoint_healthy.
type EndpointStatser interface {
	EndpointStats() []EndpointStats
}

// EndpointStats reports the endpoints' run-time state for /upstreams: the
// health checker's and the outlier detector's verdict, the requests in
// flight, and the latency EWMA as of its last sample (the balancers' view).
func (u *Upstream) EndpointStats() []EndpointStats {
	eps := u.Endpoints()
	out := make([]EndpointStats, 0, len(eps))
	for _, e := range eps {
		healthy := e.Available()
		inflight := e.Inflight.Load()
		st := EndpointStats{Endpoint: e.Label, Healthy: &healthy, InFlight: &inflight}
		e.Latency.mu.Lock()
		v, sampled := e.Latency.value, e.Latency.last != 0
		e.Latency.mu.Unlock()
		if sampled {
			d := time.Duration(v)
			st.EWMA = &d
		}
		out = append(out, st)
	}
	return out
}

var _ EndpointStatser = (*Upstream)(nil)
