package edgetls

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/causewayhq/causeway/internal/redisclient"
	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/acme/autocert"
)

// RedisCache is an autocert.Cache kept in Redis, so that every edge replica
// reads the certificates, the ACME account key and the pending challenge
// tokens that any one of them stored. Put also announces the key on a
// channel, which lets a replica waiting for another's order wake at once.
type RedisCache struct {
	rdb    redis.UniversalClient
	prefix string // e.g. "causeway:acme:"
}

var _ autocert.Cache = (*RedisCache)(nil)

// NewRedisCache returns a cache whose keys all start with prefix.
func NewRedisCache(rdb redis.UniversalClient, prefix string) (*RedisCache, error) {
	if rdb == nil {
		return nil, errors.New("acme redis cache: no redis client")
	}
	return &RedisCache{rdb: rdb, prefix: prefix}, nil
}

func (c *RedisCache) dataKey(key string) string   { return c.prefix + "data:" + key }
func (c *RedisCache) lockKey(key string) string   { return c.prefix + "lock:" + key }
func (c *RedisCache) readyChan(key string) string { return c.prefix + "ready:" + key }

// Get returns autocert.ErrCacheMiss for a key Redis does not hold.
func (c *RedisCache) Get(ctx context.Context, key string) ([]byte, error) {
	data, err := c.rdb.Get(ctx, c.dataKey(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, autocert.ErrCacheMiss
	}
	if err != nil {
		return nil, fmt.Errorf("acme redis cache: get %q: %w", key, err)
	}
	return data, nil
}

// Put stores data without expiry: autocert checks validity itself and
// renews, and a certificate must not vanish from the cache while served.
func (c *RedisCache) Put(ctx context.Context, key string, data []byte) error {
	if err := c.rdb.Set(ctx, c.dataKey(key), data, 0).Err(); err != nil {
		return fmt.Errorf("acme redis cache: put %q: %w", key, err)
	}
	// A lost announcement only delays waiters until their next poll.
	_ = c.rdb.Publish(ctx, c.readyChan(key), "1").Err()
	return nil
}

// Delete removes key; a missing key is not an error.
func (c *RedisCache) Delete(ctx context.Context, key string) error {
	if err := c.rdb.Del(ctx, c.dataKey(key)).Err(); err != nil {
		return fmt.Errorf("acme redis cache: delete %q: %w", key, err)
	}
	return nil
}

// Lock timing. The lock is held for lockTTL and refreshed every
// lockRefresh while its holder orders, so a replica that dies mid-order
// frees the name within lockTTL and a slow order never loses its lock.
// pollEvery bounds how long a waiter sleeps if an announcement is lost.
const (
	lockTTL     = 30 * time.Second
	lockRefresh = 10 * time.Second
	pollEvery   = time.Second
)

// Lua scripts make release and refresh conditional on still owning the lock,
// so a holder whose lock expired cannot free another replica's lock. Run
// twice (go-redis resends a command whose connection broke), either does
// nothing more: unlike the lock's SET NX (acquire).
var (
	unlockScript  = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
	refreshScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`)
)

// orderOnce runs order only if key is in neither the cache nor being
// ordered by another replica. If another replica holds the lock, it waits
// until that replica's Put announces the key (or its lock lapses) and returns
// without ordering. It reports whether it ran order.
func (c *RedisCache) orderOnce(ctx context.Context, key string, order func() error) (bool, error) {
	// Subscribe before the first look, so a Put between the look and the
	// wait cannot be missed.
	ps := c.rdb.Subscribe(ctx, c.readyChan(key))
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		return false, fmt.Errorf("acme redis lock %q: subscribe: %w", key, err)
	}
	token, err := randomToken()
	if err != nil {
		return false, err
	}
	for {
		n, err := c.rdb.Exists(ctx, c.dataKey(key)).Result()
		if err != nil {
			return false, fmt.Errorf("acme redis lock %q: exists: %w", key, err)
		}
		if n > 0 {
			return false, nil
		}
		ok, err := c.acquire(ctx, key, token)
		if err != nil {
			return false, fmt.Errorf("acme redis lock %q: acquire: %w", key, err)
		}
		if ok {
			return true, c.holdWhile(ctx, key, token, order)
		}
		// A message, a poll time-out or a broken subscription all mean: look
		// again (a Redis failure then surfaces from Exists or SetNX).
		wctx, cancel := context.WithTimeout(ctx, pollEvery)
		_, _ = ps.ReceiveMessage(wctx)
		cancel()
		if ctx.Err() != nil {
			return false, fmt.Errorf("acme redis lock %q: waiting for another replica's order: %w", key, ctx.Err())
		}
	}
}

// acquire takes key's lock for token with one SET NX, sent once
// (redisclient.SendOnce): go-redis resends a command whose connection
// broke after Redis ran it, and a resent SET NX finds the lock it has just
// taken, reports it held by another replica, and this one waits out
// lockTTL for nobody. When the SET fails without an answer, Redis may have
// run it: the lock is read back, and holding it is success.
func (c *RedisCache) acquire(ctx context.Context, key, token string) (bool, error) {
	set := redis.NewBoolCmd(ctx, "set", c.lockKey(key), token, "px", lockTTL.Milliseconds(), "nx")
	_ = c.rdb.Process(ctx, redisclient.SendOnce{Cmder: set})
	ok, err := set.Result()
	if err == nil {
		return ok, nil
	}
	if v, gerr := c.rdb.Get(ctx, c.lockKey(key)).Result(); gerr == nil && v == token {
		return true, nil
	}
	return false, err
}

// holdWhile runs order while a goroutine keeps the lock alive, then frees it.
func (c *RedisCache) holdWhile(ctx context.Context, key, token string, order func() error) error {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(lockRefresh)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = refreshScript.Run(ctx, c.rdb, []string{c.lockKey(key)}, token, lockTTL.Milliseconds()).Err()
			}
		}
	}()
	err := order()
	close(done)
	<-stopped
	// Free the lock even if the handshake's context is gone, so the next
	// replica need not wait out the TTL.
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if uerr := unlockScript.Run(uctx, c.rdb, []string{c.lockKey(key)}, token).Err(); uerr != nil && err == nil {
		err = fmt.Errorf("acme redis lock %q: release: %w", key, uerr)
	}
	return err
}

func randomToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("acme redis lock: token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
