package cli

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func runCACmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = runCA(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func pemCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return certs
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
}

func fileMode(t *testing.T, p string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestCACommands(t *testing.T) {
	tmp := t.TempDir()
	ca, inter := filepath.Join(tmp, "ca"), filepath.Join(tmp, "ca", "int")
	if code, _, stderr := runCACmd("init", "-trust-domain", "example.org", "-dir", ca); code != 0 {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runCACmd("intermediate", "-dir", ca, "-out", inter, "-ttl", "720h"); code != 0 {
		t.Fatalf("intermediate: exit %d: %s", code, stderr)
	}

	otherBundle := filepath.Join(tmp, "other", "bundle.pem")
	if code, _, stderr := runCACmd("init", "-trust-domain", "example.org", "-dir", filepath.Join(tmp, "other")); code != 0 {
		t.Fatalf("init other: exit %d: %s", code, stderr)
	}

	t.Run("init writes the root, its key 0600 and the bundle", func(t *testing.T) {
		for name, want := range map[string]os.FileMode{"root.pem": 0o644, "root-key.pem": 0o600, "bundle.pem": 0o644} {
			if got := fileMode(t, filepath.Join(ca, name)); got != want {
				t.Errorf("%s: mode %o, want %o", name, got, want)
			}
		}
		root := pemCerts(t, filepath.Join(ca, "root.pem"))[0]
		if !root.IsCA || root.URIs[0].String() != "spiffe://example.org" {
			t.Fatalf("root: CA %v, URIs %v", root.IsCA, root.URIs)
		}
	})
	t.Run("issue from the root: default ttl 24h", func(t *testing.T) {
		out := filepath.Join(tmp, "mesh", "orders")
		before := time.Now().Truncate(time.Second)
		code, stdout, stderr := runCACmd("issue", "-dir", ca, "-id", "spiffe://example.org/ns/shop/sa/orders", "-out", out)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if !strings.Contains(stdout, out+".pem") {
			t.Fatalf("stdout %q does not name the file", stdout)
		}
		if got := fileMode(t, out+"-key.pem"); got != 0o600 {
			t.Fatalf("key mode %o", got)
		}
		after := time.Now()
		leaf := pemCerts(t, out+".pem")[0]
		if leaf.NotAfter.Before(before.Add(24*time.Hour)) || leaf.NotAfter.After(after.Add(24*time.Hour)) {
			t.Fatalf("NotAfter %v is not 24h after the issue (between %v and %v)", leaf.NotAfter, before, after)
		}
		if leaf.IsCA || leaf.URIs[0].String() != "spiffe://example.org/ns/shop/sa/orders" {
			t.Fatalf("leaf: CA %v, URIs %v", leaf.IsCA, leaf.URIs)
		}
	})
	t.Run("issue from the intermediate: chain in the leaf file, -ttl honoured", func(t *testing.T) {
		out := filepath.Join(tmp, "mesh", "payments")
		before := time.Now().Truncate(time.Second)
		if code, _, stderr := runCACmd("issue", "-dir", inter, "-id", "spiffe://example.org/ns/shop/sa/payments", "-out", out, "-ttl", "1h"); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		after := time.Now()
		chain := pemCerts(t, out+".pem")
		if len(chain) != 2 || !chain[1].IsCA || chain[1].Subject.CommonName != "example.org intermediate CA" {
			t.Fatalf("want leaf + intermediate, got %d certificates", len(chain))
		}
		if chain[0].NotAfter.Before(before.Add(time.Hour)) || chain[0].NotAfter.After(after.Add(time.Hour)) {
			t.Fatalf("NotAfter %v is not 1h after the issue", chain[0].NotAfter)
		}
		roots := x509.NewCertPool()
		roots.AddCert(pemCerts(t, filepath.Join(ca, "bundle.pem"))[0])
		inters := x509.NewCertPool()
		inters.AddCert(chain[1])
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("the leaf does not chain to the root: %v", err)
		}
	})

	t.Run("verify accepts issued files and names their ID", func(t *testing.T) {
		code, stdout, stderr := runCACmd("verify", "-bundle", filepath.Join(ca, "bundle.pem"), filepath.Join(tmp, "mesh", "orders.pem"), filepath.Join(tmp, "mesh", "payments.pem"))
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{"spiffe://example.org/ns/shop/sa/orders, valid until", "spiffe://example.org/ns/shop/sa/payments", "1 intermediate(s)"} {
			if !strings.Contains(stdout, want) {
				t.Fatalf("stdout %q lacks %q", stdout, want)
			}
		}
	})

	// A glob names the keys beside the certificates: they are skipped and
	// said to be keys, and the certificates are still verified.
	t.Run("verify with a glob skips the keys", func(t *testing.T) {
		files, _ := filepath.Glob(filepath.Join(tmp, "mesh", "*.pem"))
		code, stdout, stderr := runCACmd(append([]string{"verify", "-bundle", filepath.Join(ca, "bundle.pem")}, files...)...)
		if code != 0 {
			t.Fatalf("exit %d: %s\n%s", code, stderr, stdout)
		}
		for _, want := range []string{"orders-key.pem: skipped, a private key (not a certificate)", "spiffe://example.org/ns/shop/sa/orders, valid until", "spiffe://example.org/ns/shop/sa/payments, valid until"} {
			if !strings.Contains(stdout, want) {
				t.Fatalf("stdout %q lacks %q", stdout, want)
			}
		}
	})

	bad := []struct {
		name   string
		args   []string
		code   int
		errHas string
	}{
		{"no subcommand", nil, 2, "usage"},
		{"unknown subcommand", []string{"revoke"}, 2, "unknown subcommand"},
		{"init without -trust-domain", []string{"init", "-dir", filepath.Join(tmp, "x")}, 2, "-trust-domain is required"},
		{"init without -dir", []string{"init", "-trust-domain", "example.org"}, 2, "-dir is required"},
		{"init with an invalid trust domain", []string{"init", "-trust-domain", "Example Org", "-dir", filepath.Join(tmp, "y")}, 1, "trust domain"},
		{"init over an existing CA", []string{"init", "-trust-domain", "example.org", "-dir", ca}, 1, "refusing to overwrite"},
		{"init with a stray argument", []string{"init", "-trust-domain", "example.org", "-dir", filepath.Join(tmp, "z"), "extra"}, 2, "unexpected argument"},
		{"an unknown flag", []string{"issue", "-color"}, 2, "not defined"},
		{"issue without -id", []string{"issue", "-dir", ca, "-out", filepath.Join(tmp, "o")}, 2, "-id is required"},
		{"issue with a non-SPIFFE id", []string{"issue", "-dir", ca, "-id", "https://example.org/x", "-out", filepath.Join(tmp, "o")}, 2, "scheme"},
		{"issue for another trust domain", []string{"issue", "-dir", ca, "-id", "spiffe://other.org/ns/a/sa/b", "-out", filepath.Join(tmp, "o")}, 1, "outside the CA's trust domain"},
		{"issue with a zero ttl", []string{"issue", "-dir", ca, "-id", "spiffe://example.org/a", "-out", filepath.Join(tmp, "o"), "-ttl", "0s"}, 2, "-ttl must be positive"},
		{"issue with a malformed ttl", []string{"issue", "-dir", ca, "-id", "spiffe://example.org/a", "-out", filepath.Join(tmp, "o"), "-ttl", "soon"}, 2, "invalid value"},
		{"issue outliving the intermediate", []string{"issue", "-dir", inter, "-id", "spiffe://example.org/a", "-out", filepath.Join(tmp, "o"), "-ttl", "800h"}, 1, "outlive"},
		{"issue from a directory without a CA", []string{"issue", "-dir", tmp, "-id", "spiffe://example.org/a", "-out", filepath.Join(tmp, "o")}, 1, "root.pem"},
		{"verify without -bundle", []string{"verify", filepath.Join(tmp, "mesh", "orders.pem")}, 2, "usage"},
		{"verify without files", []string{"verify", "-bundle", filepath.Join(ca, "bundle.pem")}, 2, "usage"},
		{"verify only a key file", []string{"verify", "-bundle", filepath.Join(ca, "bundle.pem"), filepath.Join(tmp, "mesh", "orders-key.pem")}, 1, "no certificate among the files given"},
		{"verify against another CA's bundle", []string{"verify", "-bundle", otherBundle, filepath.Join(tmp, "mesh", "orders.pem")}, 1, "unknown authority"},
		{"intermediate without -out", []string{"intermediate", "-dir", ca}, 2, "-out is required"},
		{"intermediate over an existing one", []string{"intermediate", "-dir", ca, "-out", inter}, 1, "refusing to overwrite"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCACmd(tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.errHas) {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", code, stderr, tc.code, tc.errHas)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(tmp, "o.pem")); err == nil {
		t.Fatal("a refused issue left a certificate behind")
	}
}
