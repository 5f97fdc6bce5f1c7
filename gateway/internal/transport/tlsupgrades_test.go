package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
)

// An https upstream's ordinary requests go by what the upstream
// negotiates: HTTP/2 through http.Transport when it offers h2, HTTP/1.1
// through H1 otherwise, the connection that found that out carrying the
// first request (one connection for all requests in both cases).
func TestTLSUpgradesSpeaksWhatTheUpstreamNegotiates(t *testing.T) {
	m := newMeshTLS(t)
	tests := []struct {
		name   string
		offers []string
		proto  int
	}{
		{"offers h2", []string{"h2", "http/1.1"}, 2},
		{"HTTP/1.1 only", []string{"http/1.1"}, 1},
		{"no ALPN", nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			cfg := m.server.Clone()
			cfg.NextProtos = tt.offers
			var mu sync.Mutex
			protos, peers := map[int]int{}, map[string]bool{}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				protos[r.ProtoMajor]++
				peers[r.RemoteAddr] = true
				mu.Unlock()
				_, _ = io.WriteString(w, r.URL.Path)
			})}
			var wg sync.WaitGroup
			wg.Go(func() { _ = srv.Serve(tls.NewListener(ln, cfg)) })
			t.Cleanup(func() { srv.Close(); wg.Wait() })
			p := m.httpsPool(t, sidecarID)
			const n = 20
			for i := range n {
				req, _ := http.NewRequest(http.MethodGet, "https://"+ln.Addr().String()+"/x", nil)
				resp, err := p.RoundTrip(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "/x" || resp.ProtoMajor != tt.proto {
					t.Fatalf("request %d: HTTP/%d %q, want HTTP/%d %q", i, resp.ProtoMajor, b, tt.proto, "/x")
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if protos[tt.proto] != n || len(peers) != 1 {
				t.Fatalf("the upstream got %v (by HTTP major version) on %d connections, want %d of HTTP/%d on 1", protos, len(peers), n, tt.proto)
			}
		})
	}
}

// What TLSUpgrades has learned is read without a lock while hosts are
// being learned: a reader never sees a wrong answer for a host (only, past
// the bound, a host forgotten and asked again), no learner loses another's
// host, and the map never holds more than maxLearnedHosts. Run with -race:
// a map written after it was published shows up there.
func TestTLSUpgradesLearnsWhileRequestsRead(t *testing.T) {
	noLeaks(t)
	errUnlearned := errors.New("asked again")
	newUpgrades := func() *TLSUpgrades {
		// A host not known is asked by dialing; here that fails at once,
		// so a reader can tell "forgotten" from a wrong answer.
		s := NewTLSUpgrades(&http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
			return nil, errUnlearned
		}}, nil)
		t.Cleanup(s.CloseIdleConnections)
		return s
	}
	host := func(learner, i int) string { return fmt.Sprintf("10.%d.%d.%d:443", learner, i/256, i%256) }
	speaks := func(learner, i int) bool { return (learner+i)%3 == 0 }
	req, _ := http.NewRequest(http.MethodGet, "https://example.test/", nil)

	tests := []struct {
		desc     string
		rounds   int
		perLearn int // hosts each learner learns; learners*perLearn past maxLearnedHosts empties the map
	}{
		// Each learn copies the map: a few hosts per learner interleave
		// learners and readers as often as many do, and cost far less.
		{"under the bound", 50, 16},
		{"past the bound", 2, maxLearnedHosts/learners + 16},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			for range tc.rounds {
				s := newUpgrades()
				var stop atomic.Bool
				var wg sync.WaitGroup
				var mu sync.Mutex
				var wrong []string
				for r := range readers {
					wg.Go(func() {
						for i := 0; !stop.Load(); i++ {
							l, n := (r+i)%learners, i%tc.perLearn
							h2, err := s.speaksH2(req, host(l, n))
							if m := len(*s.speaks.Load()); m > maxLearnedHosts {
								err = fmt.Errorf("%d hosts learned, bound %d", m, maxLearnedHosts)
							} else if errors.Is(err, errUnlearned) || (err == nil && h2 == speaks(l, n)) {
								continue
							}
							mu.Lock()
							wrong = append(wrong, fmt.Sprintf("%s: h2 %v, %v", host(l, n), h2, err))
							mu.Unlock()
							return
						}
					})
				}
				var learning sync.WaitGroup
				for l := range learners {
					learning.Go(func() {
						for n := range tc.perLearn {
							s.learn(host(l, n), speaks(l, n))
							// A connection http.Transport makes reports
							// its host again: nothing changes.
							s.learn(host(l, n), speaks(l, n))
						}
					})
				}
				learning.Wait()
				stop.Store(true)
				wg.Wait()
				if len(wrong) > 0 {
					t.Fatalf("%d wrong reads, e.g. %v", len(wrong), wrong[:min(3, len(wrong))])
				}
				got := *s.speaks.Load()
				if tc.perLearn*learners <= maxLearnedHosts {
					// Nothing was forgotten: every learner's every host is there.
					if len(got) != tc.perLearn*learners {
						t.Fatalf("%d hosts learned, want %d", len(got), tc.perLearn*learners)
					}
					for l := range learners {
						for n := range tc.perLearn {
							if v, ok := got[host(l, n)]; !ok || v != speaks(l, n) {
								t.Fatalf("%s: %v, %v; want %v", host(l, n), v, ok, speaks(l, n))
							}
						}
					}
				} else if len(got) == 0 || len(got) > maxLearnedHosts {
					t.Fatalf("%d hosts learned, want 1 to %d", len(got), maxLearnedHosts)
				}
			}
		})
	}
}

const learners, readers = 8, 4
