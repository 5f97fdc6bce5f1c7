package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"
	"github.com/causewayhq/causeway/internal/testutil"

	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// backend is a real HTTP server on loopback whose behaviour a test can
// switch while it runs, and which counts what it received.
type backend struct {
	name   string
	addr   string
	hits   atomic.Int64
	status atomic.Int64 // answer status; 0: 200
	// hold, when set, makes requests wait until it is closed.
	mu      sync.Mutex
	hold    chan struct{}
	held    atomic.Int64
	mirrors atomic.Int64
	bodies  atomic.Int64 // bytes of request bodies read

	ln  net.Listener
	srv *http.Server
	t   *testing.T
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		if s := b.status.Load(); s >= 500 {
			w.WriteHeader(int(s))
			return
		}
		_, _ = io.WriteString(w, "ok")
		return
	}
	b.hits.Add(1)
	if r.Header.Get(proxy.MirrorHeader) != "" {
		b.mirrors.Add(1)
	}
	n, _ := io.Copy(io.Discard, r.Body)
	b.bodies.Add(n)
	b.mu.Lock()
	hold := b.hold
	b.mu.Unlock()
	if hold != nil {
		b.held.Add(1)
		select {
		case <-hold:
		case <-r.Context().Done():
		}
		b.held.Add(-1)
	}
	if s := b.status.Load(); s != 0 {
		w.WriteHeader(int(s))
	}
	_, _ = io.WriteString(w, b.name)
}

// holdRequests makes new requests wait; the returned func releases them.
func (b *backend) holdRequests() func() {
	ch := make(chan struct{})
	b.mu.Lock()
	b.hold = ch
	b.mu.Unlock()
	var once sync.Once
	release := func() {
		once.Do(func() {
			b.mu.Lock()
			b.hold = nil
			b.mu.Unlock()
			close(ch)
		})
	}
	b.t.Cleanup(release)
	return release
}

// newBackend starts a backend on addr ("127.0.0.1:0" for any port).
func newBackend(t *testing.T, name, addr string) *backend {
	t.Helper()
	b := &backend{name: name, t: t}
	b.start(addr)
	t.Cleanup(b.kill)
	return b
}

func (b *backend) start(addr string) {
	b.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		b.t.Fatal(err)
	}
	b.ln, b.addr = ln, ln.Addr().String()
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = b.srv.Serve(ln) }()
}

// kill closes the listener and every connection at once, as a crash does.
func (b *backend) kill() { _ = b.srv.Close() }

// restart serves again on the same address.
func (b *backend) restart() { b.start(b.addr) }

func backends(t *testing.T, n int) []*backend {
	bs := make([]*backend, n)
	for i := range bs {
		bs[i] = newBackend(t, fmt.Sprintf("b%d", i), "127.0.0.1:0")
	}
	return bs
}

func addrList(bs []*backend) string {
	var q []string
	for _, b := range bs {
		q = append(q, fmt.Sprintf("%q", b.addr))
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// oneUpstream is an edge config with upstream u (extra keys indented under
// it) and one route to it.
func oneUpstream(endpoints, extra string) string {
	return listenHeader + "upstreams:\n  u:\n    endpoints: " + endpoints + "\n" + extra +
		"routes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n"
}

// fakeClock is the ejection, breaker and retry-budget clock of the edges
// given it (withClock).
type fakeClock = testutil.FakeClock

func newFakeClock() *fakeClock { return testutil.NewFakeClock() }

// withClock is a startEdge option: the edge's traffic clock is c.
func withClock(c *fakeClock) func(*EdgeOptions) {
	return func(o *EdgeOptions) { o.Clock = c.Now }
}

var trafficClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}

// send makes n GET requests (conc at a time) and counts the statuses.
func send(t *testing.T, url string, n, conc int, hdr ...string) map[int]int {
	t.Helper()
	return sendMethod(t, "GET", url, "", n, conc, hdr...)
}

func sendMethod(t *testing.T, method, url, body string, n, conc int, hdr ...string) map[int]int {
	t.Helper()
	var mu sync.Mutex
	codes := map[int]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				var rb io.Reader
				if body != "" {
					rb = strings.NewReader(body)
				}
				req, _ := http.NewRequest(method, url, rb)
				for i := 0; i+1 < len(hdr); i += 2 {
					req.Header.Set(hdr[i], hdr[i+1])
				}
				code := -1
				if resp, err := trafficClient.Do(req); err != nil {
					t.Logf("%s %s: %v", method, url, err)
				} else {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return codes
}

func hits(bs []*backend) []int64 {
	out := make([]int64, len(bs))
	for i, b := range bs {
		out[i] = b.hits.Load()
	}
	return out
}

func resetHits(bs []*backend) {
	for _, b := range bs {
		b.hits.Store(0)
	}
}

// within reports whether got is within tol (a share, 0.1 = 10%) of want.
func within(got, want int64, tol float64) bool {
	d := float64(got - want)
	return d <= tol*float64(want) && -d <= tol*float64(want)
}

func TestBalancerDistribution(t *testing.T) {
	tests := []struct {
		name    string
		balance string
		extra   func(bs []*backend) string
		n       int
		want    []int64 // per backend
		tol     float64
	}{
		{"round_robin exact", "round_robin", nil, 300, []int64{100, 100, 100}, 0},
		{"weighted exact", "weighted", func(bs []*backend) string {
			return fmt.Sprintf("    weights: {%q: 1, %q: 2, %q: 3}\n", bs[0].addr, bs[1].addr, bs[2].addr)
		}, 600, []int64{100, 200, 300}, 0},
		{"least_request spreads idle endpoints", "least_request", nil, 3000, []int64{1000, 1000, 1000}, 0.15},
		// p2c_ewma follows measured latency, not counts: see
		// TestP2CEWMAAvoidsSlowEndpoint.
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := backends(t, 3)
			extra := "    balance: " + tt.balance + "\n"
			if tt.extra != nil {
				extra += tt.extra(bs)
			}
			te := startEdge(t, oneUpstream(addrList(bs), extra))
			codes := send(t, te.url+"/", tt.n, 1)
			if codes[200] != tt.n {
				t.Fatalf("statuses %v", codes)
			}
			got := hits(bs)
			for i := range got {
				if !within(got[i], tt.want[i], tt.tol) {
					t.Fatalf("hits %v, want %v within %.0f%%", got, tt.want, tt.tol*100)
				}
			}
			t.Logf("%s: %v", tt.balance, got)
		})
	}
}

// least_request never sends to an endpoint with a request stuck in flight
// while idle ones exist.
func TestLeastRequestAvoidsBusyEndpoint(t *testing.T) {
	bs := backends(t, 3)
	release := bs[0].holdRequests()
	te := startEdge(t, oneUpstream(addrList(bs), "    balance: least_request\n"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Requests until one is stuck on b0; the others return at once.
		for bs[0].hits.Load() == 0 {
			resp, err := trafficClient.Get(te.url + "/")
			if err != nil {
				return
			}
			resp.Body.Close()
		}
	}()
	waitFor(t, func() bool { return bs[0].held.Load() == 1 })
	before := bs[0].hits.Load()
	codes := send(t, te.url+"/", 200, 1)
	if codes[200] != 200 || bs[0].hits.Load() != before {
		t.Fatalf("statuses %v; busy b0 got %d more", codes, bs[0].hits.Load()-before)
	}
	release()
	<-done
}

func TestRingHash(t *testing.T) {
	bs := backends(t, 3)
	te := startEdge(t, oneUpstream(addrList(bs), "    balance: ring_hash\n    hash_on: header:X-User\n"))
	t.Run("a key sticks to one endpoint", func(t *testing.T) {
		for _, user := range []string{"alice", "bob", "carol"} {
			resetHits(bs)
			send(t, te.url+"/", 50, 4, "X-User", user)
			h := hits(bs)
			nonzero := 0
			for _, n := range h {
				if n != 0 {
					nonzero++
				}
			}
			if nonzero != 1 {
				t.Fatalf("user %s went to %v", user, h)
			}
		}
	})
	t.Run("keys spread", func(t *testing.T) {
		resetHits(bs)
		for i := 0; i < 900; i++ {
			send(t, te.url+"/", 1, 1, "X-User", fmt.Sprintf("user-%d", i))
		}
		for _, n := range hits(bs) {
			if !within(n, 300, 0.35) {
				t.Fatalf("spread %v", hits(bs))
			}
		}
		t.Logf("900 keys: %v", hits(bs))
	})
	t.Run("requests without the key are spread", func(t *testing.T) {
		resetHits(bs)
		send(t, te.url+"/", 300, 1)
		if h := hits(bs); h[0] != 100 || h[1] != 100 || h[2] != 100 {
			t.Fatalf("got %v", h)
		}
	})
}

// p2c_ewma sends less to an endpoint that answers slower.
func TestP2CEWMAAvoidsSlowEndpoint(t *testing.T) {
	bs := backends(t, 3)
	// 100ms: far above the hiccups a loaded test machine gives the fast
	// ones (peak EWMA remembers those for seconds).
	slow := newSlowBackend(t, 100*time.Millisecond)
	te := startEdge(t, oneUpstream(fmt.Sprintf("[%q, %q, %q]", bs[0].addr, bs[1].addr, slow.addr), "    balance: p2c_ewma\n"))
	codes := send(t, te.url+"/", 600, 4)
	if codes[200] != 600 {
		t.Fatalf("statuses %v", codes)
	}
	fast := bs[0].hits.Load() + bs[1].hits.Load()
	if s := slow.hits.Load(); s*4 > fast/2 {
		t.Fatalf("slow endpoint got %d, the two fast ones %d", s, fast)
	}
	t.Logf("fast %d %d, slow %d", bs[0].hits.Load(), bs[1].hits.Load(), slow.hits.Load())
}

// newSlowBackend answers every request after d.
func newSlowBackend(t *testing.T, d time.Duration) *backend {
	b := &backend{name: "slow", t: t}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.ln, b.addr = ln, ln.Addr().String()
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		time.Sleep(d)
		_, _ = io.WriteString(w, "slow")
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = b.srv.Serve(ln) }()
	t.Cleanup(b.kill)
	return b
}

func TestSplitProportionsAndHeaderOverride(t *testing.T) {
	stable := newBackend(t, "stable", "127.0.0.1:0")
	canary := newBackend(t, "canary", "127.0.0.1:0")
	te := startEdge(t, listenHeader+fmt.Sprintf(`upstreams:
  stable: {endpoints: [%q]}
  canary: {endpoints: [%q]}
routes:
  - name: r
    match: {path_prefix: /}
    split:
      - {upstream: stable, weight: 90}
      - {upstream: canary, weight: 10, headers: {X-Canary: "true"}}
`, stable.addr, canary.addr))
	const n = 10000
	codes := send(t, te.url+"/", n, 8)
	if codes[200] != n {
		t.Fatalf("statuses %v", codes)
	}
	// 3 standard deviations of a binomial(10000, 0.1) are 90 requests.
	c := canary.hits.Load()
	t.Logf("split 90/10 over %d requests: stable %d, canary %d (%.2f%%)", n, stable.hits.Load(), c, 100*float64(c)/n)
	if c < 1000-150 || c > 1000+150 {
		t.Fatalf("canary got %d of %d", c, n)
	}
	t.Run("header override", func(t *testing.T) {
		canary.hits.Store(0)
		stable.hits.Store(0)
		send(t, te.url+"/", 200, 4, "X-Canary", "true")
		if canary.hits.Load() != 200 || stable.hits.Load() != 0 {
			t.Fatalf("canary %d, stable %d", canary.hits.Load(), stable.hits.Load())
		}
	})
	t.Run("other header values follow the weights", func(t *testing.T) {
		canary.hits.Store(0)
		stable.hits.Store(0)
		send(t, te.url+"/", 500, 4, "X-Canary", "false")
		if stable.hits.Load() < 350 {
			t.Fatalf("canary %d, stable %d", canary.hits.Load(), stable.hits.Load())
		}
	})
}

// buildRuntimeFromYAML builds a configuration the way an edge does, without
// listeners; the runtime is closed at the end of the test.
func buildRuntimeFromYAML(t *testing.T, yaml string) (*runtime, error) {
	t.Helper()
	f, err := routes.Parse("t.yaml", []byte(yaml))
	if err != nil {
		return nil, err
	}
	rt, err := buildRuntime(f, buildDeps{metrics: newMetrics(promRegistry())})
	if err == nil {
		t.Cleanup(rt.close)
	}
	return rt, err
}
