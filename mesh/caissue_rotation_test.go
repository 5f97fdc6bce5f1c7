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

// A rotation whose certificate lands well after its key (a slow writer, a
// disk busy with fsyncs): the watcher keeps trying while the pair is
// mismatched and loads it once whole, without logging a refused reload.
// Each gap is longer than the two settles the watcher used to wait before
// it reported the pair as refused.
func TestSlowRotationNotRefused(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	if err := mesh.InitCA(caDir, "example.org"); err != nil {
		t.Fatal(err)
	}
	id, err := mesh.ParseID(ordersID)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	prefix := filepath.Join(dir, "orders")
	if err := mesh.IssueLeaf(caDir, id, time.Hour, prefix); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	s, err := mesh.NewSource(context.Background(), prefix+".pem", prefix+"-key.pem", filepath.Join(caDir, mesh.BundleFile), mesh.SourceOptions{Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i, gap := range []time.Duration{250 * time.Millisecond, 450 * time.Millisecond} {
		next := filepath.Join(dir, "next")
		if err := mesh.IssueLeaf(caDir, id, time.Hour, next); err != nil {
			t.Fatal(err)
		}
		key, err := os.ReadFile(next + "-key.pem")
		if err != nil {
			t.Fatal(err)
		}
		cert, err := os.ReadFile(next + ".pem")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(cert)
		leaf, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if err := mesh.WriteFileAtomic(prefix+"-key.pem", key, 0o600); err != nil {
			t.Fatal(err)
		}
		time.Sleep(gap)
		if err := mesh.WriteFileAtomic(prefix+".pem", cert, 0o644); err != nil {
			t.Fatal(err)
		}
		want := leaf.SerialNumber.String()
		waitFor(t, "the slow rotation to be picked up", func() bool { return serial(s) == want })
		if out := logs.String(); strings.Contains(out, "refused") {
			t.Fatalf("rotation %d (certificate %v after its key) logged a refused reload:\n%s", i, gap, out)
		}
	}
}
