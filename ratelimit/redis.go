package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/causewayhq/causeway/internal/redisclient"
	"github.com/redis/go-redis/v9"
)

// script is the bucket algorithm of bucket.refill and bucket.take, run
// atomically in Redis: one round trip per decision, and no other client can
// interleave between reading and writing a bucket. Every number is an
// integer below 2^53, so Lua's doubles compute exactly what the Go code
// does. A refusal writes nothing. An allowed request stores the new level
// and sets the key to expire when the bucket is full again: a full bucket
// and a missing key mean the same, so Redis never keeps idle clients. (With
// a caller-supplied time the expiry gets a second of margin, because it
// runs on Redis's clock.) Stored fields that do not make sense (another
// limit's numbers, a level outside [0, cap]) are read as a fresh bucket.
//
// KEYS[1] bucket key
// ARGV    now in µs (0: use Redis TIME), rate, per (µs), burst
// returns {allowed (0/1), remaining, retry after µs, reset after µs}
const script = bucketLua + `
local s = redis.call('HMGET', KEYS[1], 'l', 't', 'p')
local level = levelAt(tonumber(s[1]), tonumber(s[2]), s[3])
if level < per then
  return {0, 0, ceildiv(per - level, rate), ceildiv(cap - level, rate)}
end
level = level - per
local reset = ceildiv(cap - level, rate)
redis.call('HSET', KEYS[1], 'l', string.format('%.0f', level), 't', string.format('%.0f', now), 'p', sig)
redis.call('PEXPIRE', KEYS[1], math.max(1, ceildiv(reset, 1000) + margin))
return {1, math.floor(level / per), 0, reset}
`

// bucketLua is what every script over a bucket starts with: the limit
// from ARGV[1..4] (now in µs, 0 for Redis TIME; rate; per in µs; burst),
// an exact integer ceil, and levelAt, the bucket's level at now from its
// stored fields (bucket.refill). Stored fields that do not make sense
// (another limit's numbers, a level outside [0, cap]) read as a fresh
// bucket.
const bucketLua = `
local rate = tonumber(ARGV[2])
local per = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local now = tonumber(ARGV[1])
-- the expiry runs on Redis's clock; with the caller's clock a margin keeps
-- a key from expiring early when the two disagree (an early expiry would
-- hand out a fresh burst)
local margin = 1000
if now == 0 then
  margin = 0
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local cap = burst * per
local sig = ARGV[2] .. '/' .. ARGV[3] .. '/' .. ARGV[4]

-- ceil(a/b) for non-negative integers, corrected so that the division's
-- rounding can never be off by one
local function ceildiv(a, b)
  if a <= 0 then return 0 end
  local q = math.floor(a / b)
  while q * b > a do q = q - 1 end
  while q * b < a do q = q + 1 end
  return q
end

local function levelAt(stored, last, p)
  if not (stored and last and p == sig and stored >= 0 and stored <= cap) then
    return cap
  end
  local elapsed = now - last
  -- a stamp older than the stored one (edges' clocks disagree) refills
  -- nothing and must not move the stored time back, or the same interval
  -- would be refilled twice
  if elapsed < 0 then now = last end
  if elapsed <= 0 then return stored end
  if elapsed >= ceildiv(cap - stored, rate) then return cap end
  return stored + elapsed * rate
end
`

// bucketScript is script run by its SHA, each decision sent once.
var bucketScript = redisclient.NewScript(script)

// Scripter is the part of a go-redis client the Redis limiter uses; every
// go-redis client (single node, Cluster, Sentinel) satisfies it. Scripts
// go through Process so that they can be marked never to be resent
// (redisclient.SendOnce).
type Scripter = redisclient.Scripter

// RedisOptions configures a Redis limiter.
type RedisOptions struct {
	// Prefix starts every key (routes: redis.key_prefix).
	Prefix string
	// Timeout bounds each decision's round trip, on top of any deadline the
	// caller's context has; 0 leaves only the caller's.
	Timeout time.Duration
	// Now supplies the time of each decision. Nil uses Redis's own clock
	// (TIME), the one clock every edge sharing the Redis agrees on; tests
	// inject a clock to be exact without sleeping.
	Now func() time.Time
	// Batcher, when set, sends decisions through it, pipelined with the
	// other decisions waiting at the same moment, instead of one round
	// trip each on the limiter's client. Its client should reach the same
	// Redis; its owner closes it.
	Batcher *Batcher
}

// Redis counts limits in Redis, shared by every edge that uses the same
// Redis and prefix.
type Redis struct {
	client Scripter
	opts   RedisOptions
	// batches, when set (by the Service), picks the Batcher per key:
	// one per Cluster master, so that a master that stops answering holds
	// up only the decisions for its own slots.
	batches interface {
		eval(ctx context.Context, key string, args [4]int64) ([4]int64, error)
	}
}

var _ Limiter = (*Redis)(nil)

// NewRedis returns a limiter that counts in client.
func NewRedis(client Scripter, opts RedisOptions) (*Redis, error) {
	if client == nil {
		return nil, errors.New("ratelimit: redis limiter needs a client")
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("ratelimit: redis timeout must not be negative (found %v)", opts.Timeout)
	}
	return &Redis{client: client, opts: opts}, nil
}

// Key is the Redis key that counts key under limit l: the limit's name,
// the client's key and the limit's numbers. The braces are a Cluster hash
// tag over the limit's name and the client's key: a decision touches one
// key, so it always runs on one slot.
//
// The numbers are part of the key because edges sharing a Redis can
// disagree on them for a while (a rolling reload, or one edge in mode
// lease, whose bucket is smaller, beside one in exact). In one key, each
// edge's write would read as "another limit's numbers" to the other and
// start the bucket afresh, so a client alternating between the edges would
// get a fresh burst on every request. Apart, each edge counts the client
// under its own numbers: at most both bursts, as a reload that changes a
// limit allows anyway.
func (r *Redis) Key(l Limit, key string) string {
	b, _ := l.bucket() // an invalid limit never reaches Redis: Allow refuses it first
	return r.key(l.Name, key, b)
}

func (r *Redis) key(name, key string, b bucket) string {
	sig := b.signature()
	var s strings.Builder
	s.Grow(len(r.opts.Prefix) + len(name) + len(key) + len(sig) + 7)
	s.WriteString(r.opts.Prefix)
	s.WriteString("rl:{")
	s.WriteString(name)
	s.WriteByte('|')
	s.WriteString(key)
	s.WriteString("}:")
	s.WriteString(sig)
	return s.String()
}

// Allow counts one request for key against l in one round trip, which
// with a Batcher it may share with other decisions.
func (r *Redis) Allow(ctx context.Context, key string, l Limit) (Decision, error) {
	b, err := l.bucket()
	if err != nil {
		return Decision{}, err
	}
	if r.opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.opts.Timeout)
		defer cancel()
	}
	var now int64
	if r.opts.Now != nil {
		now = r.opts.Now().UnixMicro()
	}
	args := [4]int64{now, b.rate, b.per, b.burst}
	var res [4]int64
	switch {
	case r.batches != nil:
		res, err = r.batches.eval(ctx, r.key(l.Name, key, b), args)
	case r.opts.Batcher != nil:
		res, err = r.opts.Batcher.eval(ctx, r.key(l.Name, key, b), args)
	default:
		res, err = evalOne(ctx, r.client, r.key(l.Name, key, b), args)
	}
	if err != nil {
		return Decision{}, fmt.Errorf("ratelimit %q: redis: %w", l.Name, err)
	}
	return Decision{
		Allowed:    res[0] == 1,
		Limit:      l.Rate,
		Remaining:  int(res[1]),
		RetryAfter: micros(res[2]),
		ResetAfter: micros(res[3]),
	}, nil
}

// evalOne runs the script for one decision in its own round trip.
func evalOne(ctx context.Context, client Scripter, key string, args [4]int64) ([4]int64, error) {
	cmd := bucketScript.Run(ctx, client, []string{key}, args[0], args[1], args[2], args[3])
	if err := cmd.Err(); err != nil {
		return [4]int64{}, err
	}
	return result(cmd)
}

// ints reads a script's n integers.
func ints(cmd *redis.Cmd, n int) ([]int64, error) {
	res, err := cmd.Int64Slice()
	if err != nil {
		return nil, err
	}
	if len(res) != n {
		return nil, fmt.Errorf("script returned %d values, want %d", len(res), n)
	}
	return res, nil
}

// IsKeyError reports whether err is Redis refusing one bucket (its key
// holds another type, or the script failed on it) rather than Redis being
// unreachable or unusable: Redis still answers, so other keys are fine.
func IsKeyError(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	return strings.HasPrefix(msg, "WRONGTYPE") || (strings.HasPrefix(msg, "ERR") && strings.Contains(msg, "user_script"))
}
