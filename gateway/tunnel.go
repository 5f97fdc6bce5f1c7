package gateway

import (
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/causewayhq/causeway/gateway/internal/transport"
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
// it (and the fields it names) before ModifyResponse. The upstream client
// (transport.H1, for plain, mesh and https HTTP/1.1 upstreams) keeps the
// names a closing response's Connection nominates, so a declined
// upgrade's head loses them here by directProxy's rule (removeHopByHop);
// its 101 body can half-close (CloseWrite), which ReverseProxy passes a
// client's half-close on to.
type tunnelTransport struct{ rt http.RoundTripper }

func (t tunnelTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.WithContext(req.Context()) // a shallow copy: the client's request stays as it came
	// The upstream's connection is never used again: switched, it is the
	// tunnel's; declined, the upstream was ready to speak another protocol
	// on it, and bytes it sent behind its answer could become the next
	// request's answer. The upstream client never pools an upgrade's
	// connection; the close is said to the upstream too.
	//
	// The close rides in the one Connection field, after the upgrade
	// (`Connection: Upgrade, close`, a list as browsers send
	// `keep-alive, Upgrade`): a server that reads only the first
	// Connection field must see the upgrade, not a close alone.
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
		// A switch has no trailer. The upstream client (transport.H1, which
		// carries every upgrade to an HTTP/1.1 upstream) refuses a 101 to
		// another protocol than asked and closes its connection: its 101s
		// are checked there, once. Another transport's (http.Transport's,
		// for h2 and h2c upstreams) get the same rule here: ReverseProxy
		// refuses them too, but would leave the connection (the 101's
		// body) open for as long as the upstream keeps it.
		if !transport.SwitchChecked(res) {
			if err := transport.CheckSwitch(res, upgradeType(req.Header)); err != nil {
				res.Body.Close()
				return nil, err
			}
		}
		return res, nil
	}
	if err := transport.CheckAnnouncedTrailer(res.Trailer); err != nil {
		res.Body.Close()
		return nil, err
	}
	nominated := res.Header["Connection"]
	// The client's response header: ReverseProxy copies the upstream's into
	// it, and the stages set theirs there as the head goes out.
	client := stateFrom(req.Context()).rec.Header()
	dropResponseTrailers(res, nominated, res.Header, client)
	res.Body = &trailerEnd{rc: res.Body, res: res, conn: nominated, client: client}
	// The head loses its hop-by-hop fields by the rule directProxy applies
	// (ReverseProxy's own removal, which runs next, then finds none).
	removeHopByHop(res.Header)
	return res, nil
}

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
