package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
)

// Removing one of four endpoints moves only the keys it owned; adding it
// back restores the first mapping exactly.
func TestRingHashMinimalMovement(t *testing.T) {
	t.Parallel()
	eps := []*Endpoint{}
	for i := 0; i < 4; i++ {
		a := fmt.Sprintf("10.0.0.%d:80", i+1)
		eps = append(eps, &Endpoint{Addr: a, Label: a, Weight: 1})
	}
	rh, err := NewRingHash("header:X-User", nil)
	if err != nil {
		t.Fatal(err)
	}
	const keys = 20000
	mapping := func() []*Endpoint {
		out := make([]*Endpoint, keys)
		for i := range out {
			e, ok := rh.Ring.Load().Lookup(HashString(fmt.Sprintf("key-%d", i)), nil)
			if !ok {
				t.Fatal("no endpoint")
			}
			out[i] = e
		}
		return out
	}
	rh.Update(eps)
	before := mapping()
	owned := map[*Endpoint]int{}
	for _, e := range before {
		owned[e]++
	}
	rh.Update(eps[1:]) // 10.0.0.1 leaves
	after := mapping()
	moved := 0
	for i := range before {
		if before[i] != after[i] {
			moved++
			if before[i] != eps[0] {
				t.Fatalf("key %d moved from %s, which stayed", i, before[i].Addr)
			}
		}
	}
	if moved != owned[eps[0]] {
		t.Fatalf("moved %d, the leaving endpoint owned %d", moved, owned[eps[0]])
	}
	rh.Update(eps)
	for i, e := range mapping() {
		if e != before[i] {
			t.Fatalf("key %d not restored", i)
		}
	}
	t.Logf("shares of 4 endpoints over %d keys: %d %d %d %d; moved on removal: %.1f%%", keys, owned[eps[0]], owned[eps[1]], owned[eps[2]], owned[eps[3]], 100*float64(moved)/keys)
	for _, e := range eps {
		if !within(int64(owned[e]), keys/4, 0.2) {
			t.Fatalf("uneven ring: %v", owned)
		}
	}
}

// The balancers' choices among endpoints in given states, without servers.
func TestBalancerChoices(t *testing.T) {
	t.Parallel()
	mk := func(n int) []*Endpoint {
		eps := make([]*Endpoint, n)
		for i := range eps {
			a := fmt.Sprintf("10.0.0.%d:80", i+1)
			eps[i] = &Endpoint{Addr: a, Label: a, Weight: 1}
		}
		return eps
	}
	req, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	t.Run("least_request picks the fewest in flight", func(t *testing.T) {
		eps := mk(3)
		eps[0].Inflight.Store(5)
		eps[2].Inflight.Store(3)
		l := &LeastRequest{}
		l.Update(eps)
		for i := 0; i < 100; i++ {
			if e, _ := l.Pick(req, nil); e != eps[1] {
				t.Fatalf("picked %s", e.Addr)
			}
		}
	})
	t.Run("p2c_ewma avoids a slow endpoint", func(t *testing.T) {
		eps := mk(3)
		now := time.Now().UnixNano()
		eps[0].Latency.Observe(now, 200*time.Millisecond)
		eps[1].Latency.Observe(now, time.Millisecond)
		eps[2].Latency.Observe(now, time.Millisecond)
		p := &P2CEWMA{Now: time.Now}
		p.Update(eps)
		for i := 0; i < 300; i++ {
			if e, _ := p.Pick(req, nil); e == eps[0] {
				t.Fatal("picked the slow endpoint while two fast ones were free")
			}
		}
	})
	t.Run("peak EWMA decays after a spike", func(t *testing.T) {
		var p PeakEWMA
		now := int64(1e18)
		p.Observe(now, 100*time.Millisecond)
		p.Observe(now+int64(30*time.Second), time.Millisecond)
		if c := p.Cost(now+int64(30*time.Second), 0); c > float64(10*time.Millisecond) {
			t.Fatalf("cost %v after 30s of 1ms answers", time.Duration(c))
		}
		var q PeakEWMA
		q.Observe(now, time.Second)
		if c := q.Cost(now+int64(time.Minute), 0); c > float64(10*time.Millisecond) {
			t.Fatalf("cost %v a minute after the only (slow) sample: the endpoint would never be tried again", time.Duration(c))
		}
	})
	t.Run("every balancer skips a down endpoint and honours avoid", func(t *testing.T) {
		for _, name := range BalancerNames() {
			f, _ := LookupBalancer(name)
			b, err := f(routesUpstream(name), nil)
			if err != nil {
				t.Fatal(err)
			}
			eps := mk(3)
			b.Update(eps)
			eps[0].Down.Store(true)
			for i := 0; i < 50; i++ {
				e, ok := b.Pick(req, eps[1])
				if !ok || e != eps[2] {
					t.Fatalf("%s: picked %v", name, e)
				}
			}
			eps[2].Down.Store(true)
			if e, ok := b.Pick(req, eps[1]); !ok || e != eps[1] {
				t.Fatalf("%s: the avoided endpoint is the last one left, got %v", name, e)
			}
			eps[1].Down.Store(true)
			if e, ok := b.Pick(req, nil); ok {
				t.Fatalf("%s: picked %s with every endpoint down", name, e.Addr)
			}
		}
	})
	t.Run("empty balancers", func(t *testing.T) {
		for _, name := range BalancerNames() {
			f, _ := LookupBalancer(name)
			b, _ := f(routesUpstream(name), nil)
			if _, ok := b.Pick(req, nil); ok {
				t.Fatalf("%s picked from nothing", name)
			}
		}
	})
}

// Every balance value the routes file accepts has a balancer, and no
// balancer is unreachable from the file. (The registry is a map literal: a
// duplicate name does not compile.)
func TestBalancersMatchRoutes(t *testing.T) {
	t.Parallel()
	route := []routes.Route{{Name: "r", Match: routes.Match{PathPrefix: "/"}, Upstream: "u"}}
	for _, name := range BalancerNames() {
		f := &routes.File{Version: 1, Upstreams: map[string]routes.Upstream{"u": {Endpoints: []string{"127.0.0.1:1"}, Balance: name}}, Routes: route}
		if name == "ring_hash" {
			u := f.Upstreams["u"]
			u.HashOn = "header:x-user"
			f.Upstreams["u"] = u
		}
		if err := f.Normalize(); err != nil {
			t.Errorf("balance %q is a balancer the routes file refuses: %v", name, err)
		}
	}
	f := &routes.File{Version: 1, Upstreams: map[string]routes.Upstream{"u": {Endpoints: []string{"127.0.0.1:1"}, Balance: "random"}}, Routes: route}
	if err := f.Normalize(); err == nil || !strings.Contains(err.Error(), "balance") {
		t.Errorf("the routes file accepts a balance with no balancer: %v", err)
	}
}

func TestRingHashBadKey(t *testing.T) {
	t.Parallel()
	for _, k := range []string{"query:x", "header:", "cookie"} {
		if _, err := NewRingHash(k, nil); err == nil {
			t.Fatalf("%q accepted", k)
		}
	}
}

// New refuses what validation would have refused, for callers
// that build configurations in code (the sidecar).
func TestNewUpstreamBadConfig(t *testing.T) {
	t.Parallel()
	deps := Deps{}
	tests := []struct {
		name string
		cfg  routes.Upstream
		want string
	}{
		{"unknown balancer", routes.Upstream{Balance: "random", Endpoints: []string{"127.0.0.1:1"}}, `balance "random": unknown balancer (one of least_request, p2c_ewma, ring_hash, round_robin, weighted)`},
		{"ring_hash bad key", routes.Upstream{Balance: "ring_hash", HashOn: "query:x", Endpoints: []string{"127.0.0.1:1"}}, `hash_on "query:x"`},
		{"dns not host:port", routes.Upstream{Balance: "round_robin", DNS: "orders.internal", DNSRefresh: &routes.Bounds{Min: 1, Max: 1}}, `dns "orders.internal"`},
		{"missing endpoints file", routes.Upstream{Balance: "round_robin", EndpointsFile: "/nonexistent/eps"}, "endpoints_file: open /nonexistent/eps"},
		{"tls without a source", routes.Upstream{Balance: "round_robin", Scheme: "https", Endpoints: []string{"127.0.0.1:1"}}, "no TLS source is available"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := New("u", tt.cfg, deps)
			if err == nil {
				u.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func routesUpstream(balance string) routes.Upstream {
	return routes.Upstream{Balance: balance, HashOn: "client_ip"}
}

// fakeClock is a clock tests move by hand.
type fakeClock = testutil.FakeClock

func newFakeClock() *fakeClock { return testutil.NewFakeClock() }
