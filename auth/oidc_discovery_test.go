package auth

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestOIDCDiscoveryNotPoisonedByAClient: a client that hangs up while the
// edge discovers the provider (a slow provider, an impatient or hostile
// browser) must not make the provider look down to everybody else.
// Discovery ran on the request's context, so its cancellation was
// remembered as a failed discovery for 5 s: every sign-in in that time was
// answered status_on_error, and a logout skipped the provider's.
func TestOIDCDiscoveryNotPoisonedByAClient(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		// wantAt is where the next request's redirects end: at the
		// provider.
		wantAt string
	}{
		{"the next sign-in", "/page", "login/username"},
		{"the next logout", "/oauth2/logout", "logged-out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := startOP(t)
			gate := make(chan struct{})
			op.discoveryGate.Store(&gate)
			e := startEdge(t, op, "")

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			go func() {
				defer close(done)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/page", nil)
				req.Header.Set("Accept", "text/html")
				if res, err := e.browser(t).Do(req); err == nil {
					res.Body.Close()
				}
			}()
			<-op.discoveryHeld
			cancel()
			<-done
			// The edge gives up its discovery request only if it tied it
			// to the client's request: wait for that a while (it comes at
			// once when it does), then the provider answers.
			select {
			case <-op.discoveryDropped:
			case <-time.After(500 * time.Millisecond):
			}
			op.discoveryGate.Store(nil)
			close(gate)

			res, body := navigate(t, e.browser(t), e.srv.URL+tc.path)
			if !strings.HasPrefix(res.Request.URL.String(), op.issuer) || !strings.Contains(res.Request.URL.Path, tc.wantAt) {
				t.Fatalf("%s: %d at %s, not at the provider: %.200s", tc.name, res.StatusCode, res.Request.URL, body)
			}
		})
	}
}
