package mesh_test

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func mode(t testing.TB, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func readPEMCerts(t testing.TB, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return certs
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
}

// verifySVID checks a written leaf the way a peer will.
func verifySVID(t testing.TB, certFile, bundleFile string, now time.Time) mesh.ID {
	t.Helper()
	chain := readPEMCerts(t, certFile)
	roots := readPEMCerts(t, bundleFile)
	id, err := mesh.IDFromCert(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(id.TrustDomain(), roots), x509svid.WithTime(now))
	if err != nil {
		t.Fatalf("the issued certificate does not verify: %v", err)
	}
	return got
}

func TestCAOnDisk(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := mesh.WithClock(func() time.Time { return now })
	root := filepath.Join(t.TempDir(), "ca")
	if err := mesh.InitCA(root, "example.org", clock); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{"root.pem": 0o644, "root-key.pem": 0o600, "bundle.pem": 0o644} {
		if got := mode(t, filepath.Join(root, name)); got != want {
			t.Errorf("%s has mode %o, want %o", name, got, want)
		}
	}
	if got := mode(t, root); got != 0o700 {
		t.Errorf("the CA directory has mode %o, want 700", got)
	}
	rootCert := readPEMCerts(t, filepath.Join(root, "root.pem"))[0]
	if !rootCert.IsCA || rootCert.URIs[0].String() != "spiffe://example.org" || !rootCert.NotAfter.Equal(now.Add(mesh.DefaultRootTTL)) {
		t.Fatalf("root: CA %v, URIs %v, NotAfter %v", rootCert.IsCA, rootCert.URIs, rootCert.NotAfter)
	}

	t.Run("a leaf from the root: leaf only, 24h, key 0600", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "mesh", "orders")
		if err := mesh.IssueLeaf(root, mustID(t, ordersID), 0, out, clock); err != nil {
			t.Fatal(err)
		}
		if got := mode(t, out+"-key.pem"); got != 0o600 {
			t.Fatalf("key mode %o", got)
		}
		chain := readPEMCerts(t, out+".pem")
		if len(chain) != 1 {
			t.Fatalf("the file holds %d certificates; the root is left out", len(chain))
		}
		if !chain[0].NotAfter.Equal(now.Add(24 * time.Hour)) {
			t.Fatalf("NotAfter %v, want 24h after %v", chain[0].NotAfter, now)
		}
		if id := verifySVID(t, out+".pem", filepath.Join(root, "bundle.pem"), now); id.String() != ordersID {
			t.Fatalf("ID %s", id)
		}
	})

	t.Run("VerifyFile applies the peers' rules and clock", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "orders")
		must(t, mesh.IssueLeaf(root, mustID(t, ordersID), time.Hour, out, clock))
		bundle := filepath.Join(root, "bundle.pem")
		if id, chain, err := mesh.VerifyFile(out+".pem", bundle, now); err != nil || id.String() != ordersID || len(chain) != 1 {
			t.Fatalf("VerifyFile = %v, %d certs, %v", id, len(chain), err)
		}
		for _, tc := range []struct {
			name, cert, bundle string
			at                 time.Time
			errHas             string
		}{
			{"after expiry", out + ".pem", bundle, now.Add(2 * time.Hour), "expired"},
			{"a key instead of a certificate", out + "-key.pem", bundle, now, "unexpected PEM block"},
			{"a missing bundle", out + ".pem", filepath.Join(root, "nope.pem"), now, "no such file"},
			{"the root itself (no SPIFFE path, a CA)", filepath.Join(root, "root.pem"), bundle, now, "CA flag"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, _, err := mesh.VerifyFile(tc.cert, tc.bundle, tc.at); err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err = %v, want %q", err, tc.errHas)
				}
			})
		}
	})

	inter := filepath.Join(t.TempDir(), "int")
	if err := mesh.IssueIntermediate(root, inter, clock, mesh.WithTTL(30*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	t.Run("an intermediate and its leaf: chain in the file", func(t *testing.T) {
		if got := mode(t, filepath.Join(inter, "intermediate-key.pem")); got != 0o600 {
			t.Fatalf("intermediate key mode %o", got)
		}
		out := filepath.Join(t.TempDir(), "payments")
		if err := mesh.IssueLeaf(inter, mustID(t, paymentsID), 2*time.Hour, out, clock); err != nil {
			t.Fatal(err)
		}
		chain := readPEMCerts(t, out+".pem")
		if len(chain) != 2 || !chain[1].IsCA {
			t.Fatalf("want leaf + intermediate, got %d certificates", len(chain))
		}
		if !chain[0].NotAfter.Equal(now.Add(2 * time.Hour)) {
			t.Fatalf("NotAfter %v", chain[0].NotAfter)
		}
		// Peers only hold the root: the intermediate travels in the file.
		verifySVID(t, out+".pem", filepath.Join(root, "bundle.pem"), now)
	})
	t.Run("an intermediate of the intermediate", func(t *testing.T) {
		inter2 := filepath.Join(t.TempDir(), "int2")
		if err := mesh.IssueIntermediate(inter, inter2, clock, mesh.WithTTL(24*time.Hour)); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "x")
		if err := mesh.IssueLeaf(inter2, mustID(t, gatewayID), time.Hour, out, clock); err != nil {
			t.Fatal(err)
		}
		if n := len(readPEMCerts(t, out+".pem")); n != 3 {
			t.Fatalf("%d certificates, want leaf + 2 intermediates", n)
		}
		verifySVID(t, out+".pem", filepath.Join(root, "bundle.pem"), now)
	})
	t.Run("reissuing replaces the files", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "orders")
		for range 2 {
			if err := mesh.IssueLeaf(root, mustID(t, ordersID), time.Hour, out, clock); err != nil {
				t.Fatal(err)
			}
		}
		entries, _ := os.ReadDir(filepath.Dir(out))
		if len(entries) != 2 {
			t.Fatalf("%d files left behind, want 2", len(entries))
		}
	})

	bad := []struct {
		name   string
		run    func(dir string) error
		errHas string
	}{
		{"init: invalid trust domain", func(d string) error { return mesh.InitCA(d, "Example.org") }, "trust domain"},
		{"init: empty trust domain", func(d string) error { return mesh.InitCA(d, "") }, "trust domain"},
		{"init: over an existing CA", func(string) error { return mesh.InitCA(root, "example.org") }, "refusing to overwrite"},
		{"init: negative ttl", func(d string) error { return mesh.InitCA(d, "example.org", mesh.WithTTL(-time.Hour)) }, "negative"},
		{"issue: ID of another trust domain", func(d string) error {
			return mesh.IssueLeaf(root, mustID(t, "spiffe://other.org/ns/a/sa/b"), 0, filepath.Join(d, "x"))
		}, "outside the CA's trust domain"},
		{"issue: ttl outliving the intermediate", func(d string) error {
			return mesh.IssueLeaf(inter, mustID(t, ordersID), 31*24*time.Hour, filepath.Join(d, "x"), clock)
		}, "outlive"},
		{"issue: negative ttl", func(d string) error {
			return mesh.IssueLeaf(root, mustID(t, ordersID), -time.Hour, filepath.Join(d, "x"), clock)
		}, "negative"},
		{"issue: CA expired", func(d string) error {
			return mesh.IssueLeaf(inter, mustID(t, ordersID), time.Hour, filepath.Join(d, "x"), mesh.WithClock(func() time.Time { return now.Add(31 * 24 * time.Hour) }))
		}, "expired"},
		{"issue: empty ID", func(d string) error { return mesh.IssueLeaf(root, mesh.ID{}, 0, filepath.Join(d, "x")) }, "empty"},
		{"issue: empty output", func(string) error { return mesh.IssueLeaf(root, mustID(t, ordersID), 0, "") }, "output prefix"},
		{"issue: no CA in the directory", func(d string) error { return mesh.IssueLeaf(d, mustID(t, ordersID), 0, filepath.Join(d, "x")) }, "root.pem"},
		{"intermediate: into the parent's directory", func(string) error { return mesh.IssueIntermediate(root, root) }, "own directory"},
		{"intermediate: over an existing one", func(string) error { return mesh.IssueIntermediate(root, inter) }, "refusing to overwrite"},
		{"intermediate: outliving the root", func(d string) error {
			return mesh.IssueIntermediate(root, filepath.Join(d, "i"), clock, mesh.WithTTL(20*365*24*time.Hour))
		}, "outlive"},
		{"load: key of another CA", func(d string) error {
			mixed := filepath.Join(d, "mixed")
			if err := mesh.InitCA(mixed, "example.org"); err != nil {
				return err
			}
			key, _ := os.ReadFile(filepath.Join(inter, "intermediate-key.pem"))
			writeFile(t, filepath.Join(mixed, "root-key.pem"), key)
			_, err := mesh.LoadCA(mixed)
			return err
		}, "does not belong"},
		{"load: bundle of another CA", func(d string) error {
			other := filepath.Join(d, "other")
			if err := mesh.InitCA(other, "example.org"); err != nil {
				return err
			}
			b, _ := os.ReadFile(filepath.Join(other, "bundle.pem"))
			cp := filepath.Join(d, "copy")
			if err := mesh.IssueIntermediate(root, cp, clock); err != nil {
				return err
			}
			writeFile(t, filepath.Join(cp, "bundle.pem"), b)
			_, err := mesh.LoadCA(cp)
			return err
		}, "does not chain"},
		{"load: a leaf posing as a CA", func(d string) error {
			fake := filepath.Join(d, "fake")
			if err := os.Mkdir(fake, 0o700); err != nil {
				return err
			}
			if err := mesh.IssueLeaf(root, mustID(t, ordersID), time.Hour, filepath.Join(fake, "intermediate"), clock); err != nil {
				return err
			}
			b, _ := os.ReadFile(filepath.Join(root, "bundle.pem"))
			writeFile(t, filepath.Join(fake, "bundle.pem"), b)
			return mesh.IssueLeaf(fake, mustID(t, ordersID), time.Minute, filepath.Join(d, "y"), clock)
		}, "not a CA"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run(t.TempDir())
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("err = %v, want %q", err, tc.errHas)
			}
		})
	}
}
