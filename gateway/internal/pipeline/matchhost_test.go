package pipeline

import "testing"

// matchHost gives the host the router matches, and allocates nothing for a
// Host that is already lower-case, whether or not it carries a port.
func TestMatchHost(t *testing.T) {
	for _, tc := range []struct {
		desc, host, want string
		allocs           float64 // -1: not checked
	}{
		{"name", "api.example.com", "api.example.com", 0},
		{"name and port", "api.example.com:8080", "api.example.com", 0},
		{"trailing dot", "api.example.com.", "api.example.com", 0},
		{"upper case", "API.Example.com", "api.example.com", 1},
		{"IPv6 and port", "[2001:db8::1]:443", "2001:db8::1", 0},
		{"IPv6 without port", "[2001:db8::1]", "2001:db8::1", -1},
		{"brackets without colon", "[example]", "example", 0},
		{"too many colons", "a:b:c", "a:b:c", -1},
		{"empty", "", "", 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := matchHost(tc.host); got != tc.want {
				t.Fatalf("matchHost(%q) = %q, want %q", tc.host, got, tc.want)
			}
			if tc.allocs < 0 {
				return
			}
			if n := testing.AllocsPerRun(100, func() { _ = matchHost(tc.host) }); n != tc.allocs {
				t.Errorf("matchHost(%q): %v allocations, want %v", tc.host, n, tc.allocs)
			}
		})
	}
}
