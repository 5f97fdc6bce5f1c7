// Package plugintest helps test a plugin the way Causeway loads it: the
// config goes through a real routes file, the strict decoder and
// plugins.NewInstances, so that tests see the same located errors a user
// would. Out-of-tree plugins can use it too.
package plugintest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/routes"
)

// File is the routes file name errors are located in.
const File = "plugintest.yaml"

// Routes returns a complete routes file with one instance "p" of plugin use
// configured by config (YAML, as under config:; "" leaves config out) and
// one route using it.
func Routes(use, config string) string {
	var b strings.Builder
	b.WriteString("version: 1\nupstreams:\n  app: { endpoints: [\"127.0.0.1:9\"] }\nroutes:\n")
	b.WriteString("  - { name: r, match: { path_prefix: / }, upstream: app, plugins: [p] }\n")
	fmt.Fprintf(&b, "plugins:\n  p:\n    use: %s\n", use)
	if config != "" {
		b.WriteString("    config:\n")
		for line := range strings.SplitSeq(strings.TrimRight(config, "\n"), "\n") {
			b.WriteString("      " + line + "\n")
		}
	}
	return b.String()
}

// New loads instance "p" of plugin use with config. The error is what the
// loader would report for that file (routes.Errors).
func New(use, config string) (plugins.Instance, *plugins.Instances, error) {
	f, err := routes.Parse(File, []byte(Routes(use, config)))
	if err != nil {
		return nil, nil, err
	}
	s, err := plugins.NewInstances(context.Background(), f)
	if err != nil {
		return nil, nil, err
	}
	inst, _ := s.Get("p")
	return inst, s, nil
}

// Load loads instance "p" from a routes file on disk (written with Routes),
// for plugins that resolve paths relative to the routes file.
func Load(path string) (plugins.Instance, *plugins.Instances, error) {
	f, err := routes.Load(path)
	if err != nil {
		return nil, nil, err
	}
	s, err := plugins.NewInstances(context.Background(), f)
	if err != nil {
		return nil, nil, err
	}
	inst, _ := s.Get("p")
	return inst, s, nil
}

// MustNew is New for configs that must load; the instance is closed when
// the test ends.
func MustNew(t testing.TB, use, config string) plugins.Instance {
	t.Helper()
	inst, s, err := New(use, config)
	if err != nil {
		t.Fatalf("loading %s with config\n%s\n: %v", use, config, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing %s: %v", use, err)
		}
	})
	return inst
}

// ConfigError loads a config that must fail and returns the error text,
// failing the test if it loads.
func ConfigError(t testing.TB, use, config string) string {
	t.Helper()
	_, s, err := New(use, config)
	if err == nil {
		s.Close()
		t.Fatalf("%s loaded with bad config\n%s", use, config)
	}
	return err.Error()
}
