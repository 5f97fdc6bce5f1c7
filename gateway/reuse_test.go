package gateway

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/proxy"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
)

// probeBackend answers with its name and records, for each probe id
// (X-Probe), the path and Host it received. A path ending in /fail gets
// 500; health checks are not recorded.
type probeBackend struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	got  map[string]string
}

func newProbeBackend(t *testing.T, name string) *probeBackend {
	b := &probeBackend{name: name, got: map[string]string{}}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			return
		}
		b.mu.Lock()
		b.got[r.Header.Get("X-Probe")] = r.URL.RequestURI() + " host=" + r.Host
		b.mu.Unlock()
		w.Header().Set("X-Backend", name)
		if strings.HasSuffix(r.URL.Path, "/fail") {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(b.srv.Close)
	return b
}

// received is what the backend received with probe ("" for nothing).
func (b *probeBackend) received(probe string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.got[probe]
}

// reuseModel is the fragment a route source gives: upstreams and routes.
type reuseModel struct {
	ups    map[string]routes.Upstream
	routes []routes.Route
}

func (m reuseModel) fragment() routes.Fragment {
	return routes.Fragment{Upstreams: maps.Clone(m.ups), Routes: slices.Clone(m.routes)}
}

func (m reuseModel) clone() reuseModel {
	return reuseModel{ups: maps.Clone(m.ups), routes: slices.Clone(m.routes)}
}

// TestUpstreamReuseDifferential applies random sequences of route-source
// changes (routes added, removed and changed, upstream settings and
// endpoints changed, endpoint-only changes applied in place, refused
// models, some refused only by the generation build after upstreams were
// taken over) to an edge that reuses unchanged upstreams and to one that
// builds every upstream afresh, with the same health verdicts and
// failures on both. After each step both must serve alike (which endpoint
// answered each request, and that it received it; the status), export
// the same endpoint health series and per-upstream request counts, and
// the reusing edge must hold no closed upstream and leave no upstream of
// a retired generation running.
func TestUpstreamReuseDifferential(t *testing.T) {
	steps := 250
	if testing.Short() {
		steps = 40
	}
	backends, byName := probeBackends(t, 6)
	badCA := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(badCA, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }

	type side struct {
		name string
		te   *testEdge
		src  *fedSource
		seen map[*proxy.Upstream]bool // every upstream a live generation held
	}
	start := func(name string, noReuse bool) *side {
		te, src := startFedEdge(t, listenHeader+"providers:\n  kubernetes: {}\n", func(o *EdgeOptions) {
			o.Clock = now
			o.noReuse = noReuse
		})
		return &side{name: name, te: te, src: src, seen: map[*proxy.Upstream]bool{}}
	}
	ref, reu := start("from scratch", true), start("reusing", false)
	sides := []*side{ref, reu}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	const nUps = 5
	upName := func(i int) string { return fmt.Sprintf("k8s.t.u%d", i) }
	randEndpoints := func() []string {
		var eps []string
		for _, i := range rng.Perm(len(backends))[:1+rng.IntN(4)] {
			eps = append(eps, hostPort(backends[i].srv))
		}
		return eps
	}
	randUpstream := func(eps []string) routes.Upstream {
		u := routes.Upstream{Endpoints: eps, Timeout: routes.Duration(time.Duration(5+rng.IntN(2)) * time.Second)}
		if rng.IntN(2) == 0 {
			u.Balance, u.HashOn = "ring_hash", "header:X-Key"
		}
		if rng.IntN(2) == 0 {
			// Verdicts come from the test; the checker's own probe at
			// start never reaches the healthy threshold.
			u.HealthCheck = &routes.HealthCheck{Path: "/health", Interval: routes.Duration(time.Hour), Timeout: routes.Duration(time.Second),
				HealthyThreshold: 1000, UnhealthyThreshold: 1}
		}
		if rng.IntN(2) == 0 {
			// One failure ejects: how many failures an endpoint has had
			// depends on which requests a round robin sent it, and that
			// on its counter, which a reused upstream keeps.
			u.CircuitBreaker = &routes.CircuitBreaker{Consecutive5xx: 1, EjectFor: routes.Duration(time.Duration(1+rng.IntN(2)) * time.Hour),
				MaxEjectedPercent: 50 + 50*rng.IntN(2)}
		}
		return u
	}
	routeNo := 0
	newRoute := func() routes.Route {
		routeNo++
		return routes.Route{Name: fmt.Sprintf("k8s.t.r%d", routeNo), Match: routes.Match{PathPrefix: fmt.Sprintf("/r%d/", routeNo)}, Upstream: upName(rng.IntN(nUps))}
	}
	live := reuseModel{ups: map[string]routes.Upstream{}}
	for i := range nUps {
		live.ups[upName(i)] = randUpstream(randEndpoints())
	}
	for range 4 {
		live.routes = append(live.routes, newRoute())
	}

	liveUpstreams := func(s *side) map[string]*proxy.Upstream { return s.te.live.Load().runtime(0).upstreams }
	probeNo := 0
	// serve sends n requests on each side, the same ones, and returns the
	// answers as "status backend" per side.
	serve := func(path, key string) [2]string {
		probeNo++
		var out [2]string
		for i, s := range sides {
			probe := fmt.Sprintf("%s-%d", s.name, probeNo)
			resp, _ := get(t, s.te.url+path, "X-Key", key, "X-Probe", probe)
			b := resp.Header.Get("X-Backend")
			if b != "" && byName[b].received(probe) == "" {
				t.Fatalf("%s: %s says %s answered, which never received it", s.name, path, b)
			}
			out[i] = fmt.Sprintf("%d %s", resp.StatusCode, b)
		}
		return out
	}
	reusedAny := 0
	for step := range steps {
		next := live.clone()
		op := rng.IntN(11)
		if op == 10 {
			op = 8
		}
		var what string
		wantRefused := false
		switch op {
		case 0, 1:
			i := rng.IntN(len(next.routes))
			next.routes[i].Upstream = upName(rng.IntN(nUps))
			next.routes[i].Match.PathPrefix += "x/"
			what = "a route changed"
		case 2:
			if len(next.routes) > 1 && rng.IntN(2) == 0 {
				i := rng.IntN(len(next.routes))
				next.routes = slices.Delete(next.routes, i, i+1)
				what = "a route removed"
			} else {
				next.routes = append(next.routes, newRoute())
				what = "a route added"
			}
		case 3:
			name := upName(rng.IntN(nUps))
			u := next.ups[name]
			// One setting at a time, so that each comparison must
			// stop a reuse on its own; or all of them.
			switch rng.IntN(6) {
			case 0:
				u.CircuitBreaker = randUpstream(nil).CircuitBreaker
			case 1:
				if cb := u.CircuitBreaker; cb != nil {
					c := *cb
					c.MaxEjectedPercent = 150 - c.MaxEjectedPercent
					u.CircuitBreaker = &c
				}
			case 2:
				u.HealthCheck = randUpstream(nil).HealthCheck
			case 3:
				if u.Balance == "" {
					u.Balance, u.HashOn = "ring_hash", "header:X-Key"
				} else {
					u.Balance, u.HashOn = "", ""
				}
			case 4:
				u = randUpstream(randEndpoints())
			default:
				u = randUpstream(u.Endpoints)
			}
			next.ups[name] = u
			next.routes = append(next.routes, newRoute())
			what = "an upstream's settings changed, with a route"
		case 4:
			name := upName(rng.IntN(nUps))
			u := next.ups[name]
			u.Endpoints = randEndpoints()
			next.ups[name] = u
			what = "endpoints changed (in place)"
		case 5:
			name := upName(rng.IntN(nUps))
			u := next.ups[name]
			u.Endpoints = append(slices.Clone(u.Endpoints), "no-port")
			next.ups[name] = u
			wantRefused, what = true, "refused by validation"
		case 6:
			// Refused by the build itself, after the unchanged upstreams
			// (sorted before it) were taken over.
			next.ups["k8s.t.zz"] = routes.Upstream{Endpoints: []string{hostPort(backends[0].srv)}, Scheme: "https", TLS: &routes.UpstreamTLS{CAFile: badCA}}
			next.routes = append(next.routes, newRoute())
			wantRefused, what = true, "refused by the build"
		case 7:
			// Health verdicts on both sides' live upstreams.
			what = "an endpoint fails its health check"
			name, idx := upName(rng.IntN(nUps)), rng.IntN(len(backends))
			for _, s := range sides {
				u := liveUpstreams(s)[name]
				if u == nil || u.Cfg.HealthCheck == nil || len(u.Endpoints()) == 0 {
					continue
				}
				eps := u.Endpoints() // sorted by address: the same endpoint on both sides
				(&proxy.HealthChecker{Up: u, Cfg: *u.Cfg.HealthCheck}).Record(eps[idx%len(eps)], false)
			}
		case 8:
			what = "failures eject an endpoint"
			// On the ring_hash upstreams, where a key decides the
			// endpoint, with or without ejection configured.
			for _, r := range live.routes {
				if live.ups[r.Upstream].Balance == "ring_hash" {
					got := serve(r.Match.PathPrefix+"fail", fmt.Sprintf("k%d", rng.IntN(5)))
					if got[0] != got[1] {
						t.Fatalf("step %d: failing request: from scratch %q, reusing %q", step, got[0], got[1])
					}
				}
			}
		case 9:
			if rng.IntN(2) == 0 {
				clock.Add(int64(24 * time.Hour)) // every ejection runs out (at most 10 x 2h)
				what = "time passes"
			} else {
				what = "the same model again"
			}
		}
		if op != 7 && op != 8 {
			var errs [2]error
			for i, s := range sides {
				errs[i] = s.src.send(t, next.fragment())
			}
			if (errs[0] == nil) != (errs[1] == nil) {
				t.Fatalf("step %d (%s): from scratch %v, reusing %v", step, what, errs[0], errs[1])
			}
			if (errs[1] != nil) != wantRefused {
				t.Fatalf("step %d (%s): refused %v", step, what, errs[1])
			}
			if op == 6 && !strings.Contains(errs[1].Error(), "k8s.t.zz") {
				t.Fatalf("step %d: refused for another reason: %v", step, errs[1])
			}
			if errs[1] == nil {
				live = next
			}
		}
		reusedAny += reu.te.live.Load().runtime(0).reused
		if r := ref.te.live.Load().runtime(0).reused; r != 0 {
			t.Fatalf("step %d: the reference reused %d upstreams", step, r)
		}

		// Served alike.
		for _, r := range live.routes {
			up := live.ups[r.Upstream]
			if up.Balance == "ring_hash" {
				for k := range 5 {
					got := serve(r.Match.PathPrefix+"x", fmt.Sprintf("k%d", k))
					if got[0] != got[1] {
						t.Fatalf("step %d (%s): %s key k%d: from scratch %q, reusing %q", step, what, r.Name, k, got[0], got[1])
					}
				}
				continue
			}
			var sets [2][]string
			for range 3 * len(up.Endpoints) {
				got := serve(r.Match.PathPrefix+"x", "")
				for i := range sides {
					if !slices.Contains(sets[i], got[i]) {
						sets[i] = append(sets[i], got[i])
					}
				}
			}
			sort.Strings(sets[0])
			sort.Strings(sets[1])
			if !slices.Equal(sets[0], sets[1]) {
				t.Fatalf("step %d (%s): %s (round robin over %v): from scratch %v, reusing %v", step, what, r.Name, up.Endpoints, sets[0], sets[1])
			}
		}
		// The same series.
		a, b := upstreamSeries(t, ref.te), upstreamSeries(t, reu.te)
		if !maps.Equal(a, b) {
			t.Fatalf("step %d (%s): upstream series differ\nfrom scratch %v\nreusing      %v", step, what, a, b)
		}
		// Lifecycle: nothing live is closed, nothing retired runs.
		for _, s := range sides {
			ups := liveUpstreams(s)
			for name, u := range ups {
				if u.Closed() || s.te.upstreams.References(u) < 1 {
					t.Fatalf("step %d (%s): %s: live upstream %s closed %t, references %d", step, what, s.name, name, u.Closed(), s.te.upstreams.References(u))
				}
				s.seen[u] = true
			}
			held := map[*proxy.Upstream]bool{}
			for _, u := range ups {
				held[u] = true
			}
			for u := range s.seen {
				if held[u] {
					continue
				}
				deadline := time.Now().Add(5 * time.Second)
				for !u.Closed() || s.te.upstreams.References(u) != 0 {
					if time.Now().After(deadline) {
						t.Fatalf("step %d (%s): %s: upstream %s of a retired generation: closed %t, references %d", step, what, s.name, u.Name, u.Closed(), s.te.upstreams.References(u))
					}
					time.Sleep(5 * time.Millisecond)
				}
				delete(s.seen, u)
			}
		}
	}
	if reusedAny == 0 {
		t.Fatal("no upstream was ever reused: the test did not exercise reuse")
	}
	t.Logf("%d steps, %d upstreams reused", steps, reusedAny)
}

// upstreamSeries are an edge's endpoint health series and its upstream
// request counts summed over endpoints (which endpoint a round robin
// picks depends on its counter, which a reused upstream keeps).
func upstreamSeries(t *testing.T, te *testEdge) map[string]float64 {
	t.Helper()
	fams, err := te.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		switch f.GetName() {
		case "causeway_upstream_endpoint_healthy", "causeway_upstream_requests_total":
		default:
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				if f.GetName() == "causeway_upstream_requests_total" && l.GetName() == "endpoint" {
					continue
				}
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			k := f.GetName() + "{" + strings.Join(labels, ",") + "}"
			if g := m.GetGauge(); g != nil {
				out[k] += g.GetValue()
			}
			if c := m.GetCounter(); c != nil {
				out[k] += c.GetValue()
			}
		}
	}
	return out
}

// TestRefusedBuildLeavesReusedUpstreams: a model refused by the build after
// it took over the live upstreams (a tls.ca_file that does not parse, on
// an upstream built after them) must not close, nor change, the
// upstreams the live generation serves with, while requests run on them;
// the live generation keeps each one with one reference, its health
// checker and its endpoints' state.
func TestRefusedBuildLeavesReusedUpstreams(t *testing.T) {
	release := make(chan struct{})
	var got atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			return
		}
		got.Add(1)
		<-release
		w.Header().Set("X-Backend", "slow")
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { closeOnce(release) })
	badCA := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(badCA, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	te, src := startFedEdge(t, listenHeader+"providers:\n  kubernetes: {}\n")
	up := routes.Upstream{Endpoints: []string{hostPort(slow)},
		HealthCheck:    &routes.HealthCheck{Path: "/health", Interval: routes.Duration(time.Hour), HealthyThreshold: 1000, UnhealthyThreshold: 1},
		CircuitBreaker: &routes.CircuitBreaker{Consecutive5xx: 1, EjectFor: routes.Duration(time.Hour), MaxEjectedPercent: 50}}
	frag := routes.Fragment{Upstreams: map[string]routes.Upstream{"k8s.t.a": up},
		Routes: []routes.Route{{Name: "k8s.t.r", Match: routes.Match{PathPrefix: "/a/"}, Upstream: "k8s.t.a"}}}
	if err := src.send(t, frag); err != nil {
		t.Fatal(err)
	}
	live := te.live.Load()
	u := live.runtime(0).upstreams["k8s.t.a"]
	ep := u.Endpoints()[0]
	const inflight = 20
	var wg sync.WaitGroup
	statuses := make(chan string, inflight)
	for range inflight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(te.url + "/a/x")
			if err != nil {
				statuses <- err.Error()
				return
			}
			resp.Body.Close()
			statuses <- fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("X-Backend"))
		}()
	}
	testutil.WaitFor(t, func() bool { return got.Load() == inflight })

	for i := range 20 {
		bad := frag
		bad.Upstreams = maps.Clone(frag.Upstreams)
		bad.Upstreams["k8s.t.zz"] = routes.Upstream{Endpoints: []string{hostPort(slow)}, Scheme: "https", TLS: &routes.UpstreamTLS{CAFile: badCA}}
		bad.Routes = append(slices.Clone(frag.Routes), routes.Route{Name: fmt.Sprintf("k8s.t.z%d", i), Match: routes.Match{PathPrefix: "/z/"}, Upstream: "k8s.t.zz"})
		err := src.send(t, bad)
		if err == nil || !strings.Contains(err.Error(), "k8s.t.zz") {
			t.Fatalf("refusal %d: %v, want the build's refusal of k8s.t.zz", i, err)
		}
	}
	if te.live.Load() != live {
		t.Fatal("a refused model replaced the live generation")
	}
	if u.Closed() || te.upstreams.References(u) != 1 || live.runtime(0).upstreams["k8s.t.a"] != u {
		t.Fatalf("live upstream after refusals: closed %t, references %d", u.Closed(), te.upstreams.References(u))
	}
	if eps := u.Endpoints(); len(eps) != 1 || eps[0] != ep || ep.Down.Load() || !ep.Available() || ep.Inflight.Load() != inflight {
		t.Fatalf("live endpoint changed: %d endpoints, down %t, available %t, in flight %d", len(eps), ep.Down.Load(), ep.Available(), ep.Inflight.Load())
	}
	closeOnce(release)
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != "200 slow" {
			t.Fatalf("a request in flight during the refusals got %q", s)
		}
	}
	if got.Load() != inflight {
		t.Fatalf("the upstream received %d requests, want %d", got.Load(), inflight)
	}
	wantUpstreamHeader(t, te.url+"/a/x", "slow")
}

var closeMu sync.Mutex

func closeOnce(c chan struct{}) {
	closeMu.Lock()
	defer closeMu.Unlock()
	select {
	case <-c:
	default:
		close(c)
	}
}

func wantUpstreamHeader(t *testing.T, url, want string) {
	t.Helper()
	resp, _ := get(t, url)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Backend") != want {
		t.Fatalf("%s: %d from %q, want 200 from %q", url, resp.StatusCode, resp.Header.Get("X-Backend"), want)
	}
}

// probeBackends starts n probe backends named b0, b1, ... and returns
// them in order and by name.
func probeBackends(t *testing.T, n int) ([]*probeBackend, map[string]*probeBackend) {
	t.Helper()
	var list []*probeBackend
	byName := map[string]*probeBackend{}
	for i := range n {
		b := newProbeBackend(t, fmt.Sprintf("b%d", i))
		list = append(list, b)
		byName[b.name] = b
	}
	return list, byName
}
