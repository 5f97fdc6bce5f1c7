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
	r := func(old, new string) string {
		if !strings.Contains(meshBase, old) {
			t.Fatalf("test setup: %q not in the base file", old)
		}
		return strings.Replace(meshBase, old, new, 1)
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
			`m.yaml:10:20: upstreams.orders.mesh_identity: spiffe://other.org/ns/shop/sa/orders is outside mesh.trust_domain example.org (federation is not supported)`,
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
