package ratelimit

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/httperr"
	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/causewayhq/causeway/routes"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func counter(t testing.TB, vec *prometheus.CounterVec, limit, decision string) int {
	t.Helper()
	c, err := vec.GetMetricWithLabelValues(limit, decision)
	if err != nil {
		t.Fatal(err)
	}
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return int(m.GetCounter().GetValue())
}

// both runs a test once with limits in memory and once in Redis.
func both(t *testing.T, fn func(t *testing.T, redisSection string)) {
	srv := testredis.Start(t)
	n := 0
	for _, mode := range []string{"memory", "redis"} {
		t.Run(mode, func(t *testing.T) {
			section := ""
			if mode == "redis" {
				n++
				section = fmt.Sprintf("redis: {url: %q, key_prefix: \"t%d:\"}\n", srv.URL(), n)
			}
			fn(t, section)
		})
	}
}

func newService(t testing.TB, clk *clock, vec *prometheus.CounterVec, file *routes.File) *Service {
	t.Helper()
	s := New(context.Background(), Options{Now: clk.Now, RedisNow: clk.Now, Decisions: vec})
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := s.Configure(context.Background(), file); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMiddlewareHeadersAndRefusal(t *testing.T) {
	both(t, func(t *testing.T, redisSection string) {
		file := testFile(t, redisSection+`
rate_limits:
  per-ip: {key: client_ip, limit: 3, per: 1m}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: per-ip}
`)
		clk := newClock()
		vec := NewDecisionsMetric()
		s := newService(t, clk, vec, file)
		h := handlerFor(t, s, file.Routes[0], KeySources{})
		for i, wantRemaining := range []string{"2", "1", "0"} {
			w := h.do(nil)
			if w.Code != 200 {
				t.Fatalf("request %d: %d", i, w.Code)
			}
			// Reset: the whole burst back after 3 × 20s.
			want := map[string]string{HeaderLimit: "3", HeaderRemaining: wantRemaining, HeaderReset: []string{"20", "40", "60"}[i]}
			for k, v := range want {
				if got := w.Header().Get(k); got != v {
					t.Fatalf("request %d: %s = %q, want %q", i, k, got, v)
				}
			}
		}
		clk.Add(500 * time.Millisecond)
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		r.RemoteAddr = h.remote
		r.Header.Set(httperr.RequestIDHeader, "req-1")
		w := httptest.NewRecorder()
		h.h.ServeHTTP(w, r)
		if w.Code != http.StatusTooManyRequests {
			t.Fatalf("fourth request: %d", w.Code)
		}
		// 19.5s to wait, rounded up; the full burst in 59.5s.
		for k, v := range map[string]string{"Retry-After": "20", HeaderLimit: "3", HeaderRemaining: "0", HeaderReset: "60", "Content-Type": "application/json"} {
			if got := w.Header().Get(k); got != v {
				t.Fatalf("429: %s = %q, want %q", k, got, v)
			}
		}
		var body struct {
			Error     string `json:"error"`
			Status    int    `json:"status"`
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Status != 429 || body.RequestID != "req-1" || body.Error == "" {
			t.Fatalf("429 body %q: %+v %v", w.Body.String(), body, err)
		}
		// Another client is counted apart.
		h.remote = "192.0.2.2:1"
		if w := h.do(nil); w.Code != 200 {
			t.Fatalf("another client: %d", w.Code)
		}
		if a, l := counter(t, vec, "per-ip", DecisionAllowed), counter(t, vec, "per-ip", DecisionLimited); a != 4 || l != 1 {
			t.Fatalf("decisions: allowed %d limited %d, want 4 and 1", a, l)
		}
	})
}

func TestMiddlewareSeveralLimits(t *testing.T) {
	both(t, func(t *testing.T, redisSection string) {
		file := testFile(t, redisSection+`
rate_limits:
  loose: {key: route, limit: 100, per: 1m}
  tight: {key: "header:X-User", limit: 2, per: 1m}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: [loose, tight]}
`)
		clk := newClock()
		vec := NewDecisionsMetric()
		s := newService(t, clk, vec, file)
		h := handlerFor(t, s, file.Routes[0], KeySources{})
		user := map[string]string{"X-User": "ann"}
		for i, want := range []struct {
			code      int
			limit     string
			remaining string
		}{{200, "2", "1"}, {200, "2", "0"}, {429, "2", "0"}} {
			w := h.do(user)
			if w.Code != want.code || w.Header().Get(HeaderLimit) != want.limit || w.Header().Get(HeaderRemaining) != want.remaining {
				t.Fatalf("request %d: %d limit=%s remaining=%s, want %+v", i, w.Code, w.Header().Get(HeaderLimit), w.Header().Get(HeaderRemaining), want)
			}
		}
		// The refused request still counted against the route-wide limit
		// checked before the per-user one.
		if got := counter(t, vec, "loose", DecisionAllowed); got != 3 {
			t.Fatalf("loose allowed %d, want 3", got)
		}
		// Another user passes both.
		if w := h.do(map[string]string{"X-User": "bob"}); w.Code != 200 || w.Header().Get(HeaderRemaining) != "1" {
			t.Fatalf("bob: %d remaining=%s", w.Code, w.Header().Get(HeaderRemaining))
		}
	})
}

type ctxKey string

// TestKeyParts: every key part, combinations, and the shared "unknown"
// bucket for requests whose key cannot be computed.
func TestKeyParts(t *testing.T) {
	src := KeySources{
		ClientIP: func(r *http.Request) string { return r.Header.Get("Test-IP") },
		Claim: func(r *http.Request, name string) (string, bool) {
			v, ok := r.Context().Value(ctxKey("claim:" + name)).(string)
			return v, ok
		},
		APIKey: func(r *http.Request) (string, bool) {
			v, ok := r.Context().Value(ctxKey("api_key")).(string)
			return v, ok
		},
	}
	type req struct {
		headers map[string]string
		ctx     map[string]string
	}
	tests := []struct {
		key string
		// a and b are counted together (same bucket) when same is true.
		a, b req
		same bool
	}{
		{"client_ip", req{headers: map[string]string{"Test-IP": "10.0.0.1"}}, req{headers: map[string]string{"Test-IP": "10.0.0.2"}}, false},
		{"client_ip", req{headers: map[string]string{"Test-IP": "10.0.0.1"}}, req{headers: map[string]string{"Test-IP": "10.0.0.1"}}, true},
		{"header:X-Tenant", req{headers: map[string]string{"X-Tenant": "a"}}, req{headers: map[string]string{"X-Tenant": "b"}}, false},
		{"header:X-Tenant", req{}, req{}, true}, // both unknown: one shared bucket
		{"header:X-Tenant", req{}, req{headers: map[string]string{"X-Tenant": "!unknown"}}, false},
		{"claim:sub", req{ctx: map[string]string{"claim:sub": "ann"}}, req{ctx: map[string]string{"claim:sub": "bob"}}, false},
		{"claim:sub", req{}, req{}, true},
		{"api_key", req{ctx: map[string]string{"api_key": "partner-a"}}, req{ctx: map[string]string{"api_key": "partner-b"}}, false},
		{"api_key", req{ctx: map[string]string{"api_key": "partner-a"}}, req{ctx: map[string]string{"api_key": "partner-a"}}, true},
		{"route", req{headers: map[string]string{"Test-IP": "1"}}, req{headers: map[string]string{"Test-IP": "2"}}, true},
		{"route+client_ip", req{headers: map[string]string{"Test-IP": "1"}}, req{headers: map[string]string{"Test-IP": "2"}}, false},
		// Escaping keeps ("a|b", "c") and ("a", "b|c") apart.
		{"header:X-A+header:X-B", req{headers: map[string]string{"X-A": "a|b", "X-B": "c"}}, req{headers: map[string]string{"X-A": "a", "X-B": "b|c"}}, false},
		{"header:X-A", req{headers: map[string]string{"X-A": strings.Repeat("x", 5000)}}, req{headers: map[string]string{"X-A": strings.Repeat("x", 5000)}}, true},
		// IPv6 clients are counted by /64 (ipv6_prefix), IPv4 by address.
		{"client_ip", req{headers: map[string]string{"Test-IP": "2001:db8:1:2::1"}}, req{headers: map[string]string{"Test-IP": "2001:db8:1:2:ffff::9"}}, true},
		{"client_ip", req{headers: map[string]string{"Test-IP": "2001:db8:1:2::1"}}, req{headers: map[string]string{"Test-IP": "2001:db8:1:3::1"}}, false},
		{"client_ip", req{headers: map[string]string{"Test-IP": "::ffff:192.0.2.1"}}, req{headers: map[string]string{"Test-IP": "::ffff:192.0.2.2"}}, false},
	}
	for _, tc := range tests {
		name := fmt.Sprintf("%s same=%v", tc.key, tc.same)
		t.Run(name, func(t *testing.T) {
			file := testFile(t, fmt.Sprintf(`
rate_limits:
  l: {key: %q, limit: 1, per: 1h}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}
`, tc.key))
			s := newService(t, newClock(), nil, file)
			mw, err := s.Middleware(file.Routes[0], src)
			if err != nil {
				t.Fatal(err)
			}
			h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			send := func(q req) int {
				r := httptest.NewRequest(http.MethodGet, "/", nil)
				for k, v := range q.headers {
					r.Header.Set(k, v)
				}
				ctx := r.Context()
				for k, v := range q.ctx {
					ctx = context.WithValue(ctx, ctxKey(k), v)
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r.WithContext(ctx))
				return w.Code
			}
			if code := send(tc.a); code != 200 {
				t.Fatalf("first request: %d", code)
			}
			code := send(tc.b)
			if tc.same && code != 429 {
				t.Fatalf("second request %d: want 429, the two share a bucket", code)
			}
			if !tc.same && code != 200 {
				t.Fatalf("second request %d: want 200, the two are counted apart", code)
			}
		})
	}
}

func TestMiddlewareBadConfig(t *testing.T) {
	file := testFile(t, `
rate_limits:
  by-claim: {key: "claim:sub", limit: 1, per: 1s}
  by-key: {key: api_key, limit: 1, per: 1s}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`)
	unconfigured := New(context.Background(), Options{})
	defer unconfigured.Close()
	wrongLabels := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"route"})
	tests := []struct {
		desc  string
		s     *Service
		route routes.Route
		src   KeySources
		want  string
	}{
		{"not configured", unconfigured, routes.Route{Name: "r", RateLimit: routes.StringList{"by-key"}}, KeySources{}, "Configure has not been called"},
		{"undefined limit", newService(t, newClock(), nil, file), routes.Route{Name: "r", RateLimit: routes.StringList{"nope"}}, KeySources{}, `undefined rate limit "nope"`},
		{"claim without a claim source", newService(t, newClock(), nil, file), routes.Route{Name: "r", RateLimit: routes.StringList{"by-claim"}}, KeySources{}, "no claim source"},
		{"api_key without a key source", newService(t, newClock(), nil, file), routes.Route{Name: "r", RateLimit: routes.StringList{"by-key"}}, KeySources{}, "no API key source"},
		{"metric with other labels", func() *Service {
			s := New(context.Background(), Options{Decisions: wrongLabels})
			t.Cleanup(func() { s.Close() })
			if err := s.Configure(context.Background(), file); err != nil {
				t.Fatal(err)
			}
			return s
		}(), routes.Route{Name: "r", RateLimit: routes.StringList{"by-key"}}, KeySources{APIKey: func(*http.Request) (string, bool) { return "", false }}, "labels limit and decision"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := tc.s.Middleware(tc.route, tc.src)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestUnlimitedRouteHasNoHeaders(t *testing.T) {
	file := testFile(t, "routes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n")
	s := newService(t, newClock(), nil, file)
	h := handlerFor(t, s, file.Routes[0], KeySources{})
	if w := h.do(nil); w.Code != 200 || w.Header().Get(HeaderLimit) != "" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
}

func TestConfigureBadConfig(t *testing.T) {
	good := testFile(t, "routes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n")
	withLimit := func(l routes.RateLimit) *routes.File {
		f := *good
		f.RateLimits = map[string]routes.RateLimit{"l": l}
		return &f
	}
	withProxies := *good
	withProxies.TrustedProxies = []string{"10.0.0.0/33"}
	withPassword := *good
	withPassword.Redis = &routes.Redis{URL: "redis://127.0.0.1:1/0", PasswordEnv: "CW_TEST_UNSET_VAR", OnError: "allow"}
	withBadURL := *good
	withBadURL.Redis = &routes.Redis{URL: "http://x", OnError: "allow"}
	closed := New(context.Background(), Options{})
	closed.Close()
	tests := []struct {
		desc string
		s    *Service
		f    *routes.File
		want string
	}{
		{"no file", nil, nil, "no routes file"},
		{"zero limit", nil, withLimit(routes.RateLimit{Key: "route", Limit: 0, Per: routes.Duration(time.Second)}), "rate must be positive"},
		{"zero per", nil, withLimit(routes.RateLimit{Key: "route", Limit: 1}), "per must be at least 1µs"},
		{"bad trusted proxy", nil, &withProxies, "trusted_proxies"},
		{"password_env unset", nil, &withPassword, "CW_TEST_UNSET_VAR"},
		{"bad redis url", nil, &withBadURL, "redis: url"},
		{"closed service", closed, good, "closed"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			s := tc.s
			if s == nil {
				s = newService(t, newClock(), nil, good)
			}
			err := s.Configure(context.Background(), tc.f)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			// The previous configuration stays in force.
			if tc.s == nil {
				if _, err := s.Middleware(good.Routes[0], KeySources{}); err != nil {
					t.Fatalf("previous configuration lost: %v", err)
				}
			}
		})
	}
}

// TestReload: counters in memory survive a reload; a reload that keeps the
// redis section keeps the client; middlewares keep the configuration they
// were built with.
func TestReload(t *testing.T) {
	srv := testredis.Start(t)
	const limits = `
rate_limits:
  l: {key: route, limit: %d, per: 1h}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: l}
`
	t.Run("memory counters survive", func(t *testing.T) {
		clk := newClock()
		s := newService(t, clk, nil, testFile(t, fmt.Sprintf(limits, 3)))
		f := testFile(t, fmt.Sprintf(limits, 3))
		h := handlerFor(t, s, f.Routes[0], KeySources{})
		h.do(nil)
		h.do(nil)
		if err := s.Configure(context.Background(), f); err != nil {
			t.Fatal(err)
		}
		h2 := handlerFor(t, s, f.Routes[0], KeySources{})
		if w := h2.do(nil); w.Code != 200 || w.Header().Get(HeaderRemaining) != "0" {
			t.Fatalf("after reload: %d remaining=%s, want the third of three", w.Code, w.Header().Get(HeaderRemaining))
		}
	})
	t.Run("middleware keeps its configuration", func(t *testing.T) {
		f3 := testFile(t, fmt.Sprintf(limits, 3))
		s := newService(t, newClock(), nil, f3)
		old := handlerFor(t, s, f3.Routes[0], KeySources{})
		f10 := testFile(t, fmt.Sprintf(limits, 10))
		if err := s.Configure(context.Background(), f10); err != nil {
			t.Fatal(err)
		}
		if w := old.do(nil); w.Header().Get(HeaderLimit) != "3" {
			t.Fatalf("old middleware reports limit %s, want 3", w.Header().Get(HeaderLimit))
		}
		if w := handlerFor(t, s, f10.Routes[0], KeySources{}).do(nil); w.Header().Get(HeaderLimit) != "10" {
			t.Fatalf("new middleware reports limit %s, want 10", w.Header().Get(HeaderLimit))
		}
	})
	t.Run("same redis section keeps the client", func(t *testing.T) {
		section := fmt.Sprintf("redis: {url: %q}\n", srv.URL())
		vec := NewDecisionsMetric()
		file := testFile(t, section+fmt.Sprintf(limits, 3))
		s := newService(t, newClock(), vec, file)
		cur := func() *conn {
			if st := s.cur.Load().store; st != nil {
				return st.conn
			}
			return nil
		}
		first := cur()
		// on_error and key_prefix are not about the connection.
		p, err := s.Prepare(context.Background(), testFile(t, fmt.Sprintf("redis: {url: %q, on_error: deny, key_prefix: \"x:\"}\n", srv.URL())+fmt.Sprintf(limits, 5)))
		if err != nil {
			t.Fatal(err)
		}
		s.Commit(p)
		if cur() != first {
			t.Fatal("an unchanged connection got a new client")
		}
		mw, err := p.Middleware(file.Routes[0], KeySources{})
		if err != nil {
			t.Fatal(err)
		}
		old := httpHandler{h: mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})), remote: "192.0.2.1:1234"}
		next, err := s.Prepare(context.Background(), testFile(t, fmt.Sprintf("redis: {url: %q, timeout: 1s}\n", srv.URL())+fmt.Sprintf(limits, 5)))
		if err != nil {
			t.Fatal(err)
		}
		s.Commit(next)
		if cur() == first {
			t.Fatal("a changed connection kept the old client")
		}
		// A middleware of the previous configuration (a request in flight
		// on the generation being retired) still counts in Redis through
		// the old client while that configuration is not released.
		if w := old.do(nil); w.Code != 200 || first.isClosed() || counter(t, vec, "l", DecisionError) != 0 {
			t.Fatalf("old middleware after reload: %d, closed=%v", w.Code, first.isClosed())
		}
		// Once the old configuration is released, its client is closed.
		p.Release()
		p.Release() // a second release is harmless
		if !first.isClosed() {
			t.Fatal("the replaced client was not closed when its last holder let go")
		}
		// Dropping the redis section goes back to memory.
		f := testFile(t, fmt.Sprintf(limits, 5))
		if err := s.Configure(context.Background(), f); err != nil {
			t.Fatal(err)
		}
		second := next.snap.store.conn
		next.Release()
		if s.connKey != "" || s.cur.Load().store != nil {
			t.Fatal("still counting in redis without a redis section")
		}
		if !second.isClosed() {
			t.Fatal("the client of a released configuration without successor stayed open")
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if s.conns.Len() != 0 {
			t.Fatal("Close left a client held")
		}
	})

	// Close closes the clients of configurations not yet released.
	t.Run("close closes unreleased clients", func(t *testing.T) {
		file := testFile(t, fmt.Sprintf("redis: {url: %q}\n", srv.URL())+fmt.Sprintf(limits, 3))
		s := newService(t, newClock(), NewDecisionsMetric(), file)
		p, err := s.Prepare(context.Background(), testFile(t, fmt.Sprintf("redis: {url: %q, timeout: 2s}\n", srv.URL())+fmt.Sprintf(limits, 3)))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if !p.snap.store.conn.isClosed() {
			t.Fatal("Close left an unreleased configuration's client open")
		}
		p.Release() // after Close: no panic, no double close error
	})
}

// TestReloadNewPassword: the same section with a new password value in
// its environment variable is a new connection.
func TestReloadNewPassword(t *testing.T) {
	srv := testredis.Start(t)
	t.Setenv("CW_TEST_RL_PW", "one")
	file := testFile(t, fmt.Sprintf("redis: {url: %q, password_env: CW_TEST_RL_PW}\n", srv.URL())+
		"routes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n")
	s := newService(t, newClock(), nil, file)
	first := s.cur.Load().store.conn
	if err := s.Configure(context.Background(), file); err != nil {
		t.Fatal(err)
	}
	if s.cur.Load().store.conn != first {
		t.Fatal("same password: new client")
	}
	t.Setenv("CW_TEST_RL_PW", "two")
	if err := s.Configure(context.Background(), file); err != nil {
		t.Fatal(err)
	}
	if s.cur.Load().store.conn == first {
		t.Fatal("a new password kept the old client")
	}
}

func TestClientIPFunc(t *testing.T) {
	trusted := []string{"10.0.0.0/8", "fd00::/8"}
	var pfx = mustPrefixes(t, trusted)
	tests := []struct {
		desc   string
		remote string
		xff    []string
		want   string
	}{
		{"direct client", "192.0.2.1:5555", nil, "192.0.2.1"},
		{"untrusted peer's X-Forwarded-For is ignored", "192.0.2.1:5555", []string{"203.0.113.9"}, "192.0.2.1"},
		{"trusted proxy: nearest untrusted hop", "10.0.0.1:80", []string{"203.0.113.9"}, "203.0.113.9"},
		{"forged leftmost entry is not believed", "10.0.0.1:80", []string{"1.1.1.1, 203.0.113.9"}, "203.0.113.9"},
		{"chain of trusted proxies", "10.0.0.1:80", []string{"203.0.113.9, 10.1.1.1", "10.2.2.2"}, "203.0.113.9"},
		{"only trusted hops: the farthest", "10.0.0.1:80", []string{"10.3.3.3, 10.1.1.1"}, "10.3.3.3"},
		{"garbage stops the walk", "10.0.0.1:80", []string{"203.0.113.9, nonsense, 10.1.1.1"}, "10.1.1.1"},
		{"trusted proxy without header", "10.0.0.1:80", nil, "10.0.0.1"},
		{"ipv6 peer", "[2001:db8::1]:443", nil, "2001:db8::1"},
		{"ipv6 through trusted proxy", "[fd00::1]:443", []string{"2001:db8::2"}, "2001:db8::2"},
		{"ipv4-mapped ipv6 is unmapped", "[::ffff:192.0.2.7]:1", nil, "192.0.2.7"},
		{"xff entry with port", "10.0.0.1:80", []string{"203.0.113.9:1234"}, "203.0.113.9"},
		{"unparsable peer", "pipe", nil, ""},
	}
	fn := ClientIPFunc(pfx)
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := fn(r); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func mustPrefixes(t *testing.T, ss []string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range ss {
		p, err := routes.ParsePrefix(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}
