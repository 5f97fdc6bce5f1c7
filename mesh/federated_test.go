package mesh_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// A source on files verifies peers of the trust domains in its federated
// bundles, follows a change of those files, refuses a peer once its
// domain's roots are replaced, and never lets a federated bundle stand in
// for its own trust domain.
func TestFilesSourceFederatedBundles(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	partner := meshtest.NewCA(t, "partner.example")
	own := ca.IssueFiles(t.TempDir(), gatewayID)
	dir := t.TempDir()
	partnerBundle := partner.WriteBundle(dir)
	peer := partner.Issue("spiffe://partner.example/ns/shop/sa/orders")

	plain, err := mesh.NewSource(context.Background(), own.Cert, own.Key, own.Bundle, mesh.SourceOptions{Logger: discardSlog()})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Verify(chainOf(t, peer)); err == nil || !strings.Contains(err.Error(), "partner.example") {
		t.Fatalf("without the partner's bundle: %v, want a refusal naming partner.example", err)
	}

	s, err := mesh.NewSource(context.Background(), own.Cert, own.Key, own.Bundle, mesh.SourceOptions{Logger: discardSlog(),
		FederatedBundles: map[string]string{"partner.example": partnerBundle}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id, err := s.Verify(chainOf(t, peer))
	if err != nil || id.String() != "spiffe://partner.example/ns/shop/sa/orders" {
		t.Fatalf("with the partner's bundle: %v %v", id, err)
	}
	// The partner's roots are replaced (a CA rotation there): the old
	// peer certificate is refused once the file changes.
	other := meshtest.NewCA(t, "partner.example")
	other.WriteBundle(dir)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := s.Verify(chainOf(t, peer)); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replaced federated bundle was not picked up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := s.Verify(chainOf(t, other.Issue("spiffe://partner.example/ns/shop/sa/orders"))); err != nil {
		t.Fatalf("a peer of the new partner roots: %v", err)
	}
	// The own domain's bundle cannot come from federated_bundles, and a
	// missing file is refused at start.
	for name, fed := range map[string]map[string]string{
		"own domain":   {"example.org": partnerBundle},
		"missing file": {"partner.example": filepath.Join(dir, "nope.pem")},
	} {
		if _, err := mesh.NewSource(context.Background(), own.Cert, own.Key, own.Bundle, mesh.SourceOptions{Logger: discardSlog(), FederatedBundles: fed}); err == nil {
			t.Errorf("%s: the source was opened", name)
		}
	}
	if _, err := os.Stat(partnerBundle); err != nil {
		t.Fatal(err)
	}
}

// chainOf is the certificate chain (leaf first) a peer would present.
func chainOf(t *testing.T, c *meshtest.Cert) []*x509.Certificate {
	t.Helper()
	var chain []*x509.Certificate
	for _, der := range c.TLS.Certificate {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, cert)
	}
	return chain
}
