package test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// htpasswdB is a line of the real `htpasswd -B` (cost 4 keeps the test fast).
func htpasswdB(t *testing.T, user, password string) string {
	t.Helper()
	bin, err := exec.LookPath("htpasswd")
	if err != nil {
		t.Fatal("htpasswd is not installed (Debian apache2-utils; make deps installs it)")
	}
	out, err := exec.Command(bin, "-nbB", "-C", "4", user, password).Output()
	if err != nil {
		t.Fatalf("htpasswd: %v", err)
	}
	return strings.TrimSpace(string(out)) + "\n"
}

func basicAuthorization(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// Basic auth as the edge serves it: the upstream never sees the
// credentials; an htpasswd file edited on disk takes effect without a
// SIGHUP and a broken one keeps the users in use; a brute force from one
// address gets 429 (the right password included) and reaches nothing,
// across a reload, while another client goes on.
func TestBasicAuthAtTheEdge(t *testing.T) {
	up := newHeaderUpstream(t)
	htpasswd := filepath.Join(t.TempDir(), "staff.htpasswd")
	writeAtomically(t, htpasswd, htpasswdB(t, "alice", "wonderland"))
	cfg := header + fmt.Sprintf(`trusted_proxies: ["127.0.0.1/32"]
authenticators:
  staff:
    basic: {htpasswd_file: %q, forward_user: X-User, failure_limit: {limit: 4, per: 1h}}
upstreams:
  up: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, auth: staff, upstream: up}
`, htpasswd, up.addr())
	e, logs := startLoggingEdge(t, cfg)
	url := "http://" + e.Addr("http") + "/x"
	var ids atomic.Int64
	try := func(client, authz string) (int, string, http.Header) {
		id := fmt.Sprint(ids.Add(1))
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("X-Test-Id", id)
		req.Header.Set("X-Forwarded-For", client)
		req.Header.Set("X-User", "admin")
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, id, resp.Header
	}

	code, id, _ := try("192.0.2.10", basicAuthorization("alice", "wonderland"))
	seen, ok := up.got(id)
	if code != http.StatusOK || !ok {
		t.Fatalf("alice: %d", code)
	}
	if seen.Header.Get("Authorization") != "" || seen.Header.Get("X-User") != "alice" {
		t.Fatalf("upstream saw Authorization %q, X-User %q", seen.Header.Get("Authorization"), seen.Header.Get("X-User"))
	}
	if code, _, hdr := try("192.0.2.10", ""); code != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") != `Basic realm="staff", charset="UTF-8"` {
		t.Fatalf("anonymous: %d %q", code, hdr.Get("WWW-Authenticate"))
	}

	t.Run("file edited", func(t *testing.T) {
		writeAtomically(t, htpasswd, htpasswdB(t, "alice", "wonderland")+htpasswdB(t, "bob", "builder"))
		if !waitFor(5*time.Second, func() bool { c, _, _ := try("192.0.2.11", basicAuthorization("bob", "builder")); return c == 200 }) {
			t.Fatal("bob was never let in")
		}
	})
	t.Run("broken file keeps the users", func(t *testing.T) {
		writeAtomically(t, htpasswd, htpasswdB(t, "alice", "wonderland")+"mallory:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
		if !waitFor(5*time.Second, func() bool { return strings.Contains(logs.String(), htpasswd+":2") }) {
			t.Fatalf("the refusal is not logged with file:line: %s", logs.String())
		}
		if strings.Contains(logs.String(), "W6ph5Mm5Pz8") {
			t.Fatal("the hash is logged")
		}
		if c, _, _ := try("192.0.2.11", basicAuthorization("bob", "builder")); c != 200 {
			t.Fatalf("bob after a broken file: %d", c)
		}
	})

	t.Run("brute force", func(t *testing.T) {
		var wg sync.WaitGroup
		var counts [600]atomic.Int64
		for g := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 20 {
					c, id, _ := try("203.0.113.66", basicAuthorization("alice", fmt.Sprintf("guess%d-%d", g, i)))
					counts[c].Add(1)
					if _, ok := up.got(id); ok {
						t.Errorf("a guess reached the upstream")
					}
				}
			}()
		}
		wg.Wait()
		if counts[401].Load() != 4 || counts[429].Load() != 116 {
			t.Fatalf("401: %d, 429: %d", counts[401].Load(), counts[429].Load())
		}
		code, id, hdr := try("203.0.113.66", basicAuthorization("alice", "wonderland"))
		if _, reached := up.got(id); code != 429 || reached || hdr.Get("Retry-After") == "" {
			t.Fatalf("right password while blocked: %d, reached %v, Retry-After %q", code, reached, hdr.Get("Retry-After"))
		}
		// A reload does not hand the guesser a new allowance.
		writeAtomically(t, htpasswd, htpasswdB(t, "alice", "wonderland")+htpasswdB(t, "carol", "c"))
		if !waitFor(5*time.Second, func() bool { c, _, _ := try("192.0.2.12", basicAuthorization("carol", "c")); return c == 200 }) {
			t.Fatal("the fixed file was not loaded")
		}
		if code, _, _ := try("203.0.113.66", basicAuthorization("alice", "guess-after-reload")); code != 429 {
			t.Fatalf("after a reload: %d", code)
		}
		if code, _, _ := try("192.0.2.13", basicAuthorization("alice", "wonderland")); code != 200 {
			t.Fatalf("another client: %d", code)
		}
	})
}

func writeAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
