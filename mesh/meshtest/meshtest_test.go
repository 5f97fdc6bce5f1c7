package meshtest_test

import (
	"os"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh/meshtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestIssueOptions(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	const id = "spiffe://example.org/ns/a/sa/b"
	nb, na := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		cert  *meshtest.Cert
		check func(*meshtest.Cert) bool
	}{
		{"default: through mesh, 24h, one URI", ca.Issue(id), func(c *meshtest.Cert) bool {
			return c.ID.String() == id && len(c.Leaf.URIs) == 1 && c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) > 23*time.Hour
		}},
		{"Validity is exact", ca.Issue(id, meshtest.Validity(nb, na)), func(c *meshtest.Cert) bool {
			return c.Leaf.NotBefore.Equal(nb) && c.Leaf.NotAfter.Equal(na)
		}},
		{"Expired is in the past", ca.Issue(id, meshtest.Expired()), func(c *meshtest.Cert) bool { return c.Leaf.NotAfter.Before(time.Now()) }},
		{"AsCA sets the flag", ca.Issue(id, meshtest.AsCA()), func(c *meshtest.Cert) bool { return c.Leaf.IsCA }},
		{"URIs replaces the SANs and clears ID", ca.Issue(id, meshtest.URIs()), func(c *meshtest.Cert) bool { return len(c.Leaf.URIs) == 0 && c.ID.IsZero() }},
		{"an intermediate's leaf carries the chain", ca.Intermediate().Issue(id), func(c *meshtest.Cert) bool { return len(c.TLS.Certificate) == 2 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.check(tc.cert) {
				t.Fatalf("unexpected certificate: NotBefore %v NotAfter %v URIs %v CA %v", tc.cert.Leaf.NotBefore, tc.cert.Leaf.NotAfter, tc.cert.Leaf.URIs, tc.cert.Leaf.IsCA)
			}
		})
	}
}

func TestFilesAndSource(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	s, f := ca.Source("spiffe://example.org/ns/a/sa/b")
	if s.ID().String() != "spiffe://example.org/ns/a/sa/b" {
		t.Fatalf("ID %s", s.ID())
	}
	fi, err := os.Stat(f.Key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
}
