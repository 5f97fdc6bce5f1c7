package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testredis"
)

// A Redis outage makes the edge unready only when on_error cannot absorb
// it. With allow, a Redis restart must not take every edge replica out of
// its load balancer: the outage shows as a metric, a log line and a status
// on /readyz and /config instead. A real redis-server is stopped and
// restarted.
func TestReadinessDuringRedisOutage(t *testing.T) {
	tests := []struct {
		onError     string
		readyStatus int // /readyz while Redis is down
		limited     int // a limited request while Redis is down
	}{
		{"allow", 200, 200},
		{"deny", 503, 503},
	}
	for _, tt := range tests {
		t.Run(tt.onError, func(t *testing.T) {
			rdb := testredis.Start(t)
			up := newCountingUpstream(t)
			e, logs := startLoggingEdge(t, header+fmt.Sprintf(`redis: {url: %q, on_error: %s}
rate_limits:
  per-user: {key: "header:X-User", limit: 100, per: 1m}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, rate_limit: per-user, upstream: u}
`, rdb.URL(), tt.onError, up.Listener.Addr().String()))
			admin := "http://" + e.Addr("admin")
			limited := func() int {
				status, _ := getWith(t, "http://"+e.Addr("http")+"/x", "X-User", "ann")
				return status
			}
			type redisView struct {
				Configured bool   `json:"configured"`
				Reachable  bool   `json:"reachable"`
				OnError    string `json:"on_error"`
				LastError  string `json:"last_error"`
			}
			readyz := func() (int, redisView) {
				status, body := get(t, admin+"/readyz")
				var v struct{ Redis redisView }
				if err := json.Unmarshal([]byte(body), &v); err != nil {
					t.Fatalf("/readyz body %q: %v", body, err)
				}
				return status, v.Redis
			}
			configRedis := func() redisView {
				_, body := get(t, admin+"/config")
				var v struct{ Redis redisView }
				if err := json.Unmarshal([]byte(body), &v); err != nil {
					t.Fatalf("/config body: %v", err)
				}
				return v.Redis
			}
			redisUp := func() string {
				_, body := get(t, admin+"/metrics")
				for _, line := range strings.Split(body, "\n") {
					if strings.HasPrefix(line, "causeway_ratelimit_redis_up{") {
						return line
					}
				}
				return ""
			}
			wantUp := fmt.Sprintf(`causeway_ratelimit_redis_up{on_error=%q} 1`, tt.onError)
			wantDown := fmt.Sprintf(`causeway_ratelimit_redis_up{on_error=%q} 0`, tt.onError)

			if s := limited(); s != 200 {
				t.Fatalf("before the outage: %d", s)
			}
			if s, v := readyz(); s != 200 || !v.Reachable || v.OnError != tt.onError {
				t.Fatalf("before the outage: /readyz %d %+v", s, v)
			}
			if m := redisUp(); m != wantUp {
				t.Fatalf("before the outage: metric %q, want %q", m, wantUp)
			}

			rdb.Stop()
			// The edge learns of the outage from the first decision that
			// fails.
			if s := limited(); s != tt.limited {
				t.Fatalf("during the outage: limited request %d, want %d", s, tt.limited)
			}
			if s, v := readyz(); s != tt.readyStatus || v.Reachable || v.LastError == "" {
				t.Fatalf("during the outage: /readyz %d %+v, want %d and redis unreachable", s, v, tt.readyStatus)
			}
			if v := configRedis(); !v.Configured || v.Reachable || v.OnError != tt.onError {
				t.Fatalf("during the outage: /config redis %+v", v)
			}
			if m := redisUp(); m != wantDown {
				t.Fatalf("during the outage: metric %q, want %q", m, wantDown)
			}
			if !strings.Contains(logs.String(), "redis unreachable") {
				t.Fatalf("the outage is not logged:\n%s", logs)
			}

			rdb.Restart()
			// Nothing but the admin API asks: its probe (every 500 ms at
			// most) must find Redis back without any request.
			if !waitFor(10*time.Second, func() bool { s, v := readyz(); return s == 200 && v.Reachable }) {
				s, v := readyz()
				t.Fatalf("after the restart: /readyz %d %+v", s, v)
			}
			if m := redisUp(); m != wantUp {
				t.Fatalf("after the restart: metric %q, want %q", m, wantUp)
			}
			if !strings.Contains(logs.String(), "redis reachable again") {
				t.Fatalf("the recovery is not logged:\n%s", logs)
			}
			if s := limited(); s != 200 {
				t.Fatalf("after the restart: %d", s)
			}
		})
	}
}

// getWith is get with request headers given as name, value pairs.
func getWith(t *testing.T, url string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
