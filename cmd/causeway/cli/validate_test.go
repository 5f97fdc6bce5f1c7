package cli

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validate prints a footgun as a warning with its position and still
// accepts the file (exit 0); an error is an error (exit 1).
func TestValidateWarnings(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, file string
		code       int
		stderr     []string
	}{
		{"warnings only", `version: 1
listen: {http: "127.0.0.1:0", admin: "0.0.0.0:0"}
trusted_proxies: ["0.0.0.0/0"]
upstreams:
  u: {endpoints: ["127.0.0.1:1"]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, 0, []string{"w.yaml:3:19: trusted_proxies[0]: warning: 0.0.0.0/0 trusts every peer", "listen.admin: warning: the admin listener 0.0.0.0:0 is reachable"}},
		{"insecure jwks refused", `version: 1
listen: {http: "127.0.0.1:0", admin: "127.0.0.1:0"}
authenticators:
  users: {jwt: {issuer: https://id/, audiences: [api], algorithms: [RS256], jwks_url: "http://id.example.com/jwks"}}
upstreams:
  u: {endpoints: ["127.0.0.1:1"]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, auth: users}
`, 1, []string{"w.yaml:4:87: authenticators.users.jwt.jwks_url: plain http to id.example.com"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "w.yaml")
			if err := os.WriteFile(path, []byte(tt.file), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			if code := run([]string{"validate", path}, &stdout, &stderr); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.code, stderr.String())
			}
			for _, want := range tt.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
		})
	}
}

// Every command's -h, -help and --help print a description, the usage,
// the flags and an example, and exit 0; causeway help CMD is CMD -h;
// --version and -v print the version.
func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{
		{"edge"}, {"sidecar"}, {"validate"}, {"version"}, {"build"},
		{"ca", "init"}, {"ca", "intermediate"}, {"ca", "issue"}, {"ca", "verify"}, {"dev", "jwt"}, {"dev", "apikey"},
	} {
		name := strings.Join(args, " ")
		for _, h := range []string{"-h", "-help", "--help"} {
			t.Run(name+" "+h, func(t *testing.T) {
				var stdout, stderr bytes.Buffer
				if code := run(append(append([]string{}, args...), h), &stdout, &stderr); code != 0 {
					t.Fatalf("exit %d; stderr: %s", code, stderr.String())
				}
				out := stderr.String()
				for _, want := range []string{"causeway " + name + ": " + help[name].summary, "usage: causeway " + name, "example:\n  causeway " + name} {
					if !strings.Contains(out, want) {
						t.Fatalf("help lacks %q:\n%s", want, out)
					}
				}
				if name != "validate" && !strings.Contains(out, "flags:") {
					t.Fatalf("help lists no flags:\n%s", out)
				}
			})
		}
	}
	var a, b bytes.Buffer
	run([]string{"help", "edge"}, io.Discard, &a)
	run([]string{"edge", "-h"}, io.Discard, &b)
	if a.String() != b.String() || a.Len() == 0 {
		t.Fatalf("causeway help edge differs from causeway edge -h:\n%s\n---\n%s", a.String(), b.String())
	}
	for _, v := range []string{"--version", "-v", "-version"} {
		var stdout bytes.Buffer
		if code := run([]string{v}, &stdout, io.Discard); code != 0 || !strings.HasPrefix(stdout.String(), "causeway ") {
			t.Fatalf("%s: exit %d, %q", v, code, stdout.String())
		}
	}
}

// validate tells a sidecar file from a routes file (or is told with
// -kind), -skip-files checks a file whose certificates live elsewhere, and
// edge or sidecar given the other kind of file say so in one line.
func TestValidateKinds(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sidecar := write("sidecar.yaml", `version: 1
identity: {cert_file: missing.pem, key_file: missing-key.pem, bundle_file: bundle.pem}
inbound: {listen: "127.0.0.1:0", forward_to: "127.0.0.1:7001", allow: ["spiffe://example.org/ns/a/sa/b"]}
`)
	edge := write("edge.yaml", `version: 1
listen: {http: "127.0.0.1:0"}
upstreams:
  u: {endpoints: ["127.0.0.1:1"]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`)
	for _, tt := range []struct {
		args   []string
		code   int
		stdout string
		stderr []string
	}{
		{[]string{"validate", sidecar}, 1, "", []string{"sidecar.yaml:2:23: identity.cert_file: no such file", "identity.key_file: no such file", "identity.bundle_file: no such file"}},
		{[]string{"validate", "-skip-files", sidecar}, 0, "ok (sidecar file)", nil},
		{[]string{"validate", "-kind", "edge", sidecar}, 1, "", []string{"unknown key"}},
		{[]string{"validate", edge}, 0, "ok (edge file)", nil},
		{[]string{"validate", "-kind", "proxy", edge}, 2, "", []string{`-kind "proxy": want edge or sidecar`}},
		{[]string{"edge", "-config", sidecar}, 1, "", []string{"is a sidecar file (it has the sidecar file's keys): run causeway sidecar -config"}},
		{[]string{"sidecar", "-config", edge}, 1, "", []string{"is an edge file"}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.code, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Fatalf("stdout %q lacks %q", stdout.String(), tt.stdout)
			}
			for _, want := range tt.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Fatalf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
			if strings.Contains(tt.args[0], "edge") || strings.Contains(tt.args[0], "sidecar") {
				if n := strings.Count(strings.TrimSpace(stderr.String()), "\n"); n != 0 {
					t.Fatalf("wrong kind takes %d lines:\n%s", n+1, stderr.String())
				}
			}
		})
	}
}

// validate lists every problem of a file in one run, each at its
// file:line:col: decode errors, undefined references and every missing
// file, for both kinds of file; -skip-files leaves out only the files.
func TestValidateEveryProblemInOneRun(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "present.pem"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	edge := `version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0"}
tls:
  certificates:
    - {cert_file: certs/edge.pem, key_file: certs/edge-key.pem}
mesh:
  trust_domain: example.org
  cert_file: mesh/edge.pem
  key_file: mesh/edge-key.pem
  bundle_file: present.pem
authenticators:
  partners: {api_key: {keys_file: secrets/partner-keys.txt}}
upstreams:
  api:
    endpoints: ["127.0.0.1:9000"]
    timeout: banana
  web: {endpoints: "127.0.0.1:9001"}
routes:
  - {name: a, match: {path_prefix: /a}, upstream: nowhere, auth: [partners]}
  - {name: b, match: {path_prefix: /b}, upstream: web}
`
	sidecar := `version: 1
identity: {cert_file: mesh/orders.pem, key_file: mesh/orders-key.pem, bundle_file: present.pem}
inbound:
  forward_to: "127.0.0.1:7001"
  allow: [spiffe://example.org/ns/edge/sa/gateway]
  timeout: 5 minutes
outbound:
  services:
    payments: {endpoints: ["127.0.0.1:16443"], identity: payments}
`
	for _, tt := range []struct {
		name, file string
		args       []string
		want       []string
	}{
		{"edge file", edge, nil, []string{
			"c.yaml:5:19: tls.certificates[0].cert_file: no such file: " + filepath.Join(dir, "certs/edge.pem"),
			"c.yaml:5:45: tls.certificates[0].key_file: no such file: " + filepath.Join(dir, "certs/edge-key.pem"),
			"c.yaml:8:14: mesh.cert_file: no such file: " + filepath.Join(dir, "mesh/edge.pem"),
			"c.yaml:9:13: mesh.key_file: no such file: " + filepath.Join(dir, "mesh/edge-key.pem"),
			"c.yaml:12:35: authenticators.partners.api_key.keys_file: no such file: " + filepath.Join(dir, "secrets/partner-keys.txt"),
			`c.yaml:16:14: upstreams.api.timeout: invalid duration "banana": use a Go duration such as "250ms" or "1m"`,
			`c.yaml:17:20: upstreams.web.endpoints: expected a list, found the string "127.0.0.1:9001"`,
			`c.yaml:19:51: routes[0].upstream: undefined upstream "nowhere"`,
		}},
		{"edge file, -skip-files", edge, []string{"-skip-files"}, []string{
			`c.yaml:16:14: upstreams.api.timeout: invalid duration "banana": use a Go duration such as "250ms" or "1m"`,
			`c.yaml:17:20: upstreams.web.endpoints: expected a list, found the string "127.0.0.1:9001"`,
			`c.yaml:19:51: routes[0].upstream: undefined upstream "nowhere"`,
		}},
		{"sidecar file", sidecar, nil, []string{
			"c.yaml:2:23: identity.cert_file: no such file: " + filepath.Join(dir, "mesh/orders.pem"),
			"c.yaml:2:50: identity.key_file: no such file: " + filepath.Join(dir, "mesh/orders-key.pem"),
			`c.yaml:6:12: inbound.timeout: invalid duration "5 minutes": use a Go duration such as "250ms" or "1m"`,
			`c.yaml:9:58: outbound.services.payments.identity: "payments" is not a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH): scheme is missing or invalid`,
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "c.yaml")
			if err := os.WriteFile(path, []byte(tt.file), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			args := append(append([]string{"validate"}, tt.args...), path)
			if code := run(args, &stdout, &stderr); code != 1 {
				t.Fatalf("exit %d, want 1; stderr: %s", code, stderr.String())
			}
			got := strings.TrimSpace(strings.ReplaceAll(stderr.String(), path, "c.yaml"))
			if got != strings.Join(tt.want, "\n") {
				t.Fatalf("stderr:\n%s\nwant:\n%s", got, strings.Join(tt.want, "\n"))
			}
		})
	}
}
