// Package cli is the causeway command line: flag parsing and wiring only.
// It is a package of its own so that `causeway build` can generate a main
// that imports it together with out-of-tree plugins.
package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"sync"
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

// lookupCommand returns the registered command named name.
func lookupCommand(name string) (Command, bool) {
	mu.Lock()
	defer mu.Unlock()
	c, ok := commands[name]
	return c, ok
}

// sortedCommands is every registered command, by name.
func sortedCommands() []Command {
	mu.Lock()
	defer mu.Unlock()
	out := make([]Command, 0, len(commands))
	for _, c := range commands {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

var (
	mu       sync.Mutex
	commands = map[string]Command{}
)

// Register adds a subcommand; a duplicate name is a programming error.
func Register(c Command) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := commands[c.Name]; dup {
		panic("cli: duplicate command " + c.Name)
	}
	commands[c.Name] = c
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
