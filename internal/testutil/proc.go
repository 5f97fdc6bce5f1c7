package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FreeAddr returns a loopback address that was free a moment ago, for a
// server that must be told its address before it starts (another process,
// or a configuration file written first).
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ProcStatusKB reads one kB field of /proc/PID/status ("VmRSS:",
// "RssAnon:", "RssFile:"); pid 0 is this process.
func ProcStatusKB(pid int, field string) (int64, error) {
	p := "/proc/self/status"
	if pid != 0 {
		p = fmt.Sprintf("/proc/%d/status", pid)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %q: %w", p, l, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s: no %s line", p, field)
}

// BuildCauseway builds the causeway command into dir and returns the
// binary's path, for tests that run the edge or sidecar as a process of
// its own (to measure its CPU or memory apart from the test's, or to kill
// it). The go command's build cache makes every build after the first
// quick.
func BuildCauseway(tb testing.TB, dir string) string {
	tb.Helper()
	bin := filepath.Join(dir, "causeway")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/causewayhq/causeway/cmd/causeway").CombinedOutput(); err != nil {
		tb.Fatalf("build causeway: %v\n%s", err, out)
	}
	return bin
}
