package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// fedSource is a route source the test feeds by hand: each fragment sent
// on feed is applied, and the result comes back on results. It stands
// for the Kubernetes provider at the seam the edge defines; the provider
// itself is tested against a real API server.
type fedSource struct {
	feed    chan routes.Fragment
	results chan error
	runs    *sync.WaitGroup // counts the edge's runs of the source
}

func (s *fedSource) Run(ctx context.Context, apply func(routes.Fragment) error) error {
	s.runs.Add(1)
	defer s.runs.Done()
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-s.feed:
			s.results <- apply(f)
		}
	}
}

// startFedEdge starts an edge from config whose route source is a
// fedSource the test feeds; more adjusts the options further.
func startFedEdge(t testing.TB, config string, more ...func(*EdgeOptions)) (*testEdge, *fedSource) {
	t.Helper()
	src := &fedSource{feed: make(chan routes.Fragment), results: make(chan error), runs: new(sync.WaitGroup)}
	te := startEdge(t, config, func(o *EdgeOptions) {
		o.RouteSource = func(routes.KubernetesProvider, *slog.Logger) (RouteSource, error) { return src, nil }
		for _, f := range more {
			f(o)
		}
	})
	return te, src
}

func (s *fedSource) send(t *testing.T, f routes.Fragment) error {
	t.Helper()
	select {
	case s.feed <- f:
	case <-time.After(10 * time.Second):
		t.Fatal("the edge is not running the source")
	}
	select {
	case err := <-s.results:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("apply did not return")
	}
	return nil
}

func TestRouteSource(t *testing.T) {
	fileUp, k8sUp := echoUpstream(t, "file"), echoUpstream(t, "k8s")
	file := listenHeader + `
upstreams:
  file: {endpoints: ["` + hostPort(fileUp) + `"]}
routes:
  - {name: file, match: {path_prefix: /file}, upstream: file}
providers:
  kubernetes: {kubeconfig: ""}
`
	var runs sync.WaitGroup
	src := &fedSource{feed: make(chan routes.Fragment), results: make(chan error), runs: &runs}
	var built []routes.KubernetesProvider
	var mu sync.Mutex
	te := startEdge(t, file, func(o *EdgeOptions) {
		o.RouteSource = func(cfg routes.KubernetesProvider, _ *slog.Logger) (RouteSource, error) {
			mu.Lock()
			defer mu.Unlock()
			built = append(built, cfg)
			if cfg.GatewayClass == "broken" {
				return nil, errors.New("kubeconfig: no such file")
			}
			return src, nil
		}
	})

	// Before the source delivers, the file's routes serve and the edge
	// says it is not ready.
	if resp, _ := get(t, te.url+"/file/x"); resp.StatusCode != http.StatusOK {
		t.Fatalf("file route before the source: %d", resp.StatusCode)
	}
	if resp, body := get(t, te.admin+"/readyz"); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "kubernetes") {
		t.Fatalf("readyz before the source delivered: %d %s", resp.StatusCode, body)
	}

	frag := routes.Fragment{
		Upstreams: map[string]routes.Upstream{"k8s.apps.web.80": {Endpoints: []string{hostPort(k8sUp)}}, "k8s.apps.empty.80": {}},
		Routes: []routes.Route{
			{Name: "k8s.apps.r.0", Match: routes.Match{PathPrefix: "/k8s"}, Upstream: "k8s.apps.web.80"},
			{Name: "k8s.apps.r.1", Match: routes.Match{PathPrefix: "/empty"}, Upstream: "k8s.apps.empty.80"},
			// Shadowed by the file's route: the file was first.
			{Name: "k8s.apps.shadow", Match: routes.Match{PathPrefix: "/file"}, Upstream: "k8s.apps.web.80"},
		},
	}
	if err := src.send(t, frag); err != nil {
		t.Fatalf("apply: %v", err)
	}
	wantUpstream(t, te.url+"/k8s/a", "k8s")
	wantUpstream(t, te.url+"/file/a", "file")
	if resp, _ := get(t, te.url+"/empty"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("an upstream without endpoints: %d, want 503", resp.StatusCode)
	}
	if resp, _ := get(t, te.admin+"/readyz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz after the source delivered: %d", resp.StatusCode)
	}

	// A fragment the model refuses changes nothing.
	bad := routes.Fragment{Routes: []routes.Route{{Name: "k8s.bad", Match: routes.Match{PathPrefix: "/bad"}, Upstream: "k8s.nowhere"}}}
	if err := src.send(t, bad); err == nil || !strings.Contains(err.Error(), `undefined upstream "k8s.nowhere"`) {
		t.Fatalf("refused fragment: %v", err)
	}
	wantUpstream(t, te.url+"/k8s/a", "k8s")

	// The file on disk is broken: a change from the cluster still
	// applies, built on the file the edge serves, not on the broken one.
	writeFile(t, te.path, "version: 1\nroutes: [")
	frag2 := frag
	frag2.Routes = append([]routes.Route{{Name: "k8s.apps.new", Match: routes.Match{Path: "/new"}, Upstream: "k8s.apps.web.80"}}, frag.Routes...)
	if err := src.send(t, frag2); err != nil {
		t.Fatalf("apply with a broken file on disk: %v", err)
	}
	wantUpstream(t, te.url+"/new", "k8s")

	// A file reload keeps the cluster's routes (and not the refused ones).
	writeFile(t, te.path, strings.Replace(file, "/file", "/file2", 1))
	waitFor(t, func() bool { r, _ := get(t, te.url+"/file2/x"); return r.StatusCode == http.StatusOK })
	wantUpstream(t, te.url+"/new", "k8s")
	if resp, _ := get(t, te.url+"/bad"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a refused fragment's route serves after a file reload: %d", resp.StatusCode)
	}

	// A file whose provider cannot be built is refused as a whole.
	writeFile(t, te.path, strings.Replace(file, `kubeconfig: ""`, `gateway_class: broken`, 1))
	waitFor(t, func() bool { return strings.Contains(te.logs.String(), "kubeconfig: no such file") })
	wantUpstream(t, te.url+"/new", "k8s")

	// Turning the provider off drops its routes and stops it.
	writeFile(t, te.path, strings.Replace(file, "providers:\n  kubernetes: {kubeconfig: \"\"}\n", "", 1))
	waitFor(t, func() bool { r, _ := get(t, te.url+"/new"); return r.StatusCode == http.StatusNotFound })
	stopped := make(chan struct{})
	go func() { runs.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the source still runs after the file turned it off")
	}
	if resp, _ := get(t, te.admin+"/readyz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz without a provider: %d", resp.StatusCode)
	}
}

func wantUpstream(t *testing.T, url, want string) {
	t.Helper()
	resp, body := get(t, url)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"Upstream":"`+want+`"`) {
		t.Fatalf("%s: %d %s, want upstream %s", url, resp.StatusCode, body, want)
	}
}

// BenchmarkRouteSourceApply10k is one change from a route source at the
// scale of 10,000 Gateway API routes (20,000 routes in the model, as a
// whole-segment prefix is two; 1,000 upstreams of 10 endpoints): the
// merge, validation and generation build a change costs
// (go test -run '^$' -bench RouteSourceApply10k ./gateway).
func BenchmarkRouteSourceApply10k(b *testing.B) { benchmarkRouteSourceApply(b, scaleFragment()) }

// BenchmarkRouteSourceApply10k100kEndpoints is the same change with 100
// endpoints per upstream: the 100,000 endpoints of make scale-k8s.
func BenchmarkRouteSourceApply10k100kEndpoints(b *testing.B) {
	benchmarkRouteSourceApply(b, scaleFragmentEndpoints(100))
}

func benchmarkRouteSourceApply(b *testing.B, frag routes.Fragment) {
	te, src := startFedEdge(b, listenHeader+"providers:\n  kubernetes: {}\n")
	// The first model is built before the clock starts: each apply
	// measured is a change to a live model of this size.
	src.feed <- frag
	if err := <-src.results; err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		// A route changes every time: an unchanged fragment, or one that
		// differs only in endpoints, builds nothing. A copy, as the edge
		// keeps the fragment it applied.
		next := frag
		next.Routes = slices.Clone(frag.Routes)
		i++
		next.Routes[0].Match.Path = fmt.Sprintf("/p0-%d", i)
		src.feed <- next
		if err := <-src.results; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if rt := te.live.Load().runtime(0); rt != nil {
		b.ReportMetric(float64(rt.reused), "upstreams-reused")
		b.ReportMetric(float64(rt.routesReused), "forwarders-reused")
	}
}

// scaleFragment is 10,000 Gateway API routes as the provider gives them.
func scaleFragment() routes.Fragment { return scaleFragmentEndpoints(10) }

// scaleFragmentEndpoints is scaleFragment with n endpoints per upstream.
func scaleFragmentEndpoints(n int) routes.Fragment {
	frag := routes.Fragment{Upstreams: map[string]routes.Upstream{}}
	for i := 0; i < 1000; i++ {
		var eps []string
		for j := 0; j < n; j++ {
			k := i*n + j
			eps = append(eps, fmt.Sprintf("10.%d.%d.%d:8080", 64+k>>16, k>>8&255, k&255))
		}
		frag.Upstreams[fmt.Sprintf("k8s.apps.svc%d.80", i)] = routes.Upstream{Endpoints: eps}
	}
	for i := 0; i < 10000; i++ {
		up := fmt.Sprintf("k8s.apps.svc%d.80", i%1000)
		host := fmt.Sprintf("h%d.example", i%100)
		frag.Routes = append(frag.Routes,
			routes.Route{Name: fmt.Sprintf("k8s.apps.r%d.0.e", i), Match: routes.Match{Host: host, Path: fmt.Sprintf("/p%d", i)}, Upstream: up},
			routes.Route{Name: fmt.Sprintf("k8s.apps.r%d.0.p", i), Match: routes.Match{Host: host, PathPrefix: fmt.Sprintf("/p%d/", i)}, Upstream: up})
	}
	return frag
}

// BenchmarkRouteSourceEndpoints10k is an endpoint-only change at the same
// scale: one upstream's endpoints change, and the live upstream takes them
// without a generation being built. The routes are the same slice each
// time, which makes telling the change apart quick here; on fresh
// fragments from the provider it takes BenchmarkEndpointsChanged10k.
func BenchmarkRouteSourceEndpoints10k(b *testing.B) {
	frag := scaleFragment()
	te, src := startFedEdge(b, listenHeader+"providers:\n  kubernetes: {}\n")
	src.feed <- frag
	if err := <-src.results; err != nil {
		b.Fatal(err)
	}
	built := te.live.Load()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		next := frag
		next.Upstreams = maps.Clone(frag.Upstreams)
		i++
		next.Upstreams["k8s.apps.svc7.80"] = routes.Upstream{Endpoints: []string{fmt.Sprintf("10.245.%d.%d:8080", i/250%250, i%250)}}
		src.feed <- next
		if err := <-src.results; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if te.live.Load() != built {
		b.Fatal("a generation was built")
	}
}
