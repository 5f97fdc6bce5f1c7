//go:build unix

package gateway

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/causewayhq/causeway/internal/testutil"
)

// BenchmarkProxyStages is BenchmarkProxyEngine through a whole edge
// (listener, the own HTTP/1.1 engine, every stage), on one keep-alive
// client connection: a route without stages, and one with the usual ones
// (an RS256 JWT with the verified-token cache, a rate limit counted in
// memory, the headers plugin on request and response), so that what the
// stages cost is the difference of the two in one run. Besides ns/op it
// reports the process's CPU time per request (cpu-ns/op: edge, upstream
// and client together), which a shared machine disturbs less.
func BenchmarkProxyStages(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 64))
	}))
	defer up.Close()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	pubFile := filepath.Join(b.TempDir(), "pub.pem")
	writeFile(b, pubFile, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	tok, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": "https://id.test/", "aud": "api", "sub": "bench", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(key)
	if err != nil {
		b.Fatal(err)
	}
	e := startEdge(b, listenHeader+fmt.Sprintf(`authenticators:
  users: {jwt: {issuer: https://id.test/, audiences: [api], public_key_files: [%q], algorithms: [RS256], forward_claims: {sub: X-User-Id}}}
rate_limits:
  per-user: {key: "claim:sub", limit: 1000000000, per: 1s}
plugins:
  hdr: {use: headers, config: {request: {set: {X-Edge: bench}, remove: [X-Debug]}, response: {set: {X-Served-By: edge}}}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: plain, match: {path_prefix: /plain}, upstream: u}
  - {name: stages, match: {path_prefix: /orders}, auth: users, rate_limit: per-user, plugins: [hdr], upstream: u}
`, pubFile, hostPort(up)))
	for _, tc := range []struct{ name, req string }{
		{"plain", "GET /plain/42 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"},
		{"jwt+limit+headers", "GET /orders/42 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\nAuthorization: Bearer " + tok + "\r\n\r\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c, err := net.Dial("tcp", e.Addr("http"))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := []byte(tc.req)
			br := bufio.NewReaderSize(c, 4096)
			// One request outside the timing: the answer must be the
			// upstream's (a refusal would measure the wrong path).
			if _, err := c.Write(req); err != nil {
				b.Fatal(err)
			}
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || len(body) != 64 {
				b.Fatalf("%d %q", res.StatusCode, body)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU()
			for range b.N {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if err := testutil.ReadSizedResponse(br); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU is the user and system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
