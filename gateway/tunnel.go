package gateway

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"
)

// tunnelTransport is the upstream's transport as the upgrade tunnel
// (httputil.ReverseProxy) sees it. An upstream that declines an upgrade
// (a 200, a 4xx) answers an ordinary response, and ReverseProxy copies
// its trailers to the client as they came: so the same checks as
// directProxy's run here, on the response before ReverseProxy announces
// its trailer names, and again at the end of the body (trailerEnd), where
// the transport fills res.Trailer, before ReverseProxy copies it. The
// response's Connection header is read here because ReverseProxy removes
// it (and the fields it names) before ModifyResponse.
type tunnelTransport struct{ rt http.RoundTripper }

func (t tunnelTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// The connection the response comes on, for the tunnel's half-close.
	// Attempts (retries) run one after the other: the last one's is the
	// response's.
	var conn atomic.Pointer[net.Conn]
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { conn.Store(&i.Conn) }}
	out := req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	// The upstream's connection is never used again: switched, it is the
	// tunnel's; declined, it would go back to net/http's pool, whose check
	// for bytes the upstream sent beyond its answer runs on the reading
	// goroutine after the connection is back in the pool, so the next
	// request (ordinary ones to TLS upstreams share that pool) could take
	// it first and read those bytes as its answer.
	//
	// The close rides in the one Connection field, after the upgrade
	// (`Connection: Upgrade, close`, a list as browsers send
	// `keep-alive, Upgrade`): set on its own, net/http would write a
	// separate `Connection: close` line ahead of the request's, and a
	// server that reads only the first Connection field would see close
	// and no upgrade.
	out.Close = true
	if vv := out.Header["Connection"]; !httpguts.HeaderValuesContainsToken(vv, "close") {
		out.Header = out.Header.Clone()
		out.Header["Connection"] = []string{strings.Join(append(slices.Clip(vv), "close"), ", ")}
	}
	res, err := t.rt.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// A switch has no trailer. ReverseProxy refuses one to another
		// protocol than asked for, but leaves the upstream's connection
		// (the 101's body) open for as long as the upstream keeps it: a
		// hostile upstream could hold the edge's sockets so. The same
		// check, closing it.
		if got, asked := upgradeType(res.Header), upgradeType(req.Header); !isPrint(got) || !strings.EqualFold(got, asked) {
			res.Body.Close()
			return nil, fmt.Errorf("backend tried to switch protocol %q when %q was requested", got, asked)
		}
		if rwc, ok := res.Body.(io.ReadWriteCloser); ok {
			if c := conn.Load(); c != nil {
				res.Body = &tunnelConn{ReadWriteCloser: rwc, conn: *c}
			}
		}
		return res, nil
	}
	if err := checkAnnouncedTrailer(res); err != nil {
		res.Body.Close()
		return nil, err
	}
	nominated := res.Header["Connection"]
	// The client's response header: ReverseProxy copies the upstream's into
	// it, and the stages set theirs there as the head goes out.
	client := stateFrom(req.Context()).rec.Header()
	dropResponseTrailers(res, nominated, res.Header, client)
	res.Body = &trailerEnd{rc: res.Body, res: res, conn: nominated, client: client}
	return res, nil
}

// tunnelConn is a 101's body, the upstream's connection, with the
// half-close net/http's Transport leaves out of it: ReverseProxy passes a
// client's half-close on (CloseWrite) when the upstream's end has one,
// and otherwise ends the whole tunnel at once, dropping what the upstream
// still had to send.
type tunnelConn struct {
	io.ReadWriteCloser
	conn net.Conn
}

func (c *tunnelConn) CloseWrite() error { return closeWrite(c.conn) }

// closeWrite half-closes nc, or the first connection under it (NetConn)
// that can: both ends of a tunnel come wrapped (the listener's limitedConn,
// the upstream transport's emptyGuardConn), and ReverseProxy looks for
// CloseWrite on the outermost one only.
func closeWrite(nc net.Conn) error {
	for {
		if cw, ok := nc.(interface{ CloseWrite() error }); ok {
			return cw.CloseWrite()
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return errors.ErrUnsupported
		}
		nc = u.NetConn()
	}
}
