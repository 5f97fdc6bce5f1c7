package mesh_test

import (
	"os/exec"
	"testing"
)

// TestMeshExample runs the example as separate processes (edge, two
// sidecars, two services) and checks one request crosses every hop.
func TestMeshExample(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts five processes")
	}
	out, err := exec.Command("bash", "run.sh", "--check").CombinedOutput()
	if err != nil {
		t.Fatalf("run.sh --check: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
