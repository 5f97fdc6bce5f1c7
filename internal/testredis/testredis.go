// Package testredis starts real redis-server processes for tests: a single
// node, or a Redis Cluster of three masters, on free loopback ports, stopped
// in t.Cleanup. A test that needs Redis fails (it does not skip) when
// redis-server is missing, so a machine without it cannot report green.
//
// The server logs to a file, so no goroutine copies its output; the one
// goroutine per process that waits for its exit ends when the server is
// stopped in t.Cleanup, so packages using the helper can run
// goleak.VerifyTestMain.
package testredis

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to answer PING. It is a
// safety net against a hung start, not a measured expectation.
const startTimeout = 15 * time.Second

// missingHelp is the failure message when the binaries are not installed.
const missingHelp = "%s not found in PATH: `make deps` installs it (Debian: apt-get install -y redis-server redis-tools)"

// Server is one redis-server process bound to 127.0.0.1.
type Server struct {
	// Addr is "127.0.0.1:PORT"; it stays the same across Stop and Restart.
	Addr string
	Port int

	tb    testing.TB
	dir   string
	extra []string
	// conf is a config file given before the flags; Sentinel needs one it
	// can rewrite.
	conf string

	mu     sync.Mutex
	cmd    *exec.Cmd
	waitCh chan error // the result of cmd.Wait, delivered once
}

// URL is the server's redis:// URL for database 0.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Start runs a fresh redis-server with persistence off on a free loopback
// port and stops it when the test ends. extra arguments are passed through
// (e.g. "--maxmemory", "1mb").
func Start(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	requireBinary(tb, "redis-server")
	var lastErr error
	// A port found free can be taken by someone else before redis-server
	// binds it; a few attempts on fresh ports make that race harmless.
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("testredis: finding a free port: %v", err)
		}
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, tb: tb, dir: tb.TempDir(), extra: extra}
		if lastErr = s.start(); lastErr == nil {
			tb.Cleanup(s.cleanup)
			return s
		}
	}
	tb.Fatalf("testredis: starting redis-server: %v", lastErr)
	return nil
}

func requireBinary(tb testing.TB, name string) {
	tb.Helper()
	if _, err := exec.LookPath(name); err != nil {
		tb.Fatalf(missingHelp, name)
	}
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) args() []string {
	var a []string
	if s.conf != "" {
		a = append(a, s.conf)
	}
	a = append(a,
		"--port", strconv.Itoa(s.Port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--logfile", filepath.Join(s.dir, "redis.log"),
		"--daemonize", "no",
	)
	return append(a, s.extra...)
}

// start launches the process and waits until it answers PING. The caller
// holds no lock; start takes s.mu itself.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("redis-server on %s is already running", s.Addr)
	}
	cmd := exec.Command("redis-server", s.args()...)
	// The server writes to its log file; nothing to copy, so no goroutines.
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running redis-server: %w", err)
	}
	exited := make(chan error, 1)
	// Waiting in a goroutine lets the readiness loop notice an early exit
	// (port taken, bad argument); the goroutine ends with the process, and
	// stop reads its result, so it never outlives the Server.
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("redis-server on %s exited at start (%w); log:\n%s", s.Addr, err, s.logTail())
		default:
		}
		if _, err := Do(s.Addr, "PING"); err == nil {
			s.cmd = cmd
			s.waitCh = exited
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("redis-server on %s did not answer PING within %v; log:\n%s", s.Addr, startTimeout, s.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL, as a crash would) and waits for it to
// exit. The port stays reserved for Restart. Stopping a stopped server is a
// no-op.
func (s *Server) Stop() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.waitCh
	s.cmd, s.waitCh = nil, nil
}

// Restart starts a stopped server again on the same port, with an empty
// dataset (persistence is off), and waits until it answers PING.
func (s *Server) Restart() {
	s.tb.Helper()
	s.mu.Lock()
	running := s.cmd != nil
	s.mu.Unlock()
	if running {
		s.Stop()
	}
	if err := s.start(); err != nil {
		s.tb.Fatalf("testredis: restarting: %v", err)
	}
}

// Pause freezes the process (SIGSTOP): connections stay open but nothing is
// answered, which is what a Redis stalled by a slow command or a full
// network looks like to a client. Resume undoes it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.tb.Fatalf("testredis: %v to %s: server is not running", sig, s.Addr)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.tb.Fatalf("testredis: %v to %s: %v", sig, s.Addr, err)
	}
}

// Do sends one command to the server and returns its reply (see the
// package-level Do).
func (s *Server) Do(args ...string) (string, error) { return Do(s.Addr, args...) }

func (s *Server) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tb.Failed() && s.cmd != nil {
		s.tb.Logf("testredis: log of redis-server on %s:\n%s", s.Addr, s.logTail())
	}
	s.stopLocked()
}

// logTail returns the end of the server's log, for failure messages.
func (s *Server) logTail() string {
	b, err := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const maxTail = 4 << 10
	if len(b) > maxTail {
		b = b[len(b)-maxTail:]
	}
	return string(b)
}

// Cluster is a Redis Cluster of three masters, with no replicas
// (StartCluster) or one replica each (StartClusterWithReplicas).
type Cluster struct {
	Nodes    []*Server
	replicas int
}

// Addrs lists the nodes' addresses, the seed list a Cluster client takes.
func (c *Cluster) Addrs() []string {
	a := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		a[i] = n.Addr
	}
	return a
}

// StartCluster starts three cluster-enabled servers on consecutive ports
// (each also needs its port + 10000 for the cluster bus), joins them with
// `redis-cli --cluster create`, and waits until every node reports
// cluster_state:ok. They are stopped when the test ends.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	return startCluster(tb, 0)
}

// StartClusterWithReplicas is StartCluster with one replica per master
// (six nodes), each replica's link to its master up before it returns, so
// a master can fail over (Master, ReplicaOf, CLUSTER FAILOVER).
func StartClusterWithReplicas(tb testing.TB) *Cluster {
	tb.Helper()
	return startCluster(tb, 1)
}

func startCluster(tb testing.TB, replicas int) *Cluster {
	tb.Helper()
	requireBinary(tb, "redis-server")
	requireBinary(tb, "redis-cli")
	n := 3 * (1 + replicas)
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		base, err := freeClusterBase(n)
		if err != nil {
			lastErr = err
			continue
		}
		c := &Cluster{replicas: replicas}
		for i := 0; i < n; i++ {
			port := base + i
			dir := tb.TempDir()
			n := &Server{
				Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, tb: tb, dir: dir,
				extra: []string{
					"--cluster-enabled", "yes",
					"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", port)),
					"--cluster-node-timeout", "5000",
				},
			}
			if err := n.start(); err != nil {
				lastErr = err
				break
			}
			tb.Cleanup(n.cleanup)
			c.Nodes = append(c.Nodes, n)
		}
		if len(c.Nodes) < n {
			for _, n := range c.Nodes {
				n.Stop()
			}
			continue
		}
		if err := c.create(); err != nil {
			tb.Fatalf("testredis: forming the cluster: %v", err)
		}
		return c
	}
	tb.Fatalf("testredis: starting cluster nodes: %v", lastErr)
	return nil
}

// freeClusterBase finds n consecutive free ports whose bus ports (+10000)
// are free too. The range keeps port+10000 below 65536 and away from the
// kernel's ephemeral range, where free ports are most often taken back.
func freeClusterBase(n int) (int, error) {
	for try := 0; try < 100; try++ {
		base := 20000 + rand.IntN(12000)
		ok := true
		for i := 0; i < n && ok; i++ {
			ok = portFree(base+i) && portFree(base+i+10000)
		}
		if ok {
			return base, nil
		}
	}
	return 0, errors.New("no run of free ports found for a cluster")
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func (c *Cluster) create() error {
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(c.replicas), "--cluster-yes")
	out, err := exec.Command("redis-cli", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("redis-cli --cluster create: %w:\n%s", err, out)
	}
	deadline := time.Now().Add(startTimeout)
	for _, n := range c.Nodes {
		for {
			info, err := n.Do("CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				if err == nil {
					err = fmt.Errorf("last CLUSTER INFO: %q", info)
				}
				return fmt.Errorf("node %s never reported cluster_state:ok: %w", n.Addr, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if c.replicas == 0 {
			continue
		}
		// A replica takes over only once it has synced with its master.
		for {
			info, err := n.Do("INFO", "replication")
			if err == nil && (strings.Contains(info, "role:master") || strings.Contains(info, "master_link_status:up")) {
				break
			}
			if time.Now().After(deadline) {
				if err == nil {
					err = fmt.Errorf("last INFO replication: %q", info)
				}
				return fmt.Errorf("replica %s never linked to its master: %w", n.Addr, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id, addr, master string   // master: the id of its master, "-" for a master
	slots            []string // a master's slot ranges, "0-5460" or "42"
}

// nodes reads CLUSTER NODES from a live node of the cluster.
func (c *Cluster) nodes(tb testing.TB) []clusterNode {
	tb.Helper()
	var lastErr error
	for _, s := range c.Nodes {
		out, err := s.Do("CLUSTER", "NODES")
		if err != nil {
			lastErr = err
			continue
		}
		var list []clusterNode
		for line := range strings.Lines(out) {
			f := strings.Fields(line)
			if len(f) < 4 {
				continue
			}
			addr, _, _ := strings.Cut(f[1], "@")
			n := clusterNode{id: f[0], addr: addr, master: f[3]}
			if len(f) > 8 {
				n.slots = f[8:]
			}
			list = append(list, n)
		}
		return list
	}
	tb.Fatalf("testredis: no node answered CLUSTER NODES: %v", lastErr)
	return nil
}

func (c *Cluster) server(addr string) *Server {
	for _, s := range c.Nodes {
		if s.Addr == addr {
			return s
		}
	}
	return nil
}

// Master is the node that serves key's slot, as the cluster sees it now.
func (c *Cluster) Master(tb testing.TB, key string) *Server {
	tb.Helper()
	var slot int
	var err error
	for _, s := range c.Nodes {
		var out string
		if out, err = s.Do("CLUSTER", "KEYSLOT", key); err == nil {
			slot, err = strconv.Atoi(out)
			break
		}
	}
	if err != nil {
		tb.Fatalf("testredis: CLUSTER KEYSLOT: %v", err)
	}
	for _, n := range c.nodes(tb) {
		for _, r := range n.slots {
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			l, err1 := strconv.Atoi(lo)
			h, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil && l <= slot && slot <= h {
				return c.server(n.addr)
			}
		}
	}
	tb.Fatalf("testredis: no master serves slot %d", slot)
	return nil
}

// ReplicaOf is the node replicating master.
func (c *Cluster) ReplicaOf(tb testing.TB, master *Server) *Server {
	tb.Helper()
	list := c.nodes(tb)
	var id string
	for _, n := range list {
		if n.addr == master.Addr {
			id = n.id
		}
	}
	for _, n := range list {
		if id != "" && n.master == id {
			return c.server(n.addr)
		}
	}
	tb.Fatalf("testredis: %s has no replica", master.Addr)
	return nil
}

// Do sends one command to the Redis server at addr over a fresh connection
// and returns the reply: a status or bulk string as is, an integer in
// decimal, an array as its elements joined by newlines. A Redis error reply
// is returned as an error. It exists so tests can poke a server (DBSIZE,
// TTL, SCRIPT FLUSH, CONFIG SET) without a client library.
func Do(addr string, args ...string) (string, error) {
	// A paused or dead server must not hang a test forever.
	return DoTimeout(addr, 5*time.Second, args...)
}

// DoTimeout is Do with a deadline for the whole exchange.
func DoTimeout(addr string, timeout time.Duration, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(conn))
}

func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch body := line[1:]; line[0] {
	case '+', ':':
		return body, nil
	case '-':
		return "", errors.New(body)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil {
			return "", fmt.Errorf("bad bulk length %q", body)
		}
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil {
			return "", fmt.Errorf("bad array length %q", body)
		}
		parts := make([]string, 0, max(n, 0))
		for i := 0; i < n; i++ {
			p, err := readReply(r)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	default:
		return "", fmt.Errorf("unexpected reply %q", line)
	}
}

// StartSentinel starts a Redis Sentinel on a free loopback port that
// monitors master under name (quorum 1), and waits until it reports the
// master's address. It is stopped when the test ends.
func StartSentinel(tb testing.TB, master *Server, name string) *Server {
	tb.Helper()
	requireBinary(tb, "redis-server")
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("testredis: finding a free port: %v", err)
		}
		dir := tb.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1\nsentinel down-after-milliseconds %s 5000\n", name, master.Port, name)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			tb.Fatalf("testredis: writing %s: %v", conf, err)
		}
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, tb: tb, dir: dir, conf: conf, extra: []string{"--sentinel"}}
		if lastErr = s.start(); lastErr != nil {
			continue
		}
		tb.Cleanup(s.cleanup)
		deadline := time.Now().Add(startTimeout)
		for {
			got, err := s.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
			if err == nil && got == "127.0.0.1\n"+strconv.Itoa(master.Port) {
				return s
			}
			if time.Now().After(deadline) {
				tb.Fatalf("testredis: sentinel on %s never reported master %s (last: %q, %v)", s.Addr, name, got, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	tb.Fatalf("testredis: starting redis-server --sentinel: %v", lastErr)
	return nil
}
