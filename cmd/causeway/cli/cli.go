// Package cli is the causeway command line: flag parsing and wiring only.
// It is a package of its own so that `causeway build` can generate a main
// that imports it together with out-of-tree plugins.
package cli

import (
	"context"
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
	mu.Lock()
	c, ok := commands[args[0]]
	mu.Unlock()
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
	mu.Lock()
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].Summary)
	}
	mu.Unlock()
	fmt.Fprintln(w, "\nRun 'causeway COMMAND -h' (or 'causeway help COMMAND') for a command's flags and an example;")
	fmt.Fprintln(w, "'causeway --version' prints the version.")
}
