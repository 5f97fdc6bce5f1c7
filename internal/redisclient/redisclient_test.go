package redisclient

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestResolveBadConfig(t *testing.T) {
	t.Setenv("CW_TEST_EMPTY_PW", "")
	tests := []struct {
		desc string
		cfg  *routes.Redis
		want string
	}{
		{"no section", nil, "no redis section"},
		{"neither url nor addrs", &routes.Redis{}, "needs url"},
		{"url and addrs", &routes.Redis{URL: "redis://127.0.0.1:1/0", Addrs: []string{"127.0.0.1:2"}}, "exclusive"},
		{"bad scheme", &routes.Redis{URL: "http://127.0.0.1:1"}, "redis: url"},
		{"master_name with url", &routes.Redis{URL: "redis://127.0.0.1:1/0", MasterName: "m"}, "master_name needs addrs"},
		{"db with cluster", &routes.Redis{Addrs: []string{"127.0.0.1:1"}, DB: 2}, "db must be 0"},
		{"password_env unset", &routes.Redis{URL: "redis://127.0.0.1:1/0", PasswordEnv: "CW_TEST_NO_SUCH_VAR"}, "CW_TEST_NO_SUCH_VAR, which is not set"},
		{"password_env empty", &routes.Redis{URL: "redis://127.0.0.1:1/0", PasswordEnv: "CW_TEST_EMPTY_PW"}, "not set or empty"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := Resolve(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestResolveKeepsPasswordOutOfErrors(t *testing.T) {
	_, err := Resolve(&routes.Redis{URL: "redis://u:s3cret@[::1:6379/0"})
	if err == nil {
		t.Fatal("a malformed URL was accepted")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error leaks the password: %v", err)
	}
}

func TestResolveTopologies(t *testing.T) {
	t.Setenv("CW_TEST_PW", "pw")
	timeout := routes.Duration(250 * time.Millisecond)
	tests := []struct {
		desc string
		cfg  routes.Redis
		want Topology
		// check inspects the options that matter for the topology.
		check func(t *testing.T, c *Config)
	}{
		{"url is a single node; section overrides url credentials and db",
			routes.Redis{URL: "redis://a:b@127.0.0.1:7000/1", Username: "u", PasswordEnv: "CW_TEST_PW", DB: 3, Timeout: timeout}, Single,
			func(t *testing.T, c *Config) {
				o := c.Single
				if o.Addr != "127.0.0.1:7000" || o.Username != "u" || o.Password != "pw" || o.DB != 3 {
					t.Fatalf("addr=%s user=%s db=%d", o.Addr, o.Username, o.DB)
				}
				if o.ReadTimeout != timeout.D() || o.WriteTimeout != timeout.D() || o.DialTimeout != timeout.D() || o.PoolTimeout != timeout.D() || !o.ContextTimeoutEnabled {
					t.Fatalf("time-outs not applied: %+v", o)
				}
			}},
		{"url credentials kept when the section has none",
			routes.Redis{URL: "redis://a:b@127.0.0.1:7000/1"}, Single,
			func(t *testing.T, c *Config) {
				if o := c.Single; o.Username != "a" || o.Password != "b" || o.DB != 1 || o.ReadTimeout != routes.DefaultRedisTimeout {
					t.Fatalf("user=%s db=%d timeout=%v", o.Username, o.DB, o.ReadTimeout)
				}
			}},
		{"rediss gets TLS", routes.Redis{URL: "rediss://127.0.0.1:7000"}, Single,
			func(t *testing.T, c *Config) {
				if c.Single.TLSConfig == nil {
					t.Fatal("no TLS config for rediss://")
				}
			}},
		{"unix socket", routes.Redis{URL: "unix:///run/redis.sock"}, Single,
			func(t *testing.T, c *Config) {
				if c.Single.Network != "unix" || c.Single.Addr != "/run/redis.sock" {
					t.Fatalf("network=%s addr=%s", c.Single.Network, c.Single.Addr)
				}
			}},
		{"addrs is a cluster, even with one seed", routes.Redis{Addrs: []string{"127.0.0.1:7000"}, Timeout: timeout}, Cluster,
			func(t *testing.T, c *Config) {
				if o := c.Cluster; len(o.Addrs) != 1 || o.ReadTimeout != timeout.D() || !o.ContextTimeoutEnabled ||
					o.DialerRetries != DialAttempts || !o.DisableIdentity {
					t.Fatalf("%+v", o)
				}
			}},
		{"addrs with master_name is sentinel", routes.Redis{Addrs: []string{"127.0.0.1:26379", "127.0.0.1:26380"}, MasterName: "main", PasswordEnv: "CW_TEST_PW", DB: 2, Timeout: timeout}, Sentinel,
			func(t *testing.T, c *Config) {
				o := c.Failover
				if o.MasterName != "main" || len(o.SentinelAddrs) != 2 || o.Password != "pw" || o.SentinelPassword != "pw" || o.DB != 2 || o.ReadTimeout != timeout.D() {
					t.Fatalf("%+v", o)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			c, err := Resolve(&tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if c.Topology != tc.want {
				t.Fatalf("topology %s, want %s", c.Topology, tc.want)
			}
			tc.check(t, c)
		})
	}
}

func TestSingleNodeWithCredentials(t *testing.T) {
	s := testredis.Start(t)
	if _, err := s.Do("ACL", "SETUSER", "edge", "on", ">edge-pw", "~*", "+@all"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Do("CONFIG", "SET", "requirepass", "default-pw"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CW_TEST_EDGE_PW", "edge-pw")
	t.Setenv("CW_TEST_WRONG_PW", "wrong")
	tests := []struct {
		desc    string
		cfg     routes.Redis
		wantErr string
	}{
		{"username and password_env", routes.Redis{URL: s.URL(), Username: "edge", PasswordEnv: "CW_TEST_EDGE_PW", DB: 4}, ""},
		{"wrong password is refused by the server", routes.Redis{URL: s.URL(), Username: "edge", PasswordEnv: "CW_TEST_WRONG_PW"}, "WRONGPASS"},
		{"no password is refused by the server", routes.Redis{URL: s.URL()}, "NOAUTH"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			c, err := New(&tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			err = c.Set(ctx, "k", tc.desc, 0).Err()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The value must have landed in the configured database.
			if got, err := c.Do(ctx, "CLIENT", "INFO").Text(); err != nil || !strings.Contains(got, " db=4 ") || !strings.Contains(got, "name="+ClientName) {
				t.Fatalf("CLIENT INFO = %q, %v", got, err)
			}
		})
	}
}

func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("forming a cluster takes seconds")
	}
	cl := testredis.StartCluster(t)
	c, err := New(&routes.Redis{Addrs: cl.Addrs()[:1], Timeout: routes.Duration(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	// Keys spread over the three masters: the client must follow the slot
	// map from a single seed address.
	for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
		if err := c.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
	nodes := map[string]bool{}
	for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
		for _, n := range cl.Nodes {
			// Only the node owning the key's slot answers GET (others say MOVED).
			if v, err := n.Do("GET", k); err == nil && v == k {
				nodes[n.Addr] = true
			}
		}
	}
	if len(nodes) < 2 {
		t.Fatalf("keys landed on %d node(s); the client is not routing by slot", len(nodes))
	}
}

// TestClusterSendsNoCommandTable: a Cluster client routes by the key's
// slot alone and never fetches the command table (COMMAND). go-redis's
// routing policies fetch it with a fresh client's first command, from a
// random node and under one lock every other command waits on: with a
// master down, that fetch dialed the dead master five times 100 ms apart
// (about 420 ms) while commands to the healthy masters waited and missed
// their time-outs (docs/ratelimit.md, "Outages"). Counted in Redis's own
// statistics, so it holds whichever node a fetch would have picked.
func TestClusterSendsNoCommandTable(t *testing.T) {
	if testing.Short() {
		t.Skip("forming a cluster takes seconds")
	}
	tests := []struct {
		desc string
		down bool // stop the first master before the client's first command
	}{
		{"every master up", false},
		{"a master down", true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			cl := testredis.StartCluster(t)
			live := cl.Nodes
			if tc.down {
				cl.Nodes[0].Stop()
				live = cl.Nodes[1:]
			}
			c, err := New(&routes.Redis{Addrs: cl.Addrs(), Timeout: routes.Duration(5 * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			// Keys over every master: those of a stopped master fail,
			// the others must be answered.
			answered := 0
			for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
				if err := c.Set(ctx, k, k, 0).Err(); err == nil {
					answered++
				} else if !tc.down {
					t.Fatalf("SET %s: %v", k, err)
				}
			}
			if answered == 0 {
				t.Fatal("no key was answered")
			}
			for _, n := range live {
				if calls := testredis.CommandCalls(t, n.Addr, "command"); calls != 0 {
					t.Errorf("%s ran COMMAND %d time(s): the client fetched the command table", n.Addr, calls)
				}
			}
		})
	}
}

func TestTimeoutBoundsSlowServer(t *testing.T) {
	s := testredis.Start(t)
	timeout := 100 * time.Millisecond
	c, err := New(&routes.Redis{URL: s.URL(), Timeout: routes.Duration(timeout)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	s.Pause()
	defer s.Resume()
	// No context deadline here: the client's own read time-out must end the
	// call, so an error (not a hang) is what is checked.
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("a frozen server answered")
	}
}

// TestSentinel: addrs + master_name finds the master through a real
// Sentinel and sends commands to it.
func TestSentinel(t *testing.T) {
	master := testredis.Start(t)
	sentinel := testredis.StartSentinel(t, master, "main")
	c, err := New(&routes.Redis{Addrs: []string{sentinel.Addr}, MasterName: "main", DB: 3, Timeout: routes.Duration(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Set(ctx, "through-sentinel", "yes", 0).Err(); err != nil {
		t.Fatal(err)
	}
	got, err := c.Do(ctx, "CLIENT", "INFO").Text()
	if err != nil || !strings.Contains(got, " db=3 ") {
		t.Fatalf("CLIENT INFO = %q, %v", got, err)
	}
	if n, _ := master.Do("INFO", "keyspace"); !strings.Contains(n, "db3:keys=1") {
		t.Fatalf("the key did not land on the master's db 3: %q", n)
	}
}

// go-redis's own log lines (here: "failed to dial", from its connection
// pool, when Redis is down) come out through slog.Default() as JSON, not
// as go-redis's plain text on stderr.
func TestLibraryLogsGoThroughSlog(t *testing.T) {
	var buf testutil.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewJSONHandler(&buf, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })

	client, err := New(&routes.Redis{URL: "redis://" + testutil.FreeAddr(t) + "/0", Timeout: routes.Duration(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err == nil {
		t.Fatal("Ping to a closed port succeeded")
	}
	found := false
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec struct {
			Level   string `json:"level"`
			Msg     string `json:"msg"`
			Library string `json:"library"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a log line is not JSON: %q", line)
		}
		if rec.Library == "go-redis" && strings.HasPrefix(rec.Msg, "redis: connection pool: failed to dial") && rec.Level == "WARN" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no go-redis line in the slog output:\n%s", buf.String())
	}
}

// TestRefusedDialIsNotRepeated: a node that refuses connections costs a
// command one dial. go-redis's defaults dialed five times 100 ms apart and
// resent the command three times: 20 dials, about 1.7 s for a command to a
// node known to be down in under a millisecond (docs/ratelimit.md,
// "Outages"). Counted with a dialer that counts, against a port nobody
// listens on.
func TestRefusedDialIsNotRepeated(t *testing.T) {
	addr := testutil.FreeAddr(t)
	tests := []struct {
		desc string
		cfg  routes.Redis
	}{
		{"single node", routes.Redis{URL: "redis://" + addr + "/0", Timeout: routes.Duration(5 * time.Second)}},
		{"sentinel", routes.Redis{Addrs: []string{addr}, MasterName: "m", Timeout: routes.Duration(5 * time.Second)}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			c, err := Resolve(&tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			var dials atomic.Int32
			dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
				dials.Add(1)
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}
			if c.Single != nil {
				c.Single.Dialer = dialer
			} else {
				c.Failover.Dialer = dialer
			}
			client := c.NewClient()
			defer client.Close()
			if err := client.Ping(context.Background()).Err(); err == nil {
				t.Fatal("Ping to a closed port succeeded")
			}
			if n := dials.Load(); n != DialAttempts {
				t.Fatalf("%d dials for one command to a refusing node, want %d", n, DialAttempts)
			}
		})
	}
}

// TestNewConnectionHandshakeIsAccepted: a new connection's handshake is
// HELLO (protocol) and CLIENT SETNAME, and Redis accepts all of it.
// go-redis also sent CLIENT SETINFO (its library name and version), which
// Redis before 7.2 refuses: a wasted round trip on every new connection.
// Counted in Redis's own statistics (a refused command shows in
// errorstats, not commandstats).
func TestNewConnectionHandshakeIsAccepted(t *testing.T) {
	s := testredis.Start(t)
	const conns = 3
	tests := []struct {
		desc string
		cfg  routes.Redis
	}{
		{"single node", routes.Redis{URL: s.URL(), Timeout: routes.Duration(2 * time.Second)}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if _, err := s.Do("CONFIG", "RESETSTAT"); err != nil {
				t.Fatal(err)
			}
			// A client per connection: each Ping opens a new one.
			for range conns {
				c, err := New(&tc.cfg)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Ping(context.Background()).Err(); err != nil {
					t.Fatal(err)
				}
				c.Close()
			}
			if n := testredis.CommandCalls(t, s.Addr, "hello"); n != conns {
				t.Fatalf("%d HELLO for %d new connections", n, conns)
			}
			stats, err := s.Do("INFO", "stats")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(stats, "total_error_replies:0\r") {
				errs, _ := s.Do("INFO", "errorstats")
				t.Fatalf("Redis refused commands of the handshake:\n%s", errs)
			}
		})
	}
}
