package test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestQueryCredentialSpellingsThroughTheEdge: a whole edge, an API key read
// from the query, and a client holding one valid key of its own. A second
// key spelled so that Go's parser skips it (after a ';') or reads it as
// another name (KEY, +key, key[]) while an upstream's parser (Rack, older
// Python, PHP, ASP.NET) reads it as the key, is refused with the JSON 401
// and never reaches the upstream. Before, the edge authenticated the valid
// key, removed it, and forwarded the other: the upstream read a key the
// edge never verified.
func TestQueryCredentialSpellingsThroughTheEdge(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string
	)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.RawQuery)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(up.Close)
	sum := sha256.Sum256([]byte("good-key"))
	keys := filepath.Join(t.TempDir(), "keys.txt")
	if err := os.WriteFile(keys, []byte("acme:"+hex.EncodeToString(sum[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, header+fmt.Sprintf(`authenticators:
  partners: {api_key: {keys_file: %q, query: key}}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, auth: partners, upstream: u}
`, keys, strings.TrimPrefix(up.URL, "http://")))
	base := "http://" + e.Addr("http")
	tests := []struct {
		name, query string
		status      int
		upstream    string // the query the upstream got, on 204
	}{
		{"one key", "x=1&key=good-key", 204, "x=1"},
		{"forged key after ';'", "x=1;key=forged&key=good-key", 401, ""},
		{"forged key in another case", "key=good-key&KEY=forged", 401, ""},
		{"forged key after a blank", "key=good-key&+key=forged", 401, ""},
		{"forged key as an array", "key=good-key&key%5B%5D=forged", 401, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			for i := 0; i < 50; i++ {
				resp, err := http.Get(base + "/p?" + tt.query)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tt.status {
					mu.Lock()
					got := seen
					mu.Unlock()
					t.Fatalf("status %d, want %d: %s (the upstream got queries %q)", resp.StatusCode, tt.status, body, got)
				}
				if tt.status == 401 && (resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(string(body), `"status":401`)) {
					t.Fatalf("refusal %q %q, want the JSON error body", resp.Header.Get("Content-Type"), body)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if tt.status != 204 {
				if len(seen) != 0 {
					t.Fatalf("refused requests reached the upstream with %q", seen)
				}
				return
			}
			if len(seen) != 50 {
				t.Fatalf("upstream got %d requests, want 50", len(seen))
			}
			for _, q := range seen {
				if q != tt.upstream {
					t.Fatalf("upstream got query %q, want %q", q, tt.upstream)
				}
			}
		})
	}
}
