package routes

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Caller tokens (docs/mesh.md, "The caller's identity through the mesh").
const (
	DefaultCallerHeader       = "Causeway-Caller"
	DefaultCallerLifetime     = 60 * time.Second
	DefaultCallerCache        = 30 * time.Second
	DefaultCallerSkew         = 5 * time.Second
	DefaultCallerMaxLifetime  = 10 * time.Minute
	DefaultCallerMaxHops      = 3
	CallerHeaderPrefix        = "X-Causeway-Caller-"
	maxCallerLifetimeAccepted = time.Hour
)

// CallerToken makes the edge (mesh.caller_token) or a sidecar's outbound
// side (outbound.caller_token) send a caller token to mesh upstreams.
type CallerToken struct {
	// Header the token travels in (default Causeway-Caller).
	Header string `yaml:"header"`
	// Lifetime of a token (default 60s).
	Lifetime Duration `yaml:"lifetime"`
	// Cache reuses a token for the same principal and upstream this long
	// (default 30s; 0s: a token per request, which carries the request id
	// and is what a receiver's replay check needs).
	Cache Duration `yaml:"cache"`
}

// CacheFor is the token cache's duration (0: off).
func (t *CallerToken) CacheFor() time.Duration { return t.Cache.D() }

// InboundCallers makes a sidecar verify caller tokens.
type InboundCallers struct {
	Header string `yaml:"header"`
	// Issuers are the workloads (the edges) allowed to mint a chain's first
	// token. Required.
	Issuers []string `yaml:"issuers"`
	// Require refuses requests without a token (401). Without it such a
	// request reaches the service with no caller headers: called directly,
	// not through the edge.
	Require bool `yaml:"require"`
	// MaxHops refuses tokens exchanged through more services than this
	// (default 3; 0: only tokens straight from an issuer).
	MaxHops *int `yaml:"max_hops"`
	// Replay refuses a token seen before within its lifetime.
	Replay bool `yaml:"replay"`
	// ClockSkew allowed on a token's times (default 5s).
	ClockSkew Duration `yaml:"clock_skew"`
	// MaxLifetime refuses tokens that live longer (default 10m).
	MaxLifetime Duration `yaml:"max_lifetime"`
	// Headers are the header names the edge forwards for a principal (its
	// forward_claims and api_key forward headers, e.g. X-User-Id). The
	// service receives them only from a verified token: copies sent by a
	// caller are always removed.
	Headers []string `yaml:"headers"`
}

// InboundRule authorises requests by path and method on both identities:
// the workload calling (mTLS) and the user on whose behalf it calls (the
// caller token). The first rule that matches a request decides it.
type InboundRule struct {
	Match InboundMatch `yaml:"match"`
	// Workloads, when set, are the only mTLS peers the rule lets in.
	Workloads []string `yaml:"workloads"`
	// Callers, when set, requires a verified caller token that meets it.
	Callers *RuleCallers `yaml:"callers"`
}

// InboundMatch selects requests for a rule; empty matches every request.
type InboundMatch struct {
	Path       string   `yaml:"path"`
	PathPrefix string   `yaml:"path_prefix"`
	Methods    []string `yaml:"methods"`
}

// RuleCallers is what a rule requires of the caller token.
type RuleCallers struct {
	// Anonymous lets in tokens of requests the edge passed without
	// authentication (default: refused).
	Anonymous bool `yaml:"anonymous"`
	// Authenticators, when set, are the edge authenticators accepted.
	Authenticators []string `yaml:"authenticators"`
	// RequireClaims: each claim must have this value ("sub" and "iss" are
	// the principal's subject and issuer; other claims must be among those
	// the edge forwards).
	RequireClaims map[string]string `yaml:"require_claims"`
	// MaxHops narrows inbound.callers.max_hops for this rule.
	MaxHops *int `yaml:"max_hops"`
	// Through lists workloads the request must have passed through.
	Through []string `yaml:"through"`
}

func (t *CallerToken) applyDefaults(cacheSet bool) {
	if t.Header == "" {
		t.Header = DefaultCallerHeader
	}
	t.Header = http.CanonicalHeaderKey(t.Header)
	setDuration(&t.Lifetime, DefaultCallerLifetime)
	if !cacheSet { // written in the file, 0s means off
		t.Cache = Duration(min(DefaultCallerCache, t.Lifetime.D()/2))
	}
}

func (in *InboundCallers) applyDefaults() {
	if in.Header == "" {
		in.Header = DefaultCallerHeader
	}
	in.Header = http.CanonicalHeaderKey(in.Header)
	if in.MaxHops == nil {
		h := DefaultCallerMaxHops
		in.MaxHops = &h
	}
	setDuration(&in.ClockSkew, DefaultCallerSkew)
	setDuration(&in.MaxLifetime, DefaultCallerMaxLifetime)
	for i, h := range in.Headers {
		in.Headers[i] = http.CanonicalHeaderKey(h)
	}
}

// checkCallerToken checks a caller_token section at p.
func (c *checker) checkCallerToken(p string, t *CallerToken) {
	c.checkCallerHeader(p+".header", t.Header)
	if l := t.Lifetime.D(); l < time.Second || l > maxCallerLifetimeAccepted {
		c.errorf(p+".lifetime", "must be between 1s and %s (found %s)", maxCallerLifetimeAccepted, l)
	}
	if t.Cache.D() < 0 || t.Cache.D() >= t.Lifetime.D() {
		c.errorf(p+".cache", "must be at least 0s and shorter than lifetime %s (found %s)", t.Lifetime.D(), t.Cache.D())
	}
}

// reservedCallerHeaders may not carry a token or a principal: the proxy
// owns them.
var reservedCallerHeaders = []string{"Authorization", "Connection", "Content-Length", "Content-Type", "Cookie", "Host",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "X-Causeway-Peer-Id", "X-Request-Id", "Traceparent"}

func (c *checker) checkCallerHeader(p, h string) {
	k := http.CanonicalHeaderKey(h)
	switch {
	case !httpTokenRe.MatchString(h):
		c.errorf(p, "%q is not a header name", h)
	case slices.Contains(reservedCallerHeaders, k) || strings.HasPrefix(k, "X-Forwarded-") || strings.HasPrefix(k, CallerHeaderPrefix):
		c.errorf(p, "%s is a header the proxy owns; pick another name", k)
	}
}

// checkCallers checks inbound.callers and inbound.rules.
func (c *checker) checkCallers(in *Inbound) {
	if cl := in.Callers; cl != nil {
		c.checkCallerHeader("inbound.callers.header", cl.Header)
		if len(cl.Issuers) == 0 {
			c.errorf("inbound.callers.issuers", "is required: the SPIFFE IDs of the edges whose caller tokens are believed")
		}
		c.checkSPIFFEIDs("inbound.callers.issuers", cl.Issuers)
		if *cl.MaxHops < 0 || *cl.MaxHops > 16 {
			c.errorf("inbound.callers.max_hops", "must be between 0 and 16 (found %d)", *cl.MaxHops)
		}
		if d := cl.ClockSkew.D(); d < 0 || d > time.Minute {
			c.errorf("inbound.callers.clock_skew", "must be between 0s and 1m (found %s)", d)
		}
		if d := cl.MaxLifetime.D(); d < time.Second || d > maxCallerLifetimeAccepted {
			c.errorf("inbound.callers.max_lifetime", "must be between 1s and %s (found %s)", maxCallerLifetimeAccepted, d)
		}
		seen := map[string]bool{}
		for i, h := range cl.Headers {
			p := fmt.Sprintf("inbound.callers.headers[%d]", i)
			c.checkCallerHeader(p, h)
			if h == cl.Header {
				c.errorf(p, "%s is the token's own header", h)
			}
			if seen[h] {
				c.errorf(p, "%s is listed twice", h)
			}
			seen[h] = true
		}
	}
	for i, r := range in.Rules {
		p := fmt.Sprintf("inbound.rules[%d]", i)
		c.checkInboundMatch(p+".match", r.Match)
		c.checkSPIFFEIDs(p+".workloads", r.Workloads)
		if r.Callers == nil {
			if len(r.Workloads) == 0 {
				c.warnf(p, "a rule with neither workloads nor callers lets every allowed caller in")
			}
			continue
		}
		if in.Callers == nil {
			c.errorf(p+".callers", "needs inbound.callers (which edges' tokens to believe)")
		}
		rc := r.Callers
		if rc.MaxHops != nil && (*rc.MaxHops < 0 || *rc.MaxHops > 16) {
			c.errorf(p+".callers.max_hops", "must be between 0 and 16 (found %d)", *rc.MaxHops)
		}
		c.checkSPIFFEIDs(p+".callers.through", rc.Through)
		for _, k := range slices.Sorted(maps.Keys(rc.RequireClaims)) {
			if k == "" {
				c.errorf(p+".callers.require_claims", "empty claim name")
			}
		}
		if rc.Anonymous && (len(rc.RequireClaims) > 0 || len(rc.Authenticators) > 0) {
			c.errorf(p+".callers.anonymous", "an anonymous caller has no claims or authenticator: drop anonymous or the requirements")
		}
	}
}

func (c *checker) checkInboundMatch(p string, m InboundMatch) {
	if m.Path != "" && m.PathPrefix != "" {
		c.errorf(p+".path_prefix", "path and path_prefix are exclusive: use one")
	}
	if m.Path != "" && !strings.HasPrefix(m.Path, "/") {
		c.errorf(p+".path", "must start with \"/\" (found %q)", m.Path)
	}
	if m.PathPrefix != "" && !strings.HasPrefix(m.PathPrefix, "/") {
		c.errorf(p+".path_prefix", "must start with \"/\" (found %q)", m.PathPrefix)
	}
	c.checkMethods(p+".methods", m.Methods)
}

func (c *checker) checkSPIFFEIDs(p string, ids []string) {
	seen := map[string]bool{}
	for i, s := range ids {
		ip := fmt.Sprintf("%s[%d]", p, i)
		id, err := spiffeid.FromString(s)
		if err != nil {
			c.errorf(ip, "%q is not a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH): %v", s, err)
			continue
		}
		if seen[id.String()] {
			c.errorf(ip, "%s is listed twice", id)
		}
		seen[id.String()] = true
	}
}
