package routes

import (
	"net/url"
	"regexp"
	"strings"
	"time"
)

// DefaultRedisTimeout bounds every Redis call so a slow Redis cannot stall requests.
const DefaultRedisTimeout = 100 * time.Millisecond

// DefaultRedisKeyPrefix starts every key Causeway writes to Redis.
const DefaultRedisKeyPrefix = "causeway:"

func (f *File) defaultRedis() {
	if f.Redis == nil {
		return
	}
	if f.Redis.OnError == "" {
		f.Redis.OnError = "allow"
	}
	setDuration(&f.Redis.Timeout, DefaultRedisTimeout)
	if f.Redis.KeyPrefix == "" {
		f.Redis.KeyPrefix = DefaultRedisKeyPrefix
	}
}

var envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

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
		// The URL may hold a password: never quote it back.
		if u, err := url.Parse(r.URL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
			c.errorf("redis.url", "is not a redis://, rediss:// or unix:// URL")
		}
		if r.MasterName != "" {
			c.errorf("redis.master_name", "Sentinel needs addrs (the Sentinels' addresses), not url")
		}
		if u, err := url.Parse(r.URL); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				c.warnf("redis.url", "the password is written in the file: put it in an environment variable and name it in redis.password_env")
			}
		}
	}
	seen := map[string]bool{}
	for i, a := range r.Addrs {
		if err := checkEndpoint(a); err != nil {
			c.errorf(indexPath("redis.addrs", i), "%v", err)
		}
		if seen[a] {
			c.errorf(indexPath("redis.addrs", i), "%q is listed twice", RedactValue(a))
		}
		seen[a] = true
	}
	if r.DB < 0 {
		c.errorf("redis.db", "must not be negative")
	}
	if r.DB != 0 && len(r.Addrs) > 0 && r.MasterName == "" {
		c.errorf("redis.db", "must be 0 with Redis Cluster (it has only database 0)")
	}
	if r.PasswordEnv != "" && !envNameRe.MatchString(r.PasswordEnv) {
		c.errorf("redis.password_env", "%q is not an environment variable name", r.PasswordEnv)
	}
	if strings.ContainsAny(r.KeyPrefix, "{}") {
		c.errorf("redis.key_prefix", "must not contain { or }: a hash tag in the prefix would put every key in one Cluster slot")
	}
	if r.OnError != "allow" && r.OnError != "deny" {
		c.errorf("redis.on_error", "must be allow or deny (found %q)", r.OnError)
	}
}
