package routes

import "testing"

func TestDetectKind(t *testing.T) {
	for _, tt := range []struct{ name, src, want string }{
		{"routes file", "version: 1\nroutes: []\nupstreams: {}\n", KindEdge},
		{"routes file in JSON", `{"version": 1, "listen": {"http": ":8080"}}`, KindEdge},
		{"sidecar file", "version: 1\nidentity: {}\ninbound: {}\n", KindSidecar},
		{"outbound only", "version: 1\noutbound: {listen: \"127.0.0.1:15001\"}\n", KindSidecar},
		{"both kinds' keys", "routes: []\ninbound: {}\n", ""},
		{"neither", "version: 1\naccess_log: {}\n", ""},
		{"not YAML", "{{", ""},
		{"not a mapping", "- a\n- b\n", ""},
	} {
		if got := DetectKind([]byte(tt.src)); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
