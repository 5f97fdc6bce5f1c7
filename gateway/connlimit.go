package gateway

import (
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/causewayhq/causeway/routes"
)

// Derived connection cap: without server.max_connections, the data
// listeners together accept at most half of the file descriptors left after
// fdReserve (listeners, the routes file and its watcher, logs, the admin
// listener, Redis and collector connections); the other half is for the
// upstream connection each client connection may hold. A limit above
// fdCeiling (or unlimited) counts as fdCeiling.
const (
	fdReserve = 128
	fdCeiling = 1 << 20
)

// derivedMaxConnections is the default cap on client connections of all
// data listeners together for a process allowed nofile descriptors:
// (min(nofile, 2^20) - 128) / 2, at least 1.
func derivedMaxConnections(nofile uint64) int {
	n := min(nofile, fdCeiling)
	if n <= 2*fdReserve {
		return max(1, int(n/4))
	}
	return int(n-fdReserve) / 2
}

// listenerCap is the total cap of each of listeners data listeners: the
// file's max_connections when it sets one (maxSet; 0: no cap), else the
// derived cap shared evenly among them.
func listenerCap(srv routes.Server, maxSet bool, listeners int, nofile func() (uint64, error)) int {
	if maxSet || listeners == 0 {
		return srv.MaxConnections
	}
	n, err := nofile()
	if err != nil {
		return 0 // no limit known: no derived cap
	}
	return max(1, derivedMaxConnections(n)/listeners)
}

// rlimitNoFile is the process's current (soft) file-descriptor limit; Go
// raises it to the hard limit at start.
func rlimitNoFile() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	return rl.Cur, nil
}

// limitListener caps concurrent connections per client IP (and, when max
// is set, in total). A connection over a cap is closed at accept, before a
// byte is read: a single client cannot hold every file descriptor with idle
// or slow connections. The count is by TCP peer; clients behind one NAT or
// proxy share a budget, so size per-IP caps accordingly.
type limitListener struct {
	net.Listener
	perIP int
	max   int

	mu    sync.Mutex
	byIP  map[netip.Addr]int
	total int
}

func newLimitListener(ln net.Listener, perIP, total int) net.Listener {
	if perIP <= 0 && total <= 0 {
		return ln
	}
	return &limitListener{Listener: ln, perIP: perIP, max: total, byIP: map[netip.Addr]int{}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrOf(c.RemoteAddr())
		if !l.acquire(ip) {
			c.Close()
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func (l *limitListener) acquire(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.total >= l.max {
		return false
	}
	if l.perIP > 0 && l.byIP[ip] >= l.perIP {
		return false
	}
	l.total++
	l.byIP[ip]++
	return true
}

func (l *limitListener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.byIP[ip] - 1; n > 0 {
		l.byIP[ip] = n
	} else {
		delete(l.byIP, ip)
	}
}

// limitedConn gives its slot back exactly once, however often it is closed.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite half-closes the connection underneath: an upgraded
// connection's tunnel passes the upstream's half-close on with it
// (without, ReverseProxy ends the whole tunnel at the upstream's EOF).
func (c *limitedConn) CloseWrite() error { return closeWrite(c.Conn) }

// NetConn exposes the TCP connection to crypto/tls and net/http, which look
// for it (e.g. to set deadlines or read the peer address).
func (c *limitedConn) NetConn() net.Conn { return c.Conn }
