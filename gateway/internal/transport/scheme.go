package transport

import (
	"fmt"
	"net/http"
	"time"
)

// Pool is a transport that keeps connections between requests.
type Pool interface {
	http.RoundTripper
	CloseIdleConnections()
}

var (
	_ Pool = (*H1)(nil)
	_ Pool = (*TLSUpgrades)(nil)
)

// ForScheme is the transport for a server outside the mesh reached by
// scheme, made from t (its dialer, timeouts and TLS settings): H1 for
// "http", TLSUpgrades for "https". It is the one place that choice is
// made, for upstreams and for the edge's own HTTP clients alike (an
// ext_authz server), so that every HTTP/1.1 connection they reuse is
// checked for stray bytes before it is taken. The scheme is known when the
// client is built, not looked up per request. now is the clock TLS
// connections' certificates are held to (nil: time.Now). H1 takes t over
// (its dialer): a caller that keeps using t passes a clone.
func ForScheme(scheme string, t *http.Transport, now func() time.Time) (Pool, error) {
	switch scheme {
	case "http":
		return NewH1(t), nil
	case "https":
		return NewTLSUpgrades(t, now), nil
	}
	return nil, fmt.Errorf("transport: scheme %q is neither http nor https", scheme)
}
