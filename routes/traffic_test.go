package routes

import (
	"strings"
	"testing"
	"time"
)

// trafficFile is a valid file whose upstream "u" gets the keys under test.
func trafficFile(upstream string) string {
	return `version: 1
upstreams:
  shadow: {endpoints: ["127.0.0.1:7009"]}
  u:
` + upstream + `
routes:
  - name: r
    match: {path_prefix: /}
    upstream: u
`
}

func TestTrafficValidation(t *testing.T) {
	eps := "    endpoints: [\"127.0.0.1:7001\", \"127.0.0.1:7002\"]\n"
	tests := []struct {
		name string
		up   string
		want string // "" accepts; otherwise a substring of the errors
	}{
		{"plain", eps, ""},
		{"every balancer", eps + "    balance: p2c_ewma\n", ""},
		{"weighted with weights", eps + "    balance: weighted\n    weights: {\"127.0.0.1:7001\": 3}\n", ""},
		{"weight zero", eps + "    balance: weighted\n    weights: {\"127.0.0.1:7001\": 0}\n", "must be between 1 and 1000 (found 0)"},
		{"weight not host:port", eps + "    weights: {\"nope\": 2}\n", `"nope" is not host:port`},
		{"ring hash on header", eps + "    balance: ring_hash\n    hash_on: header:X-User\n", ""},
		{"ring hash on cookie", eps + "    balance: ring_hash\n    hash_on: cookie:session\n", ""},
		{"ring hash default key", eps + "    balance: ring_hash\n", ""},
		{"hash_on unknown", eps + "    balance: ring_hash\n    hash_on: query:x\n", `"query:x": use header:NAME, cookie:NAME or client_ip`},
		{"hash_on bad header", eps + "    balance: ring_hash\n    hash_on: \"header:X User\"\n", "use header:NAME"},
		{"hash_on without ring_hash", eps + "    hash_on: client_ip\n", "hash_on: is only used by balance: ring_hash"},
		{"health check", eps + "    health_check: {path: /healthz, interval: 1s, timeout: 200ms}\n", ""},
		{"health check relative path", eps + "    health_check: {path: healthz}\n", `health_check.path: must start with "/"`},
		{"health check timeout over interval", eps + "    health_check: {path: /h, interval: 1s, timeout: 2s}\n", "health_check.timeout: exceeds the interval"},
		{"health check negative threshold", eps + "    health_check: {path: /h, healthy_threshold: -1}\n", "thresholds must not be negative"},
		{"health check negative interval", eps + "    health_check: {path: /h, interval: -1s}\n", "must not be negative"},
		{"retries", eps + "    retries: {attempts: 2, on: [connect_failure, reset, \"503\"], budget_percent: 20, per_try_timeout: 1s}\n", ""},
		{"retries too many", eps + "    retries: {attempts: 11}\n", "retries.attempts: must be between 0 and 10"},
		{"retries bad condition", eps + "    retries: {on: [\"404\"]}\n", `retries.on[0]: "404": use connect_failure`},
		{"retries duplicate condition", eps + "    retries: {on: [reset, reset]}\n", `retries.on[1]: "reset" is listed twice`},
		{"retries budget over 100", eps + "    retries: {budget_percent: 101}\n", "budget_percent: must be between 0 and 100"},
		{"retries backoff order", eps + "    retries: {backoff: 1s, max_backoff: 10ms}\n", "retries.max_backoff: is below backoff"},
		{"retries negative body", eps + "    retries: {max_body: -1}\n", "retries.max_body: must not be negative"},
		{"breaker", eps + "    circuit_breaker: {max_pending: 10, max_requests: 100, consecutive_5xx: 5, eject_for: 30s, consecutive_failures: 20, open_for: 5s}\n", ""},
		{"breaker negative", eps + "    circuit_breaker: {max_requests: -1}\n", "limits must not be negative"},
		{"breaker eject share", eps + "    circuit_breaker: {max_ejected_percent: 120}\n", "max_ejected_percent: must be between 0 and 100"},
		{"mirror", eps + "    mirror: {upstream: shadow, percent: 10}\n", ""},
		{"mirror undefined", eps + "    mirror: {upstream: nope}\n", `mirror.upstream: undefined upstream "nope"`},
		{"mirror missing upstream", eps + "    mirror: {percent: 10}\n", "mirror.upstream: is required"},
		{"mirror to itself", eps + "    mirror: {upstream: u}\n", "mirrors itself"},
		{"mirror percent", eps + "    mirror: {upstream: shadow, percent: 101}\n", "mirror.percent: must be between 0 and 100"},
		{"dns", "    dns: orders.internal:7001\n    dns_server: 127.0.0.1:5353\n    dns_refresh: {min: 1s, max: 1m}\n", ""},
		{"dns_srv", "    dns_srv: _http._tcp.orders.internal\n", ""},
		{"dns_srv with a port", "    dns_srv: orders.internal:80\n", "is not an SRV name"},
		{"dns_srv and endpoints", eps + "    dns_srv: _http._tcp.orders.internal\n", "are exclusive: use one"},
		{"dns_server not host:port", "    dns: orders.internal:7001\n    dns_server: 127.0.0.1\n", "dns_server: \"127.0.0.1\" is not host:port"},
		{"dns_refresh order", "    dns: orders.internal:7001\n    dns_refresh: {min: 1m, max: 1s}\n", "dns_refresh.max: is below min"},
		{"endpoints_file", "    endpoints_file: /etc/causeway/orders.txt\n", ""},
		{"endpoints_file and dns", "    endpoints_file: /x\n    dns: a.internal:80\n", "are exclusive: use one"},
		{"protocol h2c", eps + "    protocol: h2c\n", ""},
		{"protocol unknown", eps + "    protocol: spdy\n", `must be one of http1, h2c, h2 (found "spdy")`},
		{"protocol h2 without tls", eps + "    protocol: h2\n", "h2 needs TLS to the upstream"},
		{"protocol h2 with tls", eps + "    scheme: https\n    protocol: h2\n", ""},
		{"protocol h2c with tls", eps + "    scheme: https\n    protocol: h2c\n", "h2c is HTTP/2 without TLS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(trafficFile(tt.up)))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("accepted, want error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestSplitHeadersValidation(t *testing.T) {
	file := func(headers string) string {
		return `version: 1
upstreams:
  a: {endpoints: ["127.0.0.1:7001"]}
  b: {endpoints: ["127.0.0.1:7002"]}
routes:
  - name: r
    match: {path_prefix: /}
    split:
      - {upstream: a, weight: 99}
      - {upstream: b, weight: 1, headers: ` + headers + `}
`
	}
	if _, err := Parse("t.yaml", []byte(file(`{X-Canary: "true"}`))); err != nil {
		t.Fatalf("refused: %v", err)
	}
	_, err := Parse("t.yaml", []byte(file(`{"X Canary": "true"}`)))
	if err == nil || !strings.Contains(err.Error(), `t.yaml:10:43: routes[0].split[1].headers: "X Canary" is not a header name`) {
		t.Fatalf("got %v", err)
	}
}

func TestTrafficDefaults(t *testing.T) {
	f, err := Parse("t.yaml", []byte(trafficFile(`    endpoints: ["127.0.0.1:7001"]
    balance: ring_hash
    health_check: {path: /healthz, interval: 1s}
    retries: {}
    circuit_breaker: {max_requests: 5}
    mirror: {upstream: shadow}`)))
	if err != nil {
		t.Fatal(err)
	}
	u := f.Upstreams["u"]
	tests := []struct {
		name      string
		got, want any
	}{
		{"protocol", u.Protocol, "http1"},
		{"hash_on", u.HashOn, "client_ip"},
		{"health timeout capped by interval", u.HealthCheck.Timeout.D(), time.Second},
		{"healthy threshold", u.HealthCheck.HealthyThreshold, DefaultHealthyThreshold},
		{"unhealthy threshold", u.HealthCheck.UnhealthyThreshold, DefaultUnhealthyThreshold},
		{"retry attempts", u.Retries.Attempts, DefaultRetryAttempts},
		{"retry on", strings.Join(u.Retries.On, ","), "connect_failure"},
		{"retry budget", u.Retries.BudgetPercent, DefaultRetryBudgetPercent},
		{"retry backoff", u.Retries.Backoff.D(), DefaultRetryBackoff},
		{"retry max backoff", u.Retries.MaxBackoff.D(), DefaultRetryMaxBackoff},
		{"retry max body", u.Retries.MaxBody, DefaultRetryMaxBody},
		{"eject for", u.CircuitBreaker.EjectFor.D(), DefaultEjectFor},
		{"max ejected", u.CircuitBreaker.MaxEjectedPercent, DefaultMaxEjectedPercent},
		{"open for", u.CircuitBreaker.OpenFor.D(), DefaultBreakerOpenFor},
		{"half open", u.CircuitBreaker.HalfOpenRequests, DefaultHalfOpenRequests},
		{"mirror percent", u.Mirror.Percent, DefaultMirrorPercent},
		{"mirror inflight", u.Mirror.MaxInflight, DefaultMirrorMaxInflight},
		{"shadow has no health check", f.Upstreams["shadow"].HealthCheck == nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}
