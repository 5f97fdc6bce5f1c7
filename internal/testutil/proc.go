package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// FreeAddr returns a loopback address that was free a moment ago, for a
// server that must be told its address before it starts (another process,
// or a configuration file written first).
//
// The port is taken below the kernel's ephemeral range
// (ip_local_port_range), where no outgoing connection's source port and no
// other listener on port 0 can land in the moment between this check and
// the server's bind: a port from 127.0.0.1:0 comes from that range, and a
// busy suite's connections took one first ("address already in use"). A
// port is handed out once per process.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	lo := ephemeralLow()
	for range 200 {
		port := freeLow + rand.IntN(max(lo-freeLow, 1))
		if _, taken := handedOut.LoadOrStore(port, true); taken {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		ln.Close()
		return ln.Addr().String()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// freeLow is the lowest port FreeAddr hands out: above the well-known and
// most registered services' ports.
const freeLow = 10000

var handedOut sync.Map // port -> true

// ephemeralLow is the first port of the kernel's ephemeral range (32768,
// Linux's default, where it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > freeLow+1000 {
				return n
			}
		}
	}
	return 32768
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
