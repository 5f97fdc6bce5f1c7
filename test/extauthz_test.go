package test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Forward-auth as the edge serves it, under concurrency: every request the
// upstream receives carries the user the auth server gave that request and
// not the client's forged one; the auth server sees the client address
// the edge resolved, never the client's X-Forwarded-For; denials come back
// as the server wrote them; the checks are counted in /metrics.
func TestExtAuthzAtTheEdge(t *testing.T) {
	var checks atomic.Int64
	var badXFF atomic.Int64
	authz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		checks.Add(1)
		if r.Header.Get("X-Forwarded-For") != "127.0.0.1" {
			badXFF.Add(1)
		}
		user, ok := strings.CutPrefix(r.Header.Get("Cookie"), "session=")
		if !ok || strings.HasPrefix(user, "bad") {
			w.Header().Set("Location", "https://login.example/?rd="+r.Header.Get("X-Forwarded-Uri"))
			w.WriteHeader(http.StatusFound)
			_, _ = io.WriteString(w, "sign in")
			return
		}
		w.Header().Set("Remote-User", user)
		w.Header().Set("X-Forwarded-For", "10.6.6.6") // not listed, and never the server's to set
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(authz.Close)
	up := newHeaderUpstream(t)
	e := startEdge(t, header+fmt.Sprintf(`authenticators:
  sso:
    ext_authz: {http_url: %q, timeout: 1m, headers: [Cookie], upstream_headers: [Remote-User], claims_from_headers: {Remote-User: sub}}
upstreams:
  up: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, auth: sso, upstream: up}
`, authz.URL+"/verify", up.addr()))
	base := "http://" + e.Addr("http")
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	var wg sync.WaitGroup
	var ids atomic.Int64
	var allowed, denied atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				id := fmt.Sprint(ids.Add(1))
				user := fmt.Sprintf("user%d-%d", g, i%5)
				if i%4 == 0 {
					user = "bad" + user
				}
				req, _ := http.NewRequest(http.MethodGet, base+"/p/"+id, nil)
				req.Header.Set("X-Test-Id", id)
				req.Header.Set("Cookie", "session="+user)
				req.Header.Set("Remote-User", "admin")
				req.Header.Set("X-Forwarded-For", "203.0.113.9")
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				seen, reached := up.got(id)
				switch {
				case strings.HasPrefix(user, "bad"):
					denied.Add(1)
					if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://login.example/?rd=/p/"+id || string(body) != "sign in" || reached {
						t.Errorf("denied %s: %d %q %q reached=%v", id, resp.StatusCode, resp.Header.Get("Location"), body, reached)
					}
				default:
					allowed.Add(1)
					if resp.StatusCode != http.StatusOK || !reached || seen.Header.Get("Remote-User") != user || strings.Contains(seen.Header.Get("X-Forwarded-For"), "10.6.6.6") {
						t.Errorf("allowed %s: %d, upstream saw Remote-User %q, X-Forwarded-For %q", id, resp.StatusCode, seen.Header.Get("Remote-User"), seen.Header.Get("X-Forwarded-For"))
					}
				}
			}
		}()
	}
	wg.Wait()
	if badXFF.Load() != 0 || checks.Load() != 320 {
		t.Fatalf("%d checks, %d with the client's X-Forwarded-For", checks.Load(), badXFF.Load())
	}
	_, metrics := get(t, "http://"+e.Addr("admin")+"/metrics")
	for _, want := range []string{
		fmt.Sprintf(`causeway_ext_authz_checks_total{authenticator="sso",result="allow"} %d`, allowed.Load()),
		fmt.Sprintf(`causeway_ext_authz_checks_total{authenticator="sso",result="deny"} %d`, denied.Load()),
		`causeway_ext_authz_duration_seconds_count{authenticator="sso"} 320`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
