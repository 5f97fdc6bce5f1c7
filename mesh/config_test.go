package mesh_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
	"github.com/causewayhq/causeway/routes"
)

func TestSourcesFromRoutes(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	f := ca.IssueFiles(t.TempDir(), gatewayID)
	tests := []struct {
		name   string
		open   func() (*mesh.Source, error)
		errHas string
	}{
		{"edge in its trust domain", func() (*mesh.Source, error) {
			return mesh.SourceForEdge(context.Background(), &routes.Mesh{TrustDomain: "example.org", CertFile: f.Cert, KeyFile: f.Key, BundleFile: f.Bundle}, mesh.SourceOptions{Logger: discardSlog()})
		}, ""},
		{"edge: certificate of another trust domain", func() (*mesh.Source, error) {
			return mesh.SourceForEdge(context.Background(), &routes.Mesh{TrustDomain: "prod.example.org", CertFile: f.Cert, KeyFile: f.Key, BundleFile: f.Bundle}, mesh.SourceOptions{})
		}, "outside the trust domain"},
		{"edge: no mesh section", func() (*mesh.Source, error) {
			return mesh.SourceForEdge(context.Background(), nil, mesh.SourceOptions{})
		}, "no mesh section"},
		{"sidecar without trust_domain", func() (*mesh.Source, error) {
			return mesh.SourceForSidecar(context.Background(), routes.SidecarIdentity{CertFile: f.Cert, KeyFile: f.Key, BundleFile: f.Bundle}, mesh.SourceOptions{Logger: discardSlog()})
		}, ""},
		{"sidecar: certificate of another trust domain", func() (*mesh.Source, error) {
			return mesh.SourceForSidecar(context.Background(), routes.SidecarIdentity{CertFile: f.Cert, KeyFile: f.Key, BundleFile: f.Bundle, TrustDomain: "other.org"}, mesh.SourceOptions{})
		}, "outside the trust domain"},
		{"sidecar: files not set", func() (*mesh.Source, error) {
			return mesh.SourceForSidecar(context.Background(), routes.SidecarIdentity{}, mesh.SourceOptions{})
		}, "not set"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tc.open()
			if tc.errHas == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if s.ID().String() != gatewayID {
					t.Fatalf("ID %s", s.ID())
				}
				return
			}
			if err == nil {
				s.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("err = %v, want %q", err, tc.errHas)
			}
		})
	}
}

func TestInboundAuthorizer(t *testing.T) {
	t.Run("bad config", func(t *testing.T) {
		for _, in := range []*routes.Inbound{nil, {Allow: []string{"nope"}}, {AllowTrustDomains: []string{"Bad Domain"}}} {
			if _, err := mesh.InboundAuthorizer(in, ""); err == nil {
				t.Errorf("InboundAuthorizer(%+v) accepted", in)
			}
		}
	})
	authz, err := mesh.InboundAuthorizer(&routes.Inbound{Allow: []string{gatewayID}, AllowTrustDomains: []string{"partner.example"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		peer string
		ok   bool
	}{
		{gatewayID, true},
		{"spiffe://partner.example/ns/x/sa/y", true},
		{paymentsID, false},
	} {
		t.Run(tc.peer, func(t *testing.T) {
			err := authz(mustID(t, tc.peer))
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, mesh.ErrUnauthorized)) {
				t.Fatalf("authorize = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	t.Run("ServiceAccounts by namespace/name, in the given trust domain", func(t *testing.T) {
		if _, err := mesh.InboundAuthorizer(&routes.Inbound{AllowServiceAccounts: []string{"edge/gateway"}}, ""); err == nil {
			t.Fatal("accepted a ServiceAccount without a trust domain")
		}
		authz, err := mesh.InboundAuthorizer(&routes.Inbound{AllowServiceAccounts: []string{"edge/gateway"}}, "example.org")
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			peer string
			ok   bool
		}{
			{"spiffe://example.org/ns/edge/sa/gateway", true},
			{"spiffe://other.example/ns/edge/sa/gateway", false}, // another trust domain
			{"spiffe://example.org/ns/edge/sa/gateway2", false},
			{"spiffe://example.org/ns/edge2/sa/gateway", false},
			{"spiffe://example.org/ns/edge/sa/gateway/x", false},
		} {
			if err := authz(mustID(t, tc.peer)); (err == nil) != tc.ok {
				t.Errorf("%s: authorize = %v, want ok=%v", tc.peer, err, tc.ok)
			}
		}
	})
	t.Run("an empty allow-list allows nobody", func(t *testing.T) {
		authz, err := mesh.InboundAuthorizer(&routes.Inbound{}, "")
		if err != nil {
			t.Fatal(err)
		}
		if authz(mustID(t, gatewayID)) == nil {
			t.Fatal("allowed")
		}
	})
}
