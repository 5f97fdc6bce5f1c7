package auth

import (
	"net/http"
	"sync"
	"syscall"
	"testing"
)

// OPA frozen with SIGSTOP mid-traffic, then thawed. While frozen, every
// check ends at the ext_authz timeout (200 ms) and on_error decides
// (deny: 503, the upstream never called). Thawed, OPA answers the checks
// it had queued, on the connections they were sent on; those answers
// must never be read as a later check's decision. After the thaw, 50
// requests of a user the policy denies are each denied, and the allowed
// user is allowed. No defect: a check cut by its timeout closes its
// connection.
func TestExtAuthzOPAFrozenThenThawed(t *testing.T) {
	opa, proc := startOPAProcess(t, `package envoy.authz

default allow := false

allow if input.attributes.request.http.headers["x-user"] == "alice"

result := {"allowed": true} if allow

result := {"allowed": false, "http_status": 403} if not allow
`)
	thawed := false
	t.Cleanup(func() {
		if !thawed {
			_ = proc.Signal(syscall.SIGCONT)
		}
	})
	f := parse(t, "  authz:\n    ext_authz:\n      opa_url: "+opa+"/v1/data/envoy/authz/result\n      timeout: 200ms\n      on_error: deny\n      status_on_error: 503",
		`{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
	h, up := handler(t, testSet(t, f, Options{}), f, 0)
	as := func(user string) http.Header { return http.Header{"X-User": {user}} }
	for _, c := range []struct {
		user string
		want int
	}{{"alice", 204}, {"mallory", 403}} {
		if w := do(h, "/", as(c.user)); w.Code != c.want {
			t.Fatalf("before the freeze, %s: %d, want %d", c.user, w.Code, c.want)
		}
	}
	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	up.mu.Lock()
	callsBefore := up.calls
	up.mu.Unlock()
	var wg sync.WaitGroup
	codes := make([]int, 20)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = do(h, "/", as("alice")).Code
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 503 {
			t.Fatalf("frozen OPA, check %d: %d, want on_error's 503 (all: %v)", i, c, codes)
		}
	}
	if err := proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	thawed = true
	for i := range 50 {
		if w := do(h, "/", as("mallory")); w.Code != 403 {
			t.Fatalf("after the thaw, mallory's request %d: %d, want 403: %s", i, w.Code, w.Body)
		}
		if w := do(h, "/", as("alice")); w.Code != 204 {
			t.Fatalf("after the thaw, alice's request %d: %d, want 204", i, w.Code)
		}
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if got := up.calls - callsBefore; got != 50 {
		t.Fatalf("the upstream was called %d times after the freeze, want 50 (alice's after the thaw)", got)
	}
}
