package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/causewayhq/causeway/internal/redisclient"
	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
)

// TestSessionWritesAreNotResent: when the connection breaks after Redis ran
// a session write, the write fails (errStoreDown) and is not sent again.
// A Cluster client resent it (within MaxRedirects) on a new connection, and
// a second run is wrong for the refresh lock (SET NX finds its own first
// run's lock: "locked by another replica") and for the token update (it
// finds the version its first run bumped: "session gone"). A proxy in front
// of each real Redis node breaks every connection once the client has sent
// the write instead of passing on Redis's reply; Redis's own commandstats
// count how often it ran. One node is the control: its client resends
// nothing, and here is given go-redis's default resends (three) so that
// the store itself must opt out.
func TestSessionWritesAreNotResent(t *testing.T) {
	t0 := time.Now()
	writes := []struct {
		desc string
		// cut is the command after which the proxies cut; ran is the one
		// Redis counts.
		cut, ran string
		// prepare writes what the write needs through the direct store.
		prepare func(t *testing.T, direct *redisSessions) string
		write   func(s *redisSessions, id string) error
	}{
		{"create", "exec", "hset", nil, func(s *redisSessions, _ string) error {
			_, err := s.create(context.Background(), []byte("{}"), t0)
			return err
		}},
		{"refresh lock", "set", "set", newStoredSession, func(s *redisSessions, id string) error {
			_, ok, err := s.lock(context.Background(), id)
			if err == nil && !ok {
				return errors.New("the lock was found taken: its first run took it")
			}
			return err
		}},
		{"token update", "evalsha", "evalsha", newStoredSession, func(s *redisSessions, id string) error {
			_, err := s.update(context.Background(), id, 1, []byte(`{"a":1}`), t0, t0.Add(time.Minute))
			return err
		}},
		{"touch", "evalsha", "evalsha", newStoredSession, func(s *redisSessions, id string) error {
			return s.touch(context.Background(), id, t0, t0.Add(time.Minute))
		}},
		{"delete", "del", "del", newStoredSession, func(s *redisSessions, id string) error {
			return s.delete(context.Background(), id)
		}},
	}
	topologies := []struct {
		desc  string
		start func(t *testing.T, cut string) (client, direct redis.UniversalClient, nodes []string)
	}{
		{"one node", func(t *testing.T, cut string) (redis.UniversalClient, redis.UniversalClient, []string) {
			srv := testredis.Start(t)
			proxy := testutil.ServeConns(t, testredis.CutAfterCommand(srv.Addr, cut))
			c, err := redisclient.Resolve(&routes.Redis{URL: "redis://" + proxy + "/0", Timeout: routes.Duration(5 * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			c.Single.MaxRetries = 0 // go-redis's default: three resends
			return c.NewClient(), redis.NewClient(&redis.Options{Addr: srv.Addr}), []string{srv.Addr}
		}},
		{"cluster", func(t *testing.T, cut string) (redis.UniversalClient, redis.UniversalClient, []string) {
			cl := testredis.StartCluster(t)
			// The nodes name each other by these addresses (CLUSTER
			// SLOTS): every connection to a node goes through its proxy.
			proxies := map[string]string{}
			for _, addr := range cl.Addrs() {
				proxies[addr] = testutil.ServeConns(t, testredis.CutAfterCommand(addr, cut))
			}
			c, err := redisclient.Resolve(&routes.Redis{Addrs: cl.Addrs(), Timeout: routes.Duration(5 * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			c.Cluster.Dialer = testredis.DialThrough(proxies)
			return c.NewClient(), redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()}), cl.Addrs()
		}},
	}
	for _, topo := range topologies {
		for _, w := range writes {
			t.Run(topo.desc+"/"+w.desc, func(t *testing.T) {
				client, direct, nodes := topo.start(t, w.cut)
				t.Cleanup(func() { _ = client.Close(); _ = direct.Close() })
				store := func(rdb redis.UniversalClient) *redisSessions {
					return &redisSessions{rdb: rdb, prefix: "t:oidc:x:", timeout: 5 * time.Second, idle: 30 * time.Minute, absolute: 2 * time.Hour}
				}
				id := ""
				if w.prepare != nil {
					id = w.prepare(t, store(direct))
				}
				before := commandCallsOn(t, nodes, w.ran)
				err := w.write(store(client), id)
				if !errors.Is(err, errStoreDown) {
					t.Fatalf("the write whose connection broke: %v, want the store reported down", err)
				}
				if n := commandCallsOn(t, nodes, w.ran) - before; n != 1 {
					t.Fatalf("Redis ran %s %d times for one write", w.ran, n)
				}
			})
		}
	}
}

// newStoredSession creates a session (version 1) through s and returns its
// id.
func newStoredSession(t *testing.T, s *redisSessions) string {
	t.Helper()
	id, err := s.create(context.Background(), []byte("{}"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// commandCallsOn sums how often the Redis nodes at addrs ran cmd
// (INFO commandstats).
func commandCallsOn(t *testing.T, addrs []string, cmd string) int {
	t.Helper()
	total := 0
	for _, addr := range addrs {
		total += testredis.CommandCalls(t, addr, cmd)
	}
	return total
}
