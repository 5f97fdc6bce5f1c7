package mesh_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := mesh.WriteFileAtomic(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestNewSourceRefusesBadFiles(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	other := meshtest.NewCA(t, "example.org")
	good := ca.Issue(ordersID)
	tests := []struct {
		name    string
		cert    *meshtest.Cert
		certPEM []byte // replaces cert.CertPEM when set
		keyPEM  []byte // replaces cert.KeyPEM when set
		bundle  []byte
		opts    mesh.SourceOptions
		errHas  string
	}{
		{name: "certificate is not PEM", cert: good, certPEM: []byte("hello"), bundle: ca.BundlePEM(), errHas: "no PEM certificate"},
		{name: "key in the certificate file", cert: good, certPEM: append(append([]byte{}, good.CertPEM...), good.KeyPEM...), bundle: ca.BundlePEM(), errHas: "unexpected PEM block"},
		{name: "key of another certificate", cert: good, keyPEM: ca.Issue(ordersID).KeyPEM, bundle: ca.BundlePEM(), errHas: "does not match"},
		{name: "bundle is empty", cert: good, bundle: []byte("\n"), errHas: "no PEM certificate"},
		{name: "certificate from a CA outside the bundle", cert: good, bundle: other.BundlePEM(), errHas: "does not verify"},
		{name: "expired certificate", cert: ca.Issue(ordersID, meshtest.Expired()), bundle: ca.BundlePEM(), errHas: "expired"},
		{name: "CA-flagged leaf", cert: ca.Issue(ordersID, meshtest.AsCA()), bundle: ca.BundlePEM(), errHas: "CA flag"},
		{name: "two URI SANs", cert: ca.Issue(ordersID, meshtest.URIs(ordersID, paymentsID)), bundle: ca.BundlePEM(), errHas: "more than one URI"},
		{name: "outside the configured trust domain", cert: good, bundle: ca.BundlePEM(), opts: mesh.SourceOptions{TrustDomain: "prod.example.org"}, errHas: "outside the trust domain"},
		{name: "invalid configured trust domain", cert: good, bundle: ca.BundlePEM(), opts: mesh.SourceOptions{TrustDomain: "Not A Domain"}, errHas: "trust domain"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cf, kf, bf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"), filepath.Join(dir, "b.pem")
			certPEM, keyPEM := tc.cert.CertPEM, tc.cert.KeyPEM
			if tc.certPEM != nil {
				certPEM = tc.certPEM
			}
			if tc.keyPEM != nil {
				keyPEM = tc.keyPEM
			}
			writeFile(t, cf, certPEM)
			writeFile(t, kf, keyPEM)
			writeFile(t, bf, tc.bundle)
			s, err := mesh.NewSource(context.Background(), cf, kf, bf, tc.opts)
			if err == nil {
				s.Close()
				t.Fatal("NewSource accepted the files")
			}
			if !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("err = %v, want %q", err, tc.errHas)
			}
		})
	}
	t.Run("file names not set", func(t *testing.T) {
		if _, err := mesh.NewSource(context.Background(), "", "", "", mesh.SourceOptions{}); err == nil || !strings.Contains(err.Error(), "file is not set") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		dir := t.TempDir()
		_, err := mesh.NewSource(context.Background(), filepath.Join(dir, "nope.pem"), filepath.Join(dir, "k.pem"), filepath.Join(dir, "b.pem"), mesh.SourceOptions{})
		if err == nil || !strings.Contains(err.Error(), "reading certificate") {
			t.Fatalf("err = %v", err)
		}
	})
}

// waitFor polls cond until it holds. The deadline only guards against a
// hung test; it is not a performance threshold.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func serial(s *mesh.Source) string {
	c, err := s.Certificate()
	if err != nil {
		panic(err)
	}
	return c.Leaf.SerialNumber.String()
}

func TestSourceFollowsFiles(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	logs := &logBuffer{}
	var expiries atomic.Int32
	dir := t.TempDir()
	f := ca.IssueFiles(dir, ordersID)
	s, err := mesh.NewSource(context.Background(), f.Cert, f.Key, f.Bundle, mesh.SourceOptions{
		Logger: logs.logger(),
		Expiry: func(id string, _ time.Time) {
			if id == ordersID {
				expiries.Add(1)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.ID().String() != ordersID {
		t.Fatalf("ID = %s", s.ID())
	}
	if expiries.Load() != 1 {
		t.Fatalf("Expiry called %d times at load", expiries.Load())
	}

	t.Run("an atomic rename is picked up", func(t *testing.T) {
		next := ca.Issue(ordersID)
		next.WriteFiles(t, dir, "svid")
		waitFor(t, "the new certificate", func() bool { return serial(s) == next.Leaf.SerialNumber.String() })
		// The new certificate is published, then Expiry is called: a
		// reader can see the one before the other (a loaded CI run did).
		waitFor(t, "Expiry called on reload", func() bool { return expiries.Load() >= 2 })
	})
	t.Run("a broken certificate file keeps the current identity", func(t *testing.T) {
		before := serial(s)
		if err := os.WriteFile(f.Cert, []byte("-----BEGIN CERTIFICATE-----\ngarbage"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.Reload(); err == nil {
			t.Fatal("Reload accepted a broken certificate")
		}
		waitFor(t, "the refusal to be logged", func() bool { return strings.Contains(logs.String(), "reload refused") })
		if serial(s) != before || s.ID().String() != ordersID {
			t.Fatal("the identity changed after a failed reload")
		}
	})
	t.Run("an in-place rewrite is picked up", func(t *testing.T) {
		next := ca.Issue(ordersID)
		if err := os.WriteFile(f.Key, next.KeyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.Cert, next.CertPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the rewritten certificate", func() bool { return serial(s) == next.Leaf.SerialNumber.String() })
	})
	t.Run("a new bundle is picked up", func(t *testing.T) {
		newCA := meshtest.NewCA(t, "example.org")
		both := append(append([]byte{}, ca.BundlePEM()...), newCA.BundlePEM()...)
		writeFile(t, f.Bundle, both)
		waitFor(t, "two roots in the bundle", func() bool {
			b, err := s.GetX509BundleForTrustDomain(s.ID().TrustDomain())
			return err == nil && len(b.X509Authorities()) == 2
		})
		if _, err := s.Verify([]*x509.Certificate{newCA.Issue(gatewayID).Leaf}); err != nil {
			t.Fatalf("a peer of the new CA is refused after the bundle change: %v", err)
		}
	})
	t.Run("a broken bundle file keeps the current bundle serving", func(t *testing.T) {
		refusals := strings.Count(logs.String(), "reload refused")
		writeFile(t, f.Bundle, []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"))
		waitFor(t, "the refusal to be logged", func() bool { return strings.Count(logs.String(), "reload refused") > refusals })
		if err := s.Reload(); err == nil {
			t.Fatal("Reload accepted a broken bundle")
		}
		b, err := s.GetX509BundleForTrustDomain(s.ID().TrustDomain())
		if err != nil || len(b.X509Authorities()) != 2 {
			t.Fatalf("the bundle in use changed after a refused one: %v", err)
		}
		if _, err := s.Verify([]*x509.Certificate{ca.Issue(gatewayID).Leaf}); err != nil {
			t.Fatalf("a peer is refused after a broken bundle: %v", err)
		}
	})
	t.Run("a secret volume ..data swap is picked up", func(t *testing.T) {
		// Kubernetes mounts a secret as symlinks into a ..data symlink that
		// is swapped by rename; the files themselves never change.
		kdir := t.TempDir()
		v1 := filepath.Join(kdir, "..v1")
		must(t, os.Mkdir(v1, 0o755))
		ca.IssueFiles(v1, ordersID)
		must(t, os.Symlink("..v1", filepath.Join(kdir, "..data")))
		for _, n := range []string{"svid.pem", "svid-key.pem", "bundle.pem"} {
			must(t, os.Symlink(filepath.Join("..data", n), filepath.Join(kdir, n)))
		}
		ks, err := mesh.NewSource(context.Background(), filepath.Join(kdir, "svid.pem"), filepath.Join(kdir, "svid-key.pem"), filepath.Join(kdir, "bundle.pem"), mesh.SourceOptions{Logger: discardSlog()})
		if err != nil {
			t.Fatal(err)
		}
		defer ks.Close()
		v2 := filepath.Join(kdir, "..v2")
		must(t, os.Mkdir(v2, 0o755))
		ca.IssueFiles(v2, paymentsID)
		must(t, os.Symlink("..v2", filepath.Join(kdir, "..data_tmp")))
		must(t, os.Rename(filepath.Join(kdir, "..data_tmp"), filepath.Join(kdir, "..data")))
		waitFor(t, "the swapped identity", func() bool { return ks.ID().String() == paymentsID })
	})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestSourceWarnsBeforeExpiry(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	start := time.Now()
	f := ca.IssueFiles(t.TempDir(), ordersID, meshtest.Validity(start, start.Add(24*time.Hour)))
	clock := newClock(start.Add(time.Hour))
	logs := &logBuffer{}
	var gotNotAfter time.Time
	s, err := mesh.NewSource(context.Background(), f.Cert, f.Key, f.Bundle, mesh.SourceOptions{
		Logger: logs.logger(), Now: clock.Now,
		Expiry: func(_ string, na time.Time) { gotNotAfter = na },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !gotNotAfter.Equal(s.NotAfter()) || !s.NotAfter().Equal(start.Add(24*time.Hour).Truncate(time.Second)) {
		t.Fatalf("Expiry got %v, NotAfter %v", gotNotAfter, s.NotAfter())
	}
	steps := []struct {
		name     string
		at       time.Duration
		warnings int
		errors   int
	}{
		{"two thirds of the lifetime left: quiet", 8 * time.Hour, 0, 0},
		{"less than a third left: one warning", 17 * time.Hour, 1, 0},
		{"later handshakes do not repeat it", 20 * time.Hour, 1, 0},
		{"expired: one error", 25 * time.Hour, 1, 1},
		{"and only one", 26 * time.Hour, 1, 1},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.Set(start.Add(st.at))
			_, _ = s.Certificate() // what every handshake does
			_, _ = s.Certificate()
			out := logs.String()
			if w := strings.Count(out, "expires soon"); w != st.warnings {
				t.Fatalf("%d warnings, want %d:\n%s", w, st.warnings, out)
			}
			if e := strings.Count(out, "has expired"); e != st.errors {
				t.Fatalf("%d expiry errors, want %d:\n%s", e, st.errors, out)
			}
		})
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Fatal("a key reached the log")
	}
}

func TestSourceStopsWithContext(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	f := ca.IssueFiles(t.TempDir(), ordersID)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := mesh.NewSource(ctx, f.Cert, f.Key, f.Bundle, mesh.SourceOptions{Logger: discardSlog()})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	// Close after the context ended returns once the watcher is gone, and
	// may be called again; goleak in TestMain checks nothing is left.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.ID().String() != ordersID {
		t.Fatal("a closed source lost its identity")
	}
}
