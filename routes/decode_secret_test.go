package routes

import (
	"strings"
	"testing"
)

// A decode error names the key and what was expected, but quotes no value
// that may be a credential: one read from an environment reference (where
// secrets are kept), or one under a key whose name says it holds one, in
// the file or in a plugin's config. The message goes to the log, /config's
// last_reload and `causeway validate`. Before: each of these quoted the
// value ("found the string \"hunter2-...\"").
func TestDecodeErrorsQuoteNoCredential(t *testing.T) {
	env := MapEnv(map[string]string{"PARTNER_TOKEN": "hunter2-env", "LIMIT": "25"})
	const head = "version: 1\nupstreams:\n  up: {endpoints: [\"127.0.0.1:1\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: up}\n"
	// pluginConfig is what a plugin decodes its config into.
	type pluginConfig struct {
		APIKeys  []string          `yaml:"api_keys"`
		Password int               `yaml:"password"`
		Headers  map[string]string `yaml:"headers"`
		Timeout  Duration          `yaml:"timeout"`
		Retries  int               `yaml:"retries"`
	}
	tests := []struct {
		name   string
		file   string
		plugin bool   // the error comes from the plugin's Decode
		secret string // must not appear
		want   string // must appear: the key path and the expectation
	}{
		{"environment value in an integer", "rate_limits:\n  l: {key: client_ip, limit: \"${PARTNER_TOKEN}\", per: 1s}\n", false, "hunter2-env", "rate_limits.l.limit: expected an integer"},
		{"environment value in a duration", "rate_limits:\n  l: {key: client_ip, limit: 5, per: \"${PARTNER_TOKEN}\"}\n", false, "hunter2-env", "rate_limits.l.per: invalid duration"},
		{"environment value in a boolean", "server: {allow_underscore_headers: \"${PARTNER_TOKEN}\"}\n", false, "hunter2-env", "server.allow_underscore_headers: expected true or false"},
		{"plugin: a string under api_keys", "plugins:\n  p: {use: x, config: {api_keys: hunter2-keys}}\n", true, "hunter2-keys", "plugins.p.config.api_keys: expected a list"},
		{"plugin: a bad number under password", "plugins:\n  p: {use: x, config: {password: hunter2-pw}}\n", true, "hunter2-pw", "plugins.p.config.password: expected an integer"},
		{"plugin: environment value in a duration", "plugins:\n  p: {use: x, config: {timeout: \"${PARTNER_TOKEN}\"}}\n", true, "hunter2-env", "plugins.p.config.timeout: invalid duration"},
		// Values that are not credentials are still quoted: the message
		// must say what was wrong.
		{"plain value still quoted", "plugins:\n  p: {use: x, config: {retries: many}}\n", true, "", `plugins.p.config.retries: expected an integer, found the string "many"`},
		{"plain duration still quoted", "rate_limits:\n  l: {key: client_ip, limit: \"${LIMIT}\", per: soon}\n", false, "", `rate_limits.l.per: invalid duration "soon"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := head + tt.file
			f, err := ParseEnv("t.yaml", []byte(file), env)
			if tt.plugin {
				if err != nil {
					t.Fatalf("the file itself was refused: %v", err)
				}
				var cfg pluginConfig
				err = f.Plugins["p"].Config.Decode(&cfg)
			}
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if tt.secret != "" && strings.Contains(msg, tt.secret) {
				t.Errorf("the error quotes the credential: %s", msg)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not contain %q", msg, tt.want)
			}
		})
	}
}
