package test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/causewayhq/causeway/internal/testutil"
)

// startLoggingEdge is startEdge with the edge's log kept, for the cases
// whose only outward sign of a problem is a log line.
func startLoggingEdge(t *testing.T, config string) (*edge, *testutil.Buffer) {
	t.Helper()
	logs := &testutil.Buffer{}
	return startEdgeWithLogger(t, config, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))), logs
}

// waitFor polls cond until it holds or d passes; the polled conditions are
// outcomes of background work (a file watcher, a reconnect) that no clock
// injection reaches from this package.
func waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// Obsolete line folding (RFC 9112 §5.2): Go's parser, which the edge uses,
// replaces the fold with one space instead of refusing the request. The
// upstream must see the unfolded value and never a CR or LF inside it.
func TestObsFold(t *testing.T) {
	var mu sync.Mutex
	var seen []http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	defer up.Close()
	e := startEdge(t, header+fmt.Sprintf("upstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", up.Listener.Addr().String()))
	for _, tt := range []struct{ name, fold, want string }{
		{"space", "X-Folded: first\r\n  second\r\n", "first second"},
		{"tab", "X-Folded: first\r\n\tsecond\r\n", "first second"},
		{"several", "X-Folded: a\r\n b\r\n \t c\r\n", "a b c"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			before := len(seen)
			mu.Unlock()
			out := raw(t, e.Addr("http"), "GET /a HTTP/1.1\r\nHost: x\r\n"+tt.fold+"Connection: close\r\n\r\n")
			if ownHTTP1Engine() {
				// Causeway's engine refuses obs-fold (RFC 9112 5.2
				// allows either): nothing reaches the upstream.
				mu.Lock()
				n := len(seen) - before
				mu.Unlock()
				if !strings.HasPrefix(out, "HTTP/1.1 400") || n != 0 {
					t.Fatalf("edge answered %q, upstream saw %d requests", firstLine(out), n)
				}
				return
			}
			if !strings.HasPrefix(out, "HTTP/1.1 200") {
				t.Fatalf("edge answered %q", firstLine(out))
			}
			mu.Lock()
			got := seen[before:]
			mu.Unlock()
			if len(got) != 1 {
				t.Fatalf("upstream saw %d requests", len(got))
			}
			v := got[0].Values("X-Folded")
			if len(v) != 1 || v[0] != tt.want {
				t.Fatalf("upstream saw X-Folded %q, want %q", v, tt.want)
			}
			for name, vals := range got[0] {
				for _, val := range vals {
					if strings.ContainsAny(name+val, "\r\n") {
						t.Errorf("CR or LF reached the upstream in %s: %q", name, val)
					}
				}
			}
		})
	}
}

// handshake makes one TLS connection for name and returns the leaf served.
func handshake(addr, name string, pool *x509.CertPool, timeout time.Duration) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: timeout}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: name})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// The edge's certificate files deleted while it runs (a volume unmounted, a
// careless clean-up): the loaded certificate keeps being served to new
// handshakes, and the log says the files could not be read.
func TestCertificateFilesDeleted(t *testing.T) {
	up := newRecordingUpstream(t)
	dir := t.TempDir()
	certFile, keyFile, pool := serverCert(t, dir, "api.example.com")
	e, logs := startLoggingEdge(t, fmt.Sprintf(`version: 1
listen: {https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
tls:
  certificates: [{cert_file: %q, key_file: %q}]
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, certFile, keyFile, up.addr()))
	addr := e.Addr("https")
	first, err := handshake(addr, "api.example.com", pool, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{certFile, keyFile} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	const warning = "certificate files changed but could not be loaded"
	if !waitFor(5*time.Second, func() bool { return strings.Contains(logs.String(), warning) }) {
		t.Errorf("no log line says the certificate files are gone; log:\n%s", logs.String())
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "api.example.com"}}}
	defer client.CloseIdleConnections()
	for i := range 5 {
		leaf, err := handshake(addr, "api.example.com", pool, 5*time.Second)
		if err != nil {
			t.Fatalf("handshake %d after the files were deleted: %v", i, err)
		}
		if !leaf.Equal(first) {
			t.Fatalf("handshake %d got another certificate", i)
		}
		status, err := httpsGet(client, "https://"+addr+"/x")
		if err != nil || status != 200 {
			t.Fatalf("request %d after the files were deleted: %d %v", i, status, err)
		}
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Error("the log shows key material")
	}
}

func httpsGet(client *http.Client, url string) (int, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// ACME directory unreachable at start (tls.acme pointing at a closed
// loopback port, next to a static certificate): the edge starts, serves the
// static certificate, and a handshake for an ACME host fails cleanly and
// quickly instead of hanging or panicking.
func TestACMEDirectoryUnreachable(t *testing.T) {
	up := newRecordingUpstream(t)
	dir := t.TempDir()
	certFile, keyFile, pool := serverCert(t, dir, "static.example.com")
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	directory := "https://" + closed.Addr().String() + "/directory"
	closed.Close() // nothing listens there now: connections are refused
	e, logs := startLoggingEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
tls:
  certificates: [{cert_file: %q, key_file: %q}]
  acme: {email: ops@example.com, hosts: [acme.example.com], cache_dir: %q, directory_url: %q}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, certFile, keyFile, filepath.Join(dir, "acme"), directory, up.addr()))
	addr := e.Addr("https")

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "static.example.com"}}}
	defer client.CloseIdleConnections()
	if status, err := httpsGet(client, "https://"+addr+"/x"); err != nil || status != 200 {
		t.Fatalf("static host: %d %v", status, err)
	}

	// The ACME host: the handshake must fail (there is no certificate to
	// give), and within a bound far below the order timeout.
	for i := range 3 {
		start := time.Now()
		_, err := handshake(addr, "acme.example.com", nil, 5*time.Second)
		took := time.Since(start)
		t.Logf("ACME host handshake %d: %v after %s", i, err, took)
		if err == nil {
			t.Fatal("a handshake for the ACME host succeeded with no reachable ACME server")
		}
		if took > 10*time.Second {
			t.Fatalf("the handshake took %s", took)
		}
	}
	// The static host still works, and the edge still answers after the
	// failed orders.
	if status, err := httpsGet(client, "https://"+addr+"/x"); err != nil || status != 200 {
		t.Fatalf("static host after the failed orders: %d %v", status, err)
	}
	if strings.Contains(logs.String(), "panic") {
		t.Errorf("the log shows a panic:\n%s", logs.String())
	}
	// The failed orders are counted where an operator alerts on them.
	_, metrics := get(t, "http://"+e.Addr("admin")+"/metrics")
	if n, ok := metricValue(metrics, `causeway_acme_orders_total{result="error"}`); !ok || n < 1 {
		t.Errorf("causeway_acme_orders_total{result=\"error\"} = %v (found %t), want at least 1", n, ok)
	}
	if n, _ := metricValue(metrics, `causeway_acme_orders_total{result="ok"}`); n != 0 {
		t.Errorf("causeway_acme_orders_total{result=\"ok\"} = %v with no reachable CA", n)
	}
}

// A JWKS endpoint that answers 20 MB, and one that never answers: the edge
// starts, /readyz names the authenticator, requests with tokens get 401 in
// bounded time, and the edge reads at most its JWKS cap (1 MiB) of the huge
// document instead of holding it all.
func TestHostileJWKS(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": "https://id.test/", "aud": "api", "sub": "u1", "exp": time.Now().Add(time.Hour).Unix(),
	})
	tok.Header["kid"] = "k1"
	token, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	const huge = 20 << 20
	var hugeWritten atomic.Int64
	release := make(chan struct{})
	var releaseOnce sync.Once
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/huge":
			// A syntactically plausible set with one enormous key list.
			w.Header().Set("Content-Type", "application/json")
			chunk := []byte(strings.Repeat(`{"kty":"oct","kid":"x","k":"AAAA"},`, 1000))
			n, _ := io.WriteString(w, `{"keys":[`)
			hugeWritten.Add(int64(n))
			for hugeWritten.Load() < huge {
				n, err := w.Write(chunk)
				hugeWritten.Add(int64(n))
				if err != nil {
					return
				}
			}
			_, _ = io.WriteString(w, `{}]}`)
		case "/hang":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	}))
	defer idp.Close()
	defer releaseOnce.Do(func() { close(release) })

	for _, tt := range []struct {
		name, path, reason string
	}{
		{"20 MB document", "/huge", "larger than"},
		{"endpoint that never answers", "/hang", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newRecordingUpstream(t)
			e := startEdge(t, header+fmt.Sprintf(`authenticators:
  users: {jwt: {issuer: https://id.test/, audiences: [api], jwks_url: %q, algorithms: [RS256]}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, auth: users, upstream: u}
`, idp.URL+tt.path, up.addr()))
			ready := func() (int, string) { return get(t, "http://"+e.Addr("admin")+"/readyz") }
			status, body := ready()
			if status != 503 || !strings.Contains(body, `authenticator \"users\"`) {
				t.Fatalf("/readyz: %d %s", status, body)
			}
			if tt.reason != "" && !waitFor(5*time.Second, func() bool { _, body = ready(); return strings.Contains(body, tt.reason) }) {
				t.Errorf("/readyz does not say why: %s", body)
			}
			client := &http.Client{Timeout: 30 * time.Second}
			for i := range 3 {
				req, _ := http.NewRequest(http.MethodGet, "http://"+e.Addr("http")+"/x", nil)
				req.Header.Set("Authorization", "Bearer "+token)
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				took := time.Since(start)
				t.Logf("request %d: %d after %s: %s", i, resp.StatusCode, took, strings.TrimSpace(string(b)))
				if resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("request %d: status %d", i, resp.StatusCode)
				}
				// A request waits for a running fetch at most 1 s from the
				// fetch's start (measured: 1.0 s for the first request
				// against the hanging IdP, then about 1 ms); the fetch keeps
				// its own 5 s timeout. The limit leaves slack for -race.
				if took > 8*time.Second {
					t.Fatalf("request %d took %s", i, took)
				}
			}
			if n := len(up.requests()); n != 0 {
				t.Errorf("the upstream saw %d requests", n)
			}
			if status, body := ready(); status != 503 {
				t.Errorf("/readyz later: %d %s", status, body)
			}
		})
	}
	// The edge stopped reading the huge document at its cap: what the IdP
	// managed to write is the cap plus what the sockets buffer (measured:
	// 4–6 MiB), far from 20 MiB.
	if n := hugeWritten.Load(); n >= 16<<20 {
		t.Errorf("the edge read the whole %d-byte JWKS", n)
	} else {
		t.Logf("the IdP wrote %d KiB of the 20 MiB JWKS before the edge hung up", n>>10)
	}
}

// Redis stopped and restarted while requests flow through the edge. With
// on_error: allow no request fails while Redis is down (the edge counts in
// memory), and limits are enforced in Redis again once it is back; with
// on_error: deny the edge answers 503 while Redis is down and 200 after.
// goleak in TestMain checks that the outage leaves no goroutine behind.
func TestRedisOutageThroughTheEdge(t *testing.T) {
	for _, onError := range []string{"allow", "deny"} {
		t.Run(onError, func(t *testing.T) {
			rdb := testredis.Start(t)
			up := newCountingUpstream(t)
			e := startEdge(t, header+fmt.Sprintf(`redis: {url: %q, on_error: %s}
rate_limits:
  per-user: {key: "header:X-User", limit: 3, per: 1m}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, rate_limit: per-user, upstream: u}
`, rdb.URL(), onError, up.Listener.Addr().String()))
			url := "http://" + e.Addr("http") + "/x"
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
			defer client.CloseIdleConnections()
			var users atomic.Int64
			send := func(user string) (int, error) {
				if user == "" {
					user = fmt.Sprintf("load-%d", users.Add(1))
				}
				return getAsUser(client, url, user)
			}
			expectLimit := func(user string) {
				t.Helper()
				for i := 1; i <= 4; i++ {
					status, err := send(user)
					want := 200
					if i == 4 {
						want = 429
					}
					if err != nil || status != want {
						t.Fatalf("%s request %d: %d %v, want %d", user, i, status, err, want)
					}
				}
			}
			expectLimit("before")

			// Load with a fresh user per request, so only an outage can
			// make a request fail.
			var mu sync.Mutex
			statuses := map[string]map[int]int{} // phase -> status -> count
			var phase atomic.Value
			phase.Store("up")
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						p := phase.Load().(string)
						status, err := send("")
						if err != nil {
							status = -1
						}
						// A request that started in one phase and ended in
						// another belongs to neither.
						if end := phase.Load().(string); end != p {
							p += ">" + end
						}
						mu.Lock()
						if statuses[p] == nil {
							statuses[p] = map[int]int{}
						}
						statuses[p][status]++
						mu.Unlock()
					}
				}()
			}
			time.Sleep(300 * time.Millisecond)
			// "stopping" and "restarting" hold the requests that may see
			// either state of Redis.
			phase.Store("stopping")
			rdb.Stop()
			phase.Store("down")
			time.Sleep(time.Second)
			phase.Store("restarting")
			rdb.Restart()
			// Redis is back: on_error decisions end once the edge's next
			// probe reaches it (every 500 ms at most).
			back := waitFor(5*time.Second, func() bool {
				n, err := rdb.Do("DBSIZE")
				return err == nil && n != "0"
			})
			phase.Store("back")
			time.Sleep(300 * time.Millisecond)
			close(stop)
			wg.Wait()
			t.Logf("on_error %s: statuses by phase %v", onError, statuses)
			if !back {
				t.Fatal("the edge did not return to Redis within 5 s of its restart")
			}

			for p, byStatus := range statuses {
				for status, n := range byStatus {
					ok := status == 200 || (onError == "deny" && status == 503 && p != "up" && p != "back")
					if onError == "deny" && p == "down" {
						ok = status == 503
					}
					if !ok {
						t.Errorf("phase %s: %d requests answered %d", p, n, status)
					}
				}
			}
			if statuses["down"][200]+statuses["down"][503] == 0 {
				t.Error("no request was answered while Redis was down")
			}
			// Limits are counted in Redis again.
			expectLimit("after")
			if n, err := rdb.Do("DBSIZE"); err != nil || n == "0" {
				t.Errorf("Redis holds no counters after the outage: %q %v", n, err)
			}
		})
	}
}
