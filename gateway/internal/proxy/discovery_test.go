package proxy

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadEndpointsFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name, content, want string
	}{
		{"plain", "127.0.0.1:1\n\n# c\n127.0.0.1:2 5\n", "127.0.0.1:1/1 127.0.0.1:2/5"},
		{"not host:port", "127.0.0.1\n", "is not host:port"},
		{"bad port", "h:99999\n", "is not host:port"},
		{"bad weight", "h:1 0\n", "weight \"0\" is not between 1 and 1000"},
		{"too many fields", "h:1 2 3\n", "want \"host:port [weight]\""},
		{"twice", "h:1\nh:1\n", "listed twice"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, fmt.Sprint(i))
			writeFile(t, p, tt.content)
			specs, err := ReadEndpointsFile(p)
			var got []string
			for _, s := range specs {
				got = append(got, fmt.Sprintf("%s/%d", s.Addr, s.Weight))
			}
			out := strings.Join(got, " ")
			if err != nil {
				out = err.Error()
			}
			if !strings.Contains(out, tt.want) {
				t.Fatalf("got %q, want %q", out, tt.want)
			}
		})
	}
	if _, err := ReadEndpointsFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing file was accepted")
	}
}
