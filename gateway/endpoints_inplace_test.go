package gateway

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/causewayhq/causeway/routes"
)

// TestRouteSourceEndpointsInPlace: a fragment that differs from the live
// one only in upstreams' endpoints updates the live upstreams instead of
// building a generation; endpoints that stay keep their state; anything
// else, or endpoints the model would refuse, goes through a build.
func TestRouteSourceEndpointsInPlace(t *testing.T) {
	a, b, c := echoUpstream(t, "a"), echoUpstream(t, "b"), echoUpstream(t, "c")
	const up = "k8s.apps.web.80"
	te, src := startFedEdge(t, listenHeader+"providers:\n  kubernetes: {}\n")
	frag := func(eps ...string) routes.Fragment {
		return routes.Fragment{
			Upstreams: map[string]routes.Upstream{up: {Endpoints: eps}, "k8s.apps.other.80": {Endpoints: []string{hostPort(c)}}},
			Routes: []routes.Route{
				{Name: "k8s.apps.r.0", Match: routes.Match{PathPrefix: "/web"}, Upstream: up},
				{Name: "k8s.apps.r.1", Match: routes.Match{PathPrefix: "/other"}, Upstream: "k8s.apps.other.80"},
			},
		}
	}
	if err := src.send(t, frag(hostPort(a))); err != nil {
		t.Fatal(err)
	}
	wantUpstream(t, te.url+"/web", "a")
	built := te.live.Load()

	steps := []struct {
		name    string
		frag    routes.Fragment
		wantErr string
		inPlace bool     // the generation stays
		serves  []string // the upstreams /web reaches
	}{
		{name: "an endpoint added", frag: frag(hostPort(a), hostPort(b)), inPlace: true, serves: []string{"a", "b"}},
		{name: "an endpoint removed", frag: frag(hostPort(b)), inPlace: true, serves: []string{"b"}},
		{name: "no endpoints: 503 until some come", frag: frag(), inPlace: true},
		{name: "endpoints back", frag: frag(hostPort(b)), inPlace: true, serves: []string{"b"}},
		{name: "an endpoint the model refuses: built, and refused", frag: frag("no-port"), wantErr: "not host:port", serves: []string{"b"}},
		{name: "the same fragment again", frag: frag(hostPort(b)), inPlace: true, serves: []string{"b"}},
		{name: "a route changed with the endpoints: built", frag: func() routes.Fragment {
			f := frag(hostPort(a))
			f.Routes[1].Match.PathPrefix = "/other2"
			return f
		}(), serves: []string{"a"}},
	}
	for _, step := range steps {
		err := src.send(t, step.frag)
		if (err == nil) != (step.wantErr == "") || (err != nil && !strings.Contains(err.Error(), step.wantErr)) {
			t.Fatalf("%s: apply: %v, want error %q", step.name, err, step.wantErr)
		}
		if g := te.live.Load(); (g == built) != step.inPlace && step.wantErr == "" {
			t.Fatalf("%s: generation kept %t, want %t", step.name, g == built, step.inPlace)
		}
		built = te.live.Load()
		seen := map[string]bool{}
		for range 8 {
			resp, body := get(t, te.url+"/web")
			if len(step.serves) == 0 {
				if resp.StatusCode != http.StatusServiceUnavailable {
					t.Fatalf("%s: %d, want 503 without endpoints", step.name, resp.StatusCode)
				}
				continue
			}
			for _, name := range []string{"a", "b", "c"} {
				if strings.Contains(string(body), `"Upstream":"`+name+`"`) {
					seen[name] = true
				}
			}
		}
		for _, name := range step.serves {
			if !seen[name] {
				t.Fatalf("%s: %s not reached (reached %v)", step.name, name, seen)
			}
		}
		if len(seen) != len(step.serves) {
			t.Fatalf("%s: reached %v, want %v", step.name, seen, step.serves)
		}
		// /config shows what is served.
		te.mu.Lock()
		eps := te.active.cfg.Upstreams[up].Endpoints
		te.mu.Unlock()
		if want := step.frag.Upstreams[up].Endpoints; step.wantErr == "" && !slices.Equal(eps, want) {
			t.Fatalf("%s: the active model's endpoints %v, want %v", step.name, eps, want)
		}
	}
}

// TestRouteSourceEndpointsInPlaceKeepState: an endpoint that stays through
// an in-place update is the same endpoint, with its health and ejection
// state; a new one starts afresh.
func TestRouteSourceEndpointsInPlaceKeepState(t *testing.T) {
	a, b := echoUpstream(t, "a"), echoUpstream(t, "b")
	const up = "k8s.apps.web.80"
	te, src := startFedEdge(t, listenHeader+"providers:\n  kubernetes: {}\n")
	frag := func(eps ...string) routes.Fragment {
		return routes.Fragment{
			Upstreams: map[string]routes.Upstream{up: {Endpoints: eps}},
			Routes:    []routes.Route{{Name: "k8s.apps.r.0", Match: routes.Match{PathPrefix: "/"}, Upstream: up}},
		}
	}
	if err := src.send(t, frag(hostPort(a))); err != nil {
		t.Fatal(err)
	}
	u := te.live.Load().runtime(0).upstreams[up]
	before := u.Endpoints()
	if len(before) != 1 {
		t.Fatalf("endpoints %v", before)
	}
	before[0].Down.Store(true) // as an active check would mark it
	if err := src.send(t, frag(hostPort(a), hostPort(b))); err != nil {
		t.Fatal(err)
	}
	if te.live.Load().runtime(0).upstreams[up] != u {
		t.Fatal("a new upstream: the generation was built again")
	}
	after := u.Endpoints()
	var kept, added bool
	for _, e := range after {
		switch e.Addr {
		case hostPort(a):
			kept = e == before[0] && e.Down.Load()
		case hostPort(b):
			added = !e.Down.Load()
		}
	}
	if !kept || !added {
		t.Fatalf("kept %t (same endpoint, still down), added %t (up): %v", kept, added, after)
	}
	// The endpoint that is down is skipped: every request reaches b.
	for range 6 {
		wantUpstream(t, te.url+"/x", "b")
	}
}

// TestRouteSourceEndpointsInPlaceConcurrent changes endpoints in place
// while requests run and the file is reloaded (go test -race).
func TestRouteSourceEndpointsInPlaceConcurrent(t *testing.T) {
	a, b := echoUpstream(t, "a"), echoUpstream(t, "b")
	const up = "k8s.apps.web.80"
	te, src := startFedEdge(t, listenHeader+"providers:\n  kubernetes: {}\n")
	frag := func(eps ...string) routes.Fragment {
		return routes.Fragment{
			Upstreams: map[string]routes.Upstream{up: {Endpoints: eps}},
			Routes:    []routes.Route{{Name: "k8s.apps.r.0", Match: routes.Match{PathPrefix: "/"}, Upstream: up}},
		}
	}
	if err := src.send(t, frag(hostPort(a))); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if resp, _ := get(t, te.url+"/x"); resp.StatusCode != http.StatusOK {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 5 {
			if err := te.Reload(t.Context()); err != nil {
				t.Error(err)
			}
		}
	}()
	for i := range 40 {
		eps := []string{hostPort(a)}
		if i%2 == 1 {
			eps = []string{hostPort(b), hostPort(a)}
		}
		if err := src.send(t, frag(eps...)); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d requests failed while endpoints changed", n)
	}
	te.mu.Lock()
	eps := te.active.cfg.Upstreams[up].Endpoints
	te.mu.Unlock()
	if !slices.Equal(eps, []string{hostPort(b), hostPort(a)}) {
		t.Fatalf("the active model's endpoints %v after the last change", eps)
	}
}
