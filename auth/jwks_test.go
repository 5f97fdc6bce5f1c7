package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func jwksFile(t testing.TB, p *idp, extra string) string {
	return jwtYAML("      jwks_url: "+p.URL+extra, "RS256", "ES256", "EdDSA")
}

// TestJWKSRotation: a new key served by the identity provider is picked up
// at the first token that names it; the old key keeps working until the
// provider stops serving it, and then stops at once, cached tokens included.
func TestJWKSRotation(t *testing.T) {
	oldKey, newKey := signerFor(t, "RS256", 0), signerFor(t, "ES256", 0)
	p := newIDP(t, jwkOf(oldKey.pub, "old"))
	f := parse(t, jwksFile(t, p, "\n      jwks_refresh: {min: 1m, max: 1h}"), usersRoute)
	clk := newClock()
	fails := failuresVec()
	s := testSet(t, f, Options{Now: clk.Now, Failures: fails})
	started(t, s)
	h, _ := handler(t, s, f, 0)
	j := s.auths["users"].(*jwtAuth).jwks

	oldTok := oldKey.sign(t, claims(nil), "old")
	newTok := newKey.sign(t, claims(nil), "new")
	expect := func(step, tok string, want int) {
		t.Helper()
		if w := do(h, "/", bearer(tok)); w.Code != want {
			t.Fatalf("%s: status %d, want %d (%s)", step, w.Code, want, w.Header().Get("WWW-Authenticate"))
		}
	}
	expect("old key at start", oldTok, 204)
	expect("new key before it is published", newTok, 401)

	p.set(http.StatusOK, jwkOf(oldKey.pub, "old"), jwkOf(newKey.pub, "new"))
	// The refresh an unknown kid asks for is rate-limited to one per min...
	expect("new key within the rate limit", newTok, 401)
	// ...and allowed again once min has passed.
	clk.Add(time.Minute)
	expect("new key after publication", newTok, 204)
	expect("old key still published", oldTok, 204)
	if got := j.kids(); !slices.Equal(got, []string{"new", "old"}) {
		t.Fatalf("kids %v", got)
	}

	// The provider drops the old key; the scheduled refresh notices.
	p.set(http.StatusOK, jwkOf(newKey.pub, "new"))
	if ttl := j.refreshShared(context.Background()); ttl == 0 {
		t.Fatal("refresh failed")
	}
	expect("old key removed (was cached)", oldTok, 401)
	expect("new key", newTok, 204)
	if got := counter(fails, "users", string(ReasonUnknownKID)); got != 3 {
		t.Fatalf("unknown_kid failures %v, want 3", got)
	}
}

// TestJWKSUnknownKIDRateLimit: a flood of tokens with random kids causes at
// most one fetch per min interval.
func TestJWKSUnknownKIDRateLimit(t *testing.T) {
	sg := signerFor(t, "RS256", 0)
	p := newIDP(t, jwkOf(sg.pub, "k1"))
	f := parse(t, jwksFile(t, p, "\n      jwks_refresh: {min: 30s}"), usersRoute)
	clk := newClock()
	s := testSet(t, f, Options{Now: clk.Now, Logger: quiet})
	started(t, s)
	a := s.auths["users"].(*jwtAuth)
	if _, r := a.verify(t.Context(), sg.sign(t, claims(nil), "k1")); r != ReasonNone {
		t.Fatalf("good token: %s", r)
	}
	start := a.jwks.fetchCount()
	for round := range 3 {
		for i := range 50 {
			tok := sg.sign(t, claims(nil), fmt.Sprintf("random-%d-%d", round, i))
			if _, r := a.verify(t.Context(), tok); r != ReasonUnknownKID {
				t.Fatalf("random kid: %q", r)
			}
		}
		clk.Add(30 * time.Second)
	}
	// The first round falls within min of the start-up fetch: none; then
	// one per round.
	if got := a.jwks.fetchCount() - start; got > 2 {
		t.Fatalf("150 unknown kids caused %d fetches, want at most 2", got)
	}
}

// TestJWKSOutage: the edge starts while the JWKS endpoint is down, says so
// on Ready, refuses tokens with no_keys, and recovers when the endpoint
// does; a later outage keeps the last good keys.
func TestJWKSOutage(t *testing.T) {
	sg := signerFor(t, "EdDSA", 0)
	p := newIDP(t)
	p.set(http.StatusServiceUnavailable)
	f := parse(t, jwksFile(t, p, "\n      jwks_refresh: {min: 1m}"), usersRoute)
	clk := newClock()
	fails := failuresVec()
	s := testSet(t, f, Options{Now: clk.Now, Failures: fails})
	h, _ := handler(t, s, f, 0)
	j := s.auths["users"].(*jwtAuth).jwks
	tok := sg.sign(t, claims(nil), "ed")

	started(t, s)
	err := s.Ready()
	if err == nil || !strings.Contains(err.Error(), `authenticator "users"`) || !strings.Contains(err.Error(), "status 503") {
		t.Fatalf("Ready during outage: %v", err)
	}
	if w := do(h, "/", bearer(tok)); w.Code != 401 || !strings.Contains(w.Header().Get("WWW-Authenticate"), "cannot be verified yet") {
		t.Fatalf("token during outage: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
	if counter(fails, "users", string(ReasonNoKeys)) != 1 {
		t.Fatal("no_keys not counted")
	}

	p.set(http.StatusOK, jwkOf(sg.pub, "ed"))
	clk.Add(time.Minute) // the request-path refresh is rate-limited too
	if w := do(h, "/", bearer(tok)); w.Code != 204 {
		t.Fatalf("token after recovery: %d", w.Code)
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready after recovery: %v", err)
	}

	for _, outage := range []func(){
		func() { p.set(http.StatusInternalServerError) },
		func() { p.set(http.StatusOK) },                               // an empty key set
		func() { p.set(http.StatusOK, map[string]any{"kty": "oct"}) }, // nothing usable
	} {
		outage()
		if ttl := j.refreshShared(context.Background()); ttl != 0 {
			t.Fatal("a failed refresh reported success")
		}
		if err := s.Ready(); err != nil {
			t.Fatalf("Ready with last good keys: %v", err)
		}
		if w := do(h, "/", bearer(sg.sign(t, claims(map[string]any{"jti": "fresh"}), "ed"))); w.Code != 204 {
			t.Fatalf("token with last good keys: %d", w.Code)
		}
	}
}

// TestJWKSStartsInBackground: NewSet returns at once with the endpoint
// unreachable, and the background refresher fetches without being asked.
func TestJWKSStartsInBackground(t *testing.T) {
	sg := signerFor(t, "RS256", 0)
	p := newIDP(t, jwkOf(sg.pub, "k1"))
	f := parse(t, jwksFile(t, p, ""), usersRoute)
	s := testSet(t, f, Options{Now: newClock().Now})
	started(t, s) // nothing but the background refresher fetched
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if p.hits.Load() != 1 {
		t.Fatalf("%d fetches at start", p.hits.Load())
	}

	// A closed port: NewSet still succeeds, Ready says why not.
	dead := newIDP(t)
	url := dead.URL
	dead.Close()
	f2 := parse(t, jwtYAML("      jwks_url: "+url, "RS256"), usersRoute)
	s2 := testSet(t, f2, Options{Now: newClock().Now})
	started(t, s2)
	if err := s2.Ready(); err == nil || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("Ready with a dead endpoint: %v", err)
	}
}

// TestJWKSTakeover: a reload with the same jwks_url keeps the cache (no
// refetch, keys there at once); Close of the old set leaves it running;
// a changed URL gets a new cache and the old refresher stops.
func TestJWKSTakeover(t *testing.T) {
	sg := signerFor(t, "RS256", 0)
	p := newIDP(t, jwkOf(sg.pub, "k1"))
	f := parse(t, jwksFile(t, p, ""), usersRoute)
	clk := newClock()
	s1, err := NewSet(context.Background(), f, nil, Options{Now: clk.Now, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	started(t, s1)
	j1 := s1.auths["users"].(*jwtAuth).jwks
	hits := p.hits.Load()

	f2 := parse(t, jwksFile(t, p, "\n      realm: changed"), usersRoute)
	s2, err := NewSet(context.Background(), f2, s1, Options{Now: clk.Now, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if s2.auths["users"].(*jwtAuth).jwks != j1 {
		t.Fatal("the JWKS cache was not taken over")
	}
	s1.Close()
	if err := s2.Ready(); err != nil {
		t.Fatalf("Ready after takeover: %v", err)
	}
	if p.hits.Load() != hits {
		t.Fatal("the reload refetched the JWKS")
	}
	select {
	case <-j1.done:
		t.Fatal("closing the old set stopped a refresher the new set uses")
	default:
	}

	other := newIDP(t, jwkOf(sg.pub, "k1"))
	f3 := parse(t, jwksFile(t, other, ""), usersRoute)
	s3, err := NewSet(context.Background(), f3, s2, Options{Now: clk.Now, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if s3.auths["users"].(*jwtAuth).jwks == j1 {
		t.Fatal("a changed jwks_url reused the old cache")
	}
	s2.Close()
	<-j1.done // stopped: no one uses it any more
	s3.Close()
	s3.Close() // twice is harmless

	// A set built from a closed predecessor starts afresh.
	s4, err := NewSet(context.Background(), f, s1, Options{Now: clk.Now, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if s4.auths["users"].(*jwtAuth).jwks == j1 {
		t.Fatal("took over a stopped refresher")
	}
	s4.Close()
}

func TestJWKSCacheFor(t *testing.T) {
	j := &jwks{min: 30 * time.Second, max: time.Hour}
	tests := []struct {
		cc   []string
		want time.Duration
	}{
		{nil, time.Hour},
		{[]string{"public, max-age=600"}, 10 * time.Minute},
		{[]string{"max-age=5"}, 30 * time.Second},
		{[]string{"max-age=99999999"}, time.Hour},
		{[]string{"no-store"}, 30 * time.Second},
		{[]string{"public", "max-age=120, must-revalidate"}, 2 * time.Minute},
		{[]string{"max-age=-3"}, time.Hour},
		{[]string{"max-age=abc"}, time.Hour},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.cc, "|"), func(t *testing.T) {
			if got := j.cacheFor(tt.cc); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestParseJWKS(t *testing.T) {
	rs, es, ed := signerFor(t, "RS256", 0), signerFor(t, "ES384", 0), signerFor(t, "EdDSA", 0)
	offCurve := jwkOf(signerFor(t, "ES256", 0).pub, "bad")
	offCurve["y"] = offCurve["x"]
	small := jwkOf(rs.pub, "small")
	small["n"] = "AQAB"
	tests := []struct {
		name    string
		keys    []any
		want    []string // kids kept
		skipped int
		wantErr string
	}{
		{"rsa, ec, okp", []any{jwkOf(rs.pub, "r"), jwkOf(es.pub, "e"), jwkOf(ed.pub, "d")}, []string{"r", "e", "d"}, 0, ""},
		{"encryption key skipped", []any{map[string]any{"kty": "RSA", "use": "enc"}, jwkOf(rs.pub, "r")}, []string{"r"}, 1, ""},
		{"symmetric key skipped", []any{map[string]any{"kty": "oct", "k": "c2VjcmV0"}, jwkOf(ed.pub, "d")}, []string{"d"}, 1, ""},
		{"off-curve point skipped", []any{offCurve, jwkOf(ed.pub, "d")}, []string{"d"}, 1, ""},
		{"short RSA key skipped", []any{small, jwkOf(ed.pub, "d")}, []string{"d"}, 1, ""},
		{"unknown curve skipped", []any{map[string]any{"kty": "EC", "crv": "P-192"}, jwkOf(ed.pub, "d")}, []string{"d"}, 1, ""},
		{"X25519 skipped", []any{map[string]any{"kty": "OKP", "crv": "X25519", "x": "AA"}, jwkOf(ed.pub, "d")}, []string{"d"}, 1, ""},
		{"bad base64 skipped", []any{map[string]any{"kty": "RSA", "n": "***", "e": "AQAB"}, jwkOf(ed.pub, "d")}, []string{"d"}, 1, ""},
		{"key not an object", []any{"x", jwkOf(ed.pub, "d")}, []string{"d"}, 1, ""},
		{"nothing usable", []any{map[string]any{"kty": "oct"}}, nil, 1, "no usable signing key"},
		{"empty", []any{}, nil, 0, "no usable signing key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, _ := json.Marshal(map[string]any{"keys": tt.keys})
			keys, skipped, err := parseJWKS(body)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var kids []string
			for _, k := range keys {
				kids = append(kids, k.kid)
			}
			if !slices.Equal(kids, tt.want) || len(skipped) != tt.skipped {
				t.Fatalf("kept %v skipped %v", kids, skipped)
			}
		})
	}
	if _, _, err := parseJWKS([]byte("not json")); err == nil {
		t.Fatal("not JSON accepted")
	}
}

// TestJWKSKeyAlgPinned: a JWK that names its alg verifies only that alg,
// so an RS256 key is not also accepted for PS256 tokens.
func TestJWKSKeyAlgPinned(t *testing.T) {
	rs := signerFor(t, "RS256", 0)
	k := jwkOf(rs.pub, "k1")
	k["alg"] = "RS256"
	p := newIDP(t, k)
	f := parse(t, jwtYAML("      jwks_url: "+p.URL, "RS256", "PS256"), usersRoute)
	s := testSet(t, f, Options{Now: newClock().Now})
	a := s.auths["users"].(*jwtAuth)
	if _, r := a.verify(t.Context(), rs.sign(t, claims(nil), "k1")); r != ReasonNone {
		t.Fatalf("RS256: %s", r)
	}
	ps := signerFor(t, "PS256", 0)
	if _, r := a.verify(t.Context(), ps.sign(t, claims(nil), "k1")); r != ReasonUnknownKID {
		t.Fatalf("PS256 with an RS256-pinned key: %q", r)
	}
}

// TestJWKSOutlivesBuildContext: the context NewSet was given ending (a
// reload requested over the admin API, say) does not stop the refresher;
// Close does.
func TestJWKSOutlivesBuildContext(t *testing.T) {
	sg := signerFor(t, "RS256", 0)
	p := newIDP(t, jwkOf(sg.pub, "k1"))
	f := parse(t, jwksFile(t, p, "\n      jwks_refresh: {min: 1m}"), usersRoute)
	clk := newClock()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := NewSet(ctx, f, nil, Options{Now: clk.Now, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	started(t, s)
	cancel()
	j := s.auths["users"].(*jwtAuth).jwks
	p.set(http.StatusOK, jwkOf(sg.pub, "k1"), jwkOf(signerFor(t, "ES256", 0).pub, "k2"))
	if ttl := j.refreshShared(context.Background()); ttl == 0 {
		t.Fatal("refresh failed after the build context ended")
	}
	if got := j.kids(); !slices.Equal(got, []string{"k1", "k2"}) {
		t.Fatalf("kids %v", got)
	}
	select {
	case <-j.done:
		t.Fatal("the refresher stopped with the build context")
	default:
	}
	s.Close()
	<-j.done
}

// TestJWKSBackgroundSchedule runs the refresher on its own schedule: retry
// after a failed start-up fetch, then refetch when Cache-Control's max-age
// (bounded by jwks_refresh) runs out. It waits on the endpoint's own
// notifications, about 2 s of real timers, and asserts no durations.
func TestJWKSBackgroundSchedule(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for real refresh timers")
	}
	sg := signerFor(t, "ES256", 0)
	p := newIDP(t)
	fetched := make(chan int, 16)
	p.mu.Lock()
	p.status, p.fetched, p.cacheControl = http.StatusBadGateway, fetched, "max-age=0"
	p.mu.Unlock()
	f := parse(t, jwksFile(t, p, "\n      jwks_refresh: {min: 1s, max: 1s}"), usersRoute)
	s := testSet(t, f, Options{Now: newClock().Now})
	if got := <-fetched; got != http.StatusBadGateway {
		t.Fatalf("first fetch answered %d", got)
	}
	started(t, s)
	if s.Ready() == nil {
		t.Fatal("ready without keys")
	}
	p.set(http.StatusOK, jwkOf(sg.pub, "k1"))
	for <-fetched != http.StatusOK { // the retry
	}
	j := s.auths["users"].(*jwtAuth).jwks
	// The store follows the answer: wait for it through the shared path.
	j.refreshShared(context.Background())
	if err := s.Ready(); err != nil {
		t.Fatalf("not ready after the retry: %v", err)
	}
	p.set(http.StatusOK, jwkOf(sg.pub, "k1"), jwkOf(signerFor(t, "EdDSA", 0).pub, "k2"))
	for <-fetched != http.StatusOK { // the scheduled refresh
	}
	for !slices.Contains(j.kids(), "k2") {
		<-fetched // the store may trail the answer; the next refresh settles it
	}
}

// TestJWKSOverTLS fetches keys over a real TLS handshake with the client
// given in Options; the default client, which does not trust the test CA,
// is refused by the handshake and Ready says so.
func TestJWKSOverTLS(t *testing.T) {
	sg := signerFor(t, "ES256", 0)
	body, _ := json.Marshal(map[string]any{"keys": []any{jwkOf(sg.pub, "k1")}})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=300")
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	f := parse(t, jwtYAML("      jwks_url: "+srv.URL+"/jwks", "ES256"), usersRoute)

	client := srv.Client()
	defer client.CloseIdleConnections()
	s := testSet(t, f, Options{Now: newClock().Now, HTTPClient: client})
	started(t, s)
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	h, up := handler(t, s, f, 0)
	if w := do(h, "/", bearer(sg.sign(t, claims(nil), "k1"))); w.Code != 204 || up.p.Subject != "user-1" {
		t.Fatalf("status %d", w.Code)
	}

	untrusting := testSet(t, f, Options{Now: newClock().Now})
	started(t, untrusting)
	if err := untrusting.Ready(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Ready with an untrusted certificate: %v", err)
	}
}

// TestJWKSKIDMissStorm: 1,000 concurrent tokens naming kids the provider
// does not have (random ones, and a real kid with the alg of another key
// type), against a provider that answers slowly and flaps between two key
// sets: every request is refused, no forged kid verifies, and the provider
// sees at most one fetch per min interval, not one per request.
func TestJWKSKIDMissStorm(t *testing.T) {
	rsaKey, ecKey, other := signerFor(t, "RS256", 0), signerFor(t, "ES256", 0), signerFor(t, "RS256", 1)
	var hits atomic.Int64
	flap := []map[string]any{jwkOf(rsaKey.pub, "rsa")}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		time.Sleep(50 * time.Millisecond)
		keys := flap
		if n%2 == 0 {
			keys = append(slices.Clone(flap), jwkOf(other.pub, "other"))
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	}))
	t.Cleanup(srv.Close)
	f := parse(t, jwtYAML("      jwks_url: "+srv.URL+"\n      jwks_refresh: {min: 30s}", "RS256", "ES256"), usersRoute)
	clk := newClock()
	s := testSet(t, f, Options{Now: clk.Now})
	started(t, s)
	a := s.auths["users"].(*jwtAuth)
	good := rsaKey.sign(t, claims(nil), "rsa")
	// An ES256 token that names the RSA key's kid: the kid is known, the
	// key cannot verify this alg, so it is a miss like an unknown kid.
	crossType := ecKey.sign(t, claims(nil), "rsa")
	start := hits.Load()
	const rounds, perRound = 4, 250
	for round := range rounds {
		var wg sync.WaitGroup
		for i := range perRound {
			wg.Go(func() {
				tok := crossType
				if i%2 == 0 {
					tok = ecKey.sign(t, claims(nil), fmt.Sprintf("storm-%d-%d", round, i))
				}
				if p, r := a.verify(context.Background(), tok); p != nil || (r != ReasonUnknownKID && r != ReasonSignature) {
					t.Errorf("a token with a kid the provider lacks: principal %v, reason %q", p, r)
				}
			})
		}
		wg.Wait()
		if p, r := a.verify(context.Background(), good); p == nil {
			t.Fatalf("round %d: the real key's token: %q", round, r)
		}
		clk.Add(30 * time.Second)
	}
	// One fetch per round at most (the first round is within min of the
	// start-up fetch), whatever the number of requests.
	if got := hits.Load() - start; got > rounds {
		t.Fatalf("%d tokens with missing kids caused %d fetches, want at most %d", rounds*perRound, got, rounds)
	}
}

// TestJWKSRedirectToPlainHTTP: an https jwks_url that redirects to plain
// http (a misconfigured provider or CDN; anyone on that path could answer)
// gives no keys: a token signed by the key served over http is refused,
// and Ready says why.
func TestJWKSRedirectToPlainHTTP(t *testing.T) {
	sg := signerFor(t, "ES256", 0)
	body, _ := json.Marshal(map[string]any{"keys": []any{jwkOf(sg.pub, "k1")}})
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(body) }))
	defer plain.Close()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/jwks", http.StatusFound)
	}))
	defer srv.Close()
	f := parse(t, jwtYAML("      jwks_url: "+srv.URL+"/jwks", "ES256"), usersRoute)
	client := srv.Client()
	defer client.CloseIdleConnections()
	s := testSet(t, f, Options{Now: newClock().Now, HTTPClient: client})
	started(t, s)
	if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "redirected to plain http") {
		t.Fatalf("Ready: %v", err)
	}
	h, up := handler(t, s, f, 0)
	if w := do(h, "/", bearer(sg.sign(t, claims(nil), "k1"))); w.Code != 401 || up.calls != 0 {
		t.Fatalf("a key fetched over plain http verified a token: %d", w.Code)
	}
}
