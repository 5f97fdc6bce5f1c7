package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// Neither a refused routes file nor a check of one (`causeway validate`,
// Check) may leave anything on disk: not the access log file it names,
// not the ACME cache directory (nor the parents it would create), whether
// the file is refused elsewhere or accepted by the check. Before: the
// ACME cache directory was created by every load, refused or checked, and
// a check created the access log file.
func TestRefusedOrCheckedFileLeavesNothingOnDisk(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := selfSigned(t, dir, "api.example.com")
	good := listenHeader + "upstreams:\n  up: {endpoints: [\"127.0.0.1:9\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: up}\n"
	// file names its own access log and ACME cache below base, which does
	// not exist yet; broken adds an error the features find after TLS
	// and the access log were prepared.
	file := func(base string, broken bool) string {
		f := fmt.Sprintf("version: 1\nlisten: {https: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\naccess_log: {output: %q}\n", filepath.Join(base, "log", "access.log")) +
			fmt.Sprintf("tls:\n  certificates: [{cert_file: %q, key_file: %q}]\n", cert, key) +
			fmt.Sprintf("  acme: {email: ops@example.com, hosts: [acme.example.com], cache_dir: %q, directory_url: \"https://127.0.0.1:9/dir\"}\n", filepath.Join(base, "var", "lib", "acme")) +
			"upstreams:\n  up: {endpoints: [\"127.0.0.1:9\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: up}\n"
		if broken {
			f += "plugins:\n  broken: {use: no-such-plugin}\n"
		}
		return f
	}
	// The log's directory must exist for the file to be opened: what
	// must not be left is the file itself.
	mkLogDir := func(t *testing.T, base string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(base, "log"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	leftBehind := func(t *testing.T, base string) {
		t.Helper()
		for _, p := range []string{filepath.Join(base, "log", "access.log"), filepath.Join(base, "var")} {
			if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s was left on disk (stat: %v)", p, err)
			}
		}
	}
	tests := []struct {
		name string
		run  func(t *testing.T, base string) error
		ok   bool
	}{
		{"check of a good file", func(t *testing.T, base string) error {
			path := filepath.Join(t.TempDir(), "c.yaml")
			writeFile(t, path, file(base, false))
			return Validate(context.Background(), path)
		}, true},
		{"check of a refused file", func(t *testing.T, base string) error {
			path := filepath.Join(t.TempDir(), "c.yaml")
			writeFile(t, path, file(base, true))
			return Validate(context.Background(), path)
		}, false},
		{"reload of a refused file", func(t *testing.T, base string) error {
			path := filepath.Join(t.TempDir(), "c.yaml")
			writeFile(t, path, good)
			e, err := NewEdge(context.Background(), EdgeOptions{ConfigPath: path, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			writeFile(t, path, file(base, true))
			return e.Reload(context.Background())
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			mkLogDir(t, base)
			if err := tt.run(t, base); (err == nil) != tt.ok {
				t.Fatalf("error %v, want accepted %v", err, tt.ok)
			}
			leftBehind(t, base)
		})
	}
}
