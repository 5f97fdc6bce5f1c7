package ratelimit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/redisclient"
	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/causewayhq/causeway/routes"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a manual clock shared by limiters under test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// redisClient returns a client for s, closed when the test ends.
func redisClient(t testing.TB, s *testredis.Server) redis.UniversalClient {
	t.Helper()
	c, err := redisclient.New(&routes.Redis{URL: s.URL(), Timeout: routes.Duration(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// greedy sends as fast as the limiter allows for horizon: at once while
// allowed, else after exactly RetryAfter. It fails the test if a request
// sent after RetryAfter is refused (RetryAfter too short).
func greedy(t *testing.T, lim Limiter, clk *clock, key string, l Limit, horizon time.Duration) int {
	t.Helper()
	ctx := context.Background()
	start := clk.Now()
	allowed, waited := 0, false
	for clk.Now().Sub(start) <= horizon {
		d, err := lim.Allow(ctx, key, l)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			allowed++
			waited = false
			continue
		}
		if waited {
			t.Fatalf("refused right after waiting RetryAfter at %v: %+v", clk.Now().Sub(start), d)
		}
		if d.RetryAfter <= 0 {
			t.Fatalf("refusal without RetryAfter: %+v", d)
		}
		clk.Add(d.RetryAfter)
		waited = true
	}
	return allowed
}

// testFile parses a routes file made of body plus the keys every file needs.
func testFile(t testing.TB, body string) *routes.File {
	t.Helper()
	f, err := routes.Parse("t.yaml", []byte("version: 1\nupstreams: {u: {endpoints: [\"127.0.0.1:1\"]}}\n"+body))
	if err != nil {
		t.Fatalf("test file: %v", err)
	}
	return f
}

// httpHandler is a limited route in front of a handler that answers 200.
type httpHandler struct {
	h      http.Handler
	remote string
}

func handlerFor(t testing.TB, s *Service, route routes.Route, src KeySources) httpHandler {
	t.Helper()
	mw, err := s.Middleware(route, src)
	if err != nil {
		t.Fatal(err)
	}
	return httpHandler{h: mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	})), remote: "192.0.2.1:1234"}
}

func (h httpHandler) do(headers map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	r.RemoteAddr = h.remote
	for k, v := range headers {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.h.ServeHTTP(w, r)
	return w
}
