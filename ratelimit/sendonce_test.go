package ratelimit

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/redisclient"
	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
	"github.com/redis/go-redis/v9"
)

// decide runs one decision (or, for "pipelined", two in one pipeline) on
// client the way each path of the limiter sends it, and returns how many
// decisions it sent.
type decide func(t *testing.T, client redis.UniversalClient) int

var decisionPaths = []struct {
	desc string
	// dials is how often a refused decision dials: once, except that
	// go-redis gets a pipeline's connection from its pipeline pool and,
	// when that fails, tries its main pool (each dials once, no pause).
	dials int32
	run   decide
}{
	{"own round trip", 1, func(t *testing.T, client redis.UniversalClient) int {
		r, err := NewRedis(client, RedisOptions{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Allow(context.Background(), "ann", Limit{Name: "l", Rate: 10, Per: time.Minute}); err == nil {
			t.Fatal("the decision succeeded")
		}
		return 1
	}},
	{"batcher, lone decision", 1, func(t *testing.T, client redis.UniversalClient) int {
		r := batchedRedis(t, newBatcher(t, client, BatchOptions{}), nil, "")
		if _, err := r.Allow(context.Background(), "ann", Limit{Name: "l", Rate: 10, Per: time.Minute}); err == nil {
			t.Fatal("the decision succeeded")
		}
		return 1
	}},
	{"batcher, pipeline", 2, func(t *testing.T, client redis.UniversalClient) int {
		b := newBatcher(t, client, BatchOptions{})
		args := [4]int64{0, 10, int64(time.Minute / time.Microsecond), 10}
		cs := []*call{{key: "rl:{l|ann}:x", args: args}, {key: "rl:{l|bob}:x", args: args}}
		for _, cmd := range b.pipeline(context.Background(), cs, nil) {
			if cmd.Err() == nil {
				t.Fatal("a pipelined decision succeeded")
			}
		}
		return len(cs)
	}},
}

// TestRefusedRedisIsDialedOnce: a decision against a Redis that refuses
// connections fails after one dial, so on_error applies at once. Before,
// go-redis dialed five times 100 ms apart and resent the command three
// times: 20 dials, and a decision waited out its time-out (measured: about
// 4 s of a 5 s time-out). Counted with a dialer that counts.
func TestRefusedRedisIsDialedOnce(t *testing.T) {
	addr := testutil.FreeAddr(t)
	for _, tc := range decisionPaths {
		t.Run(tc.desc, func(t *testing.T) {
			c, err := redisclient.Resolve(&routes.Redis{URL: "redis://" + addr + "/0", Timeout: routes.Duration(5 * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			var dials atomic.Int32
			c.Single.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
				dials.Add(1)
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}
			// go-redis's default resends (three), as a client passed to
			// NewRedis may have: the decision must not be resent anyway.
			c.Single.MaxRetries = 0
			client := c.NewClient()
			t.Cleanup(func() { client.Close() })
			tc.run(t, client)
			if n := dials.Load(); n != tc.dials {
				t.Fatalf("%d dials for a refused decision, want %d", n, tc.dials)
			}
		})
	}
}

// TestDecisionIsNotResent: when the connection breaks after Redis ran a
// decision's script, the decision fails (on_error) and is not sent again.
// go-redis resent it (MaxRetries) on a new connection, and Redis counted
// the one request up to four times. A proxy in front of a real Redis
// breaks every connection instead of passing on the script's reply;
// Redis's own commandstats count how often the script ran.
func TestDecisionIsNotResent(t *testing.T) {
	for _, tc := range decisionPaths {
		t.Run(tc.desc, func(t *testing.T) {
			srv := testredis.Start(t)
			// Loaded beforehand: a NOSCRIPT reply would be cut too.
			if _, err := srv.Do("SCRIPT", "LOAD", script); err != nil {
				t.Fatal(err)
			}
			proxy := testutil.ServeConns(t, testredis.CutAfterCommand(srv.Addr, "evalsha"))
			c, err := redisclient.Resolve(&routes.Redis{URL: "redis://" + proxy + "/0", Timeout: routes.Duration(5 * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			// go-redis's default resends (three), as a client passed to
			// NewRedis may have, and as a Cluster client has (within
			// MaxRedirects): the decision must not be resent anyway.
			c.Single.MaxRetries = 0
			client := c.NewClient()
			t.Cleanup(func() { client.Close() })
			sent := tc.run(t, client)
			if n := testredis.CommandCalls(t, srv.Addr, "evalsha"); n != sent {
				t.Fatalf("Redis ran the script %d times for %d decision(s)", n, sent)
			}
		})
	}
}

// TestDecisionIsNotResentOnCluster is TestDecisionIsNotResent on a Redis
// Cluster, whose client resends a command within MaxRedirects (the loop
// that also follows MOVED and ASK) unless the command opts out. Every
// connection to a node goes through a proxy in front of it that breaks
// the connection once the client has sent EVALSHA; the script ran on the
// node, and its commandstats, summed over the nodes, count how often.
func TestDecisionIsNotResentOnCluster(t *testing.T) {
	for _, tc := range decisionPaths {
		t.Run(tc.desc, func(t *testing.T) {
			cl := testredis.StartCluster(t)
			// The nodes name each other by these addresses (CLUSTER
			// SLOTS): every connection to a node goes through its proxy.
			proxies := map[string]string{}
			for _, addr := range cl.Addrs() {
				// Loaded beforehand: a NOSCRIPT reply would be cut too.
				if _, err := testredis.Do(addr, "SCRIPT", "LOAD", script); err != nil {
					t.Fatal(err)
				}
				proxies[addr] = testutil.ServeConns(t, testredis.CutAfterCommand(addr, "evalsha"))
			}
			c, err := redisclient.Resolve(&routes.Redis{Addrs: cl.Addrs(), Timeout: routes.Duration(5 * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			c.Cluster.Dialer = testredis.DialThrough(proxies)
			client := c.NewClient()
			t.Cleanup(func() { client.Close() })
			sent := tc.run(t, client)
			ran := 0
			for _, addr := range cl.Addrs() {
				ran += testredis.CommandCalls(t, addr, "evalsha")
			}
			if ran != sent {
				t.Fatalf("the Cluster ran the script %d times for %d decision(s)", ran, sent)
			}
		})
	}
}
