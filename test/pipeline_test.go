package test

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// stages selects the parts of the edge pipeline a request goes through.
type stages struct {
	tls, jwt, redis, mesh bool
	// lease counts the Redis limit with mode: lease (with redis).
	lease bool
	// service answers the requests (default: 64 bytes of "x").
	service http.Handler
}

// pipeline is an edge (and, with mesh, a sidecar) in front of a service
// answering 64 bytes, with a client ready to call it.
type pipeline struct {
	url    string
	token  string
	client *http.Client
}

func newPipeline(tb testing.TB, s stages, conns int) *pipeline {
	tb.Helper()
	dir := tb.TempDir()
	handler := s.service
	if handler == nil {
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, strings.Repeat("x", 64))
		})
	}
	svc := httptest.NewServer(handler)
	tb.Cleanup(svc.Close)
	upstream := fmt.Sprintf("{endpoints: [%q]}", strings.TrimPrefix(svc.URL, "http://"))

	var cfg strings.Builder
	cfg.WriteString("version: 1\naccess_log: {output: \"off\"}\n")
	scheme := "http"
	var pool *tls.Config
	if s.tls {
		certFile, keyFile, roots := serverCert(tb, dir, "api.example.com")
		fmt.Fprintf(&cfg, "listen: {https: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\ntls:\n  min_version: \"1.3\"\n  certificates: [{cert_file: %q, key_file: %q}]\n", certFile, keyFile)
		scheme, pool = "https", &tls.Config{RootCAs: roots, ServerName: "api.example.com"}
	} else {
		cfg.WriteString("listen: {http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\n")
	}
	route := "  - {name: orders, match: {path_prefix: /orders}, upstream: orders"
	p := &pipeline{}
	if s.jwt {
		signer, pubFile := rsaKey(tb, dir)
		fmt.Fprintf(&cfg, "authenticators:\n  users: {jwt: {issuer: https://id.test/, audiences: [api], public_key_files: [%q], algorithms: [RS256]}}\n", pubFile)
		route += ", auth: users"
		tok, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
			"iss": "https://id.test/", "aud": "api", "sub": "bench", "exp": time.Now().Add(time.Hour).Unix(),
		}).SignedString(signer)
		if err != nil {
			tb.Fatal(err)
		}
		p.token = tok
	}
	if s.redis {
		rdb := testredis.Start(tb)
		// on_error: deny makes any Redis failure visible as a 503. The
		// redis-server shares two cores with the edge, the sidecar, the
		// clients and (in make test) other packages' tests under -race:
		// the default 100 ms per-call timeout is a production budget, not
		// one a starved test machine always meets, so the soak allows 1 s.
		mode := "exact"
		if s.lease {
			mode = "lease"
		}
		fmt.Fprintf(&cfg, "redis: {url: %q, on_error: deny, timeout: 1s}\nrate_limits:\n  per-client: {key: client_ip, limit: 100000000, per: 1s, mode: %s}\n", rdb.URL(), mode)
		route += ", rate_limit: per-client"
	}
	if s.mesh {
		ca := meshtest.NewCA(tb, "example.org")
		edgeFiles := ca.IssueFiles(tb.TempDir(), "spiffe://example.org/ns/edge/sa/gateway")
		svcFiles := ca.IssueFiles(tb.TempDir(), "spiffe://example.org/ns/shop/sa/orders")
		scConfig := fmt.Sprintf(`version: 1
identity: {cert_file: %q, key_file: %q, bundle_file: %q}
access_log: {output: "off"}
admin: "127.0.0.1:0"
inbound: {listen: "127.0.0.1:0", forward_to: %q, allow: ["spiffe://example.org/ns/edge/sa/gateway"]}
`, svcFiles.Cert, svcFiles.Key, svcFiles.Bundle, strings.TrimPrefix(svc.URL, "http://"))
		sc := startSidecar(tb, scConfig, slog.New(slog.DiscardHandler))
		fmt.Fprintf(&cfg, "mesh: {trust_domain: example.org, cert_file: %q, key_file: %q, bundle_file: %q}\n", edgeFiles.Cert, edgeFiles.Key, edgeFiles.Bundle)
		upstream = fmt.Sprintf("{endpoints: [%q], mesh_identity: \"spiffe://example.org/ns/shop/sa/orders\"}", sc.Addr("inbound"))
	}
	fmt.Fprintf(&cfg, "upstreams:\n  orders: %s\nroutes:\n%s}\n", upstream, route)
	e := startEdge(tb, cfg.String())
	addr := e.Addr("http")
	if s.tls {
		addr = e.Addr("https")
	}
	p.url = scheme + "://" + addr + "/orders/1"
	p.client = &http.Client{Transport: &http.Transport{TLSClientConfig: pool, MaxIdleConnsPerHost: conns, ExpectContinueTimeout: 5 * time.Second}}
	tb.Cleanup(p.client.CloseIdleConnections)
	return p
}

func (p *pipeline) do() error {
	req, _ := http.NewRequest(http.MethodGet, p.url, nil)
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// BenchmarkPipeline adds the edge's stages one at a time — plain proxy, TLS,
// RS256 JWT, a Redis rate limit that allows everything, mTLS to a sidecar —
// and reports requests/s and p50/p99 for each, so the cost of each stage is
// the difference between neighbours in one run:
//
//	go test -run '^$' -bench Pipeline -benchtime 5s ./test
func BenchmarkPipeline(b *testing.B) {
	for _, c := range []struct {
		name string
		s    stages
	}{
		{"1-plain", stages{}},
		{"2-tls", stages{tls: true}},
		{"3-tls+jwt", stages{tls: true, jwt: true}},
		{"4-tls+jwt+redis", stages{tls: true, jwt: true, redis: true}},
		{"4b-tls+jwt+redis-lease", stages{tls: true, jwt: true, redis: true, lease: true}},
		{"5-tls+jwt+redis+mesh", stages{tls: true, jwt: true, redis: true, mesh: true}},
	} {
		b.Run(c.name, func(b *testing.B) {
			p := newPipeline(b, c.s, 64)
			testutil.BenchParallelLatency(b, 8, p.do)
		})
	}
}
