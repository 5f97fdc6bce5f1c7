package test

import (
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tls.acme.handshake_wait reaches the edge: against an ACME CA that accepts
// requests and never answers, a handshake for an ACME host is refused by the
// edge after the configured wait, logged with that wait, instead of hanging
// for the default 30 s (past the client's own 10 s deadline).
func TestACMEHandshakeWaitSetting(t *testing.T) {
	tests := []struct {
		name    string
		setting string // the handshake_wait entry
		wantLog string
	}{
		{"configured", "handshake_wait: 300ms, ", "no certificate yet after 300ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newRecordingUpstream(t)
			dir := t.TempDir()
			release := make(chan struct{})
			ca := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select { // a CA that takes requests and never answers
				case <-r.Context().Done():
				case <-release:
				}
			}))
			t.Cleanup(ca.Close)
			t.Cleanup(func() { close(release) }) // runs first: the handlers return
			roots := filepath.Join(dir, "ca.pem")
			if err := os.WriteFile(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate().Raw}), 0o600); err != nil {
				t.Fatal(err)
			}
			e, logs := startLoggingEdge(t, fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
tls:
  acme: {%shosts: [acme.example.com], cache_dir: %q, directory_url: %q, ca_roots_file: %q}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, tt.setting, filepath.Join(dir, "acme"), ca.URL+"/directory", roots, up.addr()))

			_, err := handshake(e.Addr("https"), "acme.example.com", nil, 10*time.Second)
			var ne net.Error
			if err == nil || (errors.As(err, &ne) && ne.Timeout()) || !strings.Contains(err.Error(), "remote error") {
				t.Fatalf("handshake: %v, want the edge's refusal before the client's 10s deadline", err)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Fatalf("log does not say %q:\n%s", tt.wantLog, logs.String())
			}
		})
	}
}
