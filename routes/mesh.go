package routes

import (
	"maps"
	"os"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// Identity sources of mesh.source and identity.source.
const (
	SourceFiles = "files"
	SourceSPIRE = "spire"
)

// checkIdentitySource checks where a workload identity comes from: three
// files, or the SPIFFE Workload API (optionally picking one SVID by ID,
// which must then be in trustDomain when that is set and valid).
func (c *checker) checkIdentitySource(p, source, socket, spiffeID, trustDomain, cert, key, bundle string, federated map[string]string) {
	files := []struct{ key, v string }{{"cert_file", cert}, {"key_file", key}, {"bundle_file", bundle}}
	switch source {
	case "", SourceFiles:
		for _, name := range slices.Sorted(maps.Keys(federated)) {
			fp := p + ".federated_bundles." + name
			td, err := spiffeid.TrustDomainFromString(name)
			switch {
			case err != nil:
				c.errorf(fp, "%q is not a trust domain: %v", name, err)
			case td.Name() == trustDomain:
				c.errorf(fp, "is the own trust domain: its roots go in bundle_file")
			case federated[name] == "":
				c.errorf(fp, "is empty: the file with the roots of %s", name)
			}
		}
		if socket != "" {
			c.errorf(p+".socket", "is only for source: spire")
		}
		if spiffeID != "" {
			c.errorf(p+".spiffe_id", "is only for source: spire (with files the certificate names the ID)")
		}
		for _, kv := range files {
			if kv.v == "" {
				c.errorf(p+"."+kv.key, "is required")
			}
		}
	case SourceSPIRE:
		if len(federated) > 0 {
			c.errorf(p+".federated_bundles", "is not used with source: spire (the Workload API delivers the federated trust domains' bundles)")
		}
		for _, kv := range files {
			if kv.v != "" {
				c.errorf(p+"."+kv.key, "is not used with source: spire (the Workload API delivers the certificate, key and bundles)")
			}
		}
		if socket == "" {
			if env := os.Getenv(workloadapi.SocketEnv); env == "" {
				c.errorf(p+".socket", "is required with source: spire when %s is not set (e.g. unix:///run/spire/agent/api.sock)", workloadapi.SocketEnv)
			} else if err := workloadapi.ValidateAddress(env); err != nil {
				c.errorf(p+".socket", "not set, and %s=%q is not a Workload API address: %v", workloadapi.SocketEnv, env, err)
			}
		} else if err := workloadapi.ValidateAddress(socket); err != nil {
			c.errorf(p+".socket", "%q is not a Workload API address (unix:///path/to/api.sock or tcp://IP:PORT): %v", socket, err)
		}
		if spiffeID != "" {
			id, err := spiffeid.FromString(spiffeID)
			if err != nil {
				c.errorf(p+".spiffe_id", "%q is not a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH): %v", spiffeID, err)
			} else if td, err := spiffeid.TrustDomainFromString(trustDomain); trustDomain != "" && err == nil && !id.MemberOf(td) {
				c.errorf(p+".spiffe_id", "%s is outside trust_domain %s", id, td)
			}
		}
	default:
		c.errorf(p+".source", "unknown identity source %q (files or spire)", source)
	}
}

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
	c.checkIdentitySource("mesh", m.Source, m.Socket, m.SPIFFEID, m.TrustDomain, m.CertFile, m.KeyFile, m.BundleFile, m.FederatedBundles)
	if m.CallerToken != nil {
		c.checkCallerToken("mesh.caller_token", m.CallerToken)
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
	} else if td, err := spiffeid.TrustDomainFromString(m.TrustDomain); err == nil && !id.MemberOf(td) && m.Source != SourceSPIRE &&
		m.FederatedBundles[id.TrustDomain().Name()] == "" {
		// With files the edge holds its own trust domain's bundle and those
		// of mesh.federated_bundles: a sidecar of another domain could never
		// be verified. The Workload API also delivers federated bundles.
		c.errorf(p+".mesh_identity", "%s is outside mesh.trust_domain %s: with source files only that domain's bundle and those of mesh.federated_bundles are known", id, td)
	}
	if u.Scheme == "https" {
		c.errorf(p+".scheme", "mesh upstreams use mTLS already: leave scheme out")
	}
}
