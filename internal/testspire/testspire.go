// Package testspire gives tests a real SPIRE deployment on loopback
// (internal/spirelocal): spire-server and spire-agent built by `make deps`
// into .tools/bin.
//
// Without the binaries a test is skipped on a developer's machine and fails
// in CI (CI=true): a CI run cannot report green without them.
package testspire

import (
	"os"
	"testing"

	"github.com/causewayhq/causeway/internal/spirelocal"
)

// The deployment's parts, as spirelocal has them.
type (
	Server        = spirelocal.Server
	ServerOptions = spirelocal.ServerOptions
	Agent         = spirelocal.Agent
	Entry         = spirelocal.Entry
)

// StartServer runs a spire-server whose files live in dir.
func StartServer(dir string, o ServerOptions) (*Server, error) { return spirelocal.StartServer(dir, o) }

const missingHelp = "%s not found in PATH: `make deps` builds it into .tools/bin (scripts/build-spire.sh)"

// Require skips tb when the SPIRE binaries are missing, or fails it in CI.
func Require(tb testing.TB) {
	tb.Helper()
	if bin := spirelocal.Missing(); bin != "" {
		if os.Getenv("CI") == "true" {
			tb.Fatalf(missingHelp, bin)
		}
		tb.Skipf(missingHelp, bin)
	}
}
