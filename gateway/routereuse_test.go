package gateway

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// TestRouteReuseDifferential applies random sequences of route-source
// changes to an edge that takes over what a change leaves alone (what
// checking each route found, each route's forwarder) and to one that
// checks and builds everything afresh: routes added, removed, reordered,
// renamed and changed in every field a forwarder depends on (match,
// strip_prefix, host_rewrite, upstream, split), upstreams rebuilt under
// their routes (to another backend), shadowed routes, and models refused
// by validation (after valid changes in the same fragment) or by the
// build. After each step both must have accepted or refused alike, with
// the same errors; a refusal must leave the reusing edge's live
// generation in place; both must hold the same merged model and serve
// alike: for every route, the status, the backend that answered, and the
// path and Host that backend received; and the same request series per
// route.
func TestRouteReuseDifferential(t *testing.T) {
	steps := 200
	if testing.Short() {
		steps = 40
	}
	backends, byName := probeBackends(t, 5)
	badCA := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(badCA, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	type side struct {
		name string
		te   *testEdge
		src  *fedSource
	}
	start := func(name string, noReuse bool) *side {
		te, src := startFedEdge(t, listenHeader+"providers:\n  kubernetes: {}\n", func(o *EdgeOptions) {
			o.noReuse = noReuse
		})
		return &side{name: name, te: te, src: src}
	}
	ref, reu := start("from scratch", true), start("reusing", false)
	sides := []*side{ref, reu}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	const nUps = 4
	upName := func(i int) string { return fmt.Sprintf("k8s.t.u%d", i) }
	// One endpoint per upstream: the backend that answers is decided by
	// the route alone.
	upstream := func() routes.Upstream {
		return routes.Upstream{Endpoints: []string{hostPort(backends[rng.IntN(len(backends))].srv)},
			Timeout: routes.Duration(time.Duration(5+rng.IntN(3)) * time.Second)}
	}
	hostRewrites := []string{"", "", "a.example", "b.example:8081"}
	routeNo := 0
	// randomize sets the route's fields a forwarder or a match depends on.
	randomize := func(r *routes.Route) {
		r.Match = routes.Match{}
		base := fmt.Sprintf("/r%d", routeNo+rng.IntN(3))
		if rng.IntN(3) == 0 {
			r.Match.Path = base + "/x"
		} else {
			r.Match.PathPrefix = base + "/"
			r.StripPrefix = rng.IntN(2) == 0
		}
		if rng.IntN(3) == 0 {
			r.Match.Host = fmt.Sprintf("h%d.example", rng.IntN(2))
		}
		if rng.IntN(6) == 0 {
			r.Match.Methods = []string{"POST"}
		}
		if r.Match.Path != "" {
			r.StripPrefix = false
		}
		r.HostRewrite = hostRewrites[rng.IntN(len(hostRewrites))]
		r.Upstream, r.Split = "", nil
		if rng.IntN(4) == 0 {
			r.Split = []routes.SplitTarget{{Upstream: upName(rng.IntN(nUps)), Weight: 1},
				{Upstream: upName(rng.IntN(nUps)), Weight: 1, Headers: map[string]string{"X-Canary": "1"}}}
		} else {
			r.Upstream = upName(rng.IntN(nUps))
		}
	}
	newRoute := func() routes.Route {
		routeNo++
		r := routes.Route{Name: fmt.Sprintf("k8s.t.r%d", routeNo)}
		randomize(&r)
		return r
	}
	live := reuseModel{ups: map[string]routes.Upstream{}}
	for i := range nUps {
		live.ups[upName(i)] = upstream()
	}
	for range 8 {
		live.routes = append(live.routes, newRoute())
	}
	probeNo := 0
	// serve sends the same request to both sides and returns, per side,
	// the status, the backend that answered and what it received.
	serve := func(path, host string) [2]string {
		probeNo++
		var out [2]string
		for i, s := range sides {
			probe := fmt.Sprintf("%s-%d", s.name, probeNo)
			hdr := []string{"X-Probe", probe, "X-Canary", "1"}
			if host != "" {
				hdr = append(hdr, "Host", host)
			}
			resp, _ := get(t, s.te.url+path, hdr...)
			b := resp.Header.Get("X-Backend")
			got := ""
			if b != "" {
				if got = byName[b].received(probe); got == "" {
					t.Fatalf("%s: %s says %s answered, which never received it", s.name, path, b)
				}
			}
			// The client's Host is the side's own address.
			got = strings.ReplaceAll(got, strings.TrimPrefix(s.te.url, "http://"), "EDGE")
			out[i] = fmt.Sprintf("%d %s %s", resp.StatusCode, b, got)
		}
		return out
	}
	for _, s := range sides {
		if err := s.src.send(t, live.fragment()); err != nil {
			t.Fatalf("%s: the first model: %v", s.name, err)
		}
	}
	reused := 0
	var lastRefused *reuseModel
	for step := range steps {
		next := live.clone()
		var what string
		wantRefused := false
		switch op := rng.IntN(10); op {
		case 0, 1:
			i := rng.IntN(len(next.routes))
			randomize(&next.routes[i])
			what = "a route changed"
		case 2:
			i := rng.IntN(len(next.routes))
			r := next.routes[i]
			switch rng.IntN(4) {
			case 0:
				r.StripPrefix = !r.StripPrefix && r.Match.PathPrefix != ""
			case 1:
				r.HostRewrite = hostRewrites[rng.IntN(len(hostRewrites))]
			case 2:
				if r.Upstream != "" {
					r.Upstream = upName(rng.IntN(nUps))
				} else {
					r.Split = slices.Clone(r.Split)
					r.Split[1].Upstream = upName(rng.IntN(nUps))
				}
			default:
				r.Timeout = routes.Duration(time.Duration(rng.IntN(3)) * time.Minute)
			}
			next.routes[i] = r
			what = "one field of a route changed"
		case 3:
			if len(next.routes) > 2 && rng.IntN(2) == 0 {
				i := rng.IntN(len(next.routes))
				next.routes = slices.Delete(next.routes, i, i+1)
				what = "a route removed"
			} else {
				at := rng.IntN(len(next.routes) + 1)
				next.routes = slices.Insert(next.routes, at, newRoute())
				what = "a route added (the later ones move)"
			}
		case 4:
			i, j := rng.IntN(len(next.routes)), rng.IntN(len(next.routes))
			next.routes[i], next.routes[j] = next.routes[j], next.routes[i]
			if rng.IntN(2) == 0 {
				routeNo++
				next.routes[i].Name = fmt.Sprintf("k8s.t.r%d", routeNo)
				what = "routes swapped, one renamed"
			} else {
				what = "routes swapped"
			}
		case 5:
			// An upstream rebuilt (its settings changed) and moved to
			// another backend: its routes' forwarders must follow.
			name := upName(rng.IntN(nUps))
			next.ups[name] = upstream()
			what = "an upstream rebuilt"
		case 6:
			// A copy of a route's match under another name: shadowed.
			r := next.routes[rng.IntN(len(next.routes))]
			routeNo++
			r.Name = fmt.Sprintf("k8s.t.r%d", routeNo)
			r.Upstream, r.Split = upName(rng.IntN(nUps)), nil
			next.routes = append(next.routes, r)
			what = "a shadowed route"
		case 7:
			// Valid changes, and one route validation refuses.
			i := rng.IntN(len(next.routes))
			randomize(&next.routes[i])
			// Whether next keeps route k as the model does: route i's
			// new match may tie with k's and leave one of them out as
			// shadowed, which frees its name and leaves its fields
			// unchecked.
			keeps := func(k int) bool {
				return k >= 0 && k != i && !reflect.DeepEqual(next.routes[k].Match, next.routes[i].Match)
			}
			bad := newRoute()
			// A match of its own, so that it is not shadowed (left out).
			bad.Match = routes.Match{PathPrefix: fmt.Sprintf("/bad%d/", routeNo)}
			switch rng.IntN(5) {
			case 0:
				bad.HostRewrite = "Not A Host"
			case 1:
				// A name the model has and next keeps.
				var names []string
				for _, m := range reu.te.live.Load().runtime(0).file.Routes {
					if keeps(slices.IndexFunc(next.routes, func(r routes.Route) bool { return r.Name == m.Name })) {
						names = append(names, m.Name)
					}
				}
				if len(names) == 0 {
					bad.HostRewrite = "Not A Host"
					break
				}
				bad.Name = names[rng.IntN(len(names))]
			case 2:
				bad.Upstream, bad.Split = "k8s.t.nowhere", nil
			case 3:
				bad.Match = routes.Match{Path: "/{broken"}
			default:
				// A route the model has, under its own name, made
				// invalid: it must be checked again, not known.
				var inModel []int
				for j, r := range next.routes {
					if keeps(j) && slices.ContainsFunc(reu.te.live.Load().runtime(0).file.Routes, func(m routes.Route) bool { return m.Equal(r) }) {
						inModel = append(inModel, j)
					}
				}
				bad.HostRewrite = "Not A Host"
				if len(inModel) > 0 {
					// In its place: moved, it could be the one shadowed.
					j := inModel[rng.IntN(len(inModel))]
					next.routes[j].HostRewrite = bad.HostRewrite
					bad.Name = next.routes[j].Name + " (in place)"
				}
			}
			if !strings.HasSuffix(bad.Name, " (in place)") {
				next.routes = append(next.routes, bad)
			}
			wantRefused, what = true, "refused by validation: "+bad.Name+" "+bad.HostRewrite+" "+bad.Upstream+" "+bad.Match.Path
		case 8:
			i := rng.IntN(len(next.routes))
			randomize(&next.routes[i])
			next.ups["k8s.t.zz"] = routes.Upstream{Endpoints: []string{hostPort(backends[0].srv)}, Scheme: "https", TLS: &routes.UpstreamTLS{CAFile: badCA}}
			next.routes = append(next.routes, routes.Route{Name: "k8s.t.zz", Match: routes.Match{PathPrefix: "/zz/"}, Upstream: "k8s.t.zz"})
			wantRefused, what = true, "refused by the build"
		default:
			what = "the same model again"
			if lastRefused != nil && rng.IntN(2) == 0 {
				// Its flawed route must not pass as known.
				next, wantRefused, what = lastRefused.clone(), true, "the model refused last, again"
			}
		}
		before := reu.te.live.Load()
		var errs [2]error
		for i, s := range sides {
			errs[i] = s.src.send(t, next.fragment())
		}
		// Each side names its own routes file.
		text := func(i int, s string) string { return strings.ReplaceAll(s, sides[i].te.path, "FILE") }
		if (errs[0] == nil) != (errs[1] == nil) || (errs[0] != nil && text(0, errs[0].Error()) != text(1, errs[1].Error())) {
			t.Fatalf("step %d (%s): from scratch %v, reusing %v", step, what, errs[0], errs[1])
		}
		if wantRefused && errs[1] == nil {
			t.Fatalf("step %d (%s): accepted", step, what)
		}
		if errs[1] == nil {
			live = next
		} else {
			lastRefused = &next
		}
		if errs[1] != nil && reu.te.live.Load() != before {
			t.Fatalf("step %d (%s): a refused model replaced the live generation", step, what)
		}
		rtRef, rtReu := ref.te.live.Load().runtime(0), reu.te.live.Load().runtime(0)
		if rtRef.routesReused != 0 {
			t.Fatalf("step %d: the reference took over %d forwarders", step, rtRef.routesReused)
		}
		if errs[1] == nil {
			reused += rtReu.routesReused
		}
		// The same merged model, warnings (shadowed routes) included.
		fa, fb := rtRef.file, rtReu.file
		if len(fa.Routes) != len(fb.Routes) {
			t.Fatalf("step %d (%s): %d routes from scratch, %d reusing", step, what, len(fa.Routes), len(fb.Routes))
		}
		for i := range fa.Routes {
			if !fa.Routes[i].Equal(fb.Routes[i]) {
				t.Fatalf("step %d (%s): route %d: from scratch %+v, reusing %+v", step, what, i, fa.Routes[i], fb.Routes[i])
			}
		}
		if a, b := text(0, fa.Warnings.Error()), text(1, fb.Warnings.Error()); a != b {
			t.Fatalf("step %d (%s): warnings from scratch %q, reusing %q", step, what, a, b)
		}
		// Served alike, route by route, and as the routes say.
		for _, r := range fb.Routes {
			path := r.Match.Path
			if path == "" {
				path = r.Match.PathPrefix + "x/y?q=1"
			}
			got := serve(path, r.Match.Host)
			if got[0] != got[1] {
				t.Fatalf("step %d (%s): %s (%+v): from scratch %q, reusing %q", step, what, r.Name, r, got[0], got[1])
			}
		}
		if a, b := routeSeries(t, ref.te), routeSeries(t, reu.te); !maps.Equal(a, b) {
			t.Fatalf("step %d (%s): route series differ\nfrom scratch %v\nreusing      %v", step, what, a, b)
		}
	}
	if reused == 0 {
		t.Fatal("no forwarder was ever taken over: the test did not exercise it")
	}
	t.Logf("%d steps, %d forwarders taken over", steps, reused)
}

// routeSeries are an edge's request counts by route, method and code.
func routeSeries(t *testing.T, te *testEdge) map[string]float64 {
	t.Helper()
	fams, err := te.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "causeway_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out[strings.Join(labels, ",")] += m.GetCounter().GetValue()
		}
	}
	return out
}
