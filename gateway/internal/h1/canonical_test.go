package h1

import (
	"net/http"
	"net/textproto"
	"strings"
	"testing"
)

// CanonicalKey is textproto's canonical form for every token name, short
// (built on the stack) or long, already canonical (same) or not (interned
// when common), and allocates only for an uncommon name in another case.
func TestCanonicalKey(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x-long-name", 7) // beyond the 64-byte stack buffer
	for _, name := range []string{
		"content-type", "CONTENT-TYPE", "Content-Type", "etag", "ETag", "www-authenticate",
		"x-a-b", "X-A-B", "a", "-a-", "x_y-z", "x--y", "1-abc", "x-custom-lower",
		"host", "Host", "user-agent", "X-Forwarded-For", "x-forwarded-for",
		long, strings.ToUpper(long), http.CanonicalHeaderKey(long),
	} {
		want := textproto.CanonicalMIMEHeaderKey(name)
		key, same := CanonicalKey([]byte(name))
		got := key
		if same {
			got = name
		}
		if got != want {
			t.Errorf("CanonicalKey(%q) = %q, %v; want %q", name, key, same, want)
		}
		if same && name != want {
			t.Errorf("CanonicalKey(%q) says it is canonical; the canonical form is %q", name, want)
		}
	}
}

func TestCanonicalKeyAllocations(t *testing.T) {
	for _, tc := range []struct {
		name   string
		allocs float64
	}{
		{"content-type", 0},    // common, another case: interned
		{"X-Custom-Thing", 0},  // already canonical
		{"x-custom-thing", 1},  // uncommon, another case
		{"X-FORWARDED-FOR", 0}, // common, upper case
	} {
		b := []byte(tc.name)
		if got := testing.AllocsPerRun(100, func() { _, _ = CanonicalKey(b) }); got != tc.allocs {
			t.Errorf("CanonicalKey(%q): %v allocations, want %v", tc.name, got, tc.allocs)
		}
	}
}
