package gateway

import (
	"testing"

	"github.com/causewayhq/causeway/gateway/internal/pipeline"
)

// A request that brought neither an id nor a traceparent gets both for the
// allocations of the id alone: a valid id and a valid, unsampled
// traceparent, new each time.
func TestNewRequestIDs(t *testing.T) {
	seen := map[string]bool{}
	for i := range 100 {
		id, tp := newRequestIDs()
		if len(id) != pipeline.UUIDLen || !pipeline.ValidRequestID(id) || id[14] != '4' {
			t.Fatalf("id %q is not a version 4 UUID", id)
		}
		if !validTraceparent(tp) || tp[len(tp)-2:] != "00" {
			t.Fatalf("traceparent %q is not a valid unsampled one", tp)
		}
		if seen[id] || seen[tp] {
			t.Fatalf("call %d: %q or %q seen before", i, id, tp)
		}
		seen[id], seen[tp] = true, true
	}
	// As many as the id alone costs: one string (and, under the race
	// detector, crypto/rand's buffer, which escapes in that build).
	want := testing.AllocsPerRun(100, func() { _ = pipeline.NewUUID() })
	if n := testing.AllocsPerRun(100, func() { _, _ = newRequestIDs() }); n != want {
		t.Errorf("newRequestIDs: %v allocations, want %v (pipeline.NewUUID's)", n, want)
	}
}
