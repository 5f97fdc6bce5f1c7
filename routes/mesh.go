package routes

import (
	"net/url"
	"strings"
)

func (c *checker) checkMesh() {
	m := c.f.Mesh
	if m == nil {
		return
	}
	if m.TrustDomain == "" {
		c.errorf("mesh.trust_domain", "is required")
	}
	for key, v := range map[string]string{"cert_file": m.CertFile, "key_file": m.KeyFile, "bundle_file": m.BundleFile} {
		if v == "" {
			c.errorf("mesh."+key, "is required")
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
	id, err := url.Parse(u.MeshIdentity)
	if err != nil || id.Scheme != "spiffe" || id.Host == "" || !strings.HasPrefix(id.Path, "/") || id.RawQuery != "" || id.Fragment != "" {
		c.errorf(p+".mesh_identity", "%q is not a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH)", u.MeshIdentity)
		return
	}
	if m == nil {
		c.errorf(p+".mesh_identity", "needs the mesh section (the edge's own identity for mTLS)")
	}
	if u.Scheme == "https" {
		c.errorf(p+".scheme", "mesh upstreams use mTLS already: leave scheme out")
	}
}
