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
	w := newWatchedLeaf(t, t.TempDir())
	caDir, id, prefix, logs, s := w.caDir, w.id, w.prefix, w.logs, w.src
	fileSerial := func() string { return certSerial(t, prefix+".pem") }
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
	dir := t.TempDir()
	w := newWatchedLeaf(t, dir)
	caDir, id, prefix, logs, s := w.caDir, w.id, w.prefix, w.logs, w.src
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
		want := certSerial(t, next+".pem")
		if err := mesh.WriteFileAtomic(prefix+"-key.pem", key, 0o600); err != nil {
			t.Fatal(err)
		}
		time.Sleep(gap)
		if err := mesh.WriteFileAtomic(prefix+".pem", cert, 0o644); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the slow rotation to be picked up", func() bool { return serial(s) == want })
		if out := logs.String(); strings.Contains(out, "refused") {
			t.Fatalf("rotation %d (certificate %v after its key) logged a refused reload:\n%s", i, gap, out)
		}
	}
}

// watchedLeaf is a CA, a leaf issued by it into dir, and a Source watching
// the leaf's files, closed with the test.
type watchedLeaf struct {
	caDir, prefix string
	id            mesh.ID
	logs          *logBuffer
	src           *mesh.Source
}

func newWatchedLeaf(t *testing.T, dir string) watchedLeaf {
	t.Helper()
	w := watchedLeaf{caDir: filepath.Join(t.TempDir(), "ca"), prefix: filepath.Join(dir, "orders"), logs: &logBuffer{}}
	if err := mesh.InitCA(w.caDir, "example.org"); err != nil {
		t.Fatal(err)
	}
	id, err := mesh.ParseID(ordersID)
	if err != nil {
		t.Fatal(err)
	}
	w.id = id
	if err := mesh.IssueLeaf(w.caDir, id, time.Hour, w.prefix); err != nil {
		t.Fatal(err)
	}
	w.src, err = mesh.NewSource(context.Background(), w.prefix+".pem", w.prefix+"-key.pem", filepath.Join(w.caDir, mesh.BundleFile), mesh.SourceOptions{Logger: w.logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.src.Close() })
	return w
}

// certSerial is the serial number of the certificate in the PEM file path.
func certSerial(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
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
