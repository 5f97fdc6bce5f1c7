package gateway

import (
	"testing"
	"unsafe"
)

// The request state is allocated once per request. Objects over 512 bytes
// that hold pointers carry an 8-byte malloc header, so the state must stay
// within 888 bytes to fit the 896-byte size class: past it, every request
// pays the next class (1024), 128 bytes more. A field added past the limit
// fails here, to be placed (or the limit moved) knowingly.
func TestReqStateSizeClass(t *testing.T) {
	for _, tc := range []struct {
		desc string
		size uintptr
		max  uintptr
	}{
		{"reqState with its malloc header", unsafe.Sizeof(reqState{}) + 8, 896},
	} {
		if tc.size > tc.max {
			t.Errorf("%s: %d bytes, over the %d-byte size class", tc.desc, tc.size, tc.max)
		}
	}
}
