package gateway

import (
	"context"
	"strings"
	"testing"
)

// A reload warns about restart-only settings only when one of them really
// changed: an unchanged file (a plain SIGHUP) must log nothing, even though
// body_read_timeout is a pointer that every load allocates afresh.
func TestReloadWarnsOnlyOnRealChanges(t *testing.T) {
	const restart = "take effect at the next restart"
	base := listenHeader + "server: {read_timeout: 10s%s}\nupstreams:\n  u: {endpoints: [\"127.0.0.1:1\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n"
	cfg := func(extra string) string { return strings.Replace(base, "%s", extra, 1) }
	tests := []struct {
		name string
		file string
		want bool
	}{
		{"unchanged file", cfg(""), false},
		{"same values written differently", cfg(", body_read_timeout: 30s"), false},
		{"body_read_timeout changed", cfg(", body_read_timeout: 5s"), true},
		{"back to the same value", cfg(", body_read_timeout: 5s"), false},
		{"read_timeout changed", strings.Replace(cfg(", body_read_timeout: 5s"), "10s", "11s", 1), true},
	}
	te := startEdge(t, cfg(""))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := strings.Count(te.logs.String(), restart)
			writeFile(t, te.path, tt.file)
			if err := te.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := strings.Count(te.logs.String(), restart) > before
			if got != tt.want {
				t.Fatalf("restart warning logged = %v, want %v; logs:\n%s", got, tt.want, te.logs.String())
			}
		})
	}
}
