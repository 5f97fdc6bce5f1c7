package routes

import (
	"strings"
	"testing"
	"time"
)

func TestRateLimitValidation(t *testing.T) {
	limits := func(body string) string { return base + "rate_limits:\n" + body }
	redis := func(body string) string { return base + "redis:\n" + body }
	tests := []struct {
		name string
		file string
		want string // "" accepts the file; otherwise one exact error line
	}{
		{"client ip", limits("  per-ip: {key: client_ip, limit: 20, per: 1s}\n"), ""},
		{"combination", limits("  l: {key: \"route+claim:sub+header:X-Tenant+api_key\", limit: 1, per: 1m, burst: 5}\n"), ""},
		{"zero limit", limits("  l: {key: route, limit: 0, per: 1s}\n"), "t.yaml:10:26: rate_limits.l.limit: must be a positive integer"},
		{"no per", limits("  l: {key: route, limit: 1}\n"), "t.yaml:10:6: rate_limits.l.per: must be a positive duration such as 1s or 1m"},
		{"per below a millisecond", limits("  l: {key: route, limit: 1, per: 500us}\n"), "t.yaml:10:34: rate_limits.l.per: must be at least 1ms (found 500µs)"},
		{"negative burst", limits("  l: {key: route, limit: 1, per: 1s, burst: -1}\n"), "t.yaml:10:45: rate_limits.l.burst: must not be negative"},
		{"burst × per beyond exact counting", limits("  l: {key: route, limit: 1, per: 8760h, burst: 100}\n"), "t.yaml:10:48: rate_limits.l.burst: burst × per is too large to count exactly (at most about 35 years)"},
		{"default burst counts too", limits("  l: {key: route, limit: 1000000, per: 8760h}\n"), "t.yaml:10:6: rate_limits.l.burst: burst × per is too large to count exactly (at most about 35 years)"},
		{"no key", limits("  l: {limit: 1, per: 1s}\n"), "t.yaml:10:6: rate_limits.l.key: is required: client_ip, header:NAME, claim:NAME, api_key, route, or several joined by +"},
		{"unknown part", limits("  l: {key: user, limit: 1, per: 1s}\n"), `t.yaml:10:12: rate_limits.l.key: unknown key part "user" (client_ip, header:NAME, claim:NAME, api_key, route)`},
		{"argument where none is taken", limits("  l: {key: \"route:x\", limit: 1, per: 1s}\n"), `t.yaml:10:12: rate_limits.l.key: "route" takes no argument`},
		{"header without name", limits("  l: {key: \"header:\", limit: 1, per: 1s}\n"), `t.yaml:10:12: rate_limits.l.key: "header:" needs a header name, e.g. header:X-Tenant`},
		{"header name with a space", limits("  l: {key: \"header:X Tenant\", limit: 1, per: 1s}\n"), `t.yaml:10:12: rate_limits.l.key: "header:X Tenant" needs a header name, e.g. header:X-Tenant`},
		{"claim without name", limits("  l: {key: \"claim:\", limit: 1, per: 1s}\n"), `t.yaml:10:12: rate_limits.l.key: "claim:" needs a name, e.g. claim:sub`},
		{"empty part", limits("  l: {key: \"route+\", limit: 1, per: 1s}\n"), `t.yaml:10:12: rate_limits.l.key: unknown key part "" (client_ip, header:NAME, claim:NAME, api_key, route)`},
		{"part twice", limits("  l: {key: \"header:X-A+header:x-a\", limit: 1, per: 1s}\n"), `t.yaml:10:12: rate_limits.l.key: "header:x-a" appears twice`},
		{"ipv6 prefix", limits("  l: {key: client_ip, limit: 1, per: 1s, ipv6_prefix: 48}\n"), ""},
		{"ipv6 prefix too long", limits("  l: {key: client_ip, limit: 1, per: 1s, ipv6_prefix: 129}\n"), "t.yaml:10:55: rate_limits.l.ipv6_prefix: must be between 1 and 128 (found 129)"},
		{"ipv6 prefix negative", limits("  l: {key: client_ip, limit: 1, per: 1s, ipv6_prefix: -1}\n"), "t.yaml:10:55: rate_limits.l.ipv6_prefix: must be between 1 and 128 (found -1)"},
		{"bad name", limits("  \"per ip\": {key: route, limit: 1, per: 1s}\n"), `t.yaml:10:13: rate_limits.per ip: rate limit name "per ip": use letters, digits, '.', '_' and '-' (at most 128)`},

		{"redis url", redis("  url: redis://127.0.0.1:6379/0\n"), ""},
		{"redis cluster", redis("  addrs: [\"127.0.0.1:7000\", \"127.0.0.1:7001\"]\n"), ""},
		{"redis sentinel", redis("  addrs: [\"127.0.0.1:26379\"]\n  master_name: main\n  db: 2\n  username: edge\n  password_env: REDIS_PASSWORD\n"), ""},
		{"redis neither", redis("  on_error: deny\n"), "t.yaml:10:3: redis: needs url (one node) or addrs (Cluster or Sentinel)"},
		{"redis both", redis("  url: redis://127.0.0.1:6379/0\n  addrs: [\"127.0.0.1:7000\"]\n"), "t.yaml:11:10: redis.addrs: url and addrs are exclusive: use one"},
		{"redis bad url keeps the secret out", redis("  url: http://user:s3cret@127.0.0.1\n"), "t.yaml:10:8: redis.url: is not a redis://, rediss:// or unix:// URL"},
		{"redis sentinel with url", redis("  url: redis://127.0.0.1:6379/0\n  master_name: main\n"), "t.yaml:11:16: redis.master_name: Sentinel needs addrs (the Sentinels' addresses), not url"},
		{"redis bad addr", redis("  addrs: [\"127.0.0.1\"]\n"), `t.yaml:10:11: redis.addrs[0]: "127.0.0.1" is not host:port`},
		{"redis addr twice", redis("  addrs: [\"127.0.0.1:7000\", \"127.0.0.1:7000\"]\n"), `t.yaml:10:29: redis.addrs[1]: "127.0.0.1:7000" is listed twice`},
		{"redis negative db", redis("  url: redis://127.0.0.1:6379\n  db: -1\n"), "t.yaml:11:7: redis.db: must not be negative"},
		{"redis db with cluster", redis("  addrs: [\"127.0.0.1:7000\"]\n  db: 1\n"), "t.yaml:11:7: redis.db: must be 0 with Redis Cluster (it has only database 0)"},
		{"redis bad password_env", redis("  url: redis://127.0.0.1:6379\n  password_env: \"MY-PASSWORD\"\n"), `t.yaml:11:17: redis.password_env: "MY-PASSWORD" is not an environment variable name`},
		{"redis hash tag in prefix", redis("  url: redis://127.0.0.1:6379\n  key_prefix: \"{cw}:\"\n"), "t.yaml:11:15: redis.key_prefix: must not contain { or }: a hash tag in the prefix would put every key in one Cluster slot"},
		{"redis bad on_error", redis("  url: redis://127.0.0.1:6379\n  on_error: ignore\n"), `t.yaml:11:13: redis.on_error: must be allow or deny (found "ignore")`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.file))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid file refused: %v", err)
			case tc.want == "":
			case err == nil:
				t.Fatalf("file accepted, want %q", tc.want)
			case err.Error() != tc.want:
				t.Fatalf("errors:\n%v\nwant exactly:\n%s", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error leaks a password: %v", err)
			}
		})
	}
}

func TestRateLimitDefaults(t *testing.T) {
	f, err := Parse("t.yaml", []byte(base+`rate_limits:
  default-burst: {key: client_ip, limit: 20, per: 1s}
  own-burst: {key: client_ip, limit: 100, per: 1m, burst: 5}
redis:
  url: redis://127.0.0.1:6379/0
`))
	if err != nil {
		t.Fatal(err)
	}
	if b := f.RateLimits["default-burst"].Burst; b != 20 {
		t.Errorf("burst defaults to limit: got %d", b)
	}
	if b := f.RateLimits["own-burst"].Burst; b != 5 {
		t.Errorf("an explicit burst is kept: got %d", b)
	}
	if p := f.RateLimits["own-burst"].IPv6Prefix; p != DefaultIPv6Prefix {
		t.Errorf("ipv6_prefix defaults to %d: got %d", DefaultIPv6Prefix, p)
	}
	r := f.Redis
	if r.OnError != "allow" || r.Timeout.D() != 100*time.Millisecond || r.KeyPrefix != DefaultRedisKeyPrefix || r.DB != 0 {
		t.Errorf("redis defaults: %+v", r)
	}
}
