package auth

import (
	"html"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestOIDCProviderStalls freezes one step of the provider (its requests
// are read and never answered, as from a provider process stopped with
// SIGSTOP) in the middle of a sign-in: the discovery, the code exchange,
// the fetch of its signing keys. The browser gets status_on_error (the
// provider could not be reached), not a refusal of its sign-in; nothing
// reaches the upstream meanwhile; a session signed in before keeps
// working during the stall; and once the provider answers again a new
// sign-in completes. Each stall ends at the edge's HTTP client's bound on
// a provider that sends no answer (5 s), inside the 10 s provider
// timeout. goleak (TestMain) checks that nothing is left running.
func TestOIDCProviderStalls(t *testing.T) {
	const (
		discovery = "/.well-known/openid-configuration"
		token     = "/oauth/token"
		keys      = "/keys"
	)
	for _, tc := range []struct {
		name   string
		suffix string
		// fresh: the callback lands on a replica that has not used the
		// provider yet (it must discover it and fetch its keys);
		// otherwise on the replica that started the sign-in.
		fresh bool
		// atStart: the stall is met when the sign-in starts, not at the
		// callback.
		atStart bool
	}{
		{name: "discovery at the start of a sign-in", suffix: discovery, atStart: true},
		{name: "discovery at the callback", suffix: discovery, fresh: true},
		{name: "code exchange at the callback", suffix: token},
		{name: "signing keys at the callback", suffix: keys, fresh: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := startOP(t)
			e := startEdge(t, op, "")
			signedIn := e.browser(t)
			if res, body := e.signIn(t, signedIn, op, "/orders"); res.StatusCode != http.StatusOK {
				t.Fatalf("sign-in before the stall: %d %s", res.StatusCode, body)
			}
			_, _, before := e.seen.last()

			c := e.browser(t)
			var form url.Values
			if !tc.atStart {
				res, body := get(t, c, e.srv.URL+"/page", true)
				m := loginID.FindStringSubmatch(body)
				if res.StatusCode != http.StatusOK || m == nil {
					t.Fatalf("expected the provider's login form, got %d: %.300s", res.StatusCode, body)
				}
				form = url.Values{"id": {html.UnescapeString(m[1])}, "username": {opUser}, "password": {opPassword}}
			}
			if tc.fresh || tc.atStart {
				_, h := e.replica(t)
				e.serve(h)
			}
			st := &opStall{suffix: tc.suffix, thawed: make(chan struct{})}
			op.stall.Store(st)

			type answer struct {
				status int
				path   string
				body   string
				err    error
			}
			done := make(chan answer, 1)
			go func() {
				var res *http.Response
				var err error
				if tc.atStart {
					req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/page", nil)
					req.Header.Set("Accept", "text/html")
					res, err = c.Do(req)
				} else {
					res, err = c.PostForm(op.issuer+"login/username", form)
				}
				if err != nil {
					done <- answer{err: err}
					return
				}
				defer res.Body.Close()
				var b strings.Builder
				_, err = io.Copy(&b, res.Body)
				done <- answer{status: res.StatusCode, path: res.Request.URL.Path, body: b.String(), err: err}
			}()

			// While the provider is frozen: the session signed in before
			// needs no provider and keeps working.
			for st.held.Load() == 0 {
				select {
				case a := <-done:
					t.Fatalf("answered before the provider was asked: %+v", a)
				case <-time.After(10 * time.Millisecond):
				}
			}
			res, body := get(t, signedIn, e.srv.URL+"/orders", false)
			hdr, _, n := e.seen.last()
			if res.StatusCode != http.StatusOK || hdr.Get("X-User-Id") != "id1" || n != before+1 {
				t.Fatalf("established session during the stall: %d %s (upstream: %d requests, X-User-Id %q)", res.StatusCode, body, n-before, hdr.Get("X-User-Id"))
			}

			var a answer
			select {
			case a = <-done:
			case <-time.After(20 * time.Second): // a hang guard, not a speed limit
				t.Fatal("the sign-in is still waiting for the frozen provider after 20 s")
			}
			if a.err != nil {
				t.Fatal(a.err)
			}
			want := "/page"
			if !tc.atStart {
				want = "/oauth2/callback"
			}
			if a.status != http.StatusServiceUnavailable || a.path != want || !strings.Contains(a.body, "could not be authorized") {
				t.Fatalf("sign-in while the provider is frozen: %d at %s: %.300s; want 503 (status_on_error) at %s", a.status, a.path, a.body, want)
			}
			if _, _, m := e.seen.last(); m != n {
				t.Fatalf("the upstream received %d requests during the failed sign-in", m-n)
			}

			// Thawed: the provider answers what it held, and a new
			// sign-in completes (after the 5 s a failed discovery is
			// remembered, when that is what failed).
			close(st.thawed)
			op.stall.Store(nil)
			if tc.suffix == discovery {
				e.clock.advance(discoveryRetry)
			}
			again := e.browser(t)
			if res, body := e.signIn(t, again, op, "/orders"); res.StatusCode != http.StatusOK || !strings.Contains(body, "upstream /orders") {
				t.Fatalf("sign-in after the thaw: %d %s", res.StatusCode, body)
			}
			if hdr, _, m := e.seen.last(); m != n+1 || hdr.Get("X-User-Id") != "id1" {
				t.Fatalf("after the thaw the upstream received %d requests, X-User-Id %q", m-n, hdr.Get("X-User-Id"))
			}
		})
	}
}
