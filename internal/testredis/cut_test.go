package testredis

import (
	"testing"

	"github.com/causewayhq/causeway/internal/testutil"
)

// TestCutAfterCommand: through the proxy, commands other than the named
// one get their answers; the named one runs on Redis (CommandCalls counts
// it) but its answer never arrives. A command whose name merely contains
// the name (CLIENT SETNAME for "set") is not cut.
func TestCutAfterCommand(t *testing.T) {
	tests := []struct {
		desc    string
		cut     string
		args    []string
		counted string // the command whose runs are counted
		wantCut bool
	}{
		{"the named command is cut after it ran", "incr", []string{"INCR", "n"}, "incr", true},
		{"another command passes", "incr", []string{"SET", "k", "v"}, "set", false},
		{"a subcommand containing the name passes", "set", []string{"CLIENT", "SETNAME", "x"}, "client|setname", false},
	}
	s := Start(t)
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			proxy := testutil.ServeConns(t, CutAfterCommand(s.Addr, tc.cut))
			before := CommandCalls(t, s.Addr, tc.counted)
			_, err := Do(proxy, tc.args...)
			if cut := err != nil; cut != tc.wantCut {
				t.Fatalf("%v through the proxy: %v, want cut %v", tc.args, err, tc.wantCut)
			}
			if n := CommandCalls(t, s.Addr, tc.counted) - before; n != 1 {
				t.Fatalf("Redis ran %s %d times, want 1", tc.counted, n)
			}
		})
	}
}
