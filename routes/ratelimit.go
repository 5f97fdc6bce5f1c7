package routes

import (
	"maps"
	"slices"
	"strings"
	"time"
)

// MinRateLimitPer is the shortest window a rate limit may count over; the
// limiters count in microseconds, and shorter windows are not a meaningful
// policy for HTTP requests anyway.
const MinRateLimitPer = time.Millisecond

// maxRateLimitCapacity bounds burst × per: the Redis limiter computes with
// Lua doubles, which are exact integers only up to 2^53; 2^50 µs (about 35
// years) leaves room for the arithmetic around it.
const maxRateLimitCapacity = time.Duration(1<<50) * time.Microsecond

// DefaultIPv6Prefix is how much of an IPv6 client address client_ip keeps.
const DefaultIPv6Prefix = 64

func (f *File) defaultRateLimits() {
	for name, l := range f.RateLimits {
		if l.Burst == 0 {
			l.Burst = l.Limit
		}
		if l.IPv6Prefix == 0 {
			l.IPv6Prefix = DefaultIPv6Prefix
		}
		if l.Mode == "" {
			l.Mode = RateLimitExact
		}
		f.RateLimits[name] = l
	}
}

// Rate-limit modes.
const (
	RateLimitExact = "exact"
	RateLimitLease = "lease"
)

// RateLimitKeyParts splits a key such as "route+claim:sub" into its parts.
func RateLimitKeyParts(key string) []string { return strings.Split(key, "+") }

func (c *checker) checkRateLimits() {
	for _, name := range slices.Sorted(maps.Keys(c.f.RateLimits)) {
		l := c.f.RateLimits[name]
		p := "rate_limits." + name
		c.checkName(p, "rate limit", name)
		if l.Limit <= 0 {
			c.errorf(p+".limit", "must be a positive integer")
		}
		switch {
		case l.Per <= 0:
			c.errorf(p+".per", "must be a positive duration such as 1s or 1m")
		case l.Per.D() < MinRateLimitPer:
			c.errorf(p+".per", "must be at least %v (found %v)", MinRateLimitPer, l.Per.D())
		case l.Burst > 0 && time.Duration(l.Burst) > maxRateLimitCapacity/l.Per.D():
			c.errorf(p+".burst", "burst × per is too large to count exactly (at most about 35 years)")
		}
		if l.Burst < 0 {
			c.errorf(p+".burst", "must not be negative")
		}
		if l.IPv6Prefix < 1 || l.IPv6Prefix > 128 {
			c.errorf(p+".ipv6_prefix", "must be between 1 and 128 (found %d)", l.IPv6Prefix)
		}
		switch l.Mode {
		case RateLimitExact:
		case RateLimitLease:
			if c.f.Redis == nil {
				c.errorf(p+".mode", "lease takes tokens from Redis: it needs the redis section (in memory every decision is local already)")
			}
		default:
			c.errorf(p+".mode", "unknown mode %q (exact or lease)", l.Mode)
		}
		if l.Key == "" {
			c.errorf(p+".key", "is required: client_ip, header:NAME, claim:NAME, api_key, route, or several joined by +")
			continue
		}
		seen := map[string]bool{}
		for _, part := range RateLimitKeyParts(l.Key) {
			kind, arg, hasArg := strings.Cut(part, ":")
			switch kind {
			case "client_ip", "api_key", "route":
				if hasArg {
					c.errorf(p+".key", "%q takes no argument", kind)
				}
			case "header":
				if !httpTokenRe.MatchString(arg) {
					c.errorf(p+".key", "%q needs a header name, e.g. header:X-Tenant", part)
				}
			case "claim":
				if arg == "" {
					c.errorf(p+".key", "%q needs a name, e.g. claim:sub", part)
				}
			default:
				c.errorf(p+".key", "unknown key part %q (client_ip, header:NAME, claim:NAME, api_key, route)", part)
			}
			// Header names are case-insensitive: header:x-a and header:X-A are one part.
			norm := part
			if kind == "header" {
				norm = "header:" + strings.ToLower(arg)
			}
			if seen[norm] {
				c.errorf(p+".key", "%q appears twice", part)
			}
			seen[norm] = true
		}
	}
}
