package cli

import (
	"bytes"
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
		{[]string{"edge", "-no-such-flag"}, 2, "flag provided but not defined: -no-such-flag"},
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
