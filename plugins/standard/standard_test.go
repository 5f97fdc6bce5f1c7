package standard

import (
	"slices"
	"testing"

	"github.com/causewayhq/causeway/plugins"
)

func TestBuiltinsRegistered(t *testing.T) {
	if got := plugins.Names(); !slices.Equal(got, Names) {
		t.Fatalf("registered %v, want exactly the built-ins %v", got, Names)
	}
}
