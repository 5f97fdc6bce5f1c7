package transport

import (
	"net/http"
	"strings"
	"time"
)

// Mesh carries requests to a sidecar over mTLS: HTTP/1.1 on a pool
// of keep-alive connections for ordinary requests, HTTP/2 for gRPC, which
// needs it. With many requests in flight, Go's HTTP/2 client and server
// funnel them through one connection's read and write loops; on the hop
// between edge and sidecar that cost about a third of the hop's throughput
// against HTTP/1.1 connections used one request at a time
// (BenchmarkMeshPaths/edge-sidecar; docs/performance.md). The HTTP/1.1
// requests go through H1 over TLS (NewH1TLS), as plain upstreams' do, so
// the hop pays no read and write goroutine hand-off per request either,
// protocol upgrades included; CONNECT goes to H1's fallback, an
// http.Transport limited to HTTP/1.1. An upstream with protocol: h2 keeps HTTP/2 for everything.
// The HTTP/2 connections are retired before their certificates expire
// (CertBound), as H1 retires its own; and both halves ask the TLS
// configuration's VerifyConnection again before a pooled connection takes
// another request (mesh.ClientConfig's remembers what it verified, so
// this costs a few comparisons): a sidecar whose root has left the bundle,
// or whose ID is no longer the one wanted, gets nothing more on a
// connection made before.
type Mesh struct {
	h1 *H1
	h2 *CertBound // ALPN h2, then http/1.1
}

// NewMesh splits t, configured for HTTP/2 over mTLS, in two; both halves
// hold certificates to the clock now (nil: time.Now).
func NewMesh(t *http.Transport, now func() time.Time) *Mesh {
	h1 := t.Clone()
	h1.ForceAttemptHTTP2 = false
	h1.TLSClientConfig = t.TLSClientConfig.Clone()
	h1.TLSClientConfig.NextProtos = []string{"http/1.1"}
	m := &Mesh{h1: NewH1TLS(h1, now), h2: NewCertBound(t, now)}
	if check := t.TLSClientConfig.VerifyConnection; check != nil {
		m.h1.recheck = check
		m.h2.RecheckPeers(check)
	}
	return m
}

func (m *Mesh) RoundTrip(req *http.Request) (*http.Response, error) {
	if isGRPC(req) {
		return m.h2.RoundTrip(req)
	}
	return m.h1.RoundTrip(req)
}

func (m *Mesh) CloseIdleConnections() {
	m.h1.CloseIdleConnections()
	m.h2.CloseIdleConnections()
}

// isGRPC: gRPC over HTTP/2 (not gRPC-Web, which is made for HTTP/1.1).
func isGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/grpc") && !strings.HasPrefix(ct, "application/grpc-web")
}
