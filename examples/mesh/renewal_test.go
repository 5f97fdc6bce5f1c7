package mesh_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh"

	"github.com/causewayhq/causeway/internal/testutil"
)

// unitValue is the value of key in a systemd unit file ("" when absent).
func unitValue(t *testing.T, path, key string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+"="); ok {
			return v
		}
	}
	return ""
}

// TestRenewalUnits checks the systemd renewal example the docs point to:
// systemd accepts both units; the timer runs at least three times per leaf
// lifetime; and the service's command, run for real against a CA, replaces
// the certificate that a running identity source then presents, without a
// restart.
func TestRenewalUnits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	root := t.TempDir()
	bin := testutil.BuildCauseway(t, root)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// The example's paths, moved under root.
	etc := filepath.Join(root, "etc", "causeway")
	if err := os.MkdirAll(filepath.Join(etc, "mesh"), 0o755); err != nil {
		t.Fatal(err)
	}
	rewrite := func(s string) string {
		return strings.NewReplacer("/usr/local/bin/causeway", bin, "/etc/causeway", etc).Replace(s)
	}
	units := t.TempDir()
	for _, name := range []string{"causeway-reissue.service", "causeway-reissue.timer"} {
		data, err := os.ReadFile(filepath.Join("renewal", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(units, name), []byte(rewrite(string(data))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// systemd's own check of both units: syntax, known keys, an executable
	// ExecStart. It warns (and still exits 0) on an unknown key, so any
	// output at all fails the test.
	out, err := exec.Command("systemd-analyze", "verify", filepath.Join(units, "causeway-reissue.timer"), filepath.Join(units, "causeway-reissue.service")).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The timer's interval against the certificate's lifetime.
	every, err := time.ParseDuration(unitValue(t, filepath.Join(units, "causeway-reissue.timer"), "OnUnitActiveSec"))
	if err != nil {
		t.Fatal(err)
	}
	exec1 := strings.Fields(unitValue(t, filepath.Join(units, "causeway-reissue.service"), "ExecStart"))
	ttl := 24 * time.Hour
	for i, a := range exec1 {
		if a == "-ttl" && i+1 < len(exec1) {
			if ttl, err = time.ParseDuration(exec1[i+1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if 3*every > ttl {
		t.Fatalf("the timer runs every %s for %s certificates: fewer than three runs per lifetime", every, ttl)
	}

	// A CA and the first certificate, as the docs' three commands make them.
	id := ""
	for i, a := range exec1 {
		if a == "-id" && i+1 < len(exec1) {
			id = exec1[i+1]
		}
	}
	td := strings.SplitN(strings.TrimPrefix(id, "spiffe://"), "/", 2)[0]
	run(bin, "ca", "init", "-trust-domain", td, "-dir", filepath.Join(etc, "ca"))
	run(exec1...)
	certFile, keyFile := filepath.Join(etc, "mesh", "svid.pem"), filepath.Join(etc, "mesh", "svid-key.pem")
	src, err := mesh.NewSource(context.Background(), certFile, keyFile, filepath.Join(etc, "ca", mesh.BundleFile), mesh.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	first, err := src.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if src.ID().String() != id {
		t.Fatalf("source holds %s, want %s", src.ID(), id)
	}
	// The timer fires: the service's command as written.
	run(exec1...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, err := src.Certificate()
		if err != nil {
			t.Fatal(err)
		}
		if string(cur.Certificate[0]) != string(first.Certificate[0]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the running source never picked up the reissued certificate")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
