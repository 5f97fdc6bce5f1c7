package mesh

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/causewayhq/causeway/routes"
)

// SourceForEdge opens the edge's identity from the routes file's mesh
// section (files or the SPIFFE Workload API), refusing a certificate
// outside mesh.trust_domain.
func SourceForEdge(ctx context.Context, m *routes.Mesh, opts SourceOptions) (*Source, error) {
	if m == nil {
		return nil, errors.New("mesh source: the routes file has no mesh section")
	}
	opts.TrustDomain = m.TrustDomain
	if m.Source == routes.SourceSPIRE {
		opts.SPIFFEID = m.SPIFFEID
		return NewWorkloadAPISource(ctx, m.Socket, opts)
	}
	opts.FederatedBundles = m.FederatedBundles
	return NewSource(ctx, m.CertFile, m.KeyFile, m.BundleFile, opts)
}

// SourceForSidecar opens a sidecar's identity from its file's identity
// section (trust_domain, when set, is enforced).
func SourceForSidecar(ctx context.Context, id routes.SidecarIdentity, opts SourceOptions) (*Source, error) {
	if id.TrustDomain != "" {
		opts.TrustDomain = id.TrustDomain
	}
	if id.Source == routes.SourceSPIRE {
		opts.SPIFFEID = id.SPIFFEID
		return NewWorkloadAPISource(ctx, id.Socket, opts)
	}
	opts.FederatedBundles = id.FederatedBundles
	return NewSource(ctx, id.CertFile, id.KeyFile, id.BundleFile, opts)
}

// InboundAuthorizer turns a sidecar's inbound allow, allow_trust_domains
// and allow_service_accounts (named in trustDomain) into one Authorizer.
// The routes package has validated them already; an error here means the
// caller skipped validation.
func InboundAuthorizer(in *routes.Inbound, trustDomain string) (Authorizer, error) {
	if in == nil {
		return nil, errors.New("mesh: no inbound section")
	}
	ids := make([]ID, 0, len(in.Allow)+len(in.AllowServiceAccounts))
	for i, s := range in.Allow {
		id, err := ParseID(s)
		if err != nil {
			return nil, fmt.Errorf("mesh: inbound.allow[%d]: %w", i, err)
		}
		ids = append(ids, id)
	}
	for i, sa := range in.AllowServiceAccounts {
		ns, name, _ := strings.Cut(sa, "/")
		if trustDomain == "" {
			return nil, fmt.Errorf("mesh: inbound.allow_service_accounts[%d]: %q needs a trust domain", i, sa)
		}
		id, err := ParseID(routes.ServiceAccountID(trustDomain, ns, name))
		if err != nil {
			return nil, fmt.Errorf("mesh: inbound.allow_service_accounts[%d]: %q in trust domain %q: %w", i, sa, trustDomain, err)
		}
		ids = append(ids, id)
	}
	authorizers := []Authorizer{AuthorizeOnly(ids...)}
	for i, s := range in.AllowTrustDomains {
		if _, err := ParseTrustDomain(s); err != nil {
			return nil, fmt.Errorf("mesh: inbound.allow_trust_domains[%d]: %w", i, err)
		}
		authorizers = append(authorizers, AuthorizeMemberOf(s))
	}
	return AuthorizeOneOf(authorizers...), nil
}
