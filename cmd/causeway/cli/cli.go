// Package cli is the causeway command line: flag parsing and wiring only.
// It is a package of its own so that `causeway build` can generate a main
// that imports it together with out-of-tree plugins.
package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"syscall"
)

// Command is one subcommand. Run gets the arguments after the subcommand's
// name and returns the process exit code.
type Command struct {
	Name    string
	Summary string
	Run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
	// Flags returns a new flag set holding the command's flags: the same
	// definitions Run parses, so -h, shell completion and the man page
	// are made from one source and cannot drift. Nil: no flags.
	Flags func() *flag.FlagSet
	// Args says what the command's arguments after its flags are, for
	// completion.
	Args Args
	// Sub are the subcommands (ca init, dev jwt); Run dispatches to them.
	Sub []Command
}

// Args describes a command's positional arguments.
type Args struct {
	// Files: the arguments are file paths.
	Files bool
	// Words: each argument is one of these.
	Words []string
}

// findSub returns the subcommand of c named name.
func (c Command) findSub(name string) (Command, bool) {
	for _, s := range c.Sub {
		if s.Name == name {
			return s, true
		}
	}
	return Command{}, false
}

// commandTable is every subcommand, by name. It is the one list of them:
// a map literal rather than a registry that init functions fill, so a
// duplicate name does not compile and the set cannot depend on which files
// happen to be linked in. It is a function, not a variable, because
// completion and usage read it while being listed in it (an initialisation
// cycle for a variable); building it costs nothing next to parsing flags.
func commandTable() map[string]Command {
	return map[string]Command{
		"build": {Name: "build", Summary: "build a causeway binary with out-of-tree plugins (-with MODULE[@VERSION])", Run: runBuild,
			Flags: func() *flag.FlagSet { fs, _ := buildFlags(); return fs }},
		"ca": {Name: "ca", Summary: "mesh certificate authority: init, intermediate, issue, verify", Run: runCA, Sub: caCommands},
		"completion": {Name: "completion", Summary: help["completion"].summary, Run: runCompletion,
			Args: Args{Words: []string{"bash", "zsh", "fish"}}},
		"dev": {Name: "dev", Summary: "local testing helpers: dev jwt (keys, JWKS, signed tokens), dev apikey (add a key to a keys file)", Run: runDev,
			Sub: []Command{
				{Name: "jwt", Summary: help["dev jwt"].summary, Run: runDevJWT,
					Flags: func() *flag.FlagSet { fs, _ := devJWTFlags(); return fs }},
				{Name: "apikey", Summary: help["dev apikey"].summary, Run: runDevAPIKey,
					Flags: func() *flag.FlagSet { fs, _ := devAPIKeyFlags(); return fs }},
			}},
		"edge": {Name: "edge", Summary: help["edge"].summary, Run: runEdge,
			Flags: func() *flag.FlagSet { fs, _ := edgeFlags(); return fs }},
		"man": {Name: "man", Summary: help["man"].summary, Run: runMan},
		"sidecar": {Name: "sidecar", Summary: help["sidecar"].summary, Run: runSidecar,
			Flags: func() *flag.FlagSet { fs, _ := sidecarFlags(); return fs }},
		"validate": {Name: "validate", Summary: help["validate"].summary, Run: runValidate,
			Flags: func() *flag.FlagSet { fs, _ := validateFlags(); return fs }, Args: Args{Files: true}},
		"version": {Name: "version", Summary: help["version"].summary, Run: runVersion,
			Flags: func() *flag.FlagSet { fs, _ := versionFlags(); return fs }},
	}
}

// lookupCommand returns the command named name.
func lookupCommand(name string) (Command, bool) {
	c, ok := commandTable()[name]
	return c, ok
}

// sortedCommands is every command, by name.
func sortedCommands() []Command {
	t := commandTable()
	out := make([]Command, 0, len(t))
	for _, name := range slices.Sorted(maps.Keys(t)) {
		out = append(out, t[name])
	}
	return out
}

// Main runs the subcommand named by args[0].
func Main(args []string) int {
	return run(args, os.Stdout, os.Stderr)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) >= 2 && args[0] == "help" {
		// causeway help edge is causeway edge -h.
		args = []string{args[1], "-h"}
	}
	if len(args) > 0 {
		switch args[0] {
		case "-v", "-version", "--version":
			args = append([]string{"version"}, args[1:]...)
		}
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := lookupCommand(args[0])
	if !ok {
		fmt.Fprintf(stderr, "causeway: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	// SIGHUP is not part of this context: the edge handles it as "reload".
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return c.Run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: causeway COMMAND [flags]")
	fmt.Fprintln(w)
	for _, c := range sortedCommands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.Name, c.Summary)
	}
	fmt.Fprintln(w, "\nRun 'causeway COMMAND -h' (or 'causeway help COMMAND') for a command's flags and an example;")
	fmt.Fprintln(w, "'causeway --version' prints the version.")
}
