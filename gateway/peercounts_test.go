package gateway

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/causewayhq/causeway/mesh/meshtest"
)

func newMeshRequestsVec() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causeway_mesh_requests_total", Help: "test"},
		[]string{"direction", "peer", "code"})
}

// Many goroutines count many peers and statuses at once, peers whose
// labels share prefixes and lengths among them: every series ends with
// exactly its own count, as WithLabelValues on each request gave.
func TestPeerCountsConcurrent(t *testing.T) {
	tests := []struct {
		desc     string
		peers    []string
		statuses []string
		workers  int
		each     int // increments per worker per (peer, status)
	}{
		{desc: "one peer, one status", peers: []string{edgeID}, statuses: []string{"200"}, workers: 8, each: 2000},
		{
			desc:     "peers sharing prefixes, several statuses",
			peers:    []string{edgeID, edgeID + "x", ordersID, paymentsID, "spiffe://example.org/ns/shop/sa/order", "none", "denied"},
			statuses: []string{"200", "403", "404", "502", "other"},
			workers:  8,
			each:     300,
		},
		{desc: "a status that looks like a peer", peers: []string{"200", "403"}, statuses: []string{"403", "200"}, workers: 4, each: 500},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			vec := newMeshRequestsVec()
			pc := newPeerCounts(vec.MustCurryWith(prometheus.Labels{"direction": "inbound"}))
			var wg sync.WaitGroup
			for w := range tc.workers {
				wg.Go(func() {
					// Each worker walks the pairs in its own order, so
					// first lookups of a pair race each other.
					n := len(tc.peers) * len(tc.statuses)
					for i := range tc.each * n {
						j := (i + w*7) % n
						pc.inc(tc.peers[j/len(tc.statuses)], tc.statuses[j%len(tc.statuses)])
					}
				})
			}
			wg.Wait()
			for _, p := range tc.peers {
				for _, s := range tc.statuses {
					want := float64(tc.workers * tc.each)
					if got := counterValue(t, vec.WithLabelValues("inbound", p, s)); got != want {
						t.Errorf("peer %q status %s: %v, want %v", p, s, got, want)
					}
				}
			}
			if got, want := seriesCount(vec), len(tc.peers)*len(tc.statuses); got != want {
				t.Errorf("%d series, want %d", got, want)
			}
		})
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func seriesCount(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric)
	go func() { c.Collect(ch); close(ch) }()
	n := 0
	for range ch {
		n++
	}
	return n
}

// BenchmarkPeerCounts: counting a request against the series looked up
// once, and (for comparison) looking it up on every request as before.
func BenchmarkPeerCounts(b *testing.B) {
	vec := newMeshRequestsVec().MustCurryWith(prometheus.Labels{"direction": "inbound"})
	pc := newPeerCounts(vec)
	peer := strings.Clone(edgeID)
	b.Run("peerCounts", func(b *testing.B) {
		for b.Loop() {
			pc.inc(peer, "200")
		}
	})
	b.Run("WithLabelValues", func(b *testing.B) {
		for b.Loop() {
			vec.WithLabelValues(peer, "200").Inc()
		}
	})
}

// Callers with different identities call one sidecar at once, each also
// with a forged peer header: every request reaches the service with its
// own caller's verified ID and no other, an unlisted identity gets 403
// and never reaches the service, and the inbound series count each
// caller's requests exactly, by status.
func TestSidecarInboundCountsPerPeer(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
	callers := []string{edgeID, paymentsID, "spiffe://example.org/ns/shop/sa/payments-v2"}
	intruder := "spiffe://example.org/ns/shop/sa/intruder"

	var mu sync.Mutex
	seen := map[string]int{} // "caller|peer header" -> requests
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("X-Caller")+"|"+strings.Join(r.Header.Values(PeerIDHeader), ",")]++
		mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/missing") {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(svc.Close)
	sc := startSidecar(t, sidecarConfig(ordersFiles, hostPort(svc), callers, nil))
	url := "https://" + sc.Addr("inbound")

	client := func(id string) *http.Client {
		cfg := &tls.Config{Certificates: []tls.Certificate{ca.Issue(id).TLS}, InsecureSkipVerify: true} // the sidecar's identity is not under test
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 4}, Timeout: 10 * time.Second}
	}
	const perWorker, workers = 150, 4
	var wg sync.WaitGroup
	errs := make(chan error, len(callers)*workers+workers)
	for _, id := range append(callers, intruder) {
		c := client(id)
		t.Cleanup(c.CloseIdleConnections)
		for range workers {
			wg.Go(func() {
				for i := range perWorker {
					path, want := "/ok", http.StatusOK
					if i%3 == 0 {
						path, want = "/missing", http.StatusNotFound
					}
					if id == intruder {
						want = http.StatusForbidden
					}
					req, _ := http.NewRequest(http.MethodGet, url+path, nil)
					req.Header.Set("X-Caller", id)
					req.Header.Set(PeerIDHeader, "spiffe://example.org/ns/evil/sa/forged")
					resp, err := c.Do(req)
					if err != nil {
						errs <- err
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != want {
						errs <- fmt.Errorf("%s %s: status %d, want %d", id, path, resp.StatusCode, want)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	missing := 0
	for i := range perWorker {
		if i%3 == 0 {
			missing++
		}
	}
	want := map[string]int{}
	for _, id := range callers {
		want[id+"|"+id] = perWorker * workers
	}
	mu.Lock()
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("the service saw (caller|peer header) %v, want %v", seen, want)
	}
	mu.Unlock()

	_, metrics := get(t, "http://"+sc.Addr("admin")+"/metrics")
	for _, id := range callers {
		for code, n := range map[string]int{"200": (perWorker - missing) * workers, "404": missing * workers} {
			line := fmt.Sprintf(`causeway_mesh_requests_total{code=%q,direction="inbound",peer=%q} %d`, code, id, n)
			if !strings.Contains(string(metrics), line+"\n") {
				t.Errorf("metrics lack %s", line)
			}
		}
	}
	if line := fmt.Sprintf(`causeway_mesh_requests_total{code="403",direction="inbound",peer="denied"} %d`, perWorker*workers); !strings.Contains(string(metrics), line+"\n") {
		t.Errorf("metrics lack %s", line)
	}
	if strings.Contains(string(metrics), intruder) {
		t.Errorf("an unlisted caller's identity became a label")
	}
}
