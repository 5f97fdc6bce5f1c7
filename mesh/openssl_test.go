package mesh_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// OpenSSL is an independent TLS and X.509 implementation: if it accepts our
// files and our server, other mesh peers (Envoy, curl, SPIRE-issued
// workloads) will too.
func needOpenSSL(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed")
	}
	return p
}

func TestOpenSSLVerifiesIssuedChains(t *testing.T) {
	openssl := needOpenSSL(t)
	dir := t.TempDir()
	root, inter := filepath.Join(dir, "ca"), filepath.Join(dir, "ca", "int")
	must(t, mesh.InitCA(root, "example.org"))
	must(t, mesh.IssueIntermediate(root, inter))
	for _, tc := range []struct {
		name, caDir string
	}{
		{"leaf from the root", root},
		{"leaf from an intermediate", inter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "orders")
			must(t, mesh.IssueLeaf(tc.caDir, mustID(t, ordersID), time.Hour, out))
			// The first certificate of the file is verified; the rest of it
			// (the chain) is offered as untrusted intermediates, as a peer would.
			cmd := exec.Command(openssl, "verify", "-CAfile", filepath.Join(root, "bundle.pem"), "-untrusted", out+".pem", out+".pem")
			b, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(b), ": OK") {
				t.Fatalf("openssl verify: %v\n%s", err, b)
			}
		})
	}
}

func TestOpenSSLClientAgainstServerConfig(t *testing.T) {
	openssl := needOpenSSL(t)
	ca := meshtest.NewCA(t, "example.org")
	server, _ := ca.Source(ordersID)
	addr := serveMesh(t, server, peerEcho(mesh.AuthorizeOnly(mustID(t, gatewayID))))
	client := ca.IssueFiles(t.TempDir(), gatewayID)
	stranger := meshtest.NewCA(t, "example.org").IssueFiles(t.TempDir(), gatewayID)
	tests := []struct {
		name    string
		args    []string
		wantOut string
		refused bool
	}{
		{"a listed client certificate gets through", []string{"-cert", client.Cert, "-key", client.Key}, gatewayID + " HTTP/1.0", false},
		{"no client certificate is refused in the handshake", nil, "alert certificate required", true},
		{"a certificate from another CA is refused", []string{"-cert", stranger.Cert, "-key", stranger.Key}, "alert bad certificate", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The deadline only keeps a hung openssl from hanging the test.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append([]string{"s_client", "-connect", addr, "-CAfile", client.Bundle, "-verify_return_error", "-ign_eof", "-quiet"}, tc.args...)
			cmd := exec.CommandContext(ctx, openssl, args...)
			cmd.Stdin = strings.NewReader("GET / HTTP/1.0\r\n\r\n")
			b, err := cmd.CombinedOutput()
			out := string(b)
			if tc.refused {
				if strings.Contains(out, "200 OK") || strings.Contains(out, gatewayID+" ") {
					t.Fatalf("the server answered:\n%s", out)
				}
				if !strings.Contains(out, tc.wantOut) {
					t.Fatalf("no %q in openssl's output (err %v):\n%s", tc.wantOut, err, out)
				}
				return
			}
			if err != nil || !strings.Contains(out, "HTTP/1.0 200 OK") || !strings.Contains(out, tc.wantOut) {
				t.Fatalf("openssl s_client: %v\n%s", err, out)
			}
		})
	}
}
