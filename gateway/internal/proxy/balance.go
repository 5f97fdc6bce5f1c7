package proxy

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// balancer picks the endpoints of one upstream. The attempt loop of the
// upstream's transport (upstreamTransport.RoundTrip, retry.go) is its only caller on
// the request path: the first attempt and every retry pick there.
// Implementations are safe for concurrent use.
type balancer interface {
	// Pick chooses an available endpoint for r: one other than avoid (the
	// endpoint of the failed attempt before, or nil) when there is one,
	// else avoid itself when it is available.
	Pick(r *http.Request, avoid *Endpoint) (*Endpoint, bool)
	// Update replaces the endpoint set; requests already routed keep theirs.
	Update(eps []*Endpoint)
}

// newBalancerFunc builds a balancer for an upstream's configuration.
// clientIP is Hooks.ClientIP (may be nil), for ring_hash on the client.
type newBalancerFunc func(cfg routes.Upstream, clientIP func(context.Context) string) (balancer, error)

// balancers are the balancers by the name upstreams give in balance. Only
// this package adds to it, so it is a literal, read without a lock.
var balancers = map[string]newBalancerFunc{
	"round_robin":   func(routes.Upstream, func(context.Context) string) (balancer, error) { return &roundRobin{}, nil },
	"weighted":      func(routes.Upstream, func(context.Context) string) (balancer, error) { return &smoothWeighted{}, nil },
	"least_request": func(routes.Upstream, func(context.Context) string) (balancer, error) { return &LeastRequest{}, nil },
	"p2c_ewma": func(routes.Upstream, func(context.Context) string) (balancer, error) {
		return &P2CEWMA{Now: time.Now}, nil
	},
	"ring_hash": func(cfg routes.Upstream, clientIP func(context.Context) string) (balancer, error) {
		return NewRingHash(cfg.HashOn, clientIP)
	},
}

func LookupBalancer(name string) (newBalancerFunc, bool) {
	f, ok := balancers[name]
	return f, ok
}

func BalancerNames() []string { return slices.Sorted(maps.Keys(balancers)) }

// smoothWeighted is nginx's smooth weighted round robin: over any window of
// sum(weights) picks each endpoint gets exactly its weight, interleaved
// rather than in runs. Picking needs the shared current weights, so it
// takes a mutex; the critical section is a loop over the endpoints.
type smoothWeighted struct {
	mu      sync.Mutex
	eps     []*Endpoint
	current []int
}

var _ balancer = (*smoothWeighted)(nil)

func (s *smoothWeighted) Pick(_ *http.Request, avoid *Endpoint) (*Endpoint, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	best, total := -1, 0
	avoidOK := false
	for i, e := range s.eps {
		if !e.Available() {
			continue
		}
		if e == avoid {
			avoidOK = true
			continue
		}
		s.current[i] += e.Weight
		total += e.Weight
		if best < 0 || s.current[i] > s.current[best] {
			best = i
		}
	}
	if best < 0 {
		return avoid, avoidOK
	}
	s.current[best] -= total
	return s.eps[best], true
}

func (s *smoothWeighted) Update(eps []*Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eps = eps
	s.current = make([]int, len(eps))
}

// LeastRequest sends to the available endpoint with the fewest requests in
// flight; ties go to a random one of them, so idle endpoints share the load.
type LeastRequest struct {
	set atomic.Pointer[[]*Endpoint]
}

var _ balancer = (*LeastRequest)(nil)

func (l *LeastRequest) Pick(_ *http.Request, avoid *Endpoint) (*Endpoint, bool) {
	eps := loadSet(&l.set)
	n := len(eps)
	if n == 0 {
		return nil, false
	}
	start := rand.IntN(n)
	var best *Endpoint
	bestN := int64(math.MaxInt64)
	avoidOK := false
	for i := 0; i < n; i++ {
		e := eps[(start+i)%n]
		if !e.Available() {
			continue
		}
		if e == avoid {
			avoidOK = true
			continue
		}
		if c := e.Inflight.Load(); c < bestN {
			best, bestN = e, c
		}
	}
	if best == nil {
		return avoid, avoidOK
	}
	return best, true
}

func (l *LeastRequest) Update(eps []*Endpoint) { l.set.Store(&eps) }

// p2cEWMA is the power of two choices on peak-EWMA latency (Finagle's
// balancer): of two random available endpoints, the one with the lower
// latency estimate times outstanding requests wins. The estimate jumps up
// to a slow response at once and decays back slowly, so a degrading
// endpoint is avoided quickly.
type P2CEWMA struct {
	set atomic.Pointer[[]*Endpoint]
	Now func() time.Time
}

var _ balancer = (*P2CEWMA)(nil)

func (p *P2CEWMA) Pick(_ *http.Request, avoid *Endpoint) (*Endpoint, bool) {
	eps := loadSet(&p.set)
	n := len(eps)
	if n == 0 {
		return nil, false
	}
	a := randomAvailable(eps, avoid, nil)
	if a == nil {
		if avoid != nil && avoid.Available() {
			return avoid, true
		}
		return nil, false
	}
	b := randomAvailable(eps, avoid, a)
	if b == nil {
		return a, true
	}
	now := p.Now().UnixNano()
	if b.Latency.Cost(now, b.Inflight.Load()) < a.Latency.Cost(now, a.Inflight.Load()) {
		return b, true
	}
	return a, true
}

func (p *P2CEWMA) Update(eps []*Endpoint) { p.set.Store(&eps) }

// randomAvailable returns an available endpoint other than avoid and not,
// starting from a random index (nil when there is none).
func randomAvailable(eps []*Endpoint, avoid, not *Endpoint) *Endpoint {
	n := len(eps)
	start := rand.IntN(n)
	for i := 0; i < n; i++ {
		e := eps[(start+i)%n]
		if e != avoid && e != not && e.Available() {
			return e
		}
	}
	return nil
}

// ewmaDecay is the time constant of the latency estimate: a sample's weight
// halves in about 7 seconds.
const ewmaDecay = 10 * time.Second

// PeakEWMA is an endpoint's latency estimate in nanoseconds.
type PeakEWMA struct {
	mu    sync.Mutex
	value float64
	last  int64
}

func (p *PeakEWMA) Observe(now int64, rtt time.Duration) {
	v := float64(rtt)
	p.mu.Lock()
	defer p.mu.Unlock()
	if v > p.value || p.last == 0 {
		p.value = v // the peak: a slow answer counts in full at once
	} else {
		w := math.Exp(-float64(now-p.last) / float64(ewmaDecay))
		p.value = p.value*w + v*(1-w)
	}
	p.last = now
}

// Cost is the estimate times the requests waiting on the endpoint. The
// estimate also decays with the time since the last sample: an endpoint
// that lost every comparison after one slow answer gets no samples, and
// would otherwise never be tried again. An endpoint without samples costs
// what a 1ms one does, so a new endpoint is tried without being flooded.
func (p *PeakEWMA) Cost(now, inflight int64) float64 {
	p.mu.Lock()
	v, last := p.value, p.last
	p.mu.Unlock()
	if last != 0 && now > last {
		v *= math.Exp(-float64(now-last) / float64(ewmaDecay))
	}
	if v == 0 {
		v = float64(time.Millisecond)
	}
	return v * float64(inflight+1)
}

// ringHash is consistent hashing on a request key: each endpoint owns
// vnodesPerWeight points per unit of weight on a ring of 64-bit hashes, and
// a key goes to the owner of the first point at or after its hash. When an
// endpoint leaves, only the keys it owned move; when one joins, it takes
// about its share from the others. Requests without the key are spread
// round robin.
type ringHash struct {
	key      func(r *http.Request) (string, bool)
	Ring     atomic.Pointer[hashRing]
	fallback roundRobin
}

type hashRing struct {
	points []uint64
	owners []*Endpoint
}

const vnodesPerWeight = 160

var _ balancer = (*ringHash)(nil)

func NewRingHash(hashOn string, clientIP func(context.Context) string) (*ringHash, error) {
	rh := &ringHash{}
	kind, name, _ := strings.Cut(hashOn, ":")
	switch {
	case hashOn == "" || hashOn == "client_ip":
		rh.key = func(r *http.Request) (string, bool) { return clientIPKey(r, clientIP) }
	case kind == "header" && name != "":
		h := http.CanonicalHeaderKey(name)
		rh.key = func(r *http.Request) (string, bool) {
			v := r.Header[h]
			if len(v) == 0 || v[0] == "" {
				return "", false
			}
			return v[0], true
		}
	case kind == "cookie" && name != "":
		rh.key = func(r *http.Request) (string, bool) {
			c, err := r.Cookie(name)
			if err != nil || c.Value == "" {
				return "", false
			}
			return c.Value, true
		}
	default:
		return nil, fmt.Errorf("hash_on %q: use header:NAME, cookie:NAME or client_ip", hashOn)
	}
	return rh, nil
}

// clientIPKey is the client address the edge believes (trusted proxies
// applied), or the peer address.
func clientIPKey(r *http.Request, clientIP func(context.Context) string) (string, bool) {
	if clientIP != nil {
		if ip := clientIP(r.Context()); ip != "" {
			return ip, true
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || host == "" {
		return "", false
	}
	return host, true
}

func (rh *ringHash) Pick(r *http.Request, avoid *Endpoint) (*Endpoint, bool) {
	ring := rh.Ring.Load()
	if ring == nil || len(ring.points) == 0 {
		return nil, false
	}
	k, ok := rh.key(r)
	if !ok {
		return rh.fallback.Pick(r, avoid)
	}
	return ring.Lookup(HashString(k), avoid)
}

// Lookup walks clockwise from h to the first available owner other than
// avoid: a key whose endpoint is down moves to the next endpoint on the
// ring and comes back when it returns.
func (hr *hashRing) Lookup(h uint64, avoid *Endpoint) (*Endpoint, bool) {
	n := len(hr.points)
	i := sort.Search(n, func(i int) bool { return hr.points[i] >= h })
	avoidOK := false
	var seen *Endpoint
	for j := 0; j < n; j++ {
		e := hr.owners[(i+j)%n]
		if e == seen {
			continue // consecutive points of one endpoint: skip the re-check
		}
		seen = e
		if !e.Available() {
			continue
		}
		if e == avoid {
			avoidOK = true
			continue
		}
		return e, true
	}
	return avoid, avoidOK
}

func (rh *ringHash) Update(eps []*Endpoint) {
	hr := &hashRing{}
	for _, e := range eps {
		for v := 0; v < vnodesPerWeight*e.Weight; v++ {
			hr.points = append(hr.points, HashString(e.Addr+"#"+strconv.Itoa(v)))
			hr.owners = append(hr.owners, e)
		}
	}
	sort.Sort(hr)
	rh.Ring.Store(hr)
	rh.fallback.Update(eps)
}

func (hr *hashRing) Len() int           { return len(hr.points) }
func (hr *hashRing) Less(i, j int) bool { return hr.points[i] < hr.points[j] }
func (hr *hashRing) Swap(i, j int) {
	hr.points[i], hr.points[j] = hr.points[j], hr.points[i]
	hr.owners[i], hr.owners[j] = hr.owners[j], hr.owners[i]
}

// HashString is FNV-1a followed by a 64-bit finaliser: FNV alone clusters
// keys that differ only at the end ("a#1", "a#2"), which would bunch an
// endpoint's points together. It is stable across processes, so every edge
// instance maps a key to the same endpoint.
func HashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
