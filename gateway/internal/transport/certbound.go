package transport

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// CertBound carries requests through an http.Transport over TLS (HTTP/2
// toward a sidecar for gRPC, an upstream with protocol: h2, an https
// upstream's requests) and keeps them off connections whose certificates
// are about to expire. Go's HTTP/2 client keeps a connection for as long as
// it stays open and sends every new stream on it; a sidecar re-checks the
// caller's certificate at every request, so once the certificate the
// connection was made with expired (rotated long before, as SPIFFE SVIDs
// are every hour) the next call on it got a 403 and the connection closed:
// one lost gRPC call per rotation. H1 retires its own connections one by
// one (getConn); the HTTP/2 pool is http.Transport's, which has no such
// hook, so CertBound retires the pool instead. Its connections are dialed
// through a generation, an http.Transport made from the one given, which
// records the earliest expiry of the certificates any of its handshakes
// exchanged (clientTLS); certExpiryMargin before that, requests go to a
// new generation, whose connections present the current certificate, while
// the streams already on the old one finish there. A retired generation's
// idle connections are closed at once, its busy ones when they fall idle
// (by its IdleConnTimeout, by the next retirement or by
// CloseIdleConnections); it is forgotten once none is open.
type CertBound struct {
	base *http.Transport
	// now is the clock the certificates are held to: the edge's or the
	// sidecar's, as their other expiries are.
	now func() time.Time

	cur atomic.Pointer[certGen]

	mu      sync.Mutex // serializes retirement; guards retired
	retired []*certGen

	// negotiated, when set, is told the protocol every connection's
	// handshake settled on (TLSUpgrades learns from it); set before the
	// first request.
	negotiated func(addr string, h2 bool)
	// recheck, when set (RecheckPeers), is asked at every request whether
	// the peers of the current generation's handshakes are still ones a
	// new handshake would accept; when one is not, the generation is
	// retired as one near its certificates' expiry is.
	recheck func(tls.ConnectionState) error
}

// certGen is one generation of CertBound's pool.
type certGen struct {
	t *http.Transport
	// until is the earliest NotAfter, in Unix nanoseconds, of the
	// certificates its connections' handshakes exchanged (0: none yet).
	until atomic.Int64
	// open counts its connections not closed yet.
	open atomic.Int64
	// states are its handshakes' TLS states, kept for recheck (only
	// then); copied on write under mu.
	mu     sync.Mutex
	states atomic.Pointer[[]tls.ConnectionState]
}

// NewCertBound wraps t, configured for TLS; t itself sends no request. now
// is the clock the certificates are held to (nil: time.Now).
func NewCertBound(t *http.Transport, now func() time.Time) *CertBound {
	if now == nil {
		now = time.Now
	}
	b := &CertBound{base: t, now: now}
	b.cur.Store(b.newGen())
	return b
}

func (b *CertBound) newGen() *certGen {
	g := &certGen{t: b.base.Clone()}
	if g.t.TLSClientConfig == nil {
		g.t.TLSClientConfig = &tls.Config{}
	}
	dial := b.base.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	timeout := b.base.TLSHandshakeTimeout
	// With its own TLS dialer the transport still negotiates HTTP/2 over
	// the *tls.Conn it gets (ALPN from its TLSClientConfig, whose
	// NextProtos it has set up by the time it dials).
	g.t.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		g.open.Add(1)
		cc := &countedConn{Conn: nc, open: &g.open}
		tc, until, err := clientTLS(ctx, cc, g.t.TLSClientConfig, addr, timeout)
		if err != nil {
			_ = cc.Close()
			return nil, err
		}
		g.lower(until)
		if b.recheck != nil {
			g.addState(tc.ConnectionState())
		}
		if b.negotiated != nil {
			b.negotiated(addr, tc.ConnectionState().NegotiatedProtocol == "h2")
		}
		return tc, nil
	}
	return g
}

// RecheckPeers makes b ask check, at every request, about the state of
// each handshake of the current generation (the mesh's VerifyConnection,
// which remembers what it verified): Go's HTTP/2 client sends every new
// stream on the connection it holds, so a peer trusted at the handshake
// and no longer (its root left the bundle) would go on getting requests
// for as long as the connection stays open. Call it before the first
// request.
func (b *CertBound) RecheckPeers(check func(tls.ConnectionState) error) { b.recheck = check }

// addState records the state of one of g's handshakes.
func (g *certGen) addState(cs tls.ConnectionState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var next []tls.ConnectionState
	if cur := g.states.Load(); cur != nil {
		next = append(next, (*cur)...)
	}
	next = append(next, cs)
	g.states.Store(&next)
}

// untrusted says whether a peer of one of g's handshakes no longer passes
// b.recheck.
func (b *CertBound) untrusted(g *certGen) bool {
	if b.recheck == nil {
		return false
	}
	states := g.states.Load()
	if states == nil {
		return false
	}
	for i := range *states {
		if b.recheck((*states)[i]) != nil {
			return true
		}
	}
	return false
}

// lower brings the generation's expiry down to until.
func (g *certGen) lower(until time.Time) {
	if until.IsZero() {
		return
	}
	u := until.UnixNano()
	for {
		old := g.until.Load()
		if old != 0 && old <= u {
			return
		}
		if g.until.CompareAndSwap(old, u) {
			return
		}
	}
}

func (b *CertBound) RoundTrip(req *http.Request) (*http.Response, error) {
	return b.current().t.RoundTrip(req)
}

// current is the generation a request goes to: the current one, or a new
// one if a certificate of the current one's connections is within
// certExpiryMargin of expiring (a request sent just before the expiry
// would reach the peer just after it), or if one of their peers no longer
// passes recheck.
func (b *CertBound) current() *certGen {
	g := b.cur.Load()
	if !b.expiring(g) && !b.untrusted(g) {
		return g
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if g = b.cur.Load(); !b.expiring(g) && !b.untrusted(g) {
		return g // another request retired it
	}
	next := b.newGen()
	b.cur.Store(next)
	g.t.CloseIdleConnections()
	b.retired = append(b.retired, g)
	b.closeRetiredLocked()
	return next
}

func (b *CertBound) expiring(g *certGen) bool {
	u := g.until.Load()
	return u != 0 && !b.now().Add(certExpiryMargin).Before(time.Unix(0, u))
}

// closeRetiredLocked closes the retired generations' idle connections and
// forgets the generations with none open.
func (b *CertBound) closeRetiredLocked() {
	kept := b.retired[:0]
	for _, g := range b.retired {
		g.t.CloseIdleConnections()
		if g.open.Load() > 0 {
			kept = append(kept, g)
		}
	}
	clear(b.retired[len(kept):])
	b.retired = kept
}

func (b *CertBound) CloseIdleConnections() {
	b.cur.Load().t.CloseIdleConnections()
	b.mu.Lock()
	b.closeRetiredLocked()
	b.mu.Unlock()
}

// countedConn is a socket that leaves its generation's count when closed.
type countedConn struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

// NetConn is the connection underneath, for what needs more of it than
// net.Conn, as for emptyGuardConn.
func (c *countedConn) NetConn() net.Conn { return c.Conn }

func (c *countedConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}
