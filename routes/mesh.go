package routes

import (
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// checkMesh checks the edge's own identity. The files themselves are read
// by the mesh package when the edge starts or reloads.
func (c *checker) checkMesh() {
	m := c.f.Mesh
	if m == nil {
		return
	}
	if m.TrustDomain == "" {
		c.errorf("mesh.trust_domain", "is required")
	} else if _, err := spiffeid.TrustDomainFromString(m.TrustDomain); err != nil {
		c.errorf("mesh.trust_domain", "%q is not a trust domain (lower-case letters, digits, '.', '-', '_'): %v", m.TrustDomain, err)
	}
	for _, kv := range []struct{ key, v string }{{"cert_file", m.CertFile}, {"key_file", m.KeyFile}, {"bundle_file", m.BundleFile}} {
		if kv.v == "" {
			c.errorf("mesh."+kv.key, "is required")
		}
	}
}

// checkUpstreamMesh checks an upstream's mesh identity against the mesh section.
func (c *checker) checkUpstreamMesh(p string, u Upstream) {
	m := c.f.Mesh
	if u.MeshIdentity == "" {
		if m != nil && m.Require {
			c.errorf(p, "mesh.require is set: a plain-HTTP upstream is refused; set mesh_identity")
		}
		return
	}
	id, err := spiffeid.FromString(u.MeshIdentity)
	if err != nil {
		c.errorf(p+".mesh_identity", "%q is not a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH): %v", u.MeshIdentity, err)
		return
	}
	if m == nil {
		c.errorf(p+".mesh_identity", "needs the mesh section (the edge's own identity for mTLS)")
	} else if td, err := spiffeid.TrustDomainFromString(m.TrustDomain); err == nil && !id.MemberOf(td) {
		// The edge holds only its own trust domain's bundle: a sidecar of
		// another domain could never be verified.
		c.errorf(p+".mesh_identity", "%s is outside mesh.trust_domain %s (federation is not supported)", id, td)
	}
	if u.Scheme == "https" {
		c.errorf(p+".scheme", "mesh upstreams use mTLS already: leave scheme out")
	}
}
