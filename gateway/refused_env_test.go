package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/mesh/meshtest"
	"github.com/causewayhq/causeway/routes"
)

// A refused file whose faulty value came from a ${VAR} reference shows the
// value as REDACTED wherever the refusal is reported (Reload's error, the
// log, /config's last_reload), with its file:line:col, whichever part of
// the build refused it: validation, a plugin, the runtime. Before: every
// one of them quoted the value.
func TestRefusalShowsNoEnvValue(t *testing.T) {
	up := echoUpstream(t, "up")
	t.Setenv("CW_TEST_ENDPOINT", "hunter2-endpoint")
	t.Setenv("CW_TEST_ORIGIN", "hunter2 origin")
	t.Setenv("CW_TEST_MESH_ID", "hunter2-not-an-id")
	// Files that exist but hold no certificate: only building the TLS
	// manager or the mesh source reads them.
	garbage := filepath.Join(t.TempDir(), "hunter2-garbage.pem")
	writeFile(t, garbage, "not a PEM block\n")
	t.Setenv("CW_TEST_GARBAGE", garbage)
	good := listenHeader + fmt.Sprintf("upstreams:\n  up: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: up}\n", hostPort(up))
	te := startEdge(t, good)
	tests := []struct {
		name, extra, want string
	}{
		{"validation: an endpoint", "  bad: {endpoints: [\"${CW_TEST_ENDPOINT}\"]}\n", "upstreams.bad.endpoints[0]: "},
		{"the runtime: a mesh identity", "  bad: {endpoints: [\"127.0.0.1:9\"], mesh_identity: \"${CW_TEST_MESH_ID}\"}\n", "upstreams.bad"},
		{"a plugin: an origin", "plugins:\n  c: {use: cors, config: {allow_origins: [\"${CW_TEST_ORIGIN}\"]}}\n", "plugins.c.config.allow_origins: "},
		{"the TLS manager: a certificate file", "tls: {certificates: [{cert_file: \"${CW_TEST_GARBAGE}\", key_file: \"${CW_TEST_GARBAGE}\"}]}\n", "tls.certificates[0]"},
		{"the mesh source: a certificate file", "mesh: {trust_domain: example.org, cert_file: \"${CW_TEST_GARBAGE}\", key_file: \"${CW_TEST_GARBAGE}\", bundle_file: \"${CW_TEST_GARBAGE}\"}\n", "mesh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := good
			if strings.HasPrefix(tt.extra, "  ") {
				file = strings.Replace(good, "upstreams:\n", "upstreams:\n"+tt.extra, 1)
			} else {
				file += tt.extra
			}
			logsBefore := len(te.logs.String())
			writeFile(t, te.path, file)
			err := te.Reload(context.Background())
			if err == nil {
				t.Fatal("the file was accepted")
			}
			_, body := get(t, te.admin+"/config")
			var view struct {
				LastReload ReloadStatus `json:"last_reload"`
			}
			if jerr := json.Unmarshal(body, &view); jerr != nil {
				t.Fatal(jerr)
			}
			for where, text := range map[string]string{"error": err.Error(), "log": te.logs.String()[logsBefore:], "last_reload": view.LastReload.Error} {
				if strings.Contains(text, "hunter2") {
					t.Errorf("%s quotes the value from the environment: %s", where, text)
				}
				if !strings.Contains(text, te.path+":") || !strings.Contains(text, tt.want) || !strings.Contains(text, routes.Redacted) {
					t.Errorf("%s %q does not locate the refusal at %s with %s", where, text, tt.want, routes.Redacted)
				}
			}
		})
	}
}

// The sidecar's refusals too: an identity certificate from ${VAR} that
// its mesh source cannot parse is refused with the path REDACTED, in
// Reload's error and the sidecar's last reload status.
func TestSidecarRefusalShowsNoEnvValue(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	svc := echoUpstream(t, "svc")
	ts := startSidecar(t, sidecarConfig(ca.IssueFiles(t.TempDir(), ordersID), hostPort(svc), []string{"spiffe://example.org/ns/edge/sa/gateway"}, nil))
	garbage := filepath.Join(t.TempDir(), "hunter2-garbage.pem")
	writeFile(t, garbage, "not a PEM block\n")
	t.Setenv("CW_TEST_GARBAGE", garbage)
	writeFile(t, ts.path, sidecarConfig(meshtest.Files{Cert: "${CW_TEST_GARBAGE}", Key: "${CW_TEST_GARBAGE}", Bundle: "${CW_TEST_GARBAGE}"}, hostPort(svc), []string{"spiffe://example.org/ns/edge/sa/gateway"}, nil))
	err := ts.Reload()
	if err == nil {
		t.Fatal("the file was accepted")
	}
	for where, text := range map[string]string{"error": err.Error(), "last reload": ts.LastReload().Error} {
		if strings.Contains(text, "hunter2") {
			t.Errorf("%s quotes the value from the environment: %s", where, text)
		}
		if !strings.Contains(text, ts.path+":") || !strings.Contains(text, "identity") || !strings.Contains(text, routes.Redacted) {
			t.Errorf("%s %q does not locate the refusal at identity with %s", where, text, routes.Redacted)
		}
	}
}
