package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// A refused routes file is counted as refused and changes no other series
// on /metrics: not the certificate expiry series, not the TLS reload
// counters, not the rate limits' or the authenticators' series, whatever
// sections it changes.
func TestRefusedReloadLeavesMetrics(t *testing.T) {
	up := echoUpstream(t, "up")
	dir := t.TempDir()
	certA, keyA, _ := selfSigned(t, t.TempDir(), "api.example.com")
	certB, keyB, _ := selfSigned(t, t.TempDir(), "other.example.com")
	sum := sha256.Sum256([]byte("k1"))
	keys := filepath.Join(dir, "keys.txt")
	if err := os.WriteFile(keys, []byte("p1:"+hex.EncodeToString(sum[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := func(cert, key, limit, extra string) string {
		return "version: 1\nlisten: {http: \"127.0.0.1:0\", https: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: off}\n" +
			fmt.Sprintf("tls:\n  certificates: [{cert_file: %q, key_file: %q}]\n", cert, key) +
			fmt.Sprintf("authenticators:\n  partners: {api_key: {header: X-API-Key, keys_file: %q}}\n", keys) +
			fmt.Sprintf("rate_limits:\n  %s: {key: client_ip, limit: 5, per: 1m}\n", limit) +
			"plugins:\n  h: {use: headers, config: {response: {set: {X-A: a}}}}\n" +
			fmt.Sprintf("upstreams:\n  up: {endpoints: [%q]}\n", hostPort(up)) +
			"routes:\n  - {name: r, match: {path_prefix: /}, upstream: up, auth: partners, rate_limit: " + limit + ", plugins: [h]}\n" + extra
	}
	// Reloads are the test's: the file watcher would count each write again.
	te := startEdge(t, file(certA, keyA, "lim", ""), func(o *EdgeOptions) { o.ReloadDebounce = time.Hour })
	metrics := func() []string {
		t.Helper()
		_, body := get(t, te.admin+"/metrics")
		var out []string
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(l, "causeway_") && !strings.HasPrefix(l, "causeway_config_reloads_total") {
				out = append(out, l)
			}
		}
		slices.Sort(out)
		return out
	}
	before := metrics()
	for i, extra := range []string{
		"  - {name: bad, match: {path_prefix: /bad}, upstream: up, plugins: [nope]}\n",
		"upstreams2: {}\n",
	} {
		writeFile(t, te.path, file(certB, keyB, "lim2", extra))
		if err := te.Reload(context.Background()); err == nil {
			t.Fatalf("refusal %d: accepted", i)
		}
		after := metrics()
		if !slices.Equal(before, after) {
			t.Errorf("refusal %d changed /metrics:\nbefore:\n%s\nafter:\n%s", i, strings.Join(before, "\n"), strings.Join(after, "\n"))
		}
	}
	_, body := get(t, te.admin+"/metrics")
	if !strings.Contains(string(body), `causeway_config_reloads_total{result="failure"} 2`) {
		t.Errorf("the refusals are not counted:\n%s", body)
	}
}
