package mesh_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// Sources start file watchers and the tests start TLS servers: all of them
// must be stopped by the end of every test run. The shared spire-server is
// stopped before the check, so its process's waiter is gone too.
func TestMain(m *testing.M) {
	code := m.Run()
	stopSharedSPIRE()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
