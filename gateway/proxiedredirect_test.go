package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// proxiedRedirectEdge is an edge with a tls section whose http listener
// redirects to https, behind trusted_proxies, and the upstream's record
// of the X-Forwarded-Proto of each request that reached it (by path).
func proxiedRedirectEdge(t *testing.T, engine, trusted string) (*testEdge, *sync.Map, *atomic.Int64) {
	t.Helper()
	seen := &sync.Map{}
	var n atomic.Int64
	up := atkServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		seen.Store(r.URL.Path, r.Header.Values("X-Forwarded-Proto"))
		_, _ = io.WriteString(w, "served "+r.URL.Path)
	}))
	certFile, keyFile, _ := selfSigned(t, t.TempDir(), "api.example.com")
	te := startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
trusted_proxies: [%s]
server: {http1_engine: %q}
tls:
  certificates: [{cert_file: %q, key_file: %q}]
upstreams:
  a: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: a}
`, trusted, engine, certFile, keyFile, up))
	return te, seen, &n
}

// rawGet sends one HTTP/1.1 request with the header lines exactly as
// written (names in any case, repeated, with '_') and reads the answer.
func rawGet(t *testing.T, addr, path string, lines []string) (int, string, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "GET " + path + " HTTP/1.1\r\nHost: api.example.com\r\n" + strings.Join(append(lines, "Connection: close"), "\r\n") + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res.StatusCode, res.Header.Get("Location"), string(body)
}

// TestRedirectBehindTLSProxy: a load balancer that ends TLS (AWS ALB, GCP)
// forwards plain HTTP to listen.http with X-Forwarded-Proto: https.
// Redirected to https again, the browser comes back through the same
// balancer as plain HTTP: a redirect loop. From a trusted proxy that says
// https (X-Forwarded-Proto or Forwarded proto=, agreeing) the request is
// served, as Traefik's redirectScheme and Kong serve it; an untrusted
// client saying so, in any spelling, and a trusted proxy's unusable or
// contradictory statement are redirected, and reach no upstream.
func TestRedirectBehindTLSProxy(t *testing.T) {
	type tc struct {
		name  string
		lines []string
		serve bool
	}
	trustedCases := []tc{
		{"x-forwarded-proto https", []string{"X-Forwarded-Proto: https"}, true},
		{"name and value in any case", []string{"x-forwarded-proto: HTTPS"}, true},
		// The last value is the nearest proxy's: one that appends its
		// own after the client's is believed, the client's is not.
		{"last of a list", []string{"X-Forwarded-Proto: http, https"}, true},
		{"last line", []string{"X-Forwarded-Proto: http", "X-Forwarded-Proto: https"}, true},
		{"forwarded proto=https", []string{"Forwarded: for=203.0.113.1;proto=https"}, true},
		{"forwarded quoted", []string{`Forwarded: for="203.0.113.1:4711";host="api.example.com";proto="https"`}, true},
		{"forwarded, the client-facing hop's element", []string{"Forwarded: for=203.0.113.1;proto=https, for=127.0.0.1;proto=http"}, true},
		{"both agree", []string{"X-Forwarded-Proto: https", "Forwarded: for=203.0.113.1;proto=https"}, true},
		{"no statement", nil, false},
		{"x-forwarded-proto http", []string{"X-Forwarded-Proto: http"}, false},
		{"last of a list is http", []string{"X-Forwarded-Proto: https, http"}, false},
		{"last line is http", []string{"X-Forwarded-Proto: https", "X-Forwarded-Proto: http"}, false},
		// A header the Connection header nominates is dropped as
		// hop-by-hop before the request is served: it is not believed
		// for the redirect either.
		{"nominated by Connection", []string{"X-Forwarded-Proto: https", "Connection: X-Forwarded-Proto"}, false},
		{"nominated in lower case, after keep-alive", []string{"X-Forwarded-Proto: https", "Connection: keep-alive, x-forwarded-proto"}, false},
		{"forwarded nominated", []string{"Forwarded: for=203.0.113.1;proto=https", "Connection: Forwarded"}, false},
		// Of two statements that disagree, the nominated one is gone
		// from the request served: the other decides.
		{"one of two nominated, the other says http", []string{"X-Forwarded-Proto: http", "Forwarded: for=203.0.113.1;proto=https", "Connection: Forwarded"}, false},
		{"one of two nominated, the other says https", []string{"X-Forwarded-Proto: https", "Forwarded: for=203.0.113.1;proto=http", "Connection: Forwarded"}, true},
		{"x-forwarded-proto nominated, forwarded says https", []string{"X-Forwarded-Proto: http", "Forwarded: for=203.0.113.1;proto=https", "Connection: X-Forwarded-Proto"}, true},
		{"keep-alive nominates nothing", []string{"X-Forwarded-Proto: https", "Connection: keep-alive"}, true},
		{"another header nominated", []string{"Forwarded: for=203.0.113.1;proto=https", "Connection: X-Hop", "X-Hop: 1"}, true},
		{"not a scheme", []string{"X-Forwarded-Proto: javascript"}, false},
		{"a scheme with a colon", []string{"X-Forwarded-Proto: https:"}, false},
		{"underscore name", []string{"X_Forwarded_Proto: https"}, false},
		{"forwarded proto=http", []string{"Forwarded: for=203.0.113.1;proto=http"}, false},
		{"forwarded: a client's element left of the proxy's", []string{"Forwarded: for=198.51.100.1;proto=https, for=203.0.113.1;proto=http"}, false},
		{"forwarded unreadable", []string{`Forwarded: for="203.0.113.1;proto=https`}, false},
		{"forwarded repeated proto", []string{"Forwarded: for=203.0.113.1;proto=https;proto=https"}, false},
		{"disagree: forwarded http", []string{"X-Forwarded-Proto: https", "Forwarded: for=203.0.113.1;proto=http"}, false},
		{"disagree: x-forwarded-proto http", []string{"X-Forwarded-Proto: http", "Forwarded: for=203.0.113.1;proto=https"}, false},
		{"disagree: x-forwarded-proto bad", []string{"X-Forwarded-Proto: javascript", "Forwarded: for=203.0.113.1;proto=https"}, false},
	}
	// From an untrusted client nothing it says counts.
	untrustedCases := []tc{
		{"x-forwarded-proto https", []string{"X-Forwarded-Proto: https"}, false},
		{"name and value in any case", []string{"x-forwarded-proto: HTTPS"}, false},
		{"repeated lines", []string{"X-Forwarded-Proto: https", "X-Forwarded-Proto: https"}, false},
		{"list", []string{"X-Forwarded-Proto: https, https"}, false},
		{"underscore name", []string{"X_Forwarded_Proto: https"}, false},
		{"forwarded", []string{"Forwarded: for=203.0.113.1;proto=https"}, false},
		{"forwarded quoted, upper case", []string{`FORWARDED: FOR="203.0.113.1";PROTO="HTTPS"`}, false},
		{"forwarded naming a trusted-looking hop", []string{"Forwarded: for=10.0.0.1;proto=https, for=10.0.0.2;proto=https"}, false},
		{"both", []string{"X-Forwarded-Proto: https", "Forwarded: proto=https"}, false},
	}
	for _, engine := range []string{"causeway", "net/http"} {
		for _, side := range []struct {
			name, trusted string
			cases         []tc
		}{{"trusted", "127.0.0.1/32", trustedCases}, {"untrusted", "10.0.0.0/8", untrustedCases}} {
			t.Run(engine+"/"+side.name, func(t *testing.T) {
				te, seen, n := proxiedRedirectEdge(t, engine, side.trusted)
				_, httpsPort, _ := net.SplitHostPort(te.Addr("https"))
				addr := te.Addr("http")
				for i, c := range side.cases {
					t.Run(c.name, func(t *testing.T) {
						path := fmt.Sprintf("/case/%d", i)
						before := n.Load()
						code, loc, body := rawGet(t, addr, path+"?q=1", c.lines)
						if c.serve {
							got, _ := seen.Load(path)
							if code != http.StatusOK || body != "served "+path || n.Load() != before+1 {
								t.Fatalf("want served: %d %q %q", code, loc, body)
							}
							// The upstream's X-Forwarded-Proto is the scheme
							// the edge served the request for, also when the
							// proxy stated it in Forwarded alone.
							if p, _ := got.([]string); len(p) != 1 || p[0] != "https" {
								t.Fatalf("upstream's X-Forwarded-Proto %q", p)
							}
							return
						}
						want := "https://api.example.com:" + httpsPort + path + "?q=1"
						if code != http.StatusPermanentRedirect || loc != want {
							t.Fatalf("want a redirect to %s: %d %q %q", want, code, loc, body)
						}
						if n.Load() != before {
							t.Fatal("a redirected request reached the upstream")
						}
					})
				}
				// ACME's path is never served from the routes, whatever
				// the proxy says.
				if code, _, _ := rawGet(t, addr, "/.well-known/acme-challenge/x", []string{"X-Forwarded-Proto: https"}); code == http.StatusOK {
					t.Fatal("the ACME challenge path was served from the routes")
				}
			})
		}
	}
}

// TestRedirectBehindTLSProxyH2C: the same over h2c, and under concurrency:
// requests that a trusted proxy says came over https are served with that
// scheme, those it says came over http are redirected, interleaved on
// shared connections, and the upstream receives exactly the first kind.
func TestRedirectBehindTLSProxyH2C(t *testing.T) {
	for _, side := range []struct {
		name, trusted string
		serve         bool
	}{{"trusted", "127.0.0.1/32", true}, {"untrusted", "10.0.0.0/8", false}} {
		t.Run(side.name, func(t *testing.T) {
			te, seen, n := proxiedRedirectEdge(t, "causeway", side.trusted)
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			tr := &http.Transport{Protocols: &p}
			t.Cleanup(tr.CloseIdleConnections)
			const workers, each = 8, 100
			var wg sync.WaitGroup
			errs := make(chan error, workers*each)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						path := fmt.Sprintf("/h2c/%d/%d", w, i)
						req, _ := http.NewRequest(http.MethodGet, "http://"+te.Addr("http")+path, nil)
						req.Host = "api.example.com"
						https := i%2 == 0
						if https {
							req.Header.Set("X-Forwarded-Proto", "https")
						} else {
							req.Header.Set("Forwarded", "for=203.0.113.1;proto=http")
						}
						res, err := tr.RoundTrip(req)
						if err != nil {
							errs <- err
							continue
						}
						body, _ := io.ReadAll(res.Body)
						res.Body.Close()
						if res.ProtoMajor != 2 {
							errs <- fmt.Errorf("%s: answered over HTTP/%d", path, res.ProtoMajor)
						}
						if https && side.serve {
							if res.StatusCode != http.StatusOK || string(body) != "served "+path {
								errs <- fmt.Errorf("%s: want served, got %d %q", path, res.StatusCode, body)
							}
						} else if res.StatusCode != http.StatusPermanentRedirect || !strings.HasPrefix(res.Header.Get("Location"), "https://api.example.com:") {
							errs <- fmt.Errorf("%s: want a redirect, got %d %q", path, res.StatusCode, res.Header.Get("Location"))
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			want := int64(0)
			if side.serve {
				want = workers * each / 2
			}
			if got := n.Load(); got != want {
				t.Fatalf("the upstream received %d requests, want %d", got, want)
			}
			seen.Range(func(k, v any) bool {
				if p, _ := v.([]string); len(p) != 1 || p[0] != "https" {
					t.Errorf("%v: upstream's X-Forwarded-Proto %q", k, p)
				}
				return true
			})
		})
	}
}
