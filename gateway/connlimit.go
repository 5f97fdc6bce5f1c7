package gateway

import (
	"net"
	"net/netip"
	"sync"
)

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

func newLimitListener(ln net.Listener, perIP, max int) net.Listener {
	if perIP <= 0 && max <= 0 {
		return ln
	}
	return &limitListener{Listener: ln, perIP: perIP, max: max, byIP: map[netip.Addr]int{}}
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

// NetConn exposes the TCP connection to crypto/tls and net/http, which look
// for it (e.g. to set deadlines or read the peer address).
func (c *limitedConn) NetConn() net.Conn { return c.Conn }
