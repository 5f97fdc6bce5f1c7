package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/gateway"
)

func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("%v: exit %d: %s", args, code, stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

// Tokens from dev jwt and keys from dev apikey open real edge routes: by
// the public key file, by the JWKS it wrote (served over HTTP), for both
// algorithms; a claim set with -claim meets require_claims.
func TestDevHelpersOpenRealRoutes(t *testing.T) {
	dir := t.TempDir()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(up.Close)
	for _, alg := range []string{"RS256", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			kd := filepath.Join(dir, alg)
			tok := runOK(t, "dev", "jwt", "-dir", kd, "-alg", alg, "-iss", "https://id.local/", "-aud", "api", "-sub", "alice", "-claim", "scope=orders:read orders:write")
			// The second run reuses the key.
			tok2 := runOK(t, "dev", "jwt", "-dir", kd, "-sub", "bob")
			jwks := httptest.NewServer(http.FileServer(http.Dir(kd)))
			t.Cleanup(jwks.Close)
			keys := filepath.Join(dir, alg+"-keys.txt")
			key := runOK(t, "dev", "apikey", "-keys", keys, "-name", "acme")
			if code := run([]string{"dev", "apikey", "-keys", keys, "-name", "acme"}, io.Discard, io.Discard); code != 1 {
				t.Fatalf("a second key of the same name: exit %d, want 1", code)
			}
			cfg := filepath.Join(dir, alg+".yaml")
			writeTestFile(t, cfg, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
authenticators:
  byfile: {jwt: {issuer: "https://id.local/", audiences: [api], algorithms: [%[1]s], public_key_files: [%[2]q]}}
  byjwks: {jwt: {issuer: "https://id.local/", audiences: [api], algorithms: [%[1]s], jwks_url: "%[3]s/jwks.json"}}
  partners: {api_key: {header: X-API-Key, keys_file: %[4]q}}
upstreams:
  u: {endpoints: [%[5]q]}
routes:
  - {name: file, match: {path_prefix: /file}, auth: byfile, require_claims: {scope: "orders:write"}, upstream: u}
  - {name: jwks, match: {path_prefix: /jwks}, auth: byjwks, upstream: u}
  - {name: key, match: {path_prefix: /key}, auth: partners, upstream: u}
`, alg, filepath.Join(kd, "dev-jwt-pub.pem"), jwks.URL, keys, strings.TrimPrefix(up.URL, "http://")))
			e, err := gateway.NewEdge(context.Background(), gateway.EdgeOptions{ConfigPath: cfg, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Listen(); err != nil {
				e.Close()
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- e.Serve(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			base := "http://" + e.Addr("http")
			for _, tt := range []struct {
				path, header, value string
				want                int
			}{
				{"/file", "Authorization", "Bearer " + tok, 200},
				{"/file", "Authorization", "Bearer " + tok2, 403}, // bob has no scope claim
				{"/jwks", "Authorization", "Bearer " + tok2, 200},
				{"/key", "X-API-Key", key, 200},
				{"/key", "X-API-Key", key + "x", 401},
				{"/file", "Authorization", "Bearer " + tok + "x", 401},
			} {
				var code int
				deadline := time.Now().Add(5 * time.Second) // the JWKS is fetched at start
				for {
					req, _ := http.NewRequest(http.MethodGet, base+tt.path, nil)
					req.Header.Set(tt.header, tt.value)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					code = resp.StatusCode
					if code == tt.want || time.Now().After(deadline) {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				if code != tt.want {
					t.Fatalf("%s with %s: %d, want %d", tt.path, tt.header, code, tt.want)
				}
			}
			if st, err := os.Stat(filepath.Join(kd, "dev-jwt-key.pem")); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("private key mode: %v %v", st.Mode(), err)
			}
		})
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
