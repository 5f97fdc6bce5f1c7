package routes

import (
	"path/filepath"
	"testing"
)

// File paths in a routes file are relative to the file, not to the working
// directory of the edge.
func TestPathsRelativeToTheFile(t *testing.T) {
	dir := t.TempDir()
	src := `version: 1
access_log: {output: logs/access.log}
tls:
  certificates: [{cert_file: certs/api.pem, key_file: /abs/api-key.pem}]
mesh: {trust_domain: example.org, cert_file: mesh/edge.pem, key_file: mesh/edge-key.pem, bundle_file: mesh/bundle.pem}
authenticators:
  partners: {api_key: {keys_file: secrets/keys.txt}}
upstreams:
  u: {endpoints: ["127.0.0.1:1"]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`
	f, err := Parse(filepath.Join(dir, "causeway.yaml"), []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	for got, want := range map[string]string{
		f.AccessLog.Output:                           filepath.Join(dir, "logs/access.log"),
		f.TLS.Certificates[0].CertFile:               filepath.Join(dir, "certs/api.pem"),
		f.TLS.Certificates[0].KeyFile:                "/abs/api-key.pem",
		f.Mesh.BundleFile:                            filepath.Join(dir, "mesh/bundle.pem"),
		f.Authenticators["partners"].APIKey.KeysFile: filepath.Join(dir, "secrets/keys.txt"),
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	sc, err := ParseSidecar(filepath.Join(dir, "sidecar.yaml"), []byte(`version: 1
identity: {cert_file: mesh/orders.pem, key_file: mesh/orders-key.pem, bundle_file: /etc/bundle.pem}
inbound: {listen: "127.0.0.1:15443", forward_to: "127.0.0.1:7001", allow: ["spiffe://example.org/ns/a/sa/b"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if sc.Identity.CertFile != filepath.Join(dir, "mesh/orders.pem") || sc.Identity.BundleFile != "/etc/bundle.pem" {
		t.Errorf("sidecar identity %+v", sc.Identity)
	}
}
