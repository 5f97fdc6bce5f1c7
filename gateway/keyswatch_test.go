package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// keysText is a keys file for name:key pairs.
func keysText(pairs ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		sum := sha256.Sum256([]byte(pairs[i+1]))
		fmt.Fprintf(&b, "%s:%s\n", pairs[i], hex.EncodeToString(sum[:]))
	}
	return b.String()
}

// The API-key file is watched like the routes file: keys added or removed
// take effect without a SIGHUP, whether the file is replaced by rename (as
// editors and Secret volumes do) or rewritten in place; a broken file is
// refused, logged and counted, and the keys in use stay.
func TestKeysFileWatched(t *testing.T) {
	up := echoUpstream(t, "up")
	// In a directory of its own, as a mounted Secret is.
	keysPath := filepath.Join(t.TempDir(), "partner-keys.txt")
	writeFile(t, keysPath, keysText("alpha", "key-alpha-0123456789"))
	te := startEdge(t, listenHeader+fmt.Sprintf(`authenticators:
  partners: {api_key: {keys_file: %q}}
upstreams:
  up: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, auth: partners, upstream: up}
`, keysPath, hostPort(up)))
	status := func(t *testing.T, key string) int {
		resp, _ := get(t, te.url+"/x", "X-API-Key", key)
		return resp.StatusCode
	}
	want := func(t *testing.T, key string, code int) {
		t.Helper()
		waitFor(t, func() bool { return status(t, key) == code })
	}
	want(t, "key-alpha-0123456789", 200)
	if s := status(t, "key-beta-0123456789"); s != 401 {
		t.Fatalf("unknown key: %d", s)
	}

	t.Run("rename into place", func(t *testing.T) {
		writeFile(t, keysPath, keysText("alpha", "key-alpha-0123456789", "beta", "key-beta-0123456789"))
		want(t, "key-beta-0123456789", 200)
	})
	t.Run("rewritten in place", func(t *testing.T) {
		if err := os.WriteFile(keysPath, []byte(keysText("alpha", "key-alpha-0123456789", "beta", "key-beta-0123456789", "gamma", "key-gamma-0123456789")), 0o600); err != nil {
			t.Fatal(err)
		}
		want(t, "key-gamma-0123456789", 200)
	})
	t.Run("broken file keeps the keys in use", func(t *testing.T) {
		writeFile(t, keysPath, keysText("alpha", "key-alpha-0123456789")+"delta:not-a-hash\n")
		waitFor(t, func() bool { return !te.LastReload().OK })
		for _, k := range []string{"key-alpha-0123456789", "key-beta-0123456789", "key-gamma-0123456789"} {
			if s := status(t, k); s != 200 {
				t.Fatalf("%s after a broken keys file: %d", k, s)
			}
		}
		if e := te.LastReload().Error; !strings.Contains(e, keysPath+":2") {
			t.Fatalf("the reload error does not name the keys file's line: %q", e)
		}
		if !strings.Contains(te.logs.String(), keysPath+":2") {
			t.Fatalf("not logged: %s", te.logs.String())
		}
		_, body := get(t, te.admin+"/metrics")
		if !strings.Contains(string(body), `causeway_config_reloads_total{result="failure"} 1`) {
			t.Fatal("the refused keys file is not counted")
		}
	})
	t.Run("a fixed file removes a key", func(t *testing.T) {
		writeFile(t, keysPath, keysText("alpha", "key-alpha-0123456789"))
		want(t, "key-beta-0123456789", 401)
		if s := status(t, "key-alpha-0123456789"); s != 200 {
			t.Fatalf("alpha: %d", s)
		}
		if !te.LastReload().OK {
			t.Fatalf("last reload: %+v", te.LastReload())
		}
	})
}

// A Kubernetes Secret volume: the keys file is a symlink through "..data",
// and an update swaps "..data" to a new directory in one rename.
func TestKeysFileWatchedInSecretVolume(t *testing.T) {
	up := echoUpstream(t, "up")
	vol := t.TempDir()
	version := 0
	publish := func(content string) {
		t.Helper()
		version++
		dir := filepath.Join(vol, fmt.Sprintf("..2026_v%d", version))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "keys.txt"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(vol, "..data_tmp")
		if err := os.Symlink(filepath.Base(dir), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(vol, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	publish(keysText("alpha", "key-alpha-0123456789"))
	if err := os.Symlink(filepath.Join("..data", "keys.txt"), filepath.Join(vol, "keys.txt")); err != nil {
		t.Fatal(err)
	}
	te := startEdge(t, listenHeader+fmt.Sprintf(`authenticators:
  partners: {api_key: {keys_file: %q}}
upstreams:
  up: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, auth: partners, upstream: up}
`, filepath.Join(vol, "keys.txt"), hostPort(up)))
	status := func(key string) int {
		resp, _ := get(t, te.url+"/x", "X-API-Key", key)
		return resp.StatusCode
	}
	if s := status("key-beta-0123456789"); s != 401 {
		t.Fatalf("beta before the update: %d", s)
	}
	publish(keysText("alpha", "key-alpha-0123456789", "beta", "key-beta-0123456789"))
	waitFor(t, func() bool { return status("key-beta-0123456789") == 200 })
	if s := status("key-alpha-0123456789"); s != 200 {
		t.Fatalf("alpha after the update: %d", s)
	}
}
