package transport

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
)

// An https upstream's ordinary requests go by what the upstream
// negotiates: HTTP/2 through http.Transport when it offers h2, HTTP/1.1
// through H1 otherwise, the connection that found that out carrying the
// first request (one connection for all requests in both cases).
func TestTLSUpgradesSpeaksWhatTheUpstreamNegotiates(t *testing.T) {
	m := newMeshTLS(t)
	tests := []struct {
		name   string
		offers []string
		proto  int
	}{
		{"offers h2", []string{"h2", "http/1.1"}, 2},
		{"HTTP/1.1 only", []string{"http/1.1"}, 1},
		{"no ALPN", nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			cfg := m.server.Clone()
			cfg.NextProtos = tt.offers
			var mu sync.Mutex
			protos, peers := map[int]int{}, map[string]bool{}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				protos[r.ProtoMajor]++
				peers[r.RemoteAddr] = true
				mu.Unlock()
				_, _ = io.WriteString(w, r.URL.Path)
			})}
			var wg sync.WaitGroup
			wg.Go(func() { _ = srv.Serve(tls.NewListener(ln, cfg)) })
			t.Cleanup(func() { srv.Close(); wg.Wait() })
			p := m.httpsPool(t, sidecarID)
			const n = 20
			for i := range n {
				req, _ := http.NewRequest(http.MethodGet, "https://"+ln.Addr().String()+"/x", nil)
				resp, err := p.RoundTrip(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "/x" || resp.ProtoMajor != tt.proto {
					t.Fatalf("request %d: HTTP/%d %q, want HTTP/%d %q", i, resp.ProtoMajor, b, tt.proto, "/x")
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if protos[tt.proto] != n || len(peers) != 1 {
				t.Fatalf("the upstream got %v (by HTTP major version) on %d connections, want %d of HTTP/%d on 1", protos, len(peers), n, tt.proto)
			}
		})
	}
}
