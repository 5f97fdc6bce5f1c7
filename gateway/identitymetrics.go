package gateway

import (
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/routes"
)

// identityGauges publishes one mesh source's certificate expiry
// (causeway_certificate_expiry_timestamp_seconds) and, for a Workload API
// source, whether its agent answers (causeway_workload_api_connected) —
// from the moment that source is committed. A source built for a file
// that is then refused reports into gauges that never publish, so a
// refused reload leaves both metrics as they were. The source's callbacks
// come from its own goroutine at any time; the latest values are kept so
// that commit can publish what happened before it.
type identityGauges struct {
	m *metrics
	// socket labels causeway_workload_api_connected; empty for a source on
	// files, which exports no such series.
	socket string

	mu       sync.Mutex
	live     bool
	id       string // the last ID reported; empty before the first identity
	notAfter time.Time
	up       bool
	upKnown  bool
}

// newIdentityGauges makes the gauges of a source from source and socket as
// the file gives them (an empty socket of a spire source is the one
// SPIFFE_ENDPOINT_SOCKET names, as the source uses).
func newIdentityGauges(m *metrics, source, socket string) *identityGauges {
	g := &identityGauges{m: m}
	if source == routes.SourceSPIRE {
		if socket == "" {
			socket = os.Getenv("SPIFFE_ENDPOINT_SOCKET")
		}
		g.socket = socket
	}
	return g
}

// options sets o's Expiry and Connected callbacks to report into g.
func (g *identityGauges) options(o mesh.SourceOptions) mesh.SourceOptions {
	o.Expiry = func(id string, notAfter time.Time) {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.live && g.id != "" && g.id != id {
			g.m.certExpiry.DeleteLabelValues(g.id)
		}
		g.id, g.notAfter = id, notAfter
		if g.live {
			g.publishLocked()
		}
	}
	if g.socket != "" {
		o.Connected = func(up bool) {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.up, g.upKnown = up, true
			if g.live {
				g.publishLocked()
			}
		}
	}
	return o
}

func (g *identityGauges) publishLocked() {
	if g.id != "" {
		g.m.certExpiry.WithLabelValues(g.id).Set(float64(g.notAfter.Unix()))
	}
	if g.socket != "" && g.upKnown {
		v := 0.0
		if g.up {
			v = 1
		}
		g.m.workloadAPIUp.WithLabelValues(g.socket).Set(v)
	}
}

// commit makes g the published gauges in place of prev (nil at the first
// commit, g itself when the source was kept): g's current state is
// published now (again, since the TLS feature resets the expiry vector
// when its certificates change) and prev's series that g does not share
// are removed, so a replaced identity or socket leaves no stale series.
func (g *identityGauges) commit(prev *identityGauges) {
	if prev != nil && prev != g {
		prev.mu.Lock()
		prev.live = false
		oldID, oldSocket := prev.id, prev.socket
		prev.mu.Unlock()
		g.mu.Lock()
		newID, newSocket := g.id, g.socket
		g.mu.Unlock()
		if oldID != "" && oldID != newID {
			g.m.certExpiry.DeleteLabelValues(oldID)
		}
		if oldSocket != "" && oldSocket != newSocket {
			g.m.workloadAPIUp.DeleteLabelValues(oldSocket)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.live = true
	g.publishLocked()
}

// retire stops g publishing and removes its series: its source is closed
// and nothing replaces it.
func (g *identityGauges) retire() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.live = false
	if g.id != "" {
		g.m.certExpiry.DeleteLabelValues(g.id)
	}
	if g.socket != "" {
		g.m.workloadAPIUp.DeleteLabelValues(g.socket)
	}
}

// peerCounts counts one direction's requests in causeway_mesh_requests_total
// by peer and status, looking each series up in the vector once.
// WithLabelValues hashes and validates every label value on each call,
// which a sidecar otherwise paid on every request. The counters are the
// vector's own, so what is exported does not change; a peer's counter is
// found by the exact peer and status strings, so no request is ever
// counted against another peer. A runtime's stages hold one, dropped with
// the runtime at the next reload; it holds no series the vector does not
// (causeway_mesh_requests_total never deletes any).
type peerCounts struct {
	vec *prometheus.CounterVec // curried with the direction
	m   sync.Map               // peerStatus -> prometheus.Counter
}

type peerStatus struct{ peer, status string }

func newPeerCounts(vec *prometheus.CounterVec) *peerCounts { return &peerCounts{vec: vec} }

// inc counts one request from or to peer answered with status.
func (p *peerCounts) inc(peer, status string) {
	k := peerStatus{peer: peer, status: status}
	if c, ok := p.m.Load(k); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c, _ := p.m.LoadOrStore(k, p.vec.WithLabelValues(peer, status))
	c.(prometheus.Counter).Inc()
}
