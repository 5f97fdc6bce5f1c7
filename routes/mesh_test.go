package routes

import (
	"strings"
	"testing"
)

// meshBase is a valid file with a mesh identity and a mesh upstream.
const meshBase = `version: 1
mesh:
  trust_domain: example.org
  cert_file: mesh/edge.pem
  key_file: mesh/edge-key.pem
  bundle_file: mesh/bundle.pem
upstreams:
  orders:
    endpoints: ["127.0.0.1:7001"]
    mesh_identity: spiffe://example.org/ns/shop/sa/orders
routes:
  - name: orders
    match: {path_prefix: /orders}
    upstream: orders
`

func TestMeshSection(t *testing.T) {
	t.Run("the valid file loads", func(t *testing.T) {
		f, err := Parse("m.yaml", []byte(meshBase))
		if err != nil {
			t.Fatal(err)
		}
		if f.Mesh.TrustDomain != "example.org" || f.Upstreams["orders"].MeshIdentity != "spiffe://example.org/ns/shop/sa/orders" {
			t.Fatalf("decoded %+v", f.Mesh)
		}
	})
	r := func(from, to string) string {
		if !strings.Contains(meshBase, from) {
			t.Fatalf("test setup: %q not in the base file", from)
		}
		return strings.Replace(meshBase, from, to, 1)
	}
	requirePlain := strings.Replace(r("  bundle_file: mesh/bundle.pem\n", "  bundle_file: mesh/bundle.pem\n  require: true\n"),
		"routes:\n", "  plain:\n    endpoints: [\"127.0.0.1:7002\"]\nroutes:\n", 1) + "  - name: plain\n    match: {path_prefix: /plain}\n    upstream: plain\n"
	tests := []struct {
		name string
		file string
		want []string
	}{
		{"files missing", r("  cert_file: mesh/edge.pem\n  key_file: mesh/edge-key.pem\n", ""), []string{
			"m.yaml:3:3: mesh.cert_file: is required",
			"m.yaml:3:3: mesh.key_file: is required",
		}},
		{"trust domain missing", r("  trust_domain: example.org\n", ""), []string{
			// No second error about the upstream's trust domain: there is none to compare with.
			"m.yaml:3:3: mesh.trust_domain: is required",
		}},
		{"trust domain with upper case", r("trust_domain: example.org", "trust_domain: Example.org"), []string{
			`m.yaml:3:17: mesh.trust_domain: "Example.org" is not a trust domain (lower-case letters, digits, '.', '-', '_'): trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`,
		}},
		{"mesh_identity not SPIFFE", r("mesh_identity: spiffe://example.org/ns/shop/sa/orders", "mesh_identity: https://orders"), []string{
			`m.yaml:10:20: upstreams.orders.mesh_identity: "https://orders" is not a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH): scheme is missing or invalid`,
		}},
		{"mesh_identity with a bad path", r("mesh_identity: spiffe://example.org/ns/shop/sa/orders", "mesh_identity: spiffe://example.org/ns//orders"), []string{
			`m.yaml:10:20: upstreams.orders.mesh_identity: "spiffe://example.org/ns//orders" is not a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH): path cannot contain empty segments`,
		}},
		{"mesh_identity in another trust domain", r("mesh_identity: spiffe://example.org/", "mesh_identity: spiffe://other.org/"), []string{
			`m.yaml:10:20: upstreams.orders.mesh_identity: spiffe://other.org/ns/shop/sa/orders is outside mesh.trust_domain example.org: with source files only that domain's bundle and those of mesh.federated_bundles are known`,
		}},
		{"spire with the files too", r("trust_domain: example.org\n", "trust_domain: example.org\n  source: spire\n  socket: unix:///run/spire/agent/api.sock\n"), []string{
			`m.yaml:6:14: mesh.cert_file: is not used with source: spire (the Workload API delivers the certificate, key and bundles)`,
			`m.yaml:7:13: mesh.key_file: is not used with source: spire (the Workload API delivers the certificate, key and bundles)`,
			`m.yaml:8:16: mesh.bundle_file: is not used with source: spire (the Workload API delivers the certificate, key and bundles)`,
		}},
		{"spire with a bad socket", r("  cert_file: mesh/edge.pem\n  key_file: mesh/edge-key.pem\n  bundle_file: mesh/bundle.pem\n", "  source: spire\n  socket: /run/spire/agent/api.sock\n"), []string{
			`m.yaml:5:11: mesh.socket: "/run/spire/agent/api.sock" is not a Workload API address (unix:///path/to/api.sock or tcp://IP:PORT): workload endpoint socket URI must have a "tcp" or "unix" scheme`,
		}},
		{"unknown source", r("trust_domain: example.org\n", "trust_domain: example.org\n  source: vault\n"), []string{
			`m.yaml:4:11: mesh.source: unknown identity source "vault" (files or spire)`,
		}},
		{"socket with files", r("trust_domain: example.org\n", "trust_domain: example.org\n  socket: unix:///x.sock\n"), []string{
			`m.yaml:4:11: mesh.socket: is only for source: spire`,
		}},
		{"federated_bundles with spire", r("  cert_file: mesh/edge.pem\n  key_file: mesh/edge-key.pem\n  bundle_file: mesh/bundle.pem\n", "  source: spire\n  socket: unix:///run/spire/agent/api.sock\n  federated_bundles: {partner.example: p.pem}\n"), []string{
			`m.yaml:6:22: mesh.federated_bundles: is not used with source: spire (the Workload API delivers the federated trust domains' bundles)`,
		}},
		{"federated_bundles: bad, own and empty", r("  bundle_file: mesh/bundle.pem\n", "  bundle_file: mesh/bundle.pem\n  federated_bundles: {Partner: p.pem, example.org: b.pem, other.example: \"\"}\n"), []string{
			`m.yaml:7:32: mesh.federated_bundles.Partner: "Partner" is not a trust domain: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`,
			`m.yaml:7:52: mesh.federated_bundles.example.org: is the own trust domain: its roots go in bundle_file`,
			`m.yaml:7:74: mesh.federated_bundles.other.example: is empty: the file with the roots of other.example`,
		}},
		{"spiffe_id with files", r("trust_domain: example.org\n", "trust_domain: example.org\n  spiffe_id: spiffe://example.org/ns/edge/sa/gateway\n"), []string{
			`m.yaml:4:14: mesh.spiffe_id: is only for source: spire (with files the certificate names the ID)`,
		}},
		{"spiffe_id not a SPIFFE ID", r("  cert_file: mesh/edge.pem\n  key_file: mesh/edge-key.pem\n  bundle_file: mesh/bundle.pem\n", "  source: spire\n  socket: unix:///run/spire/agent/api.sock\n  spiffe_id: gateway\n"), []string{
			`m.yaml:6:14: mesh.spiffe_id: "gateway" is not a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH): scheme is missing or invalid`,
		}},
		{"spiffe_id outside the trust domain", r("  cert_file: mesh/edge.pem\n  key_file: mesh/edge-key.pem\n  bundle_file: mesh/bundle.pem\n", "  source: spire\n  socket: unix:///run/spire/agent/api.sock\n  spiffe_id: spiffe://other.org/ns/edge/sa/gateway\n"), []string{
			`m.yaml:6:14: mesh.spiffe_id: spiffe://other.org/ns/edge/sa/gateway is outside trust_domain example.org`,
		}},
		{"mesh_identity without the mesh section", r("mesh:\n  trust_domain: example.org\n  cert_file: mesh/edge.pem\n  key_file: mesh/edge-key.pem\n  bundle_file: mesh/bundle.pem\n", ""), []string{
			`m.yaml:5:20: upstreams.orders.mesh_identity: needs the mesh section (the edge's own identity for mTLS)`,
		}},
		{"mesh upstream with scheme https", r("    mesh_identity:", "    scheme: https\n    mesh_identity:"), []string{
			`m.yaml:10:13: upstreams.orders.scheme: mesh upstreams use mTLS already: leave scheme out`,
		}},
		{"require refuses a plain upstream", requirePlain, []string{
			`m.yaml:13:5: upstreams.plain: mesh.require is set: a plain-HTTP upstream is refused; set mesh_identity`,
		}},
	}
	t.Run("files allow mesh identities of federated_bundles' domains", func(t *testing.T) {
		file := r("  bundle_file: mesh/bundle.pem\n", "  bundle_file: mesh/bundle.pem\n  federated_bundles:\n    partner.example: mesh/partner-bundle.pem\n")
		file = strings.Replace(file, "mesh_identity: spiffe://example.org/", "mesh_identity: spiffe://partner.example/", 1)
		f, err := Parse("m.yaml", []byte(file))
		if err != nil {
			t.Fatal(err)
		}
		if f.Mesh.FederatedBundles["partner.example"] != "mesh/partner-bundle.pem" {
			t.Fatalf("decoded %+v", f.Mesh)
		}
	})
	t.Run("spire allows federated mesh identities", func(t *testing.T) {
		t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
		file := r("  cert_file: mesh/edge.pem\n  key_file: mesh/edge-key.pem\n  bundle_file: mesh/bundle.pem\n", "  source: spire\n  socket: unix:///run/spire/agent/api.sock\n")
		file = strings.Replace(file, "mesh_identity: spiffe://example.org/", "mesh_identity: spiffe://partner.example/", 1)
		f, err := Parse("m.yaml", []byte(file))
		if err != nil {
			t.Fatal(err)
		}
		if f.Mesh.Source != SourceSPIRE || f.Mesh.Socket != "unix:///run/spire/agent/api.sock" {
			t.Fatalf("decoded %+v", f.Mesh)
		}
	})
	t.Run("spire socket from SPIFFE_ENDPOINT_SOCKET", func(t *testing.T) {
		file := r("  cert_file: mesh/edge.pem\n  key_file: mesh/edge-key.pem\n  bundle_file: mesh/bundle.pem\n", "  source: spire\n")
		t.Setenv("SPIFFE_ENDPOINT_SOCKET", "unix:///tmp/agent.sock")
		if _, err := Parse("m.yaml", []byte(file)); err != nil {
			t.Fatal(err)
		}
		t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
		_, err := Parse("m.yaml", []byte(file))
		want := "m.yaml:3:3: mesh.socket: is required with source: spire when SPIFFE_ENDPOINT_SOCKET is not set (e.g. unix:///run/spire/agent/api.sock)"
		if err == nil || err.Error() != want {
			t.Fatalf("error %v, want %s", err, want)
		}
	})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("m.yaml", []byte(tc.file))
			if err == nil {
				t.Fatal("the file was accepted")
			}
			if err.Error() != strings.Join(tc.want, "\n") {
				t.Fatalf("errors:\n%s\nwant:\n%s", err, strings.Join(tc.want, "\n"))
			}
		})
	}
}
