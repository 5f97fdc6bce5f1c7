package routes

import (
	"errors"
	"strings"
	"testing"
)

// TestPluginsValidation covers what routes itself checks in the plugins
// section; each plugin's own config is checked by the plugin when the
// plugins package instantiates it (see plugins.NewInstances).
func TestPluginsValidation(t *testing.T) {
	withPlugins := func(plugins, routePlugins string) string {
		f := base + "plugins:\n" + plugins
		if routePlugins != "" {
			f = strings.Replace(f, "    upstream: orders\n", "    upstream: orders\n    plugins: "+routePlugins+"\n", 1)
		}
		return f
	}
	tests := []struct {
		name string
		file string
		want string // "" accepts the file; otherwise one exact error line
	}{
		{"instance used by a route", withPlugins("  cors: {use: cors, config: {allow_origins: ['*']}}\n", "[cors]"), ""},
		{"config left out", withPlugins("  rid: {use: request_id}\n", "[rid]"), ""},
		{"config of any shape is kept for the plugin", withPlugins("  x: {use: x, config: [1, {a: b}]}\n", ""), ""},
		{"use missing", withPlugins("  cors: {config: {}}\n", ""), "t.yaml:10:9: plugins.cors: use: the registered plugin to instantiate is required"},
		{"bad instance name", withPlugins("  \"my cors\": {use: cors}\n", ""), `t.yaml:10:14: plugins.my cors: plugin instance name "my cors": use letters, digits, '.', '_' and '-' (at most 128)`},
		{"unknown key in an instance", withPlugins("  cors: {use: cors, conf: {}}\n", ""), `t.yaml:10:21: plugins.cors.conf: unknown key (did you mean "config"?)`},
		{"use is not a string", withPlugins("  cors: {use: [cors]}\n", ""), "t.yaml:10:15: plugins.cors.use: expected a string, found a list"},
		{"route refers to an undefined instance", withPlugins("  cors: {use: cors}\n", "[cors, gzip]"), `t.yaml:9:21: routes[0].plugins[1]: undefined plugin instance "gzip"`},
		{"plugins of a route must be a list", withPlugins("  cors: {use: cors}\n", "cors"), "t.yaml:9:14: routes[0].plugins: expected a list, found the string \"cors\""},
		{"duplicate instance", withPlugins("  cors: {use: cors}\n  cors: {use: cors}\n", ""), "t.yaml:11:3: plugins.cors: duplicate key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.file))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error:\n%v", err)
				}
				return
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %v is not Errors", err)
			}
			if len(es) != 1 || es[0].Error() != tt.want {
				t.Fatalf("errors:\n%v\nwant exactly:\n%s", err, tt.want)
			}
		})
	}
}

// TestPluginConfigRaw checks what a plugin factory receives: the config
// node, the file and the key path, so its errors are located.
func TestPluginConfigRaw(t *testing.T) {
	f, err := Parse("t.yaml", []byte(base+"plugins:\n  cors:\n    use: cors\n    config:\n      allow_origins: [\"https://a.example\"]\n      max_age: 10m\n"))
	if err != nil {
		t.Fatal(err)
	}
	raw := f.Plugins["cors"].Config
	if raw.File != "t.yaml" || raw.Path != "plugins.cors.config" || raw.Node == nil {
		t.Fatalf("raw = %+v", raw)
	}
	var cfg struct {
		AllowOrigins []string `yaml:"allow_origins"`
		MaxAge       Duration `yaml:"max_age"`
	}
	if err := raw.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.AllowOrigins) != 1 || cfg.MaxAge.D().Minutes() != 10 {
		t.Fatalf("decoded %+v", cfg)
	}
	var narrow struct {
		AllowOrigins []string `yaml:"allow_origins"`
	}
	err = raw.Decode(&narrow)
	if err == nil || err.Error() != `t.yaml:14:7: plugins.cors.config.max_age: unknown key` {
		t.Fatalf("strict decode: %v", err)
	}
	if got := raw.ErrorAt("allow_origins", "nope").Error(); got != "t.yaml:13:22: plugins.cors.config.allow_origins: nope" {
		t.Fatalf("ErrorAt: %s", got)
	}
}
