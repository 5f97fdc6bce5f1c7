package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/causewayhq/causeway/internal/testutil"
)

// Every check must get its own decision however the server misframes its
// answers: a denied request never reaches the upstream, and an allowed one
// carries the X-Auth-User of its own decision, never another's or a forged
// one. A spurious error (a 503 here) is tolerated; a wrong decision is not.
func TestExtAuthzHTTPNeverHandsStrayBytesToTheNextCheck(t *testing.T) {
	const rounds, workers = 300, 8
	for _, mode := range testutil.StrayAuthzModes {
		t.Run(mode, func(t *testing.T) {
			url := testutil.StrayAuthz(t, mode, func() {})
			f := parse(t, "  authz:\n    ext_authz:\n      http_url: "+url+"\n      timeout: 1m\n      headers: [X-Who]\n      upstream_headers: [X-Auth-User]",
				`{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
			s := testSet(t, f, Options{})
			mw, err := s.Middleware(f.Routes[0])
			if err != nil {
				t.Fatal(err)
			}
			// The protected upstream reports what reached it.
			h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Saw-User", r.Header.Get("X-Auth-User"))
				w.Header().Set("X-Saw-Who", r.Header.Get("X-Who"))
				w.WriteHeader(http.StatusOK)
			}))
			var wg sync.WaitGroup
			var mu sync.Mutex
			var wrong []string
			errs := 0
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range rounds / workers * 2 {
						who := strconv.Itoa(w*1000 + i)
						r := httptest.NewRequest(http.MethodGet, "/", nil)
						r.Header.Set("X-Who", who)
						rec := httptest.NewRecorder()
						h.ServeHTTP(rec, r)
						allowed := (w*1000+i)%2 == 0
						var bad string
						switch {
						case rec.Code >= 500:
							mu.Lock()
							errs++
							mu.Unlock()
						case allowed && (rec.Code != 200 || rec.Header().Get("X-Saw-User") != who || rec.Header().Get("X-Saw-Who") != who):
							bad = fmt.Sprintf("%s (allow): %d, upstream saw user %q", who, rec.Code, rec.Header().Get("X-Saw-User"))
						case !allowed && rec.Code != 403:
							bad = fmt.Sprintf("%s (deny): %d, upstream saw user %q", who, rec.Code, rec.Header().Get("X-Saw-User"))
						}
						if bad != "" {
							mu.Lock()
							wrong = append(wrong, bad)
							mu.Unlock()
						}
					}
				}()
			}
			wg.Wait()
			if len(wrong) > 0 {
				t.Fatalf("%d of %d checks got another answer (%d errors), e.g. %v", len(wrong), rounds/workers*2*workers, errs, wrong[:min(5, len(wrong))])
			}
			t.Logf("%d spurious errors", errs)
		})
	}
}

// A cache key header:NAME covers every spelling of NAME the server is sent:
// under server.allow_underscore_headers X_User reaches the policy beside
// X-User (and a CGI-style policy reads both as HTTP_X_USER), so two
// requests with one X-User and different X_User must not share a decision.
func TestExtAuthzCacheKeyCoversUnderscoreSpellings(t *testing.T) {
	srv := newAuthzServer(t, policy)
	f := parse(t, extAuthzYAML(grpcTarget(srv), "\n      cache: {ttl: 1m, key: [header:Authorization, header:X-User]}"), `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
	h, _ := handler(t, testSet(t, f, Options{}), f, 0)
	for _, tc := range []struct {
		hdr   http.Header
		calls int64 // checks the server has seen after this request
	}{
		{http.Header{"X-User": {"a"}}, 1},
		{http.Header{"X-User": {"a"}, "X_User": {"b"}}, 2},
		{http.Header{"X-User": {"a"}, "X_User": {"c"}}, 3},
		{http.Header{"X-User": {"a"}, "X_user": {"c"}}, 4},                   // another spelling is another request to the policy
		{http.Header{"X-User": {"a"}, "X_User": {"b"}}, 4},                   // the same request again: a hit
		{http.Header{"X-User": {"a"}, "X_User": {"b"}, "X-User_": {"z"}}, 4}, // another name (HTTP_X_USER_): not in the key
		{http.Header{"X-User": {"a"}}, 4},
	} {
		tc.hdr.Set("Authorization", "Bearer good-alice")
		if w := do(h, "/", tc.hdr); w.Code != 204 {
			t.Fatalf("%v: %d", tc.hdr, w.Code)
		}
		if got := srv.calls.Load(); got != tc.calls {
			t.Fatalf("after %v: %d checks, want %d", tc.hdr, got, tc.calls)
		}
	}
}

// No X-User value alone shares a key with an X-User and an X_User: the
// key is length-prefixed either way.
func TestExtAuthzCacheKeyUnderscoreSpellingsNoConcatenation(t *testing.T) {
	twin := http.Header{"X-User": {"a"}, "X_User": {"b"}}
	forged := http.Header{"X-User": {headerKey(twin, "X-User")}}
	if headerKey(forged, "X-User") == headerKey(twin, "X-User") {
		t.Fatalf("%q and %q share a key", forged, twin)
	}
}

// The ext_authz transport is chosen once, when the set is built, for the
// scheme of the server's URL (lower case whatever the file wrote), and the
// RoundTripper it returns is what carries the checks. A transport that
// cannot be made refuses the configuration.
func TestExtAuthzTransportIsChosenOnceByTheURLScheme(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	tests := []struct {
		desc, target, scheme string
		sends                bool // the URL answers: a check is sent through the transport
	}{
		{"plain forward-auth", "http_url: " + srv.URL + "/check", "http", true},
		{"plain OPA", "opa_url: " + srv.URL + "/v1/data/x", "http", false},
		{"https forward-auth", "http_url: https://authz.example.com/check", "https", false},
		{"upper-case scheme", "http_url: HTTPS://authz.example.com/check", "https", false},
		{"https OPA", "opa_url: https://opa.example.com/v1/data/x", "https", false},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			f := parse(t, "  authz:\n    ext_authz:\n      "+tc.target+"\n      timeout: 1m",
				`{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
			var schemes []string
			var sent atomic.Int64
			s := testSet(t, f, Options{ExtAuthzTransport: func(scheme string, tr *http.Transport) (http.RoundTripper, error) {
				schemes = append(schemes, scheme)
				return roundTripFunc(func(r *http.Request) (*http.Response, error) {
					sent.Add(1)
					return tr.RoundTrip(r)
				}), nil
			}})
			if len(schemes) != 1 || schemes[0] != tc.scheme {
				t.Fatalf("transport made for schemes %q, want one for %q", schemes, tc.scheme)
			}
			if !tc.sends {
				return
			}
			mw, err := s.Middleware(f.Routes[0])
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			mw(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })).
				ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
			if rec.Code != http.StatusNoContent || sent.Load() != 1 {
				t.Fatalf("status %d, %d checks through the transport; want 204 and 1", rec.Code, sent.Load())
			}
			if len(schemes) != 1 {
				t.Fatalf("transport made again per check: %q", schemes)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		f := parse(t, "  authz:\n    ext_authz:\n      http_url: "+srv.URL+"\n      timeout: 1m",
			`{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
		_, err := NewSet(context.Background(), f, nil, Options{Logger: quiet,
			ExtAuthzTransport: func(string, *http.Transport) (http.RoundTripper, error) { return nil, errors.New("no transport") }})
		if err == nil || !strings.Contains(err.Error(), "no transport") {
			t.Fatalf("NewSet: %v, want the transport's error", err)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
