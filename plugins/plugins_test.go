package plugins

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/causewayhq/causeway/routes"
)

// tagConfig is the config of the "test-tag" plugin used below: it appends its
// tag to the X-Order header on the way in and out, so chain order shows.
type tagConfig struct {
	Tag        string `yaml:"tag"`
	FailClose  bool   `yaml:"fail_close"`
	BeforeAuth bool   `yaml:"before_auth"`
}

type tagInstance struct {
	cfg    tagConfig
	closed *closeLog
}

func (t *tagInstance) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Add("X-Order", t.cfg.Tag)
		w.Header().Add("X-Order", t.cfg.Tag)
		next.ServeHTTP(w, r)
	})
}

func (t *tagInstance) Phase() Phase {
	if t.cfg.BeforeAuth {
		return BeforeAuth
	}
	return AfterAuth
}

func (t *tagInstance) Close() error {
	t.closed.add(t.cfg.Tag)
	if t.cfg.FailClose {
		return errors.New("disk on fire")
	}
	return nil
}

// closeLog records Close calls of test instances across a test.
type closeLog struct {
	mu   sync.Mutex
	tags []string
}

func (c *closeLog) add(tag string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tags = append(c.tags, tag)
}

func (c *closeLog) get() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.tags)
}

func (c *closeLog) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tags = nil
}

var closes = &closeLog{}

func init() {
	Register("test-tag", func(ctx context.Context, cfg routes.Raw) (Instance, error) {
		var c tagConfig
		if err := cfg.Decode(&c); err != nil {
			return nil, err
		}
		if c.Tag == "" {
			return nil, cfg.ErrorAt("tag", "tag is required")
		}
		return &tagInstance{cfg: c, closed: closes}, nil
	})
	Register("test-plain-error", func(ctx context.Context, cfg routes.Raw) (Instance, error) {
		return nil, errors.New("cannot open the thing")
	})
	Register("test-panic", func(ctx context.Context, cfg routes.Raw) (Instance, error) {
		panic("boom")
	})
	Register("test-nil", func(ctx context.Context, cfg routes.Raw) (Instance, error) {
		return nil, nil
	})
}

func TestRegisterRefusesBadNames(t *testing.T) {
	factory := func(ctx context.Context, cfg routes.Raw) (Instance, error) { return Func(nil), nil }
	tests := []struct {
		desc  string
		name  string
		f     Factory
		panic string
	}{
		{"empty name", "", factory, "invalid plugin name"},
		{"upper case", "Cors", factory, "invalid plugin name"},
		{"space", "my plugin", factory, "invalid plugin name"},
		{"nil factory", "test-nil-factory", nil, "nil factory"},
		{"duplicate", "test-tag", factory, "registered twice"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			defer func() {
				p := recover()
				if p == nil {
					t.Fatalf("Register(%q) did not panic", tt.name)
				}
				if !strings.Contains(fmt.Sprint(p), tt.panic) {
					t.Fatalf("panic %q, want it to mention %q", p, tt.panic)
				}
			}()
			Register(tt.name, tt.f)
		})
	}
	if slices.Contains(Names(), "test-nil-factory") {
		t.Fatal("a refused registration was kept")
	}
}

func TestNamesSorted(t *testing.T) {
	names := Names()
	if !slices.IsSorted(names) {
		t.Fatalf("Names() = %v, not sorted", names)
	}
	for _, want := range []string{"test-tag", "test-panic"} {
		if !slices.Contains(names, want) {
			t.Fatalf("Names() = %v, missing %q", names, want)
		}
	}
}

func TestRegisterConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			Register(fmt.Sprintf("test-concurrent-%d", i), func(ctx context.Context, cfg routes.Raw) (Instance, error) { return Func(nil), nil })
			_ = Names()
		}()
	}
	wg.Wait()
	for i := range 8 {
		if _, ok := lookup(fmt.Sprintf("test-concurrent-%d", i)); !ok {
			t.Fatalf("test-concurrent-%d missing", i)
		}
	}
}

const fileHead = `version: 1
upstreams:
  app: { endpoints: ["127.0.0.1:7001"] }
routes:
  - name: r
    match: { path_prefix: / }
    upstream: app
`

func parse(t *testing.T, plugins string) *routes.File {
	t.Helper()
	f, err := routes.Parse("test.yaml", []byte(fileHead+plugins))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return f
}

func TestNewInstancesErrors(t *testing.T) {
	tests := []struct {
		desc    string
		plugins string
		want    []string // substrings, one error each, in file order
	}{
		{
			desc:    "unknown plugin located at use",
			plugins: "plugins:\n  a: { use: nope }\n",
			want:    []string{`test.yaml:9:13: plugins.a.use: unknown plugin "nope"`},
		},
		{
			desc:    "unknown config key located at the key",
			plugins: "plugins:\n  a:\n    use: test-tag\n    config: { tag: x, colour: red }\n",
			want:    []string{`test.yaml:11:23: plugins.a.config.colour: unknown key`},
		},
		{
			desc:    "wrong type",
			plugins: "plugins:\n  a:\n    use: test-tag\n    config:\n      tag: [x]\n",
			want:    []string{`test.yaml:12:12: plugins.a.config.tag: expected a string`},
		},
		{
			desc:    "missing config is placed at the instance",
			plugins: "plugins:\n  a: { use: test-tag }\n",
			want:    []string{`test.yaml:9:6: plugins.a.config.tag: tag is required`},
		},
		{
			desc:    "plain error is placed at the config and names the instance",
			plugins: "plugins:\n  a:\n    use: test-plain-error\n    config: { x: 1 }\n",
			want:    []string{`test.yaml:11:13: plugins.a.config: plugin instance "a" (test-plain-error): cannot open the thing`},
		},
		{
			desc:    "panic becomes an error",
			plugins: "plugins:\n  a: { use: test-panic, config: {} }\n",
			want:    []string{`plugins.a.config: plugin instance "a" (test-panic): the plugin panicked: boom`},
		},
		{
			desc:    "nil instance",
			plugins: "plugins:\n  a: { use: test-nil }\n",
			want:    []string{`plugin instance "a" (test-nil): the plugin returned no instance`},
		},
		{
			desc:    "every error at once, in file order",
			plugins: "plugins:\n  z: { use: nope }\n  a: { use: test-tag, config: { tag: \"\" } }\n",
			want:    []string{`test.yaml:9:13: plugins.z.use: unknown plugin`, `test.yaml:10:38: plugins.a.config.tag: tag is required`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			s, err := NewInstances(context.Background(), parse(t, tt.plugins))
			if err == nil {
				s.Close()
				t.Fatal("NewInstances succeeded")
			}
			var es routes.Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %T %v is not routes.Errors", err, err)
			}
			if len(es) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(es), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.Contains(es[i].Error(), w) {
					t.Errorf("error %d = %q, want it to contain %q", i, es[i].Error(), w)
				}
			}
		})
	}
}

func TestNewInstancesClosesWhatItBuiltOnError(t *testing.T) {
	closes.reset()
	_, err := NewInstances(context.Background(), parse(t, "plugins:\n  a: { use: test-tag, config: { tag: a } }\n  b: { use: nope }\n  c: { use: test-tag, config: { tag: c } }\n"))
	if err == nil {
		t.Fatal("NewInstances succeeded")
	}
	got := closes.get()
	slices.Sort(got)
	if !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("closed %v, want [a c]: a refused file must not leak instances", got)
	}
}

func TestChainOrder(t *testing.T) {
	s, err := NewInstances(context.Background(), parse(t, "plugins:\n  one: { use: test-tag, config: { tag: \"1\" } }\n  two: { use: test-tag, config: { tag: \"2\" } }\n  three: { use: test-tag, config: { tag: \"3\" } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tests := []struct {
		desc  string
		names []string
		want  string
	}{
		{"empty chain", nil, ""},
		{"one", []string{"two"}, "2"},
		{"listed order, not name order", []string{"three", "one", "two"}, "3,1,2"},
		{"same instance twice", []string{"one", "one"}, "1,1"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			mw, err := s.Chain(tt.names)
			if err != nil {
				t.Fatal(err)
			}
			var seen string
			h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen = strings.Join(r.Header.Values("X-Order"), ",")
			}))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
			if seen != tt.want {
				t.Fatalf("upstream saw %q, want %q", seen, tt.want)
			}
		})
	}
	if _, err := s.Chain([]string{"one", "missing"}); err == nil || !strings.Contains(err.Error(), `"missing"`) {
		t.Fatalf("Chain with an undefined instance: err = %v", err)
	}
}

// ChainPhase keeps the route's order within a phase and leaves the other
// phase's instances out; a plain Instance (no Phase method) is AfterAuth.
func TestChainPhase(t *testing.T) {
	Register("test-plain", func(ctx context.Context, cfg routes.Raw) (Instance, error) {
		return Func(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r.Header.Add("X-Order", "plain")
				next.ServeHTTP(w, r)
			})
		}), nil
	})
	s, err := NewInstances(context.Background(), parse(t, "plugins:\n  a: { use: test-tag, config: { tag: a } }\n  b: { use: test-tag, config: { tag: b, before_auth: true } }\n  c: { use: test-tag, config: { tag: c, before_auth: true } }\n  p: { use: test-plain }\n"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tests := []struct {
		desc  string
		names []string
		phase Phase
		want  string // "-": no chain at all
	}{
		{"before auth, route order", []string{"c", "a", "p", "b"}, BeforeAuth, "c,b"},
		{"after auth, route order", []string{"c", "p", "a", "b"}, AfterAuth, "plain,a"},
		{"no instance of the phase", []string{"a", "p"}, BeforeAuth, "-"},
		{"empty route", nil, AfterAuth, "-"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			mw, err := s.ChainPhase(tt.names, tt.phase)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == "-" {
				if mw != nil {
					t.Fatal("a chain for a phase without instances")
				}
				return
			}
			var seen string
			h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen = strings.Join(r.Header.Values("X-Order"), ",")
			}))
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
			if seen != tt.want {
				t.Fatalf("upstream saw %q, want %q", seen, tt.want)
			}
		})
	}
	for _, phase := range []Phase{BeforeAuth, AfterAuth} {
		if _, err := s.ChainPhase([]string{"a", "missing"}, phase); err == nil || !strings.Contains(err.Error(), `"missing"`) {
			t.Fatalf("ChainPhase(%v) with an undefined instance: err = %v", phase, err)
		}
	}
}

// TestReloadReleasesResources plays what the gateway does on reload: build
// the new file's instances, switch, close the old set.
func TestReloadReleasesResources(t *testing.T) {
	closes.reset()
	old, err := NewInstances(context.Background(), parse(t, "plugins:\n  keep: { use: test-tag, config: { tag: old-keep } }\n  drop: { use: test-tag, config: { tag: old-drop } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	next, err := NewInstances(context.Background(), parse(t, "plugins:\n  keep: { use: test-tag, config: { tag: new-keep } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := closes.get(); len(got) != 0 {
		t.Fatalf("closed %v before the switch", got)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	// Reverse creation order: "keep" was created after "drop".
	if got := closes.get(); !slices.Equal(got, []string{"old-keep", "old-drop"}) {
		t.Fatalf("closed %v, want [old-keep old-drop]", got)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if got := closes.get(); len(got) != 2 {
		t.Fatalf("second Close closed again: %v", got)
	}
	if err := next.Close(); err != nil {
		t.Fatal(err)
	}
	if got := closes.get(); !slices.Equal(got, []string{"old-keep", "old-drop", "new-keep"}) {
		t.Fatalf("closed %v", got)
	}
}

func TestCloseJoinsErrors(t *testing.T) {
	closes.reset()
	s, err := NewInstances(context.Background(), parse(t, "plugins:\n  a: { use: test-tag, config: { tag: a, fail_close: true } }\n  b: { use: test-tag, config: { tag: b } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Close()
	if err == nil || !strings.Contains(err.Error(), `closing plugin instance "a": disk on fire`) {
		t.Fatalf("Close() = %v", err)
	}
	if got := closes.get(); !slices.Equal(got, []string{"b", "a"}) {
		t.Fatalf("closed %v: one failing Close must not skip the others", got)
	}
}

func TestNewUnknownStandalone(t *testing.T) {
	_, err := New(context.Background(), "x", routes.PluginInst{Use: "missing"})
	if err == nil || !strings.Contains(err.Error(), `plugins.x.use: unknown plugin "missing"`) {
		t.Fatalf("New() = %v", err)
	}
}

func TestRequestInfo(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if got := Info(r.Context()); got != (RequestInfo{}) {
		t.Fatalf("Info on a bare context = %+v", got)
	}
	r.Header.Set(RequestIDHeader, "from-header")
	if got := RequestID(r); got != "from-header" {
		t.Fatalf("RequestID falls back to the header: got %q", got)
	}
	r = r.WithContext(WithRequestInfo(r.Context(), RequestInfo{Route: "orders", RequestID: "abc"}))
	if got := Info(r.Context()); got.Route != "orders" || got.RequestID != "abc" {
		t.Fatalf("Info = %+v", got)
	}
	if got := RequestID(r); got != "abc" {
		t.Fatalf("RequestID = %q", got)
	}
}

func TestError(t *testing.T) {
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set(RequestIDHeader, "id-1")
	Error(rec, r, http.StatusForbidden, "origin not allowed")
	if rec.Code != 403 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	want := `{"error":"origin not allowed","status":403,"request_id":"id-1"}` + "\n"
	if rec.Body.String() != want {
		t.Fatalf("body %q, want %q", rec.Body.String(), want)
	}
}
