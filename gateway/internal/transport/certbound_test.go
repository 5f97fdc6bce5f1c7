package transport

import (
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// certBoundPool is the edge's HTTP/2 pool toward a sidecar that must be
// want (Mesh's, for gRPC), built as proxy.NewTransportPool builds it, with
// the clock now.
func (m *meshTLS) certBoundPool(t *testing.T, want string, now func() time.Time) *CertBound {
	t.Helper()
	id, err := mesh.ParseID(want)
	if err != nil {
		t.Fatal(err)
	}
	tr := m.transport(id)
	tr.ExpectContinueTimeout = 0
	b := NewCertBound(tr, now)
	t.Cleanup(b.CloseIdleConnections)
	return b
}

// An HTTP/2 connection is given no new stream once a certificate its
// handshake exchanged is about to expire: the sidecar's, or the edge's own
// (the sidecar refuses, with a 403 that costs a gRPC call, a caller whose
// certificate expired on an open connection). Both are renewed before the
// pool's clock moves past the old ones, as a rotation does; the request
// after that goes on a new connection, which presents the current
// certificate, and the one after it reuses that. A stream in flight on the
// old connection when it is retired finishes there. The control case stays
// within both certificates and keeps one connection. Before the fix the
// first connection carried every request (1 connection in all cases).
func TestCertBoundRetiresHTTP2ConnectionsPastTheirCertificates(t *testing.T) {
	tests := []struct {
		desc                 string
		serverTTL, clientTTL time.Duration
		later                time.Duration
		connections          int64
	}{
		{desc: "both valid", serverTTL: time.Hour, clientTTL: 2 * time.Hour, later: 30 * time.Minute, connections: 1},
		{desc: "the sidecar's certificate expires", serverTTL: time.Hour, clientTTL: 24 * time.Hour, later: time.Hour - time.Second, connections: 2},
		{desc: "the edge's own certificate expires", serverTTL: 24 * time.Hour, clientTTL: time.Hour, later: time.Hour - time.Second, connections: 2},
		{desc: "the edge's own certificate expired", serverTTL: 24 * time.Hour, clientTTL: time.Hour, later: 2 * time.Hour, connections: 2},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			noLeaks(t)
			ca := meshtest.NewCA(t, "example.org")
			srv, sf := ca.Source(sidecarID, meshtest.TTL(tc.serverTTL))
			cli, cf := ca.Source(edgeID, meshtest.TTL(tc.clientTTL))
			m := &meshTLS{ca: ca, server: mesh.ServerConfig(srv), client: cli, files: cf}
			var conns sync.Map
			var n atomic.Int64
			started, release := make(chan struct{}, 1), make(chan struct{})
			addr, _ := m.serve(t, 0, func(w http.ResponseWriter, r *http.Request) {
				if r.ProtoMajor != 2 {
					http.Error(w, "not HTTP/2: "+r.Proto, http.StatusHTTPVersionNotSupported)
					return
				}
				if _, loaded := conns.LoadOrStore(r.RemoteAddr, true); !loaded {
					n.Add(1)
				}
				if r.URL.Path == "/slow" {
					started <- struct{}{}
					<-release
				}
				_, _ = io.WriteString(w, "ok")
			})
			clk := testutil.NewFakeClockAt(time.Now())
			b := m.certBoundPool(t, sidecarID, clk.Now)
			get := func(path string) error {
				req, _ := http.NewRequest(http.MethodGet, "https://"+addr+path, nil)
				resp, err := b.RoundTrip(req)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err == nil && string(body) != "ok" {
					t.Errorf("%s: %d %q", path, resp.StatusCode, body)
				}
				return err
			}
			if err := get("/"); err != nil {
				t.Fatal(err)
			}
			// A stream in flight across the retirement.
			slow := make(chan error, 1)
			go func() { slow <- get("/slow") }()
			select {
			case <-started:
			case err := <-slow:
				t.Fatalf("slow request: %v", err)
			}
			renew(t, ca, renewed{srv, sf, sidecarID}, renewed{cli, cf, edgeID})
			clk.Advance(tc.later)
			for i := range 2 {
				if err := get("/"); err != nil {
					t.Fatalf("request %d after the renewal: %v", i, err)
				}
			}
			close(release)
			if err := <-slow; err != nil {
				t.Fatalf("the stream in flight at the retirement: %v", err)
			}
			if got := n.Load(); got != tc.connections {
				t.Fatalf("4 requests used %d connections, want %d", got, tc.connections)
			}
			// The retired generation's connection, idle now that its last
			// stream ended, is closed and the generation forgotten.
			b.CloseIdleConnections()
			b.mu.Lock()
			retired := len(b.retired)
			b.mu.Unlock()
			if retired != 0 {
				t.Fatalf("%d retired generations still held after their streams ended", retired)
			}
		})
	}
}
