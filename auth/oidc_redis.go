package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/causewayhq/causeway/auth/session"
	"github.com/causewayhq/causeway/internal/httperr"
	"github.com/causewayhq/causeway/internal/redisclient"
)

// The redis session store (session.store: redis). The cookie carries only a
// random session id, sealed like a cookie session (so it cannot be forged
// or enumerated); the session itself is a Redis hash:
//
//	d  the session data (sessionData as JSON: tokens)
//	c  created, Unix nanoseconds
//	u  last used, Unix nanoseconds
//	v  version, bumped by every write of d
//
// under PREFIX "oidc:" NAME ":{" hex(sha256(id)) "}": whoever reads Redis
// sees no id a cookie could carry. The braces are a Cluster hash tag: the
// session and its refresh lock (the same key + ":refresh") share a slot,
// so one DEL removes both. Its TTL is what is left of the idle and the
// absolute timeouts, pushed forward on use; the timeouts are also checked
// against the edge's clock on every read, the TTL only sweeps.
//
// Every write but the first one is conditional on the key still existing
// (and, for the tokens, on the version read), in one script: a logout
// deletes the key, and a refresh or a touch in flight elsewhere then finds
// nothing to write to instead of bringing the session back.

// refreshLockTTL bounds a replica's claim on a session's refresh: past it
// (the replica died mid-refresh) another may refresh.
const refreshLockTTL = providerTimeout + 5*time.Second

// refreshWait is how long a request whose tokens have expired waits for
// another replica's refresh to be written before giving up.
const refreshWait = 3 * time.Second

// refreshPoll is how often a waiting request looks for that write.
const refreshPoll = 25 * time.Millisecond

// The session store's writes go out once (redisclient.SendOnce), whatever the Redis
// topology, as the rate-limit decisions do: a write whose connection broke
// after Redis ran it fails (the request gets status_on_error or on_error:
// allow) instead of being sent again on a new connection. The client of
// one node or Sentinel resends nothing (redisclient.DialAttempts); a Cluster
// client resends within MaxRedirects unless the command opts out, and a
// second run is wrong for two of them: the refresh lock's SET NX finds its
// own first run's lock and reports the session locked by another replica
// (the request then waits refreshWait for a refresh that never comes), and
// updateScript finds the version its first run bumped and reports the
// session gone (a signed-in user is sent to sign in again). MOVED and ASK
// are still followed: the node that redirected ran nothing.
var (
	// touchScript pushes last use forward and the TTL with it, if the
	// session still exists. KEYS[1] session; ARGV: used (ns), ttl (ms).
	touchScript = redisclient.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local u = tonumber(redis.call('HGET', KEYS[1], 'u') or '0')
if u < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'u', ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`)
	// updateScript writes refreshed tokens if the session still exists at
	// the version they were refreshed from. KEYS[1] session; ARGV: version
	// read, data, used (ns), ttl (ms). Returns the new version, or 0.
	updateScript = redisclient.NewScript(`
local v = redis.call('HGET', KEYS[1], 'v')
if not v or v ~= ARGV[1] then return 0 end
local nv = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'u', ARGV[3], 'v', tostring(nv))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return nv`)
	// unlockScript releases a refresh lock only if it is still ours.
	// KEYS[1] lock; ARGV[1] token.
	unlockScript = redisclient.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)
)

// errNoRecord: the id names no session in Redis (logged out, timed out,
// never existed).
var errNoRecord = errors.New("no such session")

// errDropped: the session ended (a logout) while its tokens were being
// refreshed, and the refreshed tokens were not written.
var errDropped = fmt.Errorf("%w: it ended during the refresh, which is dropped", errNoRecord)

// errStoreDown marks a failure to reach the session store.
var errStoreDown = errors.New("the session store cannot be reached")

// redisSessions keeps an authenticator's sessions in Redis.
type redisSessions struct {
	rdb      redis.UniversalClient
	prefix   string // KEY_PREFIX "oidc:" NAME ":"
	timeout  time.Duration
	idle     time.Duration
	absolute time.Duration
}

// record is one session as Redis holds it.
type record struct {
	data     []byte
	created  time.Time
	lastUsed time.Time
	version  int64
}

func newSessionID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *redisSessions) key(id string) string {
	h := sha256.Sum256([]byte(id))
	return s.prefix + "{" + hex.EncodeToString(h[:]) + "}"
}

func (s *redisSessions) lockKey(id string) string { return s.key(id) + ":refresh" }

func (s *redisSessions) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	// The request's cancellation is not the store's: a write that the
	// client's going away cut in half is worse than one finished.
	return context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
}

// ttl is what is left of the session as of now: the idle timeout from
// now, bounded by the absolute one. Not positive: the session is over.
func (s *redisSessions) ttl(created, now time.Time) time.Duration {
	left := s.idle
	if abs := created.Add(s.absolute).Sub(now); s.absolute > 0 && (left <= 0 || abs < left) {
		left = abs
	}
	return left
}

func storeErr(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", errStoreDown, op, err)
}

// create stores a new session and returns its id.
func (s *redisSessions) create(ctx context.Context, data []byte, now time.Time) (string, error) {
	id := newSessionID()
	ttl := s.ttl(now, now)
	if ttl <= 0 {
		return "", errors.New("the session timeouts leave it no time")
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	k := s.key(id)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		_ = p.Process(ctx, redisclient.SendOnce{Cmder: redis.NewIntCmd(ctx, "hset", k, "d", data, "c", now.UnixNano(), "u", now.UnixNano(), "v", 1)})
		_ = p.Process(ctx, redisclient.SendOnce{Cmder: redis.NewBoolCmd(ctx, "pexpire", k, ttl.Milliseconds())})
		return nil
	})
	if err != nil {
		return "", storeErr("create", err)
	}
	return id, nil
}

// load reads a session and checks its timeouts as of now; errNoRecord
// when it is gone or over (an expired one is deleted).
func (s *redisSessions) load(ctx context.Context, id string, now time.Time) (*record, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	m, err := s.rdb.HGetAll(ctx, s.key(id)).Result()
	if err != nil {
		return nil, storeErr("load", err)
	}
	if len(m) == 0 {
		return nil, errNoRecord
	}
	c, err1 := strconv.ParseInt(m["c"], 10, 64)
	u, err2 := strconv.ParseInt(m["u"], 10, 64)
	v, err3 := strconv.ParseInt(m["v"], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || m["d"] == "" {
		return nil, errNoRecord // not a session this code wrote
	}
	rec := &record{data: []byte(m["d"]), created: time.Unix(0, c), lastUsed: time.Unix(0, u), version: v}
	if s.absolute > 0 && !now.Before(rec.created.Add(s.absolute)) || s.idle > 0 && !now.Before(rec.lastUsed.Add(s.idle)) {
		// Redis keeps its own time: the edge's clock decides, and an
		// ended session is removed at once.
		_ = s.delete(ctx, id)
		return nil, errNoRecord
	}
	return rec, nil
}

// touch records a use at now; errNoRecord when the session is gone.
func (s *redisSessions) touch(ctx context.Context, id string, created, now time.Time) error {
	ttl := s.ttl(created, now)
	if ttl <= 0 {
		return errNoRecord
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	n, err := touchScript.Run(ctx, s.rdb, []string{s.key(id)}, now.UnixNano(), ttl.Milliseconds()).Int64()
	if err != nil {
		return storeErr("touch", err)
	}
	if n == 0 {
		return errNoRecord
	}
	return nil
}

// update writes refreshed tokens over the version they were refreshed
// from; errNoRecord when the session is gone or was written meanwhile.
func (s *redisSessions) update(ctx context.Context, id string, version int64, data []byte, created, now time.Time) (int64, error) {
	ttl := s.ttl(created, now)
	if ttl <= 0 {
		return 0, errNoRecord
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	nv, err := updateScript.Run(ctx, s.rdb, []string{s.key(id)}, strconv.FormatInt(version, 10), data, now.UnixNano(), ttl.Milliseconds()).Int64()
	if err != nil {
		return 0, storeErr("update", err)
	}
	if nv == 0 {
		return 0, errNoRecord
	}
	return nv, nil
}

// delete removes a session (and any refresh lock on it).
func (s *redisSessions) delete(ctx context.Context, id string) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	del := redis.NewIntCmd(ctx, "del", s.key(id), s.lockKey(id))
	_ = s.rdb.Process(ctx, redisclient.SendOnce{Cmder: del})
	if err := del.Err(); err != nil {
		return storeErr("delete", err)
	}
	return nil
}

// lock claims the refresh of a session for this replica: ok false when
// another holds it. unlock releases the claim if it is still ours.
func (s *redisSessions) lock(ctx context.Context, id string) (unlock func(), ok bool, err error) {
	token := newSessionID()
	cctx, cancel := s.ctx(ctx)
	defer cancel()
	set := redis.NewBoolCmd(cctx, "set", s.lockKey(id), token, "px", refreshLockTTL.Milliseconds(), "nx")
	_ = s.rdb.Process(cctx, redisclient.SendOnce{Cmder: set})
	ok, err = set.Result()
	if err != nil {
		return nil, false, storeErr("lock", err)
	}
	if !ok {
		return nil, false, nil
	}
	return func() {
		cctx, cancel := s.ctx(ctx)
		defer cancel()
		// Failing here leaves the lock to expire: another replica waits
		// refreshLockTTL at most.
		_ = unlockScript.Run(cctx, s.rdb, []string{s.lockKey(id)}, token).Err()
	}, true, nil
}

// errRefreshElsewhere: another replica is refreshing the session's tokens,
// which have not expired yet; this request goes on with them.
var errRefreshElsewhere = errors.New("another replica is refreshing the tokens")

// checkStored is check with store: redis: the cookie opened to s, whose
// data is the session id.
func (a *oidcAuth) checkStored(r *http.Request, s *session.Session, now time.Time) (*Principal, Reason, refusal) {
	id := string(s.Data)
	rec, err := a.store.load(r.Context(), id, now)
	switch {
	case errors.Is(err, errNoRecord):
		// Logged out, timed out, or an id Redis never had: sign in again.
		a.cache.remove(s.ID)
		return nil, ReasonSessionExpired, a.signIn(r, ReasonSessionExpired)
	case err != nil:
		return a.storeDown(r, s, now, err)
	}
	var d sessionData
	claims, err := decodeSession(rec.data, &d)
	if err != nil {
		return nil, ReasonMalformed, a.signIn(r, ReasonMalformed)
	}
	written := false
	if exp := time.Unix(d.Expiry, 0); !now.Before(exp.Add(-a.refreshBefore)) {
		nrec, nd, nclaims, err := a.refreshStored(r, id, rec, &d, claims, now)
		switch {
		case err == nil:
			rec, d, claims, written = nrec, *nd, nclaims, true
		case errors.Is(err, errNoRecord):
			// The session ended (a logout) while its tokens were being
			// refreshed: the refresh was not written, and is not used.
			if errors.Is(err, errDropped) {
				a.log.Info("oidc: session ended during its refresh: refreshed tokens dropped")
			}
			a.cache.remove(s.ID)
			return nil, ReasonSessionExpired, a.signIn(r, ReasonSessionExpired)
		case errors.Is(err, errStoreDown):
			return a.storeDown(r, s, now, err)
		case now.Before(exp):
			a.log.Debug("oidc: early refresh not done", "error", err)
		case errors.Is(err, errProviderDown) && a.onErrorAllow:
			a.log.Warn("oidc: refresh failed, session kept (on_error: allow)", "error", err)
		case errors.Is(err, errProviderDown):
			a.log.Warn("oidc: refresh failed", "error", err)
			return nil, ReasonAuthzUnavailable, unavailable(a.statusOnError)
		default:
			a.log.Info("oidc: session ended: its tokens expired and could not be refreshed", "error", err)
			if derr := a.store.delete(r.Context(), id); derr != nil {
				a.log.Warn("oidc: the ended session could not be deleted", "error", derr)
			}
			a.cache.remove(s.ID)
			return nil, ReasonSessionExpired, a.signIn(r, ReasonSessionExpired)
		}
	}
	// Last use is recorded (and the TTL pushed) at most every touchEvery:
	// not a write per request, at the cost of the idle timeout ending up
	// to touchEvery early.
	if !written && now.Sub(rec.lastUsed) >= a.touchEvery() {
		switch err := a.store.touch(r.Context(), id, rec.created, now); {
		case errors.Is(err, errNoRecord):
			a.cache.remove(s.ID)
			return nil, ReasonSessionExpired, a.signIn(r, ReasonSessionExpired)
		case err != nil:
			// The session was read: it is valid. Its last use is not
			// recorded, which at worst ends it early.
			a.log.Warn("oidc: session use not recorded", "error", err)
		}
	}
	p := &Principal{Authenticator: a.authName, Claims: claims, accessToken: d.Access}
	p.Subject, _ = claims["sub"].(string)
	// Remembered for on_error: allow only: every request reads Redis, so
	// that a logout anywhere is seen at once.
	if a.onErrorAllow {
		a.cache.put(s.ID, cacheEntry{p: p, until: now.Add(maxCacheTTL)}, now)
	}
	return p, ReasonNone, nil
}

func (a *oidcAuth) touchEvery() time.Duration {
	return min(a.store.idle/4, time.Minute)
}

// storeDown answers a request whose session could not be read from Redis.
// on_error: deny refuses it with status_on_error; allow accepts a session
// this replica accepted in the last maxCacheTTL (nothing else is known
// about the cookie: its tokens are in Redis), and refuses the rest.
func (a *oidcAuth) storeDown(r *http.Request, s *session.Session, now time.Time, err error) (*Principal, Reason, refusal) {
	if a.onErrorAllow {
		if p, ok := a.cache.get(s.ID, now, 0); ok {
			a.log.Warn("oidc: session store unreachable, session accepted as last seen (on_error: allow)", "error", err)
			return p, ReasonNone, nil
		}
	}
	a.log.Warn("oidc: session store unreachable", "error", err)
	status := a.statusOnError
	return nil, ReasonAuthzUnavailable, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		httperr.Write(w, r, status, ReasonAuthzUnavailable.description())
	}
}

// refreshStored refreshes a stored session's tokens. One replica at a time
// does (a lock in Redis); the others go on with the tokens they have while
// those are valid, else wait for the refresher's write.
func (a *oidcAuth) refreshStored(r *http.Request, id string, rec *record, d *sessionData, claims map[string]any, now time.Time) (*record, *sessionData, map[string]any, error) {
	ctx := r.Context()
	unlock, ok, err := a.store.lock(ctx, id)
	if err != nil {
		return nil, nil, nil, err
	}
	if !ok {
		if now.Before(time.Unix(d.Expiry, 0)) {
			return nil, nil, nil, errRefreshElsewhere
		}
		return a.awaitRefresh(r, id, rec, d, claims, now)
	}
	defer unlock()
	return a.refreshLocked(r, id, rec, d, claims, now)
}

// refreshLocked is refreshStored's work once this replica holds the lock.
func (a *oidcAuth) refreshLocked(r *http.Request, id string, rec *record, d *sessionData, claims map[string]any, now time.Time) (*record, *sessionData, map[string]any, error) {
	ctx := r.Context()
	// Read again under the lock: another replica may have written its
	// refresh between this request's read and its lock.
	cur, err := a.store.load(ctx, id, now)
	if err != nil {
		return nil, nil, nil, err
	}
	if cur.version != rec.version {
		return decodeRecord(cur)
	}
	nd, nclaims, err := a.refreshTokens(ctx, d, claims)
	if err != nil {
		return nil, nil, nil, err
	}
	data, err := json.Marshal(nd)
	if err != nil {
		return nil, nil, nil, err
	}
	nv, err := a.store.update(ctx, id, rec.version, data, rec.created, now)
	if errors.Is(err, errNoRecord) {
		return nil, nil, nil, errDropped
	}
	if err != nil {
		return nil, nil, nil, err
	}
	return &record{data: data, created: rec.created, lastUsed: now, version: nv}, nd, nclaims, nil
}

// awaitRefresh waits, at most refreshWait, for another replica to write
// the session at a version past rec's. A lock holder may also let go
// without writing (it found a newer version than the one it read, which
// is this request's): once the lock is free, this request takes it and
// refreshes itself rather than waiting for a write that will not come.
func (a *oidcAuth) awaitRefresh(r *http.Request, id string, rec *record, d *sessionData, claims map[string]any, now time.Time) (*record, *sessionData, map[string]any, error) {
	ctx := r.Context()
	version := rec.version
	deadline := time.NewTimer(refreshWait)
	defer deadline.Stop()
	tick := time.NewTicker(refreshPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, nil, nil, fmt.Errorf("%w: %w", errProviderDown, ctx.Err())
		case <-deadline.C:
			return nil, nil, nil, fmt.Errorf("%w: another replica's refresh did not complete in %s", errProviderDown, refreshWait)
		case <-tick.C:
		}
		cur, err := a.store.load(ctx, id, now)
		if err != nil {
			return nil, nil, nil, err
		}
		if cur.version != version {
			return decodeRecord(cur)
		}
		unlock, ok, err := a.store.lock(ctx, id)
		if err != nil {
			return nil, nil, nil, err
		}
		if ok {
			defer unlock()
			return a.refreshLocked(r, id, rec, d, claims, now)
		}
	}
}

func decodeRecord(rec *record) (*record, *sessionData, map[string]any, error) {
	var d sessionData
	claims, err := decodeSession(rec.data, &d)
	if err != nil {
		return nil, nil, nil, err
	}
	return rec, &d, claims, nil
}

// revoke deletes a stored session (a logout) and returns its data, for the
// provider's id_token_hint.
func (a *oidcAuth) revoke(r *http.Request, s *session.Session) []byte {
	id := string(s.Data)
	a.cache.remove(s.ID)
	var data []byte
	if rec, err := a.store.load(r.Context(), id, a.now()); err == nil {
		data = rec.data
	}
	if err := a.store.delete(r.Context(), id); err != nil {
		// The cookie is expired all the same; a copy of it stays valid
		// until Redis is back and the session times out.
		a.log.Warn("oidc: logout could not delete the session", "error", err)
	}
	return data
}
