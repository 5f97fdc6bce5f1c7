package standard

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/routes"
)

const benchFile = `version: 1
upstreams:
  app: { endpoints: ["127.0.0.1:9"] }
routes:
  - { name: r, match: { path_prefix: / }, upstream: app }
plugins:
  rid:     { use: request_id, config: { header: X-Correlation-Id, generate: uuid } }
  cors:    { use: cors, config: { allow_origins: ["https://app.example.com"], expose_headers: [X-Total] } }
  hdrs:    { use: headers, config: { request: { set: { X-Env: prod } }, response: { set: { X-Frame-Options: DENY }, remove: [Server] } } }
  ipf:     { use: ip_filter, config: { allow: [10.0.0.0/8, 192.0.2.0/24], deny: [10.6.6.0/24] } }
  limit:   { use: body_limit, config: { max_bytes: 1048576 } }
  zip:     { use: compress }
  cache:   { use: cache }
`

// benchChain measures one request through the named instances in front of
// a handler that writes a small JSON body, in process (no network), so the
// number is the plugins' own cost.
func benchChain(b *testing.B, names []string, body string) {
	f, err := routes.Parse("bench.yaml", []byte(benchFile))
	if err != nil {
		b.Fatal(err)
	}
	s, err := plugins.NewInstances(context.Background(), f)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	chain, err := s.Chain(names)
	if err != nil {
		b.Fatal(err)
	}
	h := chain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=3600")
		io.WriteString(w, body)
	}))
	r := httptest.NewRequest(http.MethodGet, "http://api.example.com/orders/7", nil)
	r.RemoteAddr = "10.1.2.3:4567"
	r.Header.Set("Origin", "https://app.example.com")
	r.Header.Set("Accept-Encoding", "gzip, zstd")
	r.Header.Set(plugins.RequestIDHeader, "edge-id")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatalf("status %d", w.Code)
		}
	}
}

const smallJSON = `{"id":7,"status":"shipped"}`

func BenchmarkChain(b *testing.B) {
	b.Run("empty", func(b *testing.B) { benchChain(b, nil, smallJSON) })
	b.Run("five=request_id,cors,headers,ip_filter,body_limit", func(b *testing.B) {
		benchChain(b, []string{"rid", "cors", "hdrs", "ipf", "limit"}, smallJSON)
	})
	b.Run("cache-hit", func(b *testing.B) { benchChain(b, []string{"cache"}, smallJSON) })
}
