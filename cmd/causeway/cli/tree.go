package cli

import (
	"flag"
	"strings"
)

// The command tree as shell completion and the man page see it, read from
// the registered commands and their flag-set factories: what -h prints is
// what they list.

// cmdInfo is one command or subcommand.
type cmdInfo struct {
	path    string // "edge", "ca init"
	summary string
	flags   []flagInfo
	args    Args
	subs    []cmdInfo
}

// flagKind says what a flag's value is, for completion.
type flagKind int

const (
	boolFlag  flagKind = iota // takes no value
	valueFlag                 // any value
	fileFlag                  // a file path
	dirFlag                   // a directory
)

type flagInfo struct {
	name    string
	metavar string // from the usage's `NAME`, as flag.PrintDefaults shows it
	usage   string
	def     string // "" when the zero value
	kind    flagKind
	// repeatable flags may be given more than once (-with, -claim).
	repeatable bool
	// choices are the values completion offers (-log-level, -kind).
	choices []string
}

// enumValue is a string flag with a known set of values, which completion
// offers. Parsing accepts any string: the command checks the value itself,
// as before (-log-level takes whatever log/slog does).
type enumValue struct {
	p      *string
	values []string
}

func (e *enumValue) String() string {
	if e == nil || e.p == nil {
		return ""
	}
	return *e.p
}

func (e *enumValue) Set(s string) error { *e.p = s; return nil }

// enumVar defines a string flag whose usual values are values.
func enumVar(fs *flag.FlagSet, p *string, name, value, usage string, values ...string) {
	*p = value
	fs.Var(&enumValue{p: p, values: values}, name, usage)
}

// repeatable is implemented by flag values that collect every use.
type repeatable interface{ repeatable() bool }

func (*listFlag) repeatable() bool  { return true }
func (claimFlags) repeatable() bool { return true }

// commandTree is every registered command, by name, with its subcommands.
func commandTree() []cmdInfo {
	var out []cmdInfo
	for _, c := range sortedCommands() {
		out = append(out, infoOf("", c))
	}
	return out
}

func infoOf(parent string, c Command) cmdInfo {
	path := strings.TrimSpace(parent + " " + c.Name)
	ci := cmdInfo{path: path, summary: c.Summary, args: c.Args}
	if c.Flags != nil {
		ci.flags = flagsOf(c.Flags())
	}
	for _, s := range c.Sub {
		ci.subs = append(ci.subs, infoOf(path, s))
	}
	return ci
}

// flagsOf lists fs's flags, sorted by name (flag.VisitAll's order).
func flagsOf(fs *flag.FlagSet) []flagInfo {
	var out []flagInfo
	fs.VisitAll(func(f *flag.Flag) {
		metavar, usage := flag.UnquoteUsage(f)
		fi := flagInfo{name: f.Name, metavar: metavar, usage: usage, kind: valueFlag}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			fi.kind, fi.metavar = boolFlag, ""
		}
		switch {
		case fi.kind == boolFlag:
		case metavar == "DIR":
			fi.kind = dirFlag
		case metavar == "FILE" || metavar == "PREFIX":
			fi.kind = fileFlag
		}
		if e, ok := f.Value.(*enumValue); ok {
			fi.choices = e.values
		}
		if r, ok := f.Value.(repeatable); ok && r.repeatable() {
			fi.repeatable = true
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" {
			fi.def = f.DefValue
		}
		out = append(out, fi)
	})
	return out
}

// all is ci and every command below it, depth first.
func (ci cmdInfo) all() []cmdInfo {
	out := []cmdInfo{ci}
	for _, s := range ci.subs {
		out = append(out, s.all()...)
	}
	return out
}

// flattenTree is every command and subcommand of the tree.
func flattenTree(tree []cmdInfo) []cmdInfo {
	var out []cmdInfo
	for _, c := range tree {
		out = append(out, c.all()...)
	}
	return out
}
