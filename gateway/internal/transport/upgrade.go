package transport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Protocol upgrades (WebSocket) go through H1 like any other request: the
// head and any body are written and the answer read as on the ordinary
// path, so a declined upgrade (a 200, a 4xx) reaches the forwarder exactly
// as an ordinary response would, its Connection field included (newResponse
// keeps the names a closing response nominates, which http.ReadResponse
// drops with the whole field). On a 101 to the protocol asked for, the
// connection becomes the response's body, an io.ReadWriteCloser, as
// httputil.ReverseProxy expects from http.Transport.
//
// An upgrade's connection is never pooled: switched, it belongs to the
// tunnel until it closes; declined, the upstream was ready to speak another
// protocol on it, and bytes it sent behind its answer could otherwise
// become the next request's answer.

// requestedUpgrade is the protocol req asks to switch to ("" when it asks
// for none): an Upgrade field, and Connection naming it, as ReverseProxy
// reads it. The map lookup first keeps ordinary requests from scanning
// their Connection field.
func requestedUpgrade(req *http.Request) string {
	vv, ok := req.Header["Upgrade"]
	if !ok || len(vv) == 0 || !httpguts.HeaderValuesContainsToken(req.Header["Connection"], "Upgrade") {
		return ""
	}
	return vv[0]
}

// switchedProtocol checks a 101 to an upgrade request: it must name the
// protocol asked for (ReverseProxy checks the same, but leaves the
// connection open when it refuses).
func switchedProtocol(resp *http.Response, asked string) error {
	got := ""
	if httpguts.HeaderValuesContainsToken(resp.Header["Connection"], "Upgrade") {
		got = resp.Header.Get("Upgrade")
	}
	if !isPrintASCII(got) || !strings.EqualFold(got, asked) {
		return badUpstream(fmt.Sprintf("switched protocol %q when %q was requested", got, asked))
	}
	return nil
}

// CheckSwitch is the rule H1 applies to a 101 (switchedProtocol), for a
// response another transport read: the forwarder's tunnel applies it to
// those, so that the rule is written once.
func CheckSwitch(resp *http.Response, asked string) error { return switchedProtocol(resp, asked) }

// SwitchChecked reports whether resp is a 101 that H1 read: it checked it
// (switchedProtocol) and made the connection its body. Another
// transport's 101 (http.Transport's, for h2 and h2c upstreams) still needs
// CheckSwitch.
func SwitchChecked(resp *http.Response) bool {
	_, ok := resp.Body.(*switchedConn)
	return ok && resp.StatusCode == http.StatusSwitchingProtocols
}

func isPrintASCII(s string) bool {
	for i := range len(s) {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// switched turns c, on which a 101 to the protocol asked for was read, into
// resp's body. A request body must have been written whole first: the
// upstream's end of the tunnel would otherwise read the body's rest as the
// new protocol, and the body's writer would race the tunnel's writes on
// the socket. stop still watches the request's context: a client that
// leaves ends the tunnel, as it ends a body.
func (c *h1Conn) switched(resp *http.Response, stop func() bool, asked string) (*http.Response, error) {
	err := switchedProtocol(resp, asked)
	if err == nil && c.sending && !c.send.finished() {
		err = badUpstream("switched protocols before the request body was sent")
	}
	if err != nil {
		stop() // RoundTrip closes c on any error
		return nil, err
	}
	// A 101 has no body of its own, whatever framing fields it carries:
	// what follows its head is the new protocol.
	resp.ContentLength = 0
	resp.TransferEncoding = nil
	delete(resp.Header, "Content-Length")
	resp.Body = &switchedConn{c: c, stop: stop}
	return resp, nil
}

// finished waits for the body's writer to end and reports whether it wrote
// the body whole. The writer's waits are bounded by its write deadline and
// by the request's context.
func (s *bodySend) finished() bool {
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// switchedConn is an upgraded connection, handed to the tunnel. Reads go
// through the connection's read buffer, so bytes the upstream sent in the
// same write as its 101 come first. Read and Write may run on two
// goroutines at once (ReverseProxy copies both ways), as on a net.Conn.
type switchedConn struct {
	c    *h1Conn
	stop func() bool
	once sync.Once
}

func (s *switchedConn) Read(p []byte) (int, error) { return s.c.br.Read(p) }

// Write gives every piece of at most switchedPiece bytes the upstream's
// timeout to make progress, as a request body's writes get
// (armWriteDeadline): an upstream that stops reading the tunnel fails the
// write, and the tunnel ends, instead of holding the client's side (and
// its data) for as long as the upstream keeps the connection. A quiet
// tunnel is never cut: the deadline runs only while a write waits.
func (s *switchedConn) Write(p []byte) (int, error) {
	if s.c.t.headerTimeout <= 0 {
		return s.c.nc.Write(p)
	}
	written := 0
	for len(p) > 0 {
		n := min(len(p), switchedPiece)
		_ = s.c.nc.SetWriteDeadline(time.Now().Add(s.c.t.headerTimeout))
		m, err := s.c.nc.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// switchedPiece is the most one tunnel write carries before its deadline
// moves again, so a large write to a slow but reading upstream is bounded
// by its progress, not by its size.
const switchedPiece = 32 << 10

// CloseWrite half-closes the upstream's end: the tunnel passes a client's
// half-close on (ReverseProxy looks for CloseWrite on the body), and the
// upstream's answer in flight still comes back. Over TLS it is the
// close_notify alert, which the upstream's TLS reads as the end.
func (s *switchedConn) CloseWrite() error {
	if s.c.tc != nil {
		return s.c.tc.CloseWrite()
	}
	if cw, ok := s.c.nc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// Close ends the tunnel's upstream side; the connection is never pooled.
func (s *switchedConn) Close() error {
	s.once.Do(func() {
		s.stop()
		s.c.close()
	})
	return nil
}

// TLSUpgrades carries an https upstream's requests outside the mesh: its
// protocol upgrades through H1 over TLS (ALPN http/1.1, as an upgrade
// needs), and its other requests by the protocol the upstream negotiates:
// HTTP/2 through the http.Transport it was made from, HTTP/1.1 through H1
// over TLS as well. So every HTTP/1.1 request to an https upstream goes
// through H1, whose pool checks a connection for stray bytes each time it
// is taken (h1Conn.quiet). http.Transport puts an HTTP/1.1 connection back
// in its pool before its read loop looks for bytes the upstream sent after
// a response (a body after a HEAD answer, more than the Content-Length, an
// unsolicited response while idle), so the next request sent on it could
// read them as its own answer. HTTP/2 frames every byte to a stream:
// nothing of the kind can happen there. Both stop using a connection
// before its certificates expire.
type TLSUpgrades struct {
	h1   *H1
	rest *CertBound
	// offer is the TLS configuration of the connection that learns what a
	// host speaks (speaksH2): H1's, with h2 offered before http/1.1, as
	// http.Transport offers them.
	offer *tls.Config

	// speaks maps host:port to whether it negotiated h2 (false:
	// HTTP/1.1). Every request reads it, so it is read without a lock: a
	// map once stored is never written again; learn stores a changed copy
	// (hosts are learned once per host and generation, and again only
	// when what a host speaks changes). mu orders the learners, so that
	// none loses another's host.
	speaks atomic.Pointer[map[string]bool]
	mu     sync.Mutex
}

// maxLearnedHosts bounds TLSUpgrades.speaks: an upstream whose endpoints
// change all the time (DNS) does not grow it without end; past the bound
// it is emptied and hosts are learned again.
const maxLearnedHosts = 1024

// NewTLSUpgrades splits t, configured for an https upstream, in two; the
// upgrades' H1 uses a copy of t's TLS configuration, so it verifies what
// t verifies. Both hold certificates to the clock now (nil: time.Now).
func NewTLSUpgrades(t *http.Transport, now func() time.Time) *TLSUpgrades {
	h1 := t.Clone()
	h1.ForceAttemptHTTP2 = false
	if h1.TLSClientConfig == nil {
		h1.TLSClientConfig = &tls.Config{}
	}
	s := &TLSUpgrades{h1: NewH1TLS(h1, now), rest: NewCertBound(t, now)}
	s.speaks.Store(&map[string]bool{})
	s.offer = s.h1.tls.Clone()
	s.offer.NextProtos = []string{"h2", "http/1.1"}
	// A connection http.Transport makes tells what its host speaks now:
	// an upstream that stopped offering h2 gets its next requests through
	// H1.
	s.rest.negotiated = s.learn
	return s
}

func (s *TLSUpgrades) RoundTrip(req *http.Request) (*http.Response, error) {
	if requestedUpgrade(req) != "" {
		return s.h1.RoundTrip(req)
	}
	if !s.h1.sendsItself(req) {
		return s.rest.RoundTrip(req)
	}
	h2, err := s.speaksH2(req, req.URL.Host)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	if h2 {
		return s.rest.RoundTrip(req)
	}
	return s.h1.RoundTrip(req)
}

// speaksH2 reports whether host negotiates HTTP/2. The first request to a
// host finds out by making a connection offering both protocols: one that
// settles on HTTP/1.1 goes to H1's pool for this request to take; one that
// settles on h2 is closed (http.Transport makes its own).
func (s *TLSUpgrades) speaksH2(req *http.Request, host string) (bool, error) {
	h2, ok := (*s.speaks.Load())[host]
	if ok {
		return h2, nil
	}
	tc, rc, until, err := s.h1.dialTLS(req.Context(), host, s.offer)
	if err != nil {
		return false, err
	}
	h2 = tc.ConnectionState().NegotiatedProtocol == "h2"
	if h2 {
		_ = rc.Close()
	} else {
		c := s.h1.newConn(host, tc)
		c.setTLS(tc, rc, until)
		s.h1.putConn(c)
	}
	s.learn(host, h2)
	return h2, nil
}

// learn records what host negotiated. http.Transport reports every
// connection it makes (CertBound.negotiated): what is already known is not
// copied again.
func (s *TLSUpgrades) learn(host string, h2 bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := *s.speaks.Load()
	known, ok := cur[host]
	if ok && known == h2 {
		return
	}
	var next map[string]bool
	if !ok && len(cur) >= maxLearnedHosts {
		next = map[string]bool{} // past the bound, learn hosts again
	} else {
		next = maps.Clone(cur)
	}
	next[host] = h2
	s.speaks.Store(&next)
}

func (s *TLSUpgrades) CloseIdleConnections() {
	s.h1.CloseIdleConnections()
	s.rest.CloseIdleConnections()
}
