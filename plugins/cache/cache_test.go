package cache

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/auth"
	"github.com/causewayhq/causeway/plugins/plugintest"
)

func TestConfigErrors(t *testing.T) {
	tests := []struct{ desc, config, want string }{
		{"negative size", "max_bytes: -1", "plugins.p.config.max_bytes: must not be negative"},
		{"negative entry size", "max_entry_bytes: -1", "plugins.p.config.max_entry_bytes: must not be negative"},
		{"entry larger than the cache", "max_bytes: 1000\nmax_entry_bytes: 2000", "2000 exceeds max_bytes (1000)"},
		{"bad ttl", "default_ttl: 5", "invalid duration"},
		{"unknown key", "ttl: 5s", "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if got := plugintest.ConfigError(t, "cache", tt.config); !strings.Contains(got, tt.want) {
				t.Fatalf("error %q, want %q", got, tt.want)
			}
		})
	}
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// origin is an upstream whose answers a test sets, counting requests.
type origin struct {
	hits    atomic.Int32
	status  int
	headers map[string]string
	body    string
	mu      sync.Mutex
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := o.hits.Add(1)
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, v := range o.headers {
		w.Header().Set(k, v)
	}
	if lang := r.Header.Get("Accept-Language"); lang != "" {
		w.Header().Set("Content-Language", lang)
	}
	w.WriteHeader(o.status)
	fmt.Fprintf(w, "%s#%d", o.body, n)
}

func newCache(t *testing.T, config string) (*Cache, *clock) {
	t.Helper()
	c := plugintest.MustNew(t, "cache", config).(*Cache)
	clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	c.now = clk.Now
	return c, clk
}

type step struct {
	method    string
	headers   map[string]string
	authed    bool // a principal on the context, as after the auth stage
	advance   time.Duration
	wantCache string // HIT or MISS
	wantN     int    // which origin response the body is (#N)
	wantCode  int
	wantAge   string
}

func run(t *testing.T, h http.Handler, steps []step) {
	t.Helper()
	for i, s := range steps {
		r := httptest.NewRequest(cmp(s.method, "GET"), "http://api.example.com/items?page=1", nil)
		for k, v := range s.headers {
			r.Header.Set(k, v)
		}
		if s.authed {
			r = r.WithContext(auth.NewContext(r.Context(), &auth.Principal{Authenticator: "users", Subject: "alice"}))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		code := rec.Code
		if s.wantCode != 0 && code != s.wantCode {
			t.Fatalf("step %d: status %d, want %d", i, code, s.wantCode)
		}
		if got := rec.Header().Get(StatusHeader); s.wantCache != "" && got != s.wantCache {
			t.Fatalf("step %d: %s %q, want %q", i, StatusHeader, got, s.wantCache)
		}
		if s.wantN != 0 && !strings.HasSuffix(rec.Body.String(), fmt.Sprintf("#%d", s.wantN)) {
			t.Fatalf("step %d: body %q, want origin response #%d", i, rec.Body, s.wantN)
		}
		if s.wantAge != "" && rec.Header().Get("Age") != s.wantAge {
			t.Fatalf("step %d: Age %q, want %q", i, rec.Header().Get("Age"), s.wantAge)
		}
	}
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestStorability(t *testing.T) {
	tests := []struct {
		desc    string
		config  string
		status  int
		headers map[string]string
		steps   []step
	}{
		{
			desc: "max-age: stored, then fresh, then stale", status: 200,
			headers: map[string]string{"Cache-Control": "max-age=60"},
			steps: []step{
				{wantCache: "MISS", wantN: 1},
				{advance: 30 * time.Second, wantCache: "HIT", wantN: 1, wantAge: "30"},
				{advance: 30 * time.Second, wantCache: "MISS", wantN: 2},
			},
		},
		{
			desc: "s-maxage wins over max-age", status: 200,
			headers: map[string]string{"Cache-Control": "max-age=1, s-maxage=100"},
			steps:   []step{{wantN: 1}, {advance: 50 * time.Second, wantCache: "HIT", wantN: 1}},
		},
		{
			desc: "upstream Age counts", status: 200,
			headers: map[string]string{"Cache-Control": "max-age=60", "Age": "50"},
			steps:   []step{{wantN: 1}, {advance: 5 * time.Second, wantCache: "HIT", wantAge: "55"}, {advance: 5 * time.Second, wantCache: "MISS", wantN: 2}},
		},
		{
			desc: "Expires relative to Date", status: 200,
			headers: map[string]string{"Date": "Fri, 02 Jan 2026 03:04:05 GMT", "Expires": "Fri, 02 Jan 2026 03:05:05 GMT"},
			steps:   []step{{wantN: 1}, {advance: 59 * time.Second, wantCache: "HIT"}, {advance: time.Second, wantCache: "MISS"}},
		},
		{
			desc: "invalid Expires is already expired", status: 200,
			headers: map[string]string{"Expires": "0"},
			steps:   []step{{wantN: 1}, {wantCache: "MISS", wantN: 2}},
		},
		{
			desc: "no freshness information: not stored", status: 200,
			steps: []step{{wantN: 1}, {wantCache: "MISS", wantN: 2}},
		},
		{
			desc: "default_ttl for a 200 without freshness", config: "default_ttl: 10s", status: 200,
			steps: []step{{wantN: 1}, {advance: 9 * time.Second, wantCache: "HIT"}, {advance: time.Second, wantCache: "MISS"}},
		},
		{
			desc: "default_ttl not for a 404", config: "default_ttl: 10s", status: 404,
			steps: []step{{wantN: 1}, {wantCache: "MISS", wantN: 2}},
		},
		{
			desc: "404 with max-age is stored", status: 404,
			headers: map[string]string{"Cache-Control": "max-age=60"},
			steps:   []step{{wantN: 1}, {wantCache: "HIT", wantN: 1, wantCode: 404}},
		},
		{
			desc: "500 is not stored", status: 500,
			headers: map[string]string{"Cache-Control": "max-age=60"},
			steps:   []step{{wantN: 1}, {wantCache: "MISS", wantN: 2}},
		},
		{"no-store", "", 200, map[string]string{"Cache-Control": "no-store, max-age=60"}, []step{{wantN: 1}, {wantCache: "MISS", wantN: 2}}},
		{"private", "", 200, map[string]string{"Cache-Control": "private, max-age=60"}, []step{{wantN: 1}, {wantCache: "MISS", wantN: 2}}},
		{"no-cache (no revalidation here)", "", 200, map[string]string{"Cache-Control": "no-cache, max-age=60"}, []step{{wantN: 1}, {wantCache: "MISS", wantN: 2}}},
		{"malformed max-age", "", 200, map[string]string{"Cache-Control": "max-age=soon"}, []step{{wantN: 1}, {wantCache: "MISS", wantN: 2}}},
		{"Set-Cookie", "", 200, map[string]string{"Cache-Control": "max-age=60", "Set-Cookie": "s=1"}, []step{{wantN: 1}, {wantCache: "MISS", wantN: 2}}},
		{"Vary: *", "", 200, map[string]string{"Cache-Control": "max-age=60", "Vary": "*"}, []step{{wantN: 1}, {wantCache: "MISS", wantN: 2}}},
		{
			desc: "authenticated: not stored without public", status: 200,
			headers: map[string]string{"Cache-Control": "max-age=60"},
			steps:   []step{{authed: true, wantN: 1}, {wantCache: "MISS", wantN: 2}},
		},
		{
			desc: "Authorization header: not stored without public", status: 200,
			headers: map[string]string{"Cache-Control": "max-age=60"},
			steps:   []step{{headers: map[string]string{"Authorization": "Bearer x"}, wantN: 1}, {wantCache: "MISS", wantN: 2}},
		},
		{
			desc: "authenticated: anonymous entry not served to them unless shared", status: 200,
			headers: map[string]string{"Cache-Control": "max-age=60"},
			steps:   []step{{wantN: 1}, {authed: true, wantCache: "MISS", wantN: 2}, {wantCache: "HIT", wantN: 1}},
		},
		{
			desc: "authenticated with public: stored and shared", status: 200,
			headers: map[string]string{"Cache-Control": "public, max-age=60"},
			steps:   []step{{authed: true, wantN: 1}, {wantCache: "HIT", wantN: 1}, {authed: true, wantCache: "HIT", wantN: 1}},
		},
		{
			desc: "request no-cache refreshes the entry", status: 200,
			headers: map[string]string{"Cache-Control": "max-age=60"},
			steps: []step{
				{wantN: 1},
				{headers: map[string]string{"Cache-Control": "no-cache"}, wantCache: "MISS", wantN: 2},
				{wantCache: "HIT", wantN: 2},
			},
		},
		{
			desc: "Pragma: no-cache", status: 200,
			headers: map[string]string{"Cache-Control": "max-age=60"},
			steps:   []step{{wantN: 1}, {headers: map[string]string{"Pragma": "no-cache"}, wantCache: "MISS", wantN: 2}},
		},
		{
			desc: "request no-store neither reads nor writes", status: 200,
			headers: map[string]string{"Cache-Control": "max-age=60"},
			steps: []step{
				{headers: map[string]string{"Cache-Control": "no-store"}, wantN: 1},
				{wantCache: "MISS", wantN: 2},
				{headers: map[string]string{"Cache-Control": "no-store"}, wantCache: "MISS", wantN: 3},
			},
		},
		{
			desc: "request max-age and min-fresh", status: 200,
			headers: map[string]string{"Cache-Control": "max-age=60"},
			steps: []step{
				{wantN: 1},
				{advance: 20 * time.Second, headers: map[string]string{"Cache-Control": "max-age=10"}, wantCache: "MISS", wantN: 2},
				{advance: 20 * time.Second, headers: map[string]string{"Cache-Control": "min-fresh=50"}, wantCache: "MISS", wantN: 3},
				{headers: map[string]string{"Cache-Control": "min-fresh=30"}, wantCache: "HIT", wantN: 3},
			},
		},
		{
			desc: "only-if-cached", status: 200,
			headers: map[string]string{"Cache-Control": "max-age=60"},
			steps: []step{
				{headers: map[string]string{"Cache-Control": "only-if-cached"}, wantCode: 504},
				{wantN: 1},
				{headers: map[string]string{"Cache-Control": "only-if-cached"}, wantCode: 200, wantCache: "HIT", wantN: 1},
			},
		},
		{
			desc: "If-None-Match on a stored ETag: 304", status: 200,
			headers: map[string]string{"Cache-Control": "max-age=60", "ETag": `"v7"`},
			steps: []step{
				{wantN: 1},
				{headers: map[string]string{"If-None-Match": `W/"v6", W/"v7"`}, wantCode: 304, wantCache: "HIT"},
				{headers: map[string]string{"If-None-Match": `"v8"`}, wantCode: 200, wantCache: "HIT", wantN: 1},
			},
		},
		{
			desc: "HEAD is served from GET, not stored itself", status: 200,
			headers: map[string]string{"Cache-Control": "max-age=60"},
			steps: []step{
				{method: "HEAD", wantCache: "MISS"},
				{wantCache: "MISS", wantN: 2},
				{method: "HEAD", wantCache: "HIT"},
			},
		},
		{
			desc: "successful POST invalidates", status: 200,
			headers: map[string]string{"Cache-Control": "max-age=60"},
			steps:   []step{{wantN: 1}, {wantCache: "HIT"}, {method: "POST", wantN: 2}, {wantCache: "MISS", wantN: 3}},
		},
		{
			desc: "Range requests pass", status: 200,
			headers: map[string]string{"Cache-Control": "max-age=60"},
			steps:   []step{{headers: map[string]string{"Range": "bytes=0-1"}, wantN: 1}, {wantCache: "MISS", wantN: 2}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			c, clk := newCache(t, tt.config)
			o := &origin{status: tt.status, headers: tt.headers, body: "body"}
			h := c.Wrap(o)
			for i := range tt.steps {
				clk.Advance(tt.steps[i].advance)
				run(t, h, tt.steps[i:i+1])
			}
		})
	}
}

func TestVary(t *testing.T) {
	c, _ := newCache(t, "")
	o := &origin{status: 200, headers: map[string]string{"Cache-Control": "max-age=60", "Vary": "Accept-Language"}, body: "b"}
	h := c.Wrap(o)
	en := map[string]string{"Accept-Language": "en"}
	de := map[string]string{"Accept-Language": "de"}
	run(t, h, []step{
		{headers: en, wantCache: "MISS", wantN: 1},
		{headers: de, wantCache: "MISS", wantN: 2},
		{headers: en, wantCache: "HIT", wantN: 1},
		{headers: de, wantCache: "HIT", wantN: 2},
		{wantCache: "MISS", wantN: 3},
		{headers: map[string]string{"Accept-Language": "  en "}, wantCache: "HIT", wantN: 1},
	})
	if n, _ := c.Len(); n != 3 {
		t.Fatalf("%d entries, want 3 variants", n)
	}
	// The upstream stops varying: the old variants go.
	o.mu.Lock()
	o.headers = map[string]string{"Cache-Control": "max-age=60"}
	o.mu.Unlock()
	run(t, h, []step{{headers: map[string]string{"Cache-Control": "no-cache"}, wantN: 4}})
	if n, _ := c.Len(); n != 1 {
		t.Fatalf("%d entries after the Vary change, want 1", n)
	}
}

func TestBounds(t *testing.T) {
	c, _ := newCache(t, "max_bytes: 4000\nmax_entry_bytes: 1000")
	body := strings.Repeat("x", 700)
	var n atomic.Int32
	h := c.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Cache-Control", "max-age=60")
		if r.URL.Path == "/big" {
			io.WriteString(w, strings.Repeat("y", 1001))
			return
		}
		io.WriteString(w, body)
	}))
	get := func(path string) string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Header().Get(StatusHeader)
	}
	for i := range 20 {
		get(fmt.Sprintf("/item/%d", i))
		if _, size := c.Len(); size > 4000 {
			t.Fatalf("after %d responses the cache holds %d bytes, over max_bytes", i+1, size)
		}
	}
	entries, _ := c.Len()
	if entries == 0 || entries >= 20 {
		t.Fatalf("%d entries: want eviction to keep some, not all", entries)
	}
	if got := get("/item/19"); got != "HIT" {
		t.Fatalf("most recent entry: %s", got)
	}
	if got := get("/item/0"); got != "MISS" {
		t.Fatalf("least recent entry was not evicted: %s", got)
	}
	get("/big")
	if got := get("/big"); got != "MISS" {
		t.Fatalf("a body over max_entry_bytes was stored: %s", got)
	}
}

func TestCloseReleases(t *testing.T) {
	c, _ := newCache(t, "")
	o := &origin{status: 200, headers: map[string]string{"Cache-Control": "max-age=60"}}
	h := c.Wrap(o)
	run(t, h, []step{{wantN: 1}, {wantCache: "HIT"}})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n, size := c.Len(); n != 0 || size != 0 {
		t.Fatalf("after Close: %d entries, %d bytes", n, size)
	}
	// A request still in flight on the old configuration passes through.
	run(t, h, []step{{wantCache: "MISS", wantN: 2}, {wantCache: "MISS", wantN: 3}})
}

func TestConcurrent(t *testing.T) {
	c, clk := newCache(t, "max_bytes: 20000")
	h := c.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=5")
		w.Header().Set("Vary", "Accept-Language")
		io.WriteString(w, strings.Repeat("z", 300))
	}))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				r := httptest.NewRequest(http.MethodGet, fmt.Sprintf("/k/%d", i%37), nil)
				r.Header.Set("Accept-Language", fmt.Sprint(g%3))
				if i%50 == 0 {
					clk.Advance(time.Second)
				}
				if i%41 == 0 {
					r.Method = http.MethodPut
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				if rec.Code != 200 || rec.Body.Len() != 300 {
					t.Errorf("status %d, %d bytes", rec.Code, rec.Body.Len())
					return
				}
			}
		}()
	}
	wg.Wait()
	if _, size := c.Len(); size > 20000 {
		t.Fatalf("%d bytes held", size)
	}
}
