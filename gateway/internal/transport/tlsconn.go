package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"syscall"
	"time"
)

// NewH1TLS is NewH1 for an upstream reached over TLS (the mesh hop to a
// sidecar): H1 then sends requests whose URL says https itself, on
// connections it dials, secures with fallback.TLSClientConfig (its ALPN set
// to http/1.1 alone) and pools as it pools plain ones. The configuration is
// used as given, so whatever it verifies (a sidecar's SPIFFE ID) and how it
// finds its client certificate (GetClientCertificate, which follows
// rotation) hold for every connection; the handshake is bounded by
// fallback.TLSHandshakeTimeout and by the request's context. now is the
// clock the connections' certificates are held to (nil: time.Now): a
// connection is not reused from certExpiryMargin before the earliest expiry
// of the certificates its handshake exchanged.
func NewH1TLS(fallback *http.Transport, now func() time.Time) *H1 {
	t := NewH1(fallback)
	if now != nil {
		t.now = now
	}
	cfg := fallback.TLSClientConfig.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	t.tls = cfg
	t.handshakeTimeout = fallback.TLSHandshakeTimeout
	return t
}

// dialTLS makes a TLS connection to host over a socket of t.dial's. The
// socket goes under the TLS client inside a recordConn, which follows the
// record framing of what the upstream sent so that quiet can tell whether
// crypto/tls holds undecrypted bytes. cfg is t.tls, or a copy of it that
// offers other protocols (TLSUpgrades' probe).
func (t *H1) dialTLS(ctx context.Context, host string, cfg *tls.Config) (*tls.Conn, *recordConn, time.Time, error) {
	nc, err := t.dial(ctx, "tcp", host)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	rc := &recordConn{Conn: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			rc.raw = raw
			rc.readFn = rc.readNow
		}
	}
	tc, until, err := clientTLS(ctx, rc, cfg, host, t.handshakeTimeout)
	if err != nil {
		_ = nc.Close()
		return nil, nil, until, err
	}
	return tc, rc, until, nil
}

// clientTLS makes the client side of a TLS handshake over nc, configured by
// cfg (the name host gives when cfg names no server), bounded by timeout
// and by ctx. until is the earliest NotAfter of the certificates the
// handshake exchanged, the peer's chain and the certificate
// GetClientCertificate returned: past it the peer would no longer accept
// the connection (a sidecar re-checks the caller's certificate at every
// request), so a pool stops using it before then. The caller closes nc on
// an error.
func clientTLS(ctx context.Context, nc net.Conn, cfg *tls.Config, host string, timeout time.Duration) (*tls.Conn, time.Time, error) {
	var until time.Time
	var own *tls.Certificate
	if cfg.ServerName == "" || cfg.GetClientCertificate != nil {
		cfg = cfg.Clone()
	}
	if cfg.ServerName == "" {
		// As http.Transport: the name the URL gave, for SNI and for a
		// configuration that verifies host names.
		name, _, err := net.SplitHostPort(host)
		if err != nil {
			name = host
		}
		cfg.ServerName = name
	}
	if get := cfg.GetClientCertificate; get != nil {
		// The certificate this handshake presents (the mesh's follows
		// rotation), whose expiry ends the connection's reuse.
		cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := get(cri)
			own = c
			return c, err
		}
	}
	tc := tls.Client(nc, cfg)
	hctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, until, err
	}
	certs := tc.ConnectionState().PeerCertificates
	if own != nil {
		if own.Leaf != nil {
			certs = append(slices.Clip(certs), own.Leaf)
		} else if len(own.Certificate) > 0 {
			if leaf, err := x509.ParseCertificate(own.Certificate[0]); err == nil {
				certs = append(slices.Clip(certs), leaf)
			}
		}
	}
	for _, c := range certs {
		if until.IsZero() || c.NotAfter.Before(until) {
			until = c.NotAfter
		}
	}
	return tc, until, nil
}

// recordConn is the socket under a TLS client. It passes reads through
// unchanged and follows the TLS record framing (5-byte header, then as many
// bytes as its length says) across everything it has handed to crypto/tls,
// so atBoundary says whether what crypto/tls has received ends with a whole
// record. While probing, a read does not wait: it takes what the socket
// holds now and reports errNothingYet if that is nothing.
type recordConn struct {
	net.Conn
	raw     syscall.RawConn
	readFn  func(fd uintptr) bool // readNow, made once per connection
	probing bool

	// The framing: hdr holds the first hn bytes of the current record's
	// header; once it is whole, body is the count of its bytes still to
	// come.
	hdr  [5]byte
	hn   int
	body int

	// The probe read's buffer and result (readNow).
	buf []byte
	n   int
	err error

	// socketEOF: a read of the socket returned io.EOF. crypto/tls reads
	// the socket's end at a record boundary as the end of the stream,
	// as it reads a close_notify alert (RFC 8446 6.1 asks for the alert
	// and lets popular servers off), but after the alert it never reads
	// the socket again: an EOF from crypto/tls with socketEOF set is a
	// connection that ended without close_notify (cutWithoutCloseNotify).
	socketEOF bool
}

// errNothingYet is a probe's read finding the socket empty. crypto/tls keeps
// a connection usable after a read error that says it is temporary, as it
// does after a read deadline.
var errNothingYet net.Error = nothingYet{}

type nothingYet struct{}

func (nothingYet) Error() string   { return "nothing to read yet" }
func (nothingYet) Timeout() bool   { return true }
func (nothingYet) Temporary() bool { return true }

func (rc *recordConn) Read(p []byte) (int, error) {
	var n int
	var err error
	if rc.probing {
		n, err = rc.readProbe(p)
	} else {
		n, err = rc.Conn.Read(p)
	}
	if errors.Is(err, io.EOF) {
		rc.socketEOF = true
	}
	rc.follow(p[:n])
	return n, err
}

// errNoCloseNotify is an answer delimited by the close whose TLS connection
// ended without close_notify: cut short, by a peer that died or by someone
// on the path, and never to be passed on as whole.
var errNoCloseNotify = fmt.Errorf("upstream's TLS connection ended without close_notify: %w", io.ErrUnexpectedEOF)

func (rc *recordConn) readProbe(p []byte) (int, error) {
	if rc.raw == nil {
		return 0, errors.New("connection cannot be probed")
	}
	rc.buf, rc.n, rc.err = p, 0, nil
	if err := rc.raw.Read(rc.readFn); err != nil {
		return 0, err
	}
	rc.buf = nil
	return rc.n, rc.err
}

// readNow reads the socket without waiting for it (Go's sockets are
// non-blocking: EAGAIN means empty). A read of nothing is the EOF.
func (rc *recordConn) readNow(fd uintptr) bool {
	n, err := syscall.Read(int(fd), rc.buf)
	switch {
	case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
		rc.err = errNothingYet
	case err != nil:
		rc.err = err
	case n == 0:
		rc.err = io.EOF
	default:
		rc.n = n
	}
	return true
}

// follow advances the framing over b, the bytes just handed to crypto/tls.
func (rc *recordConn) follow(b []byte) {
	for len(b) > 0 {
		if rc.hn < len(rc.hdr) {
			k := copy(rc.hdr[rc.hn:], b)
			rc.hn += k
			b = b[k:]
			if rc.hn == len(rc.hdr) {
				rc.body = int(rc.hdr[3])<<8 | int(rc.hdr[4])
			}
		} else {
			k := min(rc.body, len(b))
			rc.body -= k
			b = b[k:]
		}
		if rc.hn == len(rc.hdr) && rc.body == 0 {
			rc.hn = 0
		}
	}
}

// atBoundary: everything handed to crypto/tls so far is whole records.
func (rc *recordConn) atBoundary() bool { return rc.hn == 0 }

// quietTLS is quiet over TLS. Bytes that answer nothing may sit in four
// places: the bufio.Reader, crypto/tls's decrypted input, its undecrypted
// input, and the socket. One read of crypto/tls with the socket probed
// (never waited on) looks at all of them: it returns decrypted bytes first,
// then decrypts whole records it holds, then takes what the socket has and
// decrypts that. Application data or an EOF (close_notify, a closed
// socket) on the way means the connection is not reused; post-handshake
// messages (NewSessionTicket, KeyUpdate) are handled inside crypto/tls and
// the read goes on, so they neither count as stray bytes nor reach a
// client. The read ends with errNothingYet once the socket is empty; the
// bytes crypto/tls still holds are then a partial record, which only the
// framing can tell (a record of application data that has not all arrived
// is stray bytes too).
func (c *h1Conn) quietTLS() bool {
	if c.br.Buffered() > 0 || c.rc.raw == nil {
		return false
	}
	c.rc.probing = true
	n, err := c.tc.Read(c.probe[:])
	c.rc.probing = false
	return n == 0 && errors.Is(err, errNothingYet) && c.rc.atBoundary()
}
