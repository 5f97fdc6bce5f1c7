package plugins

import (
	"testing"

	"github.com/causewayhq/causeway/routes"
)

func TestConfigError(t *testing.T) {
	f := parse(t, `plugins:
  a:
    use: test-tag
    config:
      tag: x
      rules:
        - { match: "^/a", replace: /b }
        - match: "("
          replace: /c
`)
	raw := f.Plugins["a"].Config
	tests := []struct {
		desc, key string
		want      string
	}{
		{"nested in a list", "rules[1].match", "test.yaml:15:18: plugins.a.config.rules[1].match: bad"},
		{"flow mapping", "rules[0].replace", "test.yaml:14:36: plugins.a.config.rules[0].replace: bad"},
		{"list item", "rules[1]", "test.yaml:15:11: plugins.a.config.rules[1]: bad"},
		{"top-level key", "tag", "test.yaml:12:12: plugins.a.config.tag: bad"},
		{"missing key: nearest existing", "rules[1].redirect", "test.yaml:15:11: plugins.a.config.rules[1].redirect: bad"},
		{"index out of range", "rules[5].match", "test.yaml:14:9: plugins.a.config.rules[5].match: bad"},
		{"whole config", "", "test.yaml:12:7: plugins.a.config: bad"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if got := ConfigError(raw, tt.key, "bad").Error(); got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
	if got := ConfigError(routes.Raw{}, "x", "bad").Error(); got != "<input>:1:1: x: bad" {
		t.Fatalf("empty Raw: %s", got)
	}
}
