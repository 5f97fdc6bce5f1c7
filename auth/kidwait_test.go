package auth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// hangingIDP serves keys at once until hang is called; from then on every
// fetch is held until release, and then answers with the keys set by then.
type hangingIDP struct {
	*httptest.Server
	mu      sync.Mutex
	keys    []map[string]any
	hanging bool
	release chan struct{}
	arrived chan struct{} // one value per held fetch
	once    sync.Once
}

func newHangingIDP(t *testing.T, keys ...map[string]any) *hangingIDP {
	t.Helper()
	p := &hangingIDP{keys: keys, release: make(chan struct{}), arrived: make(chan struct{}, 8)}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		hanging := p.hanging
		p.mu.Unlock()
		if hanging {
			p.arrived <- struct{}{}
			select {
			case <-p.release:
			case <-r.Context().Done():
				return
			}
		}
		p.mu.Lock()
		body := map[string]any{"keys": p.keys}
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(func() {
		p.unblock()
		p.Close()
	})
	return p
}

func (p *hangingIDP) unblock() { p.once.Do(func() { close(p.release) }) }

func (p *hangingIDP) hang(keys ...map[string]any) {
	p.mu.Lock()
	p.hanging, p.keys = true, keys
	p.mu.Unlock()
}

// A token with a new kid while the JWKS endpoint hangs: the request waits
// at most the kid-wait bound (the timer is the test's, so nothing here
// depends on the wall clock), is refused as unknown_kid while the endpoint
// is still hanging; a request that comes once that fetch is older than the
// bound does not wait at all; and the fetch carries on: once the endpoint
// answers, the next request with that kid is served from it without a
// fetch of its own.
func TestJWKSKIDWaitBounded(t *testing.T) {
	oldKey, newKey := signerFor(t, "RS256", 0), signerFor(t, "ES256", 0)
	p := newHangingIDP(t, jwkOf(oldKey.pub, "old"))
	f := parse(t, jwtYAML("      jwks_url: "+p.URL+"\n      jwks_refresh: {min: 1m, max: 1h}", "RS256", "ES256"), usersRoute)
	clk := newClock()
	s := testSet(t, f, Options{Now: clk.Now})
	started(t, s)
	a := s.auths["users"].(*jwtAuth)
	j := a.jwks

	waits := make(chan time.Duration, 4)
	fire := make(chan time.Time)
	j.after = func(d time.Duration) <-chan time.Time {
		waits <- d
		return fire
	}

	p.hang(jwkOf(oldKey.pub, "old"), jwkOf(newKey.pub, "new"))
	clk.Add(time.Minute) // past the unknown-kid refresh rate limit
	newTok := newKey.sign(t, claims(nil), "new")
	fetchesBefore := j.fetchCount()

	type result struct{ reason Reason }
	done := make(chan result, 1)
	go func() {
		_, r := a.verify(t.Context(), newTok)
		done <- result{r}
	}()
	<-p.arrived // the fetch for "new" reached the endpoint, which holds it
	if d := <-waits; d != maxKIDWait {
		t.Fatalf("request waits up to %v, want %v", d, maxKIDWait)
	}
	select {
	case r := <-done:
		t.Fatalf("the request returned (%q) before its wait ended or the fetch did", r.reason)
	default:
	}
	close(fire) // the bound passes; the endpoint still hangs
	if r := <-done; r.reason != ReasonUnknownKID {
		t.Fatalf("reason %q, want %q", r.reason, ReasonUnknownKID)
	}

	// A request that comes once the fetch is older than the bound does not
	// wait at all: the endpoint still hangs, nothing starts a timer.
	clk.Add(maxKIDWait)
	if _, r := a.verify(t.Context(), newTok); r != ReasonUnknownKID {
		t.Fatalf("later request: reason %q, want %q", r, ReasonUnknownKID)
	}
	select {
	case d := <-waits:
		t.Fatalf("a request waited %v for a fetch already past the bound", d)
	default:
	}

	// The fetch went on in the background: once the endpoint answers, its
	// keys serve the next request, which needs no fetch of its own.
	j.mu.Lock()
	running := j.inflight
	j.mu.Unlock()
	if running == nil {
		t.Fatal("the abandoned fetch is not running any more")
	}
	p.unblock()
	<-running
	if _, r := a.verify(t.Context(), newTok); r != ReasonNone {
		t.Fatalf("after the endpoint answered: reason %q", r)
	}
	if n := j.fetchCount() - fetchesBefore; n != 1 {
		t.Fatalf("%d fetches, want the 1 the first request started", n)
	}
}

// Close while a fetch a request gave up on still hangs: the fetch is
// cancelled and Close returns; goleak (TestMain) checks nothing is left.
func TestJWKSCloseStopsAbandonedFetch(t *testing.T) {
	key := signerFor(t, "RS256", 0)
	p := newHangingIDP(t, jwkOf(key.pub, "old"))
	f := parse(t, jwtYAML("      jwks_url: "+p.URL+"\n      jwks_refresh: {min: 1m}", "RS256"), usersRoute)
	clk := newClock()
	s, err := NewSet(t.Context(), f, nil, Options{Now: clk.Now, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	started(t, s)
	a := s.auths["users"].(*jwtAuth)
	fire := make(chan time.Time)
	close(fire)
	a.jwks.after = func(time.Duration) <-chan time.Time { return fire }
	p.hang()
	clk.Add(time.Minute)
	if _, r := a.verify(t.Context(), key.sign(t, claims(nil), "other")); r != ReasonUnknownKID {
		t.Fatalf("reason %q", r)
	}
	<-p.arrived
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second): // a guard against a hung test, not a measurement
		t.Fatal("Close did not return while an abandoned fetch hung")
	}
}

// The bound is maxKIDWait, or the HTTP client's overall timeout when that
// is shorter: a request never waits longer than the fetch itself may take.
func TestJWKSKIDWaitBound(t *testing.T) {
	p := newIDP(t)
	tests := []struct {
		name   string
		client *http.Client
		want   time.Duration
	}{
		{"default client", nil, maxKIDWait},
		{"client without a timeout", &http.Client{}, maxKIDWait},
		{"client with a longer timeout", &http.Client{Timeout: time.Minute}, maxKIDWait},
		{"client with a shorter timeout", &http.Client{Timeout: 200 * time.Millisecond}, 200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := parse(t, jwtYAML("      jwks_url: "+p.URL, "RS256"), usersRoute)
			s := testSet(t, f, Options{Now: newClock().Now, HTTPClient: tt.client})
			if got := s.auths["users"].(*jwtAuth).jwks.kidWait; got != tt.want {
				t.Fatalf("kid wait %v, want %v", got, tt.want)
			}
		})
	}
}
