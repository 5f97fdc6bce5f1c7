package routes

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults of the traffic keys (health_check, retries, circuit_breaker,
// mirror, dns_refresh). docs/traffic.md documents them; keep the two in step.
const (
	DefaultHealthInterval     = 10 * time.Second
	DefaultHealthTimeout      = 2 * time.Second
	DefaultHealthyThreshold   = 2
	DefaultUnhealthyThreshold = 3
	DefaultRetryAttempts      = 2
	DefaultRetryBudgetPercent = 20
	DefaultRetryBackoff       = 25 * time.Millisecond
	DefaultRetryMaxBackoff    = 250 * time.Millisecond
	DefaultRetryMaxBody       = 64 << 10
	DefaultEjectFor           = 30 * time.Second
	DefaultMaxEjectedPercent  = 50
	DefaultBreakerOpenFor     = 10 * time.Second
	DefaultHalfOpenRequests   = 1
	DefaultMirrorPercent      = 100
	DefaultMirrorMaxInflight  = 64
	DefaultMirrorMaxBody      = 64 << 10
	DefaultDNSRefreshMin      = time.Second
	DefaultDNSRefreshMax      = 5 * time.Minute
	DefaultProtocol           = "http1"
	defaultRetryOnConnect     = "connect_failure"
	DefaultHashOn             = "client_ip"
)

// Protocols are the values of upstreams.*.protocol.
var Protocols = []string{"http1", "h2c", "h2"}

// defaultTraffic fills the traffic keys of every upstream. A section left
// out stays nil (the feature is off); a section present gets its defaults.
func (f *File) defaultTraffic() {
	for name, u := range f.Upstreams {
		if u.Protocol == "" {
			u.Protocol = DefaultProtocol
		}
		if u.Balance == "ring_hash" && u.HashOn == "" {
			u.HashOn = DefaultHashOn
		}
		if h := u.HealthCheck; h != nil {
			hc := *h
			setDuration(&hc.Interval, DefaultHealthInterval)
			setDuration(&hc.Timeout, min(DefaultHealthTimeout, hc.Interval.D()))
			if hc.HealthyThreshold == 0 {
				hc.HealthyThreshold = DefaultHealthyThreshold
			}
			if hc.UnhealthyThreshold == 0 {
				hc.UnhealthyThreshold = DefaultUnhealthyThreshold
			}
			u.HealthCheck = &hc
		}
		if r := u.Retries; r != nil {
			rc := *r
			if rc.Attempts == 0 {
				rc.Attempts = DefaultRetryAttempts
			}
			if len(rc.On) == 0 {
				rc.On = []string{defaultRetryOnConnect}
			}
			if rc.BudgetPercent == 0 {
				rc.BudgetPercent = DefaultRetryBudgetPercent
			}
			setDuration(&rc.Backoff, DefaultRetryBackoff)
			setDuration(&rc.MaxBackoff, max(DefaultRetryMaxBackoff, rc.Backoff.D()))
			if rc.MaxBody == 0 {
				rc.MaxBody = DefaultRetryMaxBody
			}
			u.Retries = &rc
		}
		if b := u.CircuitBreaker; b != nil {
			bc := *b
			setDuration(&bc.EjectFor, DefaultEjectFor)
			if bc.MaxEjectedPercent == 0 {
				bc.MaxEjectedPercent = DefaultMaxEjectedPercent
			}
			setDuration(&bc.OpenFor, DefaultBreakerOpenFor)
			if bc.HalfOpenRequests == 0 {
				bc.HalfOpenRequests = DefaultHalfOpenRequests
			}
			u.CircuitBreaker = &bc
		}
		if m := u.Mirror; m != nil {
			mc := *m
			if mc.Percent == 0 {
				mc.Percent = DefaultMirrorPercent
			}
			if mc.MaxInflight == 0 {
				mc.MaxInflight = DefaultMirrorMaxInflight
			}
			if mc.MaxBody == 0 {
				mc.MaxBody = DefaultMirrorMaxBody
			}
			u.Mirror = &mc
		}
		if u.DNS != "" || u.DNSSRV != "" {
			b := Bounds{}
			if u.DNSRefresh != nil {
				b = *u.DNSRefresh
			}
			setDuration(&b.Min, DefaultDNSRefreshMin)
			setDuration(&b.Max, max(DefaultDNSRefreshMax, b.Min.D()))
			u.DNSRefresh = &b
		}
		f.Upstreams[name] = u
	}
}

// checkUpstreamTraffic checks discovery, balancing, health checks, retries,
// circuit breaking and mirroring of one upstream.
func (c *checker) checkUpstreamTraffic(p string, u Upstream) {
	sources := 0
	for _, set := range []bool{len(u.Endpoints) > 0, u.DNS != "", u.DNSSRV != "", u.EndpointsFile != ""} {
		if set {
			sources++
		}
	}
	if sources > 1 && (u.DNSSRV != "" || u.EndpointsFile != "") {
		c.errorf(p, "endpoints, dns, dns_srv and endpoints_file are exclusive: use one")
	}
	if u.DNSSRV != "" && (strings.ContainsAny(u.DNSSRV, ":/ ") || !strings.HasPrefix(u.DNSSRV, "_")) {
		c.errorf(p+".dns_srv", "%q is not an SRV name such as _http._tcp.orders.internal", u.DNSSRV)
	}
	if u.DNSServer != "" {
		if err := checkEndpoint(u.DNSServer); err != nil {
			c.errorf(p+".dns_server", "%v", err)
		}
	}
	if b := u.DNSRefresh; b != nil {
		if b.Min < 0 || b.Max < 0 {
			c.errorf(p+".dns_refresh", "must not be negative")
		} else if b.Max < b.Min {
			c.errorf(p+".dns_refresh.max", "is below min")
		}
	}
	for _, ep := range slices.Sorted(maps.Keys(u.Weights)) {
		w := u.Weights[ep]
		if w <= 0 || w > 1000 {
			c.errorf(p+".weights."+ep, "must be between 1 and 1000 (found %d)", w)
		}
		if _, _, err := net.SplitHostPort(ep); err != nil {
			c.errorf(p+".weights."+ep, "%q is not host:port", ep)
		}
	}
	if u.HashOn != "" {
		if u.Balance != "ring_hash" {
			c.errorf(p+".hash_on", "is only used by balance: ring_hash")
		}
		kind, name, _ := strings.Cut(u.HashOn, ":")
		switch {
		case u.HashOn == "client_ip":
		case (kind == "header" || kind == "cookie") && name != "" && validToken(name):
		default:
			c.errorf(p+".hash_on", "%q: use header:NAME, cookie:NAME or client_ip", u.HashOn)
		}
	}
	switch u.Protocol {
	case "http1", "h2c":
	case "h2":
		if u.Scheme != "https" && u.MeshIdentity == "" {
			c.errorf(p+".protocol", "h2 needs TLS to the upstream (scheme: https or mesh_identity); use h2c for plain HTTP/2")
		}
	default:
		c.errorf(p+".protocol", "must be one of %s (found %q)", strings.Join(Protocols, ", "), u.Protocol)
	}
	if u.Protocol == "h2c" && (u.Scheme == "https" || u.MeshIdentity != "") {
		c.errorf(p+".protocol", "h2c is HTTP/2 without TLS; with TLS use h2")
	}
	if h := u.HealthCheck; h != nil {
		if len(h.Path) == 0 || h.Path[0] != '/' {
			c.errorf(p+".health_check.path", "must start with \"/\"")
		}
		if h.HealthyThreshold < 0 || h.UnhealthyThreshold < 0 {
			c.errorf(p+".health_check", "thresholds must not be negative")
		}
		if h.Interval < 0 || h.Timeout < 0 {
			c.errorf(p+".health_check", "interval and timeout must not be negative")
		} else if h.Interval != 0 && h.Timeout > h.Interval {
			c.errorf(p+".health_check.timeout", "exceeds the interval")
		}
	}
	if r := u.Retries; r != nil {
		if r.Attempts < 0 || r.Attempts > 10 {
			c.errorf(p+".retries.attempts", "must be between 0 and 10")
		}
		if r.BudgetPercent < 0 || r.BudgetPercent > 100 {
			c.errorf(p+".retries.budget_percent", "must be between 0 and 100")
		}
		if r.PerTryTimeout < 0 || r.Backoff < 0 || r.MaxBackoff < 0 {
			c.errorf(p+".retries", "durations must not be negative")
		} else if r.MaxBackoff != 0 && r.MaxBackoff < r.Backoff {
			c.errorf(p+".retries.max_backoff", "is below backoff")
		}
		if r.MaxBody < 0 {
			c.errorf(p+".retries.max_body", "must not be negative")
		}
		seen := map[string]bool{}
		for i, on := range r.On {
			switch on {
			case "connect_failure", "reset", "timeout":
			default:
				if n, err := strconv.Atoi(on); err != nil || n < 500 || n > 599 {
					c.errorf(indexPath(p+".retries.on", i), "%q: use connect_failure, reset, timeout or a 5xx status code", on)
				}
			}
			if seen[on] {
				c.errorf(indexPath(p+".retries.on", i), "%q is listed twice", on)
			}
			seen[on] = true
		}
	}
	if b := u.CircuitBreaker; b != nil {
		if b.MaxPending < 0 || b.MaxRequests < 0 || b.Consecutive5xx < 0 || b.ConsecutiveFailures < 0 || b.HalfOpenRequests < 0 {
			c.errorf(p+".circuit_breaker", "limits must not be negative")
		}
		if b.EjectFor < 0 || b.OpenFor < 0 {
			c.errorf(p+".circuit_breaker", "durations must not be negative")
		}
		if b.MaxEjectedPercent < 0 || b.MaxEjectedPercent > 100 {
			c.errorf(p+".circuit_breaker.max_ejected_percent", "must be between 0 and 100")
		}
	}
	if m := u.Mirror; m != nil {
		switch {
		case m.Upstream == "":
			c.errorf(p+".mirror.upstream", "is required")
		case !hasKey(c.f.Upstreams, m.Upstream):
			c.errorf(p+".mirror.upstream", "undefined upstream %q", m.Upstream)
		case c.f.Upstreams[m.Upstream].Mirror != nil:
			c.errorf(p+".mirror.upstream", "upstream %q mirrors itself; mirrors do not chain", m.Upstream)
		}
		if m.Percent < 0 || m.Percent > 100 {
			c.errorf(p+".mirror.percent", "must be between 0 and 100")
		}
		if m.MaxInflight < 0 || m.MaxBody < 0 {
			c.errorf(p+".mirror", "limits must not be negative")
		}
	}
}

// checkSplitHeaders checks the header overrides of a route's split targets.
func (c *checker) checkSplitHeaders(p string, r Route) {
	for j, s := range r.Split {
		for _, h := range slices.Sorted(maps.Keys(s.Headers)) {
			if !validToken(h) {
				c.errorf(fmt.Sprintf("%s.split[%d].headers", p, j), "%q is not a header name", h)
			}
		}
	}
}

// validToken reports whether s is an RFC 9110 token (a header or cookie name).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", ch) >= 0:
		default:
			return false
		}
	}
	return true
}
