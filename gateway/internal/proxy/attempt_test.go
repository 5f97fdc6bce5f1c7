package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// recorder is a Tracker and an Observe hook that keeps what the attempt
// loop told it.
type recorder struct {
	mu       sync.Mutex
	attempts []string
	observed []string
}

func (r *recorder) Attempt(ep *Endpoint, _ time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, ep.Addr)
}

func (r *recorder) BodyFailed() bool { return false }

func (r *recorder) observe(up, ep string, status int, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.observed = append(r.observed, fmt.Sprintf("%s %s %d", up, ep, status))
}

// upstreamFrom loads an upstream the way the routes file gives it, defaults
// and validation included.
func upstreamFrom(t *testing.T, yaml string) routes.Upstream {
	t.Helper()
	f, err := routes.Parse("t.yaml", []byte("version: 1\nupstreams:\n  u:\n"+yaml+"routes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return f.Upstreams["u"]
}

// refusedAddr is an address nothing listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// The engine works without the gateway: it picks, retries on another
// endpoint, and reports every attempt through the hooks it was given.
func TestAttemptLoopReportsThroughHooks(t *testing.T) {
	t.Parallel()
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer good.Close()
	goodAddr := strings.TrimPrefix(good.URL, "http://")
	bad := refusedAddr(t)

	rec := &recorder{}
	cfg := upstreamFrom(t, fmt.Sprintf("    endpoints: [%q, %q]\n    balance: round_robin\n    retries: {attempts: 2, on: [connect_failure], budget_percent: 100}\n", bad, goodAddr))
	u, err := New("u", cfg, Deps{Hooks: Hooks{Track: func(ctx context.Context) Tracker { return rec }, Observe: rec.observe}})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	defer u.Pool.CloseIdle()
	// Round robin starts anywhere: enough requests that some pick
	// the refused endpoint first.
	for i := 0; i < 20; i++ {
		rec.attempts = nil
		req := httptest.NewRequest(http.MethodGet, "http://u/", nil)
		req.URL.Scheme = "http"
		resp, err := u.Transport.RoundTrip(req)
		if err != nil {
			t.Fatalf("request %d: %v (attempts %v)", i, err, rec.attempts)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
		if n := len(rec.attempts); n < 1 || n > 2 || rec.attempts[n-1] != goodAddr {
			t.Fatalf("request %d: attempts %v", i, rec.attempts)
		}
		if len(rec.attempts) == 2 && rec.attempts[0] != bad {
			t.Fatalf("request %d: retried away from the good endpoint: %v", i, rec.attempts)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.observed) == 0 || rec.observed[0] != "u "+bad+" 502" {
		t.Fatalf("the failed attempts were not counted as 502 on the refused endpoint: %v", rec.observed)
	}
}
