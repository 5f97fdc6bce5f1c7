package routes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryProblemInOneRun feeds files with problems of several kinds at
// once (a value of the wrong type, a string for a list, an unknown key, an
// undefined reference, an unset variable, missing files) and wants every
// one of them, located, from a single load: fixing a file must not be a
// loop of one error per run.
func TestEveryProblemInOneRun(t *testing.T) {
	dir := t.TempDir()
	present := filepath.Join(dir, "present.pem")
	if err := os.WriteFile(present, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := func(name string) (string, bool) { return map[string]string{"UP": "api"}[name], name == "UP" }

	tests := []struct {
		name  string
		file  string
		files bool // CheckFiles
		want  []string
	}{
		{"a type error does not hide an undefined upstream", `version: 1
upstreams:
  api:
    endpoints: ["127.0.0.1:9000"]
    timeout: banana
routes:
  - name: a
    match: {path_prefix: /a}
    upstream: nowhere
`, false, []string{
			`c.yaml:5:14: upstreams.api.timeout: invalid duration "banana": use a Go duration such as "250ms" or "1m"`,
			`c.yaml:9:15: routes[0].upstream: undefined upstream "nowhere"`,
		}},
		{"a string for a list, an unknown key, a bad reference and a bad value", `version: 1
upstreams:
  api:
    endpoints: 127.0.0.1:9000
  web:
    endpoints: ["127.0.0.1:9001"]
    balance: random
routes:
  - name: a
    match: {path_prefix: /a, methods: GET}
    upstream: api
    auth: [users]
  - name: b
    match: {path: b}
    upstream: web
    retires: 2
`, false, []string{
			`c.yaml:4:16: upstreams.api.endpoints: expected a list, found the string "127.0.0.1:9000"`,
			`c.yaml:7:14: upstreams.web.balance: unknown balancer "random" (one of round_robin, weighted, least_request, p2c_ewma, ring_hash)`,
			`c.yaml:10:39: routes[0].match.methods: expected a list, found the string "GET"`,
			`c.yaml:12:12: routes[0].auth[0]: undefined authenticator "users"`,
			`c.yaml:14:19: routes[1].match.path: must start with "/" (found "b")`,
			`c.yaml:16:5: routes[1].retires: unknown key`,
		}},
		{"an unset variable among other errors", `version: 1
upstreams:
  api: {endpoints: ["${NOPE}"]}
routes:
  - name: a
    match: {path_prefix: /a}
    upstream: ${UP}
  - name: b
    match: {path_prefix: /b}
    upstream: gone
`, false, []string{
			`c.yaml:3:21: upstreams.api.endpoints[0]: environment variable NOPE is not set (give a default with ${NOPE:-default}, or write $${NOPE} for a literal ${NOPE})`,
			`c.yaml:10:15: routes[1].upstream: undefined upstream "gone"`,
		}},
		{"every missing file, at its key, with the other errors", `version: 1
listen: {http: ":8080", https: ":8443"}
tls:
  certificates:
    - {cert_file: missing-cert.pem, key_file: present.pem}
  client_ca_file: adir
mesh:
  trust_domain: example.org
  cert_file: mesh/edge.pem
  key_file: mesh/edge-key.pem
  bundle_file: present.pem
authenticators:
  partners:
    api_key: {keys_file: secrets/keys.txt}
  users:
    jwt: {issuer: "https://id.example/", algorithms: [RS256], public_key_files: [present.pem, gone.pem]}
upstreams:
  api: {endpoints: ["127.0.0.1:9000"], timeout: forever}
  dyn: {endpoints_file: eps.txt}
routes:
  - name: a
    match: {path_prefix: /a}
    upstream: nowhere
`, true, []string{
			`c.yaml:5:19: tls.certificates[0].cert_file: no such file: ` + filepath.Join(dir, "missing-cert.pem"),
			`c.yaml:6:19: tls.client_ca_file: is a directory, not a file: ` + filepath.Join(dir, "adir"),
			`c.yaml:9:14: mesh.cert_file: no such file: ` + filepath.Join(dir, "mesh/edge.pem"),
			`c.yaml:10:13: mesh.key_file: no such file: ` + filepath.Join(dir, "mesh/edge-key.pem"),
			`c.yaml:14:26: authenticators.partners.api_key.keys_file: no such file: ` + filepath.Join(dir, "secrets/keys.txt"),
			`c.yaml:16:95: authenticators.users.jwt.public_key_files[1]: no such file: ` + filepath.Join(dir, "gone.pem"),
			`c.yaml:18:49: upstreams.api.timeout: invalid duration "forever": use a Go duration such as "250ms" or "1m"`,
			`c.yaml:19:25: upstreams.dyn.endpoints_file: no such file: ` + filepath.Join(dir, "eps.txt"),
			`c.yaml:23:15: routes[0].upstream: undefined upstream "nowhere"`,
		}},
		{"files are not checked unless asked", `version: 1
authenticators:
  partners:
    api_key: {keys_file: secrets/keys.txt}
upstreams:
  api: {endpoints: ["127.0.0.1:9000"]}
routes:
  - {name: a, match: {path_prefix: /a}, upstream: api, auth: [partner]}
`, false, []string{
			`c.yaml:8:63: routes[0].auth[0]: undefined authenticator "partner"`,
		}},
		// What only follows from a decode error is left out: it would
		// send the reader after a problem that is not there.
		{"a misspelled section does not make every reference undefined", `version: 1
upstrems:
  api: {endpoints: ["127.0.0.1:9000"]}
routes:
  - {name: a, match: {path_prefix: /a}, upstream: api}
  - {name: b, match: {path_prefix: /b}, upstream: api, rate_limit: [nope]}
`, false, []string{
			`c.yaml:2:1: upstrems: unknown key (did you mean "upstreams"?)`,
			`c.yaml:6:69: routes[1].rate_limit[0]: undefined rate limit "nope"`,
		}},
		{"a section of the wrong shape does not make its references undefined", `version: 1
upstreams: [api]
routes:
  - {name: a, match: {path_prefix: /a}, upstream: api}
`, false, []string{
			`c.yaml:2:12: upstreams: expected a mapping, found a list`,
		}},
		{"a value that did not decode is not also reported as missing", `version: 1
upstreams:
  api: {endpoints: "127.0.0.1:9000"}
routes:
  - {name: a, match: {path_prefix: /a}, upstream: api, strip_prefix: yes please}
`, false, []string{
			`c.yaml:3:20: upstreams.api.endpoints: expected a list, found the string "127.0.0.1:9000"`,
			`c.yaml:5:70: routes[0].strip_prefix: expected true or false, found the string "yes please"`,
		}},
		{"a missing file under a key that did not decode is not checked", `version: 1
tls:
  certificates: {cert_file: a.pem, key_file: b.pem}
upstreams:
  api: {endpoints: ["127.0.0.1:9000"]}
routes:
  - {name: a, match: {path_prefix: /a}, upstream: api}
`, true, []string{
			`c.yaml:3:17: tls.certificates: expected a list, found a mapping`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseWith(filepath.Join(dir, "c.yaml"), []byte(tc.file), Options{Env: env, CheckFiles: tc.files})
			if err == nil {
				t.Fatal("the file was accepted")
			}
			got := strings.ReplaceAll(err.Error(), filepath.Join(dir, "c.yaml"), "c.yaml")
			if got != strings.Join(tc.want, "\n") {
				t.Fatalf("errors:\n%s\nwant:\n%s", got, strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestSidecarEveryProblemInOneRun is TestEveryProblemInOneRun for the
// sidecar file.
func TestSidecarEveryProblemInOneRun(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name  string
		file  string
		files bool
		want  []string
	}{
		{"every identity file missing, with a type error and a bad value", `version: 1
identity: {cert_file: mesh/orders.pem, key_file: mesh/orders-key.pem, bundle_file: mesh/bundle.pem}
inbound:
  forward_to: "127.0.0.1:7001"
  allow: spiffe://example.org/ns/edge/sa/gateway
  timeout: soon
outbound:
  services:
    payments: {endpoints: ["127.0.0.1:16443"], identity: "payments"}
`, true, []string{
			`s.yaml:2:23: identity.cert_file: no such file: ` + filepath.Join(dir, "mesh/orders.pem"),
			`s.yaml:2:50: identity.key_file: no such file: ` + filepath.Join(dir, "mesh/orders-key.pem"),
			`s.yaml:2:84: identity.bundle_file: no such file: ` + filepath.Join(dir, "mesh/bundle.pem"),
			`s.yaml:5:10: inbound.allow: expected a list, found the string "spiffe://example.org/ns/edge/sa/gateway"`,
			`s.yaml:6:12: inbound.timeout: invalid duration "soon": use a Go duration such as "250ms" or "1m"`,
			`s.yaml:9:58: outbound.services.payments.identity: "payments" is not a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH): scheme is missing or invalid`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSidecarWith(filepath.Join(dir, "s.yaml"), []byte(tc.file), Options{CheckFiles: tc.files})
			if err == nil {
				t.Fatal("the file was accepted")
			}
			got := strings.ReplaceAll(err.Error(), filepath.Join(dir, "s.yaml"), "s.yaml")
			if got != strings.Join(tc.want, "\n") {
				t.Fatalf("errors:\n%s\nwant:\n%s", got, strings.Join(tc.want, "\n"))
			}
		})
	}
}
