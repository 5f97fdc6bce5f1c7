package mesh_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Sources start file watchers and the tests start TLS servers: all of them
// must be stopped by the end of every test run.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { stopSharedSPIRE() }))
}
