// Package redisclient builds the one go-redis client a routes file's redis
// section describes. Rate limits use it, and so can anything else that keeps
// shared state in Redis (the ACME certificate cache), so that every user
// agrees on topology, credentials and time-outs.
package redisclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/causewayhq/causeway/routes"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Topology says which kind of client a redis section asks for.
type Topology string

const (
	Single   Topology = "single"   // url
	Cluster  Topology = "cluster"  // addrs
	Sentinel Topology = "sentinel" // addrs + master_name
)

// ClientName is what Causeway's connections call themselves (CLIENT LIST),
// so an operator can tell them apart from other users of a shared Redis.
const ClientName = "causeway"

// DialAttempts is how often a new connection is dialed before the command
// that wanted it fails: once. go-redis's default (five attempts 100 ms
// apart) made a node that refuses connections, known in well under a
// millisecond, cost every command about 400 ms, so a rate-limit decision
// waited out its whole time-out before on_error applied. A refused dial
// is an answer: callers with a fallback (on_error, the breakers) take over
// at once, and the next command dials again.
//
// Commands are not resent either (MaxRetries -1, one node or Sentinel). A
// Cluster client still resends within MaxRedirects, the loop that also
// follows MOVED and ASK, which cannot be turned off alone; rate-limit
// scripts and the OIDC session store's writes opt out per command
// (SendOnce). A resend after a failed dial only multiplied the failed
// dials: go-redis's pool stops dialing after PoolSize failed dials
// and then fails every command until a probe, once a second, reaches
// Redis again. With four dials per command that took five commands, and
// sessions stayed unusable for up to a second after Redis was back
// (TestOIDCRedisDown). A resend after a broken connection may run a
// command twice, which no user here wants: a rate-limit script would count
// a request twice, a session lock (SET NX) would find itself taken. A
// connection that died while idle in the pool is found when it is taken
// from the pool, not by a failed command.
const DialAttempts = 1

// Config is a redis section resolved into go-redis options: the password
// read from its environment variable, time-outs applied. Exactly one of the
// option pointers is set, matching Topology.
type Config struct {
	Topology Topology
	Single   *redis.Options
	Cluster  *redis.ClusterOptions
	Failover *redis.FailoverOptions
}

// Resolve turns cfg into client options without connecting. It reads the
// password from the variable named by password_env; an unset or empty
// variable is an error, because silently connecting without the password
// would only fail later and less clearly.
func Resolve(cfg *routes.Redis) (*Config, error) {
	if cfg == nil {
		return nil, errors.New("redis: no redis section")
	}
	password, err := password(cfg)
	if err != nil {
		return nil, err
	}
	timeout := cfg.Timeout.D()
	if timeout <= 0 {
		timeout = routes.DefaultRedisTimeout
	}
	switch {
	case cfg.URL != "" && len(cfg.Addrs) > 0:
		return nil, errors.New("redis: url and addrs are exclusive")
	case cfg.URL != "":
		if cfg.MasterName != "" {
			return nil, errors.New("redis: master_name needs addrs (the Sentinel addresses), not url")
		}
		opt, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("redis: url: %s", redactURL(err.Error(), cfg.URL))
		}
		if cfg.Username != "" {
			opt.Username = cfg.Username
		}
		if password != "" {
			opt.Password = password
		}
		if cfg.DB != 0 {
			opt.DB = cfg.DB
		}
		opt.ClientName = ClientName
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = timeout, timeout, timeout, timeout
		opt.ContextTimeoutEnabled = true
		opt.MaintNotificationsConfig = maintOff()
		opt.DialerRetries = DialAttempts
		opt.MaxRetries = -1
		opt.DisableIdentity = true
		return &Config{Topology: Single, Single: opt}, nil
	case len(cfg.Addrs) == 0:
		return nil, errors.New("redis: needs url (one node) or addrs (Cluster or Sentinel)")
	case cfg.MasterName != "":
		return &Config{Topology: Sentinel, Failover: &redis.FailoverOptions{
			MasterName:    cfg.MasterName,
			SentinelAddrs: append([]string(nil), cfg.Addrs...),
			// The same credentials are used for Sentinel and the master: a
			// deployment that splits them can grow keys for it later.
			SentinelUsername:      cfg.Username,
			SentinelPassword:      password,
			Username:              cfg.Username,
			Password:              password,
			DB:                    cfg.DB,
			ClientName:            ClientName,
			DialTimeout:           timeout,
			ReadTimeout:           timeout,
			WriteTimeout:          timeout,
			PoolTimeout:           timeout,
			ContextTimeoutEnabled: true,
			DialerRetries:         DialAttempts,
			MaxRetries:            -1,
			DisableIdentity:       true,
		}}, nil
	default:
		if cfg.DB != 0 {
			return nil, errors.New("redis: db must be 0 with Redis Cluster (it has only database 0)")
		}
		return &Config{Topology: Cluster, Cluster: &redis.ClusterOptions{
			Addrs:                    append([]string(nil), cfg.Addrs...),
			Username:                 cfg.Username,
			Password:                 password,
			ClientName:               ClientName,
			DialTimeout:              timeout,
			ReadTimeout:              timeout,
			WriteTimeout:             timeout,
			PoolTimeout:              timeout,
			ContextTimeoutEnabled:    true,
			MaintNotificationsConfig: maintOff(),
			DialerRetries:            DialAttempts,
			DisableIdentity:          true,
			// Routing policies look every command up in go-redis's
			// command-info cache, filled by the client's first command:
			// a COMMAND from a random node, under one lock that every
			// other command waits on and that ignores their deadlines.
			// When that node was a master that is down, the fetch cost
			// five dial attempts 100 ms apart (about 420 ms; before
			// DialAttempts) before it tried another node, and every
			// command to the healthy masters meanwhile missed a 300 ms
			// time-out (measured;
			// docs/ratelimit.md, "Outages"). Every command this client
			// sends names its key (or is one go-redis fans out itself,
			// SCRIPT LOAD), so the slot routes it and the policies add
			// nothing.
			DisableRoutingPolicies: true,
		}}, nil
	}
}

// Every topology also sets DisableIdentity: go-redis otherwise sends
// CLIENT SETINFO (its library name and version) on every new connection,
// which Redis before 7.2 refuses: a wasted round trip per connection, on
// the path of the command that needed the connection. ClientName (CLIENT
// SETNAME, sent in the same handshake) still names the connections.

// maintOff turns off the maintenance-notification handshake: open-source
// Redis refuses it, and trying costs a round trip on every new connection.
func maintOff() *maintnotifications.Config {
	return &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
}

// New builds the client cfg describes. It does not connect: the first
// command does, so an edge can start while Redis is down (on_error decides
// what happens meanwhile).
func New(cfg *routes.Redis) (redis.UniversalClient, error) {
	c, err := Resolve(cfg)
	if err != nil {
		return nil, err
	}
	return c.NewClient(), nil
}

// NewClient builds the client for a resolved Config.
func (c *Config) NewClient() redis.UniversalClient {
	routeLibraryLogs()
	switch c.Topology {
	case Cluster:
		return redis.NewClusterClient(c.Cluster)
	case Sentinel:
		return redis.NewFailoverClient(c.Failover)
	default:
		return redis.NewClient(c.Single)
	}
}

// Timeout is the per-call time-out of cfg: every Redis call should run under
// a context with this deadline so a slow Redis cannot stall a request.
func Timeout(cfg *routes.Redis) time.Duration {
	if cfg == nil || cfg.Timeout <= 0 {
		return routes.DefaultRedisTimeout
	}
	return cfg.Timeout.D()
}

func password(cfg *routes.Redis) (string, error) {
	if cfg.PasswordEnv == "" {
		return "", nil
	}
	v, ok := os.LookupEnv(cfg.PasswordEnv)
	if !ok || v == "" {
		return "", fmt.Errorf("redis: password_env names %s, which is not set or empty", cfg.PasswordEnv)
	}
	return v, nil
}

// redactURL keeps a password written into the URL out of error messages
// (url.Parse errors quote the input).
func redactURL(msg, raw string) string {
	if raw == "" {
		return msg
	}
	return strings.ReplaceAll(msg, raw, "<redis.url>")
}

var libraryLogsOnce sync.Once

// routeLibraryLogs sends go-redis's own log lines (dial failures, pool
// trouble: "redis: connection pool: failed to dial after 1 attempts") through
// slog.Default() instead of go-redis's plain-text logger on stderr, so they
// come out as JSON like every other line. go-redis's logger is one for the
// whole process: it is installed once, before the first client exists, and
// it looks slog.Default() up at every line, so whatever the process set as
// its logger applies, and nothing is swapped per edge while clients log.
func routeLibraryLogs() {
	libraryLogsOnce.Do(func() { redis.SetLogger(slogLogging{}) })
}

// slogLogging adapts slog.Default() to go-redis's logging interface.
type slogLogging struct{}

func (slogLogging) Printf(ctx context.Context, format string, v ...any) {
	msg := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	// go-redis logs trouble it handles itself (it retries, redials), worth
	// a warning, and some news (a Sentinel naming the master), worth info.
	level := slog.LevelInfo
	if lower := strings.ToLower(msg); strings.Contains(lower, "fail") || strings.Contains(lower, "error") ||
		strings.Contains(lower, "panic") || strings.Contains(lower, "reject") || strings.Contains(lower, "unread") ||
		strings.Contains(lower, "nil connection") {
		level = slog.LevelWarn
	}
	slog.Default().Log(ctx, level, "redis: "+msg, "library", "go-redis")
}
