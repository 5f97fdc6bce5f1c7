package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestForwardedHeaderNamesTheClient: a trusted proxy that states the client
// in RFC 7239 Forwarded alone (no X-Forwarded-For) is read like one that
// uses X-Forwarded-For: the address found is the one the rate limit keys
// on, ip_filter judges, the access log writes, ext_authz is told and the
// upstream gets in X-Real-IP and X-Forwarded-For. A client behind that
// proxy cannot pick its address by sending either header itself.
func TestForwardedHeaderNamesTheClient(t *testing.T) {
	up := newHeaderUpstream(t)
	var authzMu sync.Mutex
	authzSaw := map[string]string{} // X-Test-Id -> X-Forwarded-For the auth server got
	authz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authzMu.Lock()
		authzSaw[r.Header.Get("X-Test-Id")] = r.Header.Get("X-Forwarded-For")
		authzMu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(authz.Close)
	logPath := filepath.Join(t.TempDir(), "access.log")
	e := startEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: %q}
trusted_proxies: [127.0.0.0/8]
authenticators:
  sso: {ext_authz: {http_url: %q, timeout: 1m, headers: [X-Test-Id]}}
rate_limits:
  per-ip: {key: client_ip, limit: 1, per: 1h}
plugins:
  inside: {use: ip_filter, config: {allow: [127.0.0.0/8, 203.0.113.0/24, "2001:db8::/32"]}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: limited, match: {path_prefix: /limited}, rate_limit: per-ip, upstream: u}
  - {name: filtered, match: {path_prefix: /filtered}, plugins: [inside], upstream: u}
  - {name: authz, match: {path_prefix: /authz}, auth: sso, upstream: u}
`, logPath, authz.URL+"/verify", up.addr()))
	base := "http://" + e.Addr("http")
	for proto, c := range protocols(t) {
		for i, tc := range []struct {
			name, path string
			hdr        [][2]string
			want       int
			client     string // X-Real-IP, the access log's client_ip, what ext_authz got
			xff        string // the X-Forwarded-For the upstream got
		}{
			{"first request of a client", "/limited", [][2]string{{"Forwarded", "for=203.0.113.1;proto=https"}}, 200, "203.0.113.1", "203.0.113.1, 127.0.0.1"},
			{"same client quoted with a port: same bucket", "/limited", [][2]string{{"Forwarded", `For="203.0.113.1:4711"`}}, 429, "", ""},
			{"same client in X-Forwarded-For: same bucket", "/limited", [][2]string{{"X-Forwarded-For", "203.0.113.1"}}, 429, "", ""},
			{"another client, its own bucket", "/limited", [][2]string{{"Forwarded", "for=203.0.113.2"}}, 200, "203.0.113.2", "203.0.113.2, 127.0.0.1"},
			{"IPv6 in brackets with a port", "/filtered", [][2]string{{"Forwarded", `for="[2001:db8::7]:4711";by=_edge`}}, 200, "2001:db8::7", "2001:db8::7, 127.0.0.1"},
			{"denied client", "/filtered", [][2]string{{"Forwarded", "for=198.51.100.1"}}, 403, "", ""},
			{"forged element left of the client", "/filtered", [][2]string{{"Forwarded", "for=203.0.113.5, for=198.51.100.1"}}, 403, "", ""},
			{"trusted hops are skipped", "/filtered", [][2]string{{"Forwarded", "for=203.0.113.6;proto=https, for=127.0.0.9"}}, 200, "203.0.113.6", "203.0.113.6, 127.0.0.9, 127.0.0.1"},
			{"two header lines read right to left", "/filtered", [][2]string{{"Forwarded", "for=198.51.100.1"}, {"Forwarded", "for=203.0.113.9"}}, 200, "203.0.113.9", "198.51.100.1, 203.0.113.9, 127.0.0.1"},
			{"unknown node from the trusted proxy", "/filtered", [][2]string{{"Forwarded", "for=unknown"}}, 403, "", ""},
			{"obfuscated node from the trusted proxy", "/filtered", [][2]string{{"Forwarded", "for=_hidden"}}, 403, "", ""},
			{"element without for", "/filtered", [][2]string{{"Forwarded", "proto=https;host=a.example"}}, 403, "", ""},
			{"unterminated quote", "/filtered", [][2]string{{"Forwarded", `for="203.0.113.9`}}, 403, "", ""},
			{"comma inside quotes is not a separator", "/filtered", [][2]string{{"Forwarded", `for="198.51.100.1, 203.0.113.9"`}}, 403, "", ""},
			{"both headers agree", "/filtered", [][2]string{{"X-Forwarded-For", "203.0.113.10"}, {"Forwarded", "for=203.0.113.10"}}, 200, "203.0.113.10", "203.0.113.10, 127.0.0.1"},
			{"client's X-Forwarded-For passed through a Forwarded-only proxy", "/filtered", [][2]string{{"X-Forwarded-For", "203.0.113.11"}, {"Forwarded", "for=198.51.100.1"}}, 403, "", ""},
			{"client's Forwarded passed through an X-Forwarded-For-only proxy", "/filtered", [][2]string{{"Forwarded", "for=203.0.113.12"}, {"X-Forwarded-For", "198.51.100.1"}}, 403, "", ""},
			{"client forges a trusted hop in the header its proxy does not write", "/filtered", [][2]string{{"X-Forwarded-For", "127.0.0.5"}, {"Forwarded", "for=203.0.113.13"}}, 200, "203.0.113.13", "203.0.113.13, 127.0.0.1"},
			{"ext_authz is told the client", "/authz", [][2]string{{"Forwarded", `for="[2001:db8::8]"`}}, 200, "2001:db8::8", "2001:db8::8, 127.0.0.1"},
		} {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				id := "rfc7239-" + proto + "-" + tc.name
				path := tc.path
				if tc.path == "/limited" {
					path += "/" + proto // the buckets are per client only, so each protocol's client addresses differ
				}
				hdr := append([][2]string{{"X-Test-Id", id}, {"X-Request-Id", fmt.Sprintf("rfc7239-%d-%d", len(proto), i)}}, tc.hdr...)
				if tc.path == "/limited" && proto == "HTTP/2" {
					hdr = rewriteAddrs(hdr)
				}
				resp, body := send(t, c, "GET", base+path, "", hdr)
				if resp.StatusCode != tc.want {
					t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, body)
				}
				if tc.want != 200 {
					if _, reached := up.got(id); reached {
						t.Fatalf("a refused request reached the upstream")
					}
					return
				}
				wantClient, wantXFF := tc.client, tc.xff
				if tc.path == "/limited" && proto == "HTTP/2" {
					wantClient, wantXFF = rewriteAddr(wantClient), rewriteAddr(wantXFF)
				}
				s, _ := up.got(id)
				if got := s.Header.Get("X-Real-Ip"); got != wantClient {
					t.Errorf("X-Real-IP %q, want %q", got, wantClient)
				}
				if got := s.Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != wantXFF {
					t.Errorf("X-Forwarded-For %q, want %q", got, wantXFF)
				}
				if got := accessLogClient(t, logPath, resp.Header.Get("X-Request-Id")); got != wantClient {
					t.Errorf("access log client_ip %q, want %q", got, wantClient)
				}
				if tc.path == "/authz" {
					authzMu.Lock()
					got := authzSaw[id]
					authzMu.Unlock()
					if got != wantClient {
						t.Errorf("ext_authz got X-Forwarded-For %q, want %q", got, wantClient)
					}
				}
			})
		}
	}
}

// rewriteAddr moves the 203.0.113.x clients of the rate-limit cases to
// 203.0.113.10x for the second protocol, so each protocol starts with
// fresh buckets.
func rewriteAddr(s string) string {
	for _, a := range []string{"203.0.113.1", "203.0.113.2"} {
		if i := indexAddr(s, a); i >= 0 {
			s = s[:i] + a[:len(a)-1] + "10" + a[len(a)-1:] + s[i+len(a):]
		}
	}
	return s
}

// indexAddr finds a as a whole address in s (not as the start of a longer
// one).
func indexAddr(s, a string) int {
	for i := 0; i+len(a) <= len(s); i++ {
		if s[i:i+len(a)] == a && (i+len(a) == len(s) || s[i+len(a)] < '0' || s[i+len(a)] > '9') {
			return i
		}
	}
	return -1
}

func rewriteAddrs(hdr [][2]string) [][2]string {
	out := make([][2]string, len(hdr))
	for i, kv := range hdr {
		out[i] = kv
		if kv[0] == "Forwarded" || kv[0] == "X-Forwarded-For" {
			out[i][1] = rewriteAddr(kv[1])
		}
	}
	return out
}

// accessLogClient is the client_ip of the access log line for requestID.
func accessLogClient(t *testing.T, path, requestID string) string {
	t.Helper()
	// The line is written as the handler returns, which may be just after
	// the client read the response.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ip, ok := findLogClient(t, path, requestID); ok {
			return ip
		}
	}
	t.Fatalf("no access log line for %q", requestID)
	return ""
}

func findLogClient(t *testing.T, path, requestID string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct {
			RequestID string `json:"request_id"`
			ClientIP  string `json:"client_ip"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.RequestID == requestID {
			return line.ClientIP, true
		}
	}
	return "", false
}
