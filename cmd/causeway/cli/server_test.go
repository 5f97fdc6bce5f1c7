package cli

import (
	"bytes"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// The server commands refuse bad flags with exit code 2 and a message, and
// a routes or sidecar file that does not load with exit code 1 and its
// located errors.
func TestServerCommandsRefuseBadInput(t *testing.T) {
	bad := t.TempDir() + "/bad.yaml"
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"edge", "-log-level", "loud"}, 2, `causeway edge: invalid -log-level "loud"`},
		{[]string{"sidecar", "-log-level", "loud"}, 2, `causeway sidecar: invalid -log-level "loud"`},
		{[]string{"edge", "-log-format", "xml"}, 2, `causeway edge: invalid -log-format "xml": json or text`},
		{[]string{"sidecar", "-log-format", "logfmt"}, 2, `causeway sidecar: invalid -log-format "logfmt": json or text`},
		{[]string{"edge", "-no-such-flag"}, 2, "flag provided but not defined: -no-such-flag"},
		// A file without -config was ignored, and the default file served.
		{[]string{"edge", "routes.yaml"}, 2, `causeway edge: unexpected argument "routes.yaml" (the file is given with -config)`},
		{[]string{"sidecar", "-log-level", "debug", "sidecar.yaml"}, 2, `causeway sidecar: unexpected argument "sidecar.yaml"`},
		{[]string{"edge", "-config", bad}, 1, "reading routes file"},
		{[]string{"sidecar", "-config", bad}, 1, "no such file"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("stderr %q lacks %q", stderr.String(), tt.want)
			}
		})
	}
}

// The GC target: -gogc wins, then the GOGC environment variable, then the
// command's default.
func TestServerCommandsGCTarget(t *testing.T) {
	t.Cleanup(func() { debug.SetGCPercent(100) })
	for _, tt := range []struct {
		name, env string
		args      []string
		def, want int
	}{
		{"edge default", "", nil, edgeGOGC, edgeGOGC},
		{"sidecar default", "", nil, sidecarGOGC, sidecarGOGC},
		{"environment kept", "150", nil, edgeGOGC, 123}, // the runtime read GOGC at start; left alone
		{"flag wins", "150", []string{"-gogc", "250"}, edgeGOGC, 250},
		{"flag off", "", []string{"-gogc", "-1"}, edgeGOGC, -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GOGC", tt.env)
			if tt.env == "" {
				os.Unsetenv("GOGC")
			}
			debug.SetGCPercent(123)
			fs, o := serverFlagSet("edge", "x.yaml", "", tt.def)
			if _, _, ok := parseServerFlags(fs, o, tt.args, io.Discard); !ok {
				t.Fatal("flags refused")
			}
			if got := debug.SetGCPercent(100); got != tt.want {
				t.Fatalf("GC percent %d, want %d", got, tt.want)
			}
		})
	}
	var stderr bytes.Buffer
	fs, o := edgeFlags()
	if _, _, ok := parseServerFlags(fs, o, []string{"-gogc", "lots"}, &stderr); ok || !strings.Contains(stderr.String(), "-gogc") {
		t.Fatalf("-gogc lots accepted (stderr %q)", stderr.String())
	}
}

// A container's memory limit becomes the GC's soft limit (90%), unless
// GOMEMLIMIT is set.
func TestServerCommandsMemoryLimit(t *testing.T) {
	root := t.TempDir()
	for p, c := range map[string]string{"proc/self/cgroup": "0::/pod\n", "sys/fs/cgroup/pod/memory.max": "1073741824\n"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	prevRoot := cgroupRoot
	cgroupRoot = root
	t.Cleanup(func() { cgroupRoot = prevRoot; debug.SetMemoryLimit(math.MaxInt64) })
	for _, tc := range []struct {
		env  string
		want int64
	}{{"", 1073741824 / 10 * 9}, {"200MiB", 123 << 20}} {
		t.Setenv("GOMEMLIMIT", tc.env)
		if tc.env == "" {
			os.Unsetenv("GOMEMLIMIT")
		}
		debug.SetMemoryLimit(123 << 20)
		fs, o := sidecarFlags()
		if _, _, ok := parseServerFlags(fs, o, nil, io.Discard); !ok {
			t.Fatal("flags refused")
		}
		if got := debug.SetMemoryLimit(-1); got != tc.want {
			t.Fatalf("GOMEMLIMIT=%q: limit %d, want %d (left alone when the environment sets it)", tc.env, got, tc.want)
		}
	}

	// A cgroup file that does not parse sets no limit and says why.
	if err := os.WriteFile(filepath.Join(root, "sys/fs/cgroup/pod/memory.max"), []byte("lots\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Unsetenv("GOMEMLIMIT")
	debug.SetMemoryLimit(math.MaxInt64)
	var stderr bytes.Buffer
	fs, o := edgeFlags()
	if _, _, ok := parseServerFlags(fs, o, nil, &stderr); !ok {
		t.Fatal("flags refused")
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("limit %d from an unreadable cgroup, want none", got)
	}
	if !strings.Contains(stderr.String(), "no GC memory limit") || !strings.Contains(stderr.String(), "not a number of bytes") {
		t.Fatalf("no warning about the unreadable cgroup limit: %q", stderr.String())
	}
}

// -log-format json|text sets the server's log format; both commands share
// the flag.
func TestServerLogFormat(t *testing.T) {
	for _, tt := range []struct {
		format string
		want   string
	}{
		{"json", `{"time":`},
		{"text", `time=`},
	} {
		for _, cmd := range []string{"edge", "sidecar"} {
			t.Run(cmd+" "+tt.format, func(t *testing.T) {
				var stderr bytes.Buffer
				fs, o := serverFlagSet(cmd, "x.yaml", "", 100)
				sf, _, ok := parseServerFlags(fs, o, []string{"-log-format", tt.format}, &stderr)
				if !ok {
					t.Fatalf("refused: %s", stderr.String())
				}
				sf.log.Info("hello", "k", "v")
				lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
				last := lines[len(lines)-1]
				if !strings.HasPrefix(last, tt.want) || !strings.Contains(last, "hello") {
					t.Fatalf("line %q is not %s", last, tt.format)
				}
			})
		}
	}
}
