package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/causewayhq/causeway/plugins"
	// The built-in plugins register themselves.
	_ "github.com/causewayhq/causeway/plugins/standard"
)

// Version is set at build time (-ldflags -X); otherwise the module version
// from the build info is used.
var Version = ""

// pluginNames lists the registered plugins: the built-ins imported below
// and, in a binary made by `causeway build`, the out-of-tree ones.
var pluginNames = plugins.Names

func versionFlags() (*flag.FlagSet, *bool) {
	fs := newFlagSet("version")
	return fs, fs.Bool("plugins", false, "also list the compiled-in plugins")
}

func runVersion(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, withPlugins := versionFlags()
	withHelp(fs, stderr)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	fmt.Fprintf(stdout, "causeway %s (%s, %s/%s)\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if *withPlugins {
		fmt.Fprintln(stdout, "plugins:")
		for _, n := range pluginNames() {
			fmt.Fprintf(stdout, "  %s\n", n)
		}
	}
	return 0
}

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
