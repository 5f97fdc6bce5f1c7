package spire_test

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"

	"github.com/causewayhq/causeway/internal/testspire"
)

// TestSPIREExample runs run.sh --check: a real spire-server and spire-agent
// from this folder's configurations, the entries of entries.sh, and the
// edge, two sidecars and two services as separate processes on their
// SVIDs; one request crosses every hop with the expected identities.
func TestSPIREExample(t *testing.T) {
	testspire.Require(t)
	if testing.Short() {
		t.Skip("builds the binaries and starts seven processes")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	// Not t.TempDir: its path is too long for the unix sockets inside.
	dir, err := os.MkdirTemp("", "spire-ex") //nolint:usetesting // see above
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command("bash", "run.sh", "--check")
	cmd.Env = append(os.Environ(), "SPIRE_EXAMPLE_DIR="+dir+"/x", "SPIRE_SERVER_PORT="+strconv.Itoa(port))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("run.sh --check: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
