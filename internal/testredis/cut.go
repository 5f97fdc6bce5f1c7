package testredis

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// CutAfterCommand returns a connection handler (for testutil.ServeConns)
// that passes a connection on to the Redis at addr until the client has
// sent the command named cmd (lower case, a RESP bulk string of its own,
// so "set" is not CLIENT SETNAME, though an argument spelled like the
// command would match too); then it closes the connection instead
// of passing on Redis's reply: Redis has run the command, and the client
// sees its connection break before the answer. Tests use it to show that a
// command is not sent again after such a break (redisclient.SendOnce),
// counting Redis's own runs with CommandCalls.
func CutAfterCommand(addr, cmd string) func(net.Conn) {
	name := []byte("\r\n" + cmd + "\r\n")
	return func(c net.Conn) {
		up, err := net.Dial("tcp", addr)
		if err != nil {
			_ = c.Close()
			return
		}
		var sent atomic.Bool
		var wg sync.WaitGroup
		wg.Go(func() {
			defer c.Close() // the client's read fails: the connection broke
			buf := make([]byte, 64<<10)
			for {
				n, err := up.Read(buf)
				if n > 0 && sent.Load() {
					return
				}
				if n > 0 {
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		})
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if bytes.Contains(bytes.ToLower(buf[:n]), name) {
					sent.Store(true)
				}
				if _, err := up.Write(buf[:n]); err != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		_ = up.Close()
		wg.Wait()
	}
}

// CommandCalls reads how often the Redis at addr has run cmd (lower case;
// INFO commandstats): 0 if it never has.
func CommandCalls(tb testing.TB, addr, cmd string) int {
	tb.Helper()
	info, err := Do(addr, "INFO", "commandstats")
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.Lines(info) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls=")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
		if err != nil {
			tb.Fatal(err)
		}
		return n
	}
	return 0
}

// DialThrough returns a Cluster client's Dialer that reaches each node
// through the address proxies maps it to (a CutAfterCommand proxy in front
// of each node): the nodes name each other by their own addresses (CLUSTER
// SLOTS), so every connection the client makes to any node goes through
// that node's proxy. A node without a proxy is an error.
func DialThrough(proxies map[string]string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		p, ok := proxies[addr]
		if !ok {
			return nil, errors.New("no proxy in front of " + addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, p)
	}
}
