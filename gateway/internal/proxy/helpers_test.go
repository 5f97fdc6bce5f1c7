package proxy

import (
	"os"
	"testing"

	"github.com/causewayhq/causeway/internal/testutil"
	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: every
// upstream's background work (health checks, discovery, mirrors) has an
// owner that stops it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) { t.Helper(); testutil.WaitFor(t, cond) }

// within reports whether got is want give or take the fraction tol.
func within(got, want int64, tol float64) bool {
	d := float64(got - want)
	return d <= tol*float64(want) && -d <= tol*float64(want)
}
