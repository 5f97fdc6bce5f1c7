package routes

import (
	"strings"
)

func (f *File) defaultRateLimits() {
	for name, l := range f.RateLimits {
		if l.Burst == 0 {
			l.Burst = l.Limit
		}
		f.RateLimits[name] = l
	}
}

// RateLimitKeyParts splits a key such as "route+claim:sub" into its parts.
func RateLimitKeyParts(key string) []string { return strings.Split(key, "+") }

func (c *checker) checkRateLimits() {
	for _, name := range sortedKeys(c.f.RateLimits) {
		l := c.f.RateLimits[name]
		p := "rate_limits." + name
		c.checkName(p, "rate limit", name)
		if l.Limit <= 0 {
			c.errorf(p+".limit", "must be a positive integer")
		}
		if l.Per <= 0 {
			c.errorf(p+".per", "must be a positive duration such as 1s or 1m")
		}
		if l.Burst < 0 {
			c.errorf(p+".burst", "must not be negative")
		}
		if l.Key == "" {
			c.errorf(p+".key", "is required: client_ip, header:NAME, claim:NAME, api_key, route, or several joined by +")
			continue
		}
		for _, part := range RateLimitKeyParts(l.Key) {
			kind, arg, hasArg := strings.Cut(part, ":")
			switch kind {
			case "client_ip", "api_key", "route":
				if hasArg {
					c.errorf(p+".key", "%q takes no argument", kind)
				}
			case "header", "claim":
				if arg == "" {
					c.errorf(p+".key", "%q needs a name, e.g. %s:X-Tenant", kind, kind)
				}
			default:
				c.errorf(p+".key", "unknown key part %q (client_ip, header:NAME, claim:NAME, api_key, route)", part)
			}
		}
	}
}
