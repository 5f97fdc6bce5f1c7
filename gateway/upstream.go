package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// Selector picks the endpoint for one request. Implementations are safe for
// concurrent use.
type Selector interface {
	Select(r *http.Request) (*endpoint, bool)
}

// endpoint is one address of an upstream.
type endpoint struct {
	addr string // host:port
	// label is addr as a metric label value: endpoints come from the routes
	// file, so the set is bounded.
	label string
}

// roundRobin cycles through the endpoints with one atomic counter.
type roundRobin struct {
	endpoints []*endpoint
	next      atomic.Uint64
}

var _ Selector = (*roundRobin)(nil)

func (rr *roundRobin) Select(*http.Request) (*endpoint, bool) {
	n := len(rr.endpoints)
	if n == 0 {
		return nil, false
	}
	i := rr.next.Add(1) - 1
	return rr.endpoints[i%uint64(n)], true
}

// upstream is the runtime form of a routes.Upstream.
type upstream struct {
	name     string
	cfg      routes.Upstream
	scheme   string
	selector Selector
	pool     *transportPool
}

// transportPool is an upstream's connection pool. It is shared between the
// configurations of successive reloads while the upstream's connection
// settings stay the same, so a reload keeps the warm keep-alive connections.
type transportPool struct {
	key       string
	transport http.RoundTripper
	closeIdle func()
	refs      atomic.Int64
}

// transportKey identifies the connection settings of an upstream: two
// upstreams (or two versions of one) with the same key can share a pool.
func transportKey(name string, u routes.Upstream) string {
	return fmt.Sprintf("%s|%s|%s|%s|%d|%s", name, u.Scheme, u.MeshIdentity, u.ConnectTimeout.D(), u.MaxIdlePerHost, u.Timeout.D())
}

// dialTLSFunc makes the TLS client config for an upstream's connections; it
// is how the mesh hands the edge's identity to the pool (nil: plain HTTP or
// the system roots for scheme https).
type tlsConfigFunc func(u routes.Upstream) (*tls.Config, error)

func newTransportPool(name string, u routes.Upstream, tlsFor tlsConfigFunc) (*transportPool, error) {
	dialer := &net.Dialer{Timeout: u.ConnectTimeout.D(), KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:                 nil, // an edge never goes through an environment proxy
		DialContext:           dialer.DialContext,
		MaxIdleConns:          0, // bounded per host below
		MaxIdleConnsPerHost:   u.MaxIdlePerHost,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: u.Timeout.D(),
		ExpectContinueTimeout: time.Second,
		// The client's Accept-Encoding is passed through as is; the transport
		// must not add gzip and decompress behind the client's back.
		DisableCompression: true,
		ForceAttemptHTTP2:  false,
	}
	if u.Scheme == "https" || u.MeshIdentity != "" {
		if tlsFor == nil {
			return nil, fmt.Errorf("upstream %q: TLS to the upstream is configured but no TLS source is available", name)
		}
		cfg, err := tlsFor(u)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: %w", name, err)
		}
		t.TLSClientConfig = cfg
		t.TLSHandshakeTimeout = u.ConnectTimeout.D()
		// HTTP/2 multiplexes requests over few connections to a TLS upstream.
		t.ForceAttemptHTTP2 = true
	}
	return &transportPool{transport: t, closeIdle: t.CloseIdleConnections}, nil
}

// upstreamError classifies a proxying failure into the status a client sees.
func upstreamStatus(err error) (int, string) {
	var nerr net.Error
	switch {
	case errors.Is(err, errNoEndpoint):
		return http.StatusServiceUnavailable, "no healthy upstream endpoint"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return http.StatusGatewayTimeout, "upstream timed out"
	case strings.Contains(err.Error(), "timeout awaiting response headers"):
		return http.StatusGatewayTimeout, "upstream timed out"
	default:
		return http.StatusBadGateway, "upstream unavailable or sent an invalid response"
	}
}

var errNoEndpoint = errors.New("no endpoint available")
