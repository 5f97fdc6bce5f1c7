package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// variantUpstream answers with its name, the key name the edge forwarded
// and the body it read: what a client checks its answer against.
func variantUpstream(t *testing.T, name string, got *atomic.Int64) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			return // the edge's health checks: not a client's request
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got.Add(1)
		_, _ = fmt.Fprintf(w, "%s|%s|%s", name, r.Header.Get("X-Key-Name"), body)
	}))
	t.Cleanup(s.Close)
	return s
}

// openFDs counts the process's open file descriptors (Linux).
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// 100 reloads in a row under 32 clients, accepted ones alternating
// between two variants and every third one refused for a different
// reason each time. Variant a serves upstream A to API key "ka" only,
// variant b upstream B to "kb" only, so an answer from a mix of two
// generations (one's route with the other's authenticators) shows: every
// 200 must come from the upstream of the key's own variant, carry that
// key's name, and echo the request's own token; the only other answer
// allowed is 401 (the key of the variant not live). Each refused file
// would switch to the other variant: none of its routes, keys or
// upstreams may ever answer. At the end the last accepted variant
// serves, the upstreams received exactly the requests answered 200, the
// pool registry holds the live pool alone and the process has no more
// file descriptors than before the reloads (within the clients' and the
// live pool's connections).
func TestRapidReloadsUnderTraffic(t *testing.T) {
	var reachedA, reachedB atomic.Int64
	upA, upB := variantUpstream(t, "A", &reachedA), variantUpstream(t, "B", &reachedB)
	dir := t.TempDir()
	keys := map[string]string{}
	for _, v := range []string{"a", "b"} {
		sum := sha256.Sum256([]byte("secret-" + v))
		keys[v] = filepath.Join(dir, "keys-"+v+".txt")
		writeFile(t, keys[v], "k"+v+":"+hex.EncodeToString(sum[:])+"\n")
	}
	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
	upstreamOf := map[string]string{"a": hostPort(upA), "b": hostPort(upB)}
	// The timeout is part of the pool's key: each accepted reload takes a
	// new pool, which its generation must give back when it retires. The
	// health check is a goroutine of each generation's upstream.
	timeoutOf := map[string]string{"a": "30s", "b": "31s"}
	cfg := func(v string, i int, broken string) string {
		c := listenHeader + fmt.Sprintf(`authenticators:
  k: {api_key: {header: X-API-Key, keys_file: %q, forward_name: X-Key-Name}}
rate_limits:
  per-key: {key: api_key, limit: 1000000, per: 1s}
upstreams:
  u: {endpoints: [%q], timeout: %s, health_check: {path: /healthz, interval: 1m}}
routes:
  - {name: r-%s-%d, match: {path_prefix: /}, auth: k, rate_limit: per-key, upstream: u}
`, keys[v], upstreamOf[v], timeoutOf[v], v, i)
		return c + broken
	}
	// Each refusal is of a different part of the file; all name parts a
	// good file of the other variant would make live.
	refusals := []struct{ name, broken string }{
		{"a plugin config with an unknown key", "plugins:\n  c: {use: cors, config: {no_such_key: 1}}\n"},
		{"an undefined upstream", "  - {name: bad, match: {path_prefix: /x}, upstream: missing}\n"},
		{"a keys file that does not exist", "  - {name: bad, match: {path_prefix: /x}, auth: gone, upstream: u}\nauthenticators:\n  gone: {api_key: {keys_file: \"" + filepath.Join(dir, "none.txt") + "\"}}\n"},
		{"an upstream CA bundle that does not parse", "  - {name: bad, match: {path_prefix: /x}, upstream: t}\nupstreams:\n  t: {endpoints: [\"127.0.0.1:9\"], tls: {server_name: x.test, ca_file: \"" + garbage + "\"}}\n"},
		{"a redis address that does not parse", "redis: {url: \"redis://127.0.0.1:notaport/0\"}\n"},
		{"a bad jwks_url", "authenticators:\n  j: {jwt: {jwks_url: \"ftp://idp.invalid/jwks.json\", algorithms: [RS256]}}\n"},
	}
	te := startEdge(t, cfg("a", 0, ""))

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var ok, unauthorized, bad, sent atomic.Int64
	var firstBad sync.Once
	fail := func(format string, args ...any) {
		bad.Add(1)
		firstBad.Do(func() { t.Errorf(format, args...) })
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	do := func(v, token string) (int, string, error) {
		req, _ := http.NewRequest(http.MethodPost, te.url+"/p", strings.NewReader(token))
		req.Header.Set("X-API-Key", "secret-"+v)
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode, string(body), nil
	}
	// Idle connections are closed on both sides (the clients', the live
	// pool's) before each count: what is left is what the edge holds
	// itself. The first request starts what starts lazily.
	_, _, _ = do("a", "warm")
	quiesce := func() {
		client.CloseIdleConnections()
		te.live.Load().runtime(0).upstreams["u"].Pool.CloseIdle()
	}
	quiesce()
	time.Sleep(100 * time.Millisecond) // the servers see their peers close
	fdsBefore := openFDs(t)
	reachedA.Store(0)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				v := []string{"a", "b"}[(w+n)%2]
				token := "c" + strconv.Itoa(w) + "-" + strconv.Itoa(n)
				code, body, err := do(v, token)
				sent.Add(1)
				switch {
				case err != nil:
					fail("request %s: %v", token, err)
				case code == http.StatusUnauthorized:
					unauthorized.Add(1)
				case code != http.StatusOK:
					fail("request %s with key k%s: %d %q", token, v, code, body)
				case body != strings.ToUpper(v)+"|k"+v+"|"+token:
					fail("request %s with key k%s answered by a mix of generations or with another's body: %q", token, v, body)
				default:
					ok.Add(1)
				}
			}
		})
	}
	last := "a"
	accepted, refused := 0, 0
	for i := 1; i <= 100; i++ {
		next := map[string]string{"a": "b", "b": "a"}[last]
		if i%3 == 0 {
			rf := refusals[(i/3)%len(refusals)]
			writeFile(t, te.path, cfg(next, i, rf.broken))
			if err := te.Reload(context.Background()); err == nil {
				t.Fatalf("reload %d, %s: accepted", i, rf.name)
			}
			refused++
			continue
		}
		writeFile(t, te.path, cfg(next, i, ""))
		if err := te.Reload(context.Background()); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		last = next
		accepted++
		time.Sleep(2 * time.Millisecond)
	}
	stop()
	wg.Wait()
	if ok.Load() == 0 || unauthorized.Load() == 0 {
		t.Fatalf("%d answered 200, %d 401: the traffic did not see both variants", ok.Load(), unauthorized.Load())
	}
	if got := reachedA.Load() + reachedB.Load(); got != ok.Load() {
		t.Errorf("the upstreams received %d requests, %d were answered 200", got, ok.Load())
	}
	// The final state is the last accepted file, for every request now
	// (asked after the counts above).
	other := map[string]string{"a": "b", "b": "a"}[last]
	for n := range 20 {
		token := "final-" + strconv.Itoa(n)
		if code, body, err := do(last, token); err != nil || code != http.StatusOK || body != strings.ToUpper(last)+"|k"+last+"|"+token {
			t.Fatalf("after the reloads, key k%s: %d %q %v", last, code, body, err)
		}
		if code, _, err := do(other, token); err != nil || code != http.StatusUnauthorized {
			t.Fatalf("after the reloads, key k%s of the variant not live: %d %v", other, code, err)
		}
	}
	if got := te.LastReload(); !got.OK {
		t.Fatalf("last reload %+v, want the last accepted file's success", got)
	}
	// Every replaced generation retires: one pool left, and no descriptor
	// of an old generation (pool connections, watchers, keys files) left
	// open. The clients' own idle connections are closed first.
	var fdsAfter int
	deadline := time.Now().Add(10 * time.Second)
	for {
		quiesce()
		fdsAfter = openFDs(t)
		if te.pools.Len() == 1 && fdsAfter <= fdsBefore {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the last request: %d pools (want 1), %d file descriptors open (%d before the reloads)", te.pools.Len(), fdsAfter, fdsBefore)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d requests (%d answered 200, %d 401, %d wrong) across %d accepted and %d refused reloads; fds %d before, %d after",
		sent.Load(), ok.Load(), unauthorized.Load(), bad.Load(), accepted, refused, fdsBefore, fdsAfter)
}
