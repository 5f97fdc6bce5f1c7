package proxy

import (
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/causewayhq/causeway/routes"
)

// gaugeWorld is one edge's upstreams as generations come and go: the
// configuration, the live generation, the replaced ones still finishing
// requests, and the health series they export.
type gaugeWorld struct {
	reg    *prometheus.Registry
	vec    *prometheus.GaugeVec
	deps   Deps
	gens   []map[string]*Upstream // gens[len-1] is live
	now    *time.Time
	lookup bool
}

func newGaugeWorld(now *time.Time, lookup bool) *gaugeWorld {
	w := &gaugeWorld{reg: prometheus.NewRegistry(), now: now, lookup: lookup}
	w.vec = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "causeway_upstream_endpoint_healthy"}, []string{"upstream", "endpoint"})
	w.reg.MustRegister(w.vec)
	w.deps = Deps{Pools: NewTransportPools(), Log: slog.New(slog.DiscardHandler), Now: func() time.Time { return *w.now }, lookupGauge: lookup,
		Hooks: Hooks{HealthGauge: NewHealthSeries(w.vec)}}
	return w
}

// build makes a generation of cfg, as a reload does; the generations
// before the last two are closed (their requests are done).
func (w *gaugeWorld) build(t *testing.T, cfg map[string]routes.Upstream) {
	t.Helper()
	gen := map[string]*Upstream{}
	for _, name := range slices.Sorted(maps.Keys(cfg)) {
		u, err := New(name, cfg[name], w.deps)
		if err != nil {
			t.Fatal(err)
		}
		gen[name] = u
	}
	w.gens = append(w.gens, gen)
	for len(w.gens) > 3 {
		w.closeGen(w.gens[0])
		w.gens = w.gens[1:]
	}
}

func (w *gaugeWorld) closeGen(gen map[string]*Upstream) {
	for _, u := range gen {
		u.Close()
		_, _ = w.deps.Pools.Release(u.Pool.Key)
	}
}

func (w *gaugeWorld) close() {
	for _, g := range w.gens {
		w.closeGen(g)
	}
}

// endpoint is the i-th endpoint (by address) of upstream name in the
// generation g generations back from the live one, if there is one.
func (w *gaugeWorld) endpoint(back int, name string, i int) *Endpoint {
	if back >= len(w.gens) {
		return nil
	}
	u := w.gens[len(w.gens)-1-back][name]
	if u == nil {
		return nil
	}
	eps := u.Endpoints()
	if len(eps) == 0 {
		return nil
	}
	return eps[i%len(eps)]
}

func (w *gaugeWorld) exposition(t *testing.T) string {
	t.Helper()
	mfs, err := w.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// Carrying each endpoint's health series from one generation to the next
// (instead of looking up all of them on every build) exports exactly what
// a lookup on every write exports: after each of thousands of random
// steps (builds, in-place endpoint changes, weight changes, ejections
// and their end, health verdicts, on the live generation and on replaced
// ones still finishing requests), the two registries are equal, and so
// are the endpoints each generation serves and their availability.
func TestHealthSeriesCarriedEqualsLookup(t *testing.T) {
	t.Parallel()
	for _, seed := range []uint64{1, 2, 3, 4} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 7))
			now := time.Unix(1_800_000_000, 0)
			carried, lookup := newGaugeWorld(&now, false), newGaugeWorld(&now, true)
			defer carried.close()
			defer lookup.close()
			worlds := []*gaugeWorld{carried, lookup}

			addrs := func() []string {
				var out []string
				for i := range 8 {
					if rng.IntN(2) == 0 {
						out = append(out, fmt.Sprintf("10.0.0.%d:80", i))
					}
				}
				return out
			}
			cb := &routes.CircuitBreaker{Consecutive5xx: 1, EjectFor: routes.Duration(10 * time.Second), MaxEjectedPercent: 100}
			cfg := map[string]routes.Upstream{}
			for _, n := range []string{"a", "b", "c"} {
				cfg[n] = routes.Upstream{Balance: "round_robin", Endpoints: addrs(), CircuitBreaker: cb}
			}
			for _, w := range worlds {
				w.build(t, cfg)
			}
			names := []string{"a", "b", "c", "d"}
			const steps = 3000
			for step := range steps {
				name := names[rng.IntN(len(names))]
				back, i := rng.IntN(3), rng.IntN(8)
				var what string
				switch op := rng.IntN(8); op {
				case 0:
					what = "build"
					for _, w := range worlds {
						w.build(t, cfg)
					}
				case 1:
					// In place on the live generation, as the edge follows
					// EndpointSlices; the next build starts from it.
					u, ok := cfg[name]
					if live := carried.gens[len(carried.gens)-1][name]; !ok || live == nil || !sameButEndpoints(live.Cfg, u) {
						continue // the edge builds a generation for that
					}
					what = "endpoints of " + name + " in place"
					u.Endpoints = addrs()
					cfg[name] = u
					for _, w := range worlds {
						if err := w.gens[len(w.gens)-1][name].SetEndpoints(u.Endpoints); err != nil {
							t.Fatal(err)
						}
					}
				case 2:
					u, ok := cfg[name]
					if !ok || len(u.Endpoints) == 0 {
						continue
					}
					what = "weight in " + name
					u.Weights = maps.Clone(u.Weights)
					if u.Weights == nil {
						u.Weights = map[string]int{}
					}
					u.Weights[u.Endpoints[i%len(u.Endpoints)]] = 1 + rng.IntN(3)
					cfg[name] = u
				case 3:
					if _, ok := cfg[name]; ok {
						what = "upstream " + name + " removed"
						delete(cfg, name)
					} else {
						what = "upstream " + name + " added"
						cfg[name] = routes.Upstream{Balance: "round_robin", Endpoints: addrs(), CircuitBreaker: cb}
					}
				case 4, 5, 6:
					what = fmt.Sprintf("health verdict %d on %s[%d], %d generations back", op, name, i, back)
					for _, w := range worlds {
						e := w.endpoint(back, name, i)
						if e == nil {
							continue
						}
						switch op {
						case 4:
							e.Health.eject(e)
						case 5:
							e.Health.markDown(e)
						case 6:
							e.Health.markUp(e)
						}
					}
				case 7:
					what = "time passes"
					now = now.Add(time.Duration(rng.IntN(12)) * time.Second)
					for _, w := range worlds {
						for _, g := range w.gens {
							for _, n := range slices.Sorted(maps.Keys(g)) {
								for _, e := range g[n].Endpoints() {
									e.Available() // an ejection that ran out ends here
								}
							}
						}
					}
				}
				if got, want := carried.exposition(t), lookup.exposition(t); got != want {
					t.Fatalf("step %d (%s): the carried series differ from the looked-up ones\ncarried only:\n%s\nlooked up only:\n%s",
						step, what, onlyIn(got, want), onlyIn(want, got))
				}
				if got, want := served(carried), served(lookup); got != want {
					t.Fatalf("step %d (%s): served endpoints differ\ncarried:\n%s\nlooked up:\n%s", step, what, got, want)
				}
			}
		})
	}
}

// onlyIn is the lines of a that b lacks.
func onlyIn(a, b string) string {
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if !slices.Contains(strings.Split(b, "\n"), l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// sameButEndpoints says whether a and b differ at most in their
// endpoints: what the edge changes in place.
func sameButEndpoints(a, b routes.Upstream) bool {
	a.Endpoints, b.Endpoints = nil, nil
	return reflect.DeepEqual(a, b)
}

// served lists every generation's endpoints with weight and availability.
func served(w *gaugeWorld) string {
	var b strings.Builder
	for gi, g := range w.gens {
		for _, n := range slices.Sorted(maps.Keys(g)) {
			for _, e := range g[n].Endpoints() {
				fmt.Fprintf(&b, "%d %s %s w%d %v\n", gi, n, e.Addr, e.Weight, e.Available())
			}
		}
	}
	return b.String()
}
