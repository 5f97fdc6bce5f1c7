package mesh_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh"
)

// `causeway ca issue` over the files a running workload watches: every
// rotation is picked up, and none makes the workload log a refused reload
// (a new key beside the old certificate, seen between the two renames).
func TestCAIssueRotationIsQuiet(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	if err := mesh.InitCA(caDir, "example.org"); err != nil {
		t.Fatal(err)
	}
	id, err := mesh.ParseID(ordersID)
	if err != nil {
		t.Fatal(err)
	}
	prefix := filepath.Join(t.TempDir(), "orders")
	if err := mesh.IssueLeaf(caDir, id, time.Hour, prefix); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	s, err := mesh.NewSource(context.Background(), prefix+".pem", prefix+"-key.pem", filepath.Join(caDir, mesh.BundleFile), mesh.SourceOptions{Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fileSerial := func() string {
		data, err := os.ReadFile(prefix + ".pem")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(data)
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c.SerialNumber.String()
	}
	const rotations = 25
	for i := range rotations {
		if err := mesh.IssueLeaf(caDir, id, time.Hour, prefix); err != nil {
			t.Fatal(err)
		}
		want := fileSerial()
		waitFor(t, "rotation to be picked up", func() bool { return serial(s) == want })
		if out := logs.String(); strings.Contains(out, "refused") || strings.Contains(out, "does not match") {
			t.Fatalf("rotation %d logged a refused reload:\n%s", i, out)
		}
	}
	if n := strings.Count(logs.String(), "mesh: identity loaded"); n != rotations+1 {
		t.Fatalf("%d identity loads logged, want %d (one per rotation):\n%s", n, rotations+1, logs.String())
	}
}
