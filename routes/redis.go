package routes

import (
	"net/url"
	"time"
)

// DefaultRedisTimeout bounds every Redis call so a slow Redis cannot stall requests.
const DefaultRedisTimeout = 100 * time.Millisecond

func (f *File) defaultRedis() {
	if f.Redis == nil {
		return
	}
	if f.Redis.OnError == "" {
		f.Redis.OnError = "allow"
	}
	setDuration(&f.Redis.Timeout, DefaultRedisTimeout)
	if f.Redis.KeyPrefix == "" {
		f.Redis.KeyPrefix = "causeway:"
	}
}

func (c *checker) checkRedis() {
	r := c.f.Redis
	if r == nil {
		return
	}
	switch {
	case r.URL == "" && len(r.Addrs) == 0:
		c.errorf("redis", "needs url (one node) or addrs (Cluster or Sentinel)")
	case r.URL != "" && len(r.Addrs) > 0:
		c.errorf("redis.addrs", "url and addrs are exclusive: use one")
	}
	if r.URL != "" {
		if u, err := url.Parse(r.URL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
			c.errorf("redis.url", "%q is not a redis://, rediss:// or unix:// URL", r.URL)
		}
	}
	for i, a := range r.Addrs {
		if err := checkEndpoint(a); err != nil {
			c.errorf(indexPath("redis.addrs", i), "%v", err)
		}
	}
	if r.OnError != "allow" && r.OnError != "deny" {
		c.errorf("redis.on_error", "must be allow or deny (found %q)", r.OnError)
	}
}
