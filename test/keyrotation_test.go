package test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestAPIKeyRotationOnOpenConnections: a keys file rewritten while clients
// hold open connections (HTTP/1.1 keep-alive and h2c). The first request
// after the reload that drops key "old", on the very connection that
// carried it a moment before, is refused and never reaches the upstream;
// the new key passes on it.
func TestAPIKeyRotationOnOpenConnections(t *testing.T) {
	var delivered atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		delivered.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(up.Close)
	line := func(name, key string) string {
		sum := sha256.Sum256([]byte(key))
		return name + ":" + hex.EncodeToString(sum[:]) + "\n"
	}
	for proto, c := range protocols(t) {
		t.Run(proto, func(t *testing.T) {
			keys := filepath.Join(t.TempDir(), "keys.txt")
			if err := os.WriteFile(keys, []byte(line("acme", "old-key")), 0o600); err != nil {
				t.Fatal(err)
			}
			e := startEdge(t, header+fmt.Sprintf(`authenticators:
  partners: {api_key: {keys_file: %q}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, auth: partners, upstream: u}
`, keys, strings.TrimPrefix(up.URL, "http://")))
			var conns atomic.Int64
			get := func(key string) int {
				req, _ := http.NewRequest(http.MethodGet, "http://"+e.Addr("http")+"/p", nil)
				req.Header.Set("X-Api-Key", key)
				req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
					GotConn: func(i httptrace.GotConnInfo) {
						if !i.Reused {
							conns.Add(1)
						}
					},
				}))
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode
			}
			if s := get("old-key"); s != 204 {
				t.Fatalf("old key before the rotation: %d", s)
			}
			if err := os.WriteFile(keys, []byte(line("acme", "new-key")), 0o600); err != nil {
				t.Fatal(err)
			}
			// The watcher reloads in the background; until it has, the old
			// key still passes, and each such request is one delivery.
			before := delivered.Load()
			passed := int64(0)
			if !waitFor(10*time.Second, func() bool {
				if get("old-key") == 204 {
					passed++
					return false
				}
				return true
			}) {
				t.Fatal("the old key still passes 10 s after the keys file changed")
			}
			if got := delivered.Load() - before; got != passed {
				t.Fatalf("upstream got %d requests, %d were answered 204", got, passed)
			}
			for i := 0; i < 200; i++ {
				if s := get("old-key"); s != 401 {
					t.Fatalf("old key after the rotation, request %d: %d", i, s)
				}
				if s := get("new-key"); s != 204 {
					t.Fatalf("new key after the rotation, request %d: %d", i, s)
				}
			}
			if got := delivered.Load() - before - passed; got != 200 {
				t.Fatalf("upstream got %d requests after the rotation, want the 200 with the new key", got)
			}
			if n := conns.Load(); n != 1 {
				t.Fatalf("%d connections, want every request on one", n)
			}
		})
	}
}
