package gateway

import "time"

// EndpointStats reports the endpoints' run-time state for /upstreams: the
// health checker's and the outlier detector's verdict, the requests in
// flight, and the latency EWMA as of its last sample (the balancers' view).
func (u *upstream) EndpointStats() []EndpointStats {
	eps := u.endpoints()
	out := make([]EndpointStats, 0, len(eps))
	for _, e := range eps {
		healthy := e.available()
		inflight := e.inflight.Load()
		st := EndpointStats{Endpoint: e.label, Healthy: &healthy, InFlight: &inflight}
		e.latency.mu.Lock()
		v, sampled := e.latency.value, e.latency.last != 0
		e.latency.mu.Unlock()
		if sampled {
			d := time.Duration(v)
			st.EWMA = &d
		}
		out = append(out, st)
	}
	return out
}

var _ EndpointStatser = (*upstream)(nil)
