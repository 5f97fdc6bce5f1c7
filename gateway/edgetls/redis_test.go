package edgetls

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/redisclient"
	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/acme/autocert"
)

// newRedis starts a real redis-server and returns a client built the way the
// gateway builds it (routes' redis section, its default time-outs).
func newRedis(t testing.TB) (*testredis.Server, redis.UniversalClient) {
	t.Helper()
	srv := testredis.Start(t)
	rdb, err := redisclient.New(&routes.Redis{URL: srv.URL(), Timeout: routes.Duration(routes.DefaultRedisTimeout)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return srv, rdb
}

func TestRedisCache(t *testing.T) {
	_, rdb := newRedis(t)
	ctx := context.Background()
	c, err := NewRedisCache(rdb, "t1:")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewRedisCache(nil, "x"); err == nil {
		t.Fatal("NewRedisCache accepted a nil client")
	}
	t.Run("miss is autocert.ErrCacheMiss", func(t *testing.T) {
		if _, err := c.Get(ctx, "nope"); !errors.Is(err, autocert.ErrCacheMiss) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("put, get, delete", func(t *testing.T) {
		if err := c.Put(ctx, "a.example.com", []byte("pem")); err != nil {
			t.Fatal(err)
		}
		got, err := c.Get(ctx, "a.example.com")
		if err != nil || string(got) != "pem" {
			t.Fatalf("got %q %v", got, err)
		}
		if err := c.Delete(ctx, "a.example.com"); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, "a.example.com"); err != nil {
			t.Fatalf("deleting a missing key: %v", err)
		}
		if _, err := c.Get(ctx, "a.example.com"); !errors.Is(err, autocert.ErrCacheMiss) {
			t.Fatalf("after delete: %v", err)
		}
	})
	t.Run("cached key is not ordered", func(t *testing.T) {
		if err := c.Put(ctx, "cached.example.com", []byte("pem")); err != nil {
			t.Fatal(err)
		}
		ordered, err := c.orderOnce(ctx, "cached.example.com", func() error { t.Fatal("ordered a cached key"); return nil })
		if ordered || err != nil {
			t.Fatalf("ordered %v err %v", ordered, err)
		}
	})
	t.Run("order runs under the lock and frees it", func(t *testing.T) {
		ordered, err := c.orderOnce(ctx, "new.example.com", func() error {
			if n, _ := rdb.Exists(ctx, c.lockKey("new.example.com")).Result(); n != 1 {
				t.Error("lock not held while ordering")
			}
			return c.Put(ctx, "new.example.com", []byte("pem"))
		})
		if !ordered || err != nil {
			t.Fatalf("ordered %v err %v", ordered, err)
		}
		if n, _ := rdb.Exists(ctx, c.lockKey("new.example.com")).Result(); n != 0 {
			t.Fatal("lock still held after the order")
		}
	})
	t.Run("failed order frees the lock and reports the error", func(t *testing.T) {
		boom := errors.New("ca said no")
		ordered, err := c.orderOnce(ctx, "fail.example.com", func() error { return boom })
		if !ordered || !errors.Is(err, boom) {
			t.Fatalf("ordered %v err %v", ordered, err)
		}
		if n, _ := rdb.Exists(ctx, c.lockKey("fail.example.com")).Result(); n != 0 {
			t.Fatal("lock still held after a failed order")
		}
	})
	t.Run("waits for the replica holding the lock", func(t *testing.T) {
		// Another replica holds the lock; this one must wait, not order,
		// and wake when that replica stores the certificate.
		if err := rdb.Set(ctx, c.lockKey("busy.example.com"), "other-replica", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		var ordered atomic.Bool
		done := make(chan error, 1)
		waiting := make(chan struct{})
		go func() {
			did, err := c.orderOnce(ctx, "busy.example.com", func() error { ordered.Store(true); return nil })
			if did {
				ordered.Store(true)
			}
			done <- err
		}()
		// Wait until the waiter is subscribed, so the Put below is the
		// event that wakes it.
		go func() {
			defer close(waiting)
			for {
				n, err := rdb.PubSubNumSub(ctx, c.readyChan("busy.example.com")).Result()
				if err == nil && n[c.readyChan("busy.example.com")] > 0 {
					return
				}
				select {
				case <-done:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		}()
		select {
		case <-waiting:
		case <-time.After(10 * time.Second):
			t.Fatal("waiter never subscribed")
		}
		if err := c.Put(ctx, "busy.example.com", []byte("pem")); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("waiter did not return after the other replica's Put")
		}
		if ordered.Load() {
			t.Fatal("ordered although another replica held the lock")
		}
		if v, _ := rdb.Get(ctx, c.lockKey("busy.example.com")).Result(); v != "other-replica" {
			t.Fatalf("the other replica's lock was touched: %q", v)
		}
	})
	t.Run("waiting ends with the handshake's context", func(t *testing.T) {
		if err := rdb.Set(ctx, c.lockKey("stuck.example.com"), "other-replica", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := c.orderOnce(cctx, "stuck.example.com", func() error { return nil })
		if err == nil || !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}

func TestRedisCacheOutage(t *testing.T) {
	srv := testredis.Start(t)
	// No retries: the test is about how errors read, not about go-redis' backoff.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	c, _ := NewRedisCache(rdb, "t2:")
	srv.Stop()
	ctx := context.Background()
	checks := []struct {
		name string
		err  error
		want string
	}{
		{"get", func() error { _, err := c.Get(ctx, "k"); return err }(), `acme redis cache: get "k"`},
		{"put", c.Put(ctx, "k", []byte("v")), `acme redis cache: put "k"`},
		{"delete", c.Delete(ctx, "k"), `acme redis cache: delete "k"`},
		{"lock", func() error { _, err := c.orderOnce(ctx, "k", func() error { return nil }); return err }(), `acme redis lock "k"`},
	}
	for _, ch := range checks {
		t.Run(ch.name, func(t *testing.T) {
			if ch.err == nil || errors.Is(ch.err, autocert.ErrCacheMiss) || !strings.Contains(ch.err.Error(), ch.want) {
				t.Fatalf("error %v, want one starting %q", ch.err, ch.want)
			}
		})
	}
}

// TestACMEReplicasShareRedis runs two edge replicas with one real redis-server
// as their ACME cache. Both are asked for the same new name at once: exactly
// one order reaches Pebble and both serve that certificate. Then the replica
// that Pebble does not validate against orders a second name: Pebble's
// TLS-ALPN-01 check lands on the other replica, which finds the challenge
// certificate in Redis.
func TestACMEReplicasShareRedis(t *testing.T) {
	_, rdb := newRedis(t)
	httpA, httpsA := listen(t), listen(t)
	httpB, httpsB := listen(t), listen(t)
	env := startACME(t, port(httpA), port(httpsA)) // Pebble validates on replica A only
	cfg := func() *routes.TLS {
		a := env.acmeConfig("shared.example.com", "second.example.com")
		a.Cache, a.CacheDir = "redis", ""
		return &routes.TLS{MinVersion: "1.2", ACME: a}
	}
	opts := Options{Redis: rdb, RedisKeyPrefix: "edge-test:"}
	a := serveEdge(t, newManager(t, cfg(), opts), httpA, httpsA)
	b := serveEdge(t, newManager(t, cfg(), opts), httpB, httpsB)
	client := &tls.Config{ServerName: "shared.example.com", RootCAs: env.issuer}

	// Three handshakes on each replica, released together.
	start := make(chan struct{})
	var wg sync.WaitGroup
	serials := make(chan string, 6)
	errs := make(chan error, 6)
	for _, addr := range []string{a.httpsAddr, b.httpsAddr} {
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				st, err := handshake(addr, client)
				if err != nil {
					errs <- err
					return
				}
				serials <- st.PeerCertificates[0].SerialNumber.String()
			}()
		}
	}
	close(start)
	wg.Wait()
	close(serials)
	close(errs)
	for err := range errs {
		t.Fatalf("handshake: %v\nPebble:\n%s", err, env.pebble.output())
	}
	seen := map[string]bool{}
	for s := range serials {
		seen[s] = true
	}
	if len(seen) != 1 {
		t.Fatalf("replicas served %d different certificates, want 1: %v", len(seen), seen)
	}
	if n := a.m.acme.orders.Load() + b.m.acme.orders.Load(); n != 1 {
		t.Fatalf("replicas placed %d orders between them, want 1 (A %d, B %d)", n, a.m.acme.orders.Load(), b.m.acme.orders.Load())
	}
	if n := strings.Count(env.pebble.output(), "POST /order-plz"); n != 1 {
		t.Fatalf("Pebble received %d new-order requests, want 1", n)
	}

	t.Run("challenge answered by the other replica", func(t *testing.T) {
		st, err := handshake(b.httpsAddr, &tls.Config{ServerName: "second.example.com", RootCAs: env.issuer})
		if err != nil {
			t.Fatalf("handshake on B: %v\nPebble:\n%s", err, env.pebble.output())
		}
		if b.m.acme.orders.Load() < 1 {
			t.Fatal("B did not order second.example.com")
		}
		// A now serves B's certificate from Redis without ordering.
		before := a.m.acme.orders.Load()
		stA, err := handshake(a.httpsAddr, &tls.Config{ServerName: "second.example.com", RootCAs: env.issuer})
		if err != nil {
			t.Fatal(err)
		}
		if stA.PeerCertificates[0].SerialNumber.Cmp(st.PeerCertificates[0].SerialNumber) != 0 || a.m.acme.orders.Load() != before {
			t.Fatal("A did not serve B's certificate from Redis")
		}
	})
}

// The lock's SET NX whose connection breaks after Redis ran it (a proxy
// in front of a real redis-server cuts the connection instead of passing
// on the reply), with a client that resends failed commands (go-redis's
// default, and what a Cluster client does within its redirects): Redis
// runs the SET once, the replica finds the lock it holds and orders at
// once, and frees the lock after.
func TestRedisCacheLockSetNotResent(t *testing.T) {
	srv := testredis.Start(t)
	proxy := testutil.ServeConns(t, testredis.CutAfterCommand(srv.Addr, "set"))
	rdb := redis.NewClient(&redis.Options{Addr: proxy}) // MaxRetries: 3 resends
	defer rdb.Close()
	c, err := NewRedisCache(rdb, "cut:")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ordered := false
	ran, err := c.orderOnce(ctx, "a.example.com", func() error { ordered = true; return nil })
	if err != nil || !ran || !ordered {
		t.Fatalf("orderOnce: ran %v, ordered %v, error %v; want the order run at once", ran, ordered, err)
	}
	if n := testredis.CommandCalls(t, srv.Addr, "set"); n != 1 {
		t.Fatalf("Redis ran SET %d times for one lock", n)
	}
	if n, err := srv.Do("exists", "cut:lock:a.example.com"); err != nil || n != "0" {
		t.Fatalf("the lock is still there after the order (exists: %q, %v)", n, err)
	}
}

// A Manager built with HoldExpiry (for a configuration that may yet be
// refused) reads nothing from its ACME cache in Redis until it is
// published: the listed hosts' cached certificates are read for their
// expiry series by PublishExpiry, not by New. Before: New sent a GET per
// host, so a refused routes file reached the Redis it named.
func TestHeldManagerReadsACMECacheAtPublish(t *testing.T) {
	srv, rdb := newRedis(t)
	ca := newCA(t, "acme cache CA")
	certPEM, keyPEM := ca.leaf(t, "api.example.com", false, "api.example.com")
	cache, err := NewRedisCache(rdb, "held:acme:") // the prefix the issuer uses
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.Put(context.Background(), "api.example.com", append(keyPEM, certPEM...)); err != nil {
		t.Fatal(err)
	}
	getsBefore := testredis.CommandCalls(t, srv.Addr, "get")
	expiry := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "expiry"}, []string{"name"})
	acme := &routes.ACME{Hosts: []string{"api.example.com"}, Cache: "redis", DirectoryURL: "https://127.0.0.1:1/dir"}
	m := newManager(t, &routes.TLS{MinVersion: "1.2", ACME: acme}, Options{Redis: rdb, RedisKeyPrefix: "held:", Expiry: expiry, HoldExpiry: true})
	if n := testredis.CommandCalls(t, srv.Addr, "get") - getsBefore; n != 0 {
		t.Fatalf("a held Manager sent %d GETs to its cache", n)
	}
	if got := gaugeValues(t, expiry); len(got) != 0 {
		t.Fatalf("expiry series before PublishExpiry: %v", got)
	}
	m.PublishExpiry()
	if n := testredis.CommandCalls(t, srv.Addr, "get") - getsBefore; n != 1 {
		t.Errorf("PublishExpiry sent %d GETs, want 1 (the listed host)", n)
	}
	if got := gaugeValues(t, expiry); got["api.example.com"] == 0 {
		t.Errorf("no expiry for the cached certificate after PublishExpiry: %v", got)
	}
}
