package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
)

// The built-in plugins are linked (and listed by `version -plugins`) through
// version.go's import of plugins/standard, so every binary `causeway build`
// makes has them too.

// causewayModule is the module path of Causeway itself.
const causewayModule = "github.com/causewayhq/causeway"

// zeroVersion is what a go.mod requires for a module that is replaced by a
// local folder and has no published version.
const zeroVersion = "v0.0.0-00010101000000-000000000000"

// buildSpec is a parsed `causeway build` command line.
type buildSpec struct {
	with     []pluginRef
	replace  map[string]string // module path -> absolute folder
	causeway string            // version of causeway to build against
	output   string            // absolute path of the binary
	keep     bool
}

// pluginRef is one -with: a package path (usually a module root) and an
// optional version.
type pluginRef struct{ path, version string }

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func runBuild(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	spec, err := parseBuildArgs(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "causeway build:", err)
		return 2
	}
	if err := build(ctx, spec, stderr); err != nil {
		fmt.Fprintln(stderr, "causeway build:", err)
		return 1
	}
	fmt.Fprintf(stdout, "built %s\n", spec.output)
	return 0
}

type buildOpts struct {
	with, replace listFlag
	causeway, out string
	keep          bool
}

func buildFlags() (*flag.FlagSet, *buildOpts) {
	fs, o := newFlagSet("build"), &buildOpts{}
	fs.Var(&o.with, "with", "a plugin `MODULE[@VERSION]` to include (repeatable; a package path inside a module works too)")
	fs.Var(&o.replace, "replace", "use a local folder for a module: `MODULE=DIR` (repeatable)")
	fs.StringVar(&o.causeway, "causeway", "", "causeway `VERSION` to build against (default: this binary's own version)")
	fs.StringVar(&o.out, "o", "causeway-custom", "the binary `FILE` to write")
	fs.BoolVar(&o.keep, "keep", false, "keep the generated module's folder and print where it is")
	return fs, o
}

func parseBuildArgs(args []string, stderr io.Writer) (*buildSpec, error) {
	fs, o := buildFlags()
	withHelp(fs, stderr)
	cw, out, keep := &o.causeway, &o.out, &o.keep
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	spec := &buildSpec{replace: map[string]string{}, keep: *keep}
	for _, r := range o.replace {
		mod, dir, ok := strings.Cut(r, "=")
		mod, dir = strings.TrimSpace(mod), strings.TrimSpace(dir)
		if !ok || mod == "" || dir == "" {
			return nil, fmt.Errorf("-replace %q: want MODULE=DIR", r)
		}
		if err := checkModulePath(mod); err != nil {
			return nil, fmt.Errorf("-replace %q: %w", r, err)
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, fmt.Errorf("-replace %q: %w", r, err)
		}
		if _, err := os.Stat(filepath.Join(abs, "go.mod")); err != nil {
			return nil, fmt.Errorf("-replace %q: %s has no go.mod", r, abs)
		}
		if _, dup := spec.replace[mod]; dup {
			return nil, fmt.Errorf("-replace %q: %s is replaced twice", r, mod)
		}
		spec.replace[mod] = abs
	}
	seen := map[string]bool{}
	for _, w := range o.with {
		path, version, _ := strings.Cut(strings.TrimSpace(w), "@")
		if err := checkModulePath(path); err != nil {
			return nil, fmt.Errorf("-with %q: %w", w, err)
		}
		if path == causewayModule || strings.HasPrefix(path, causewayModule+"/") {
			return nil, fmt.Errorf("-with %q: causeway's own packages are always included", w)
		}
		if seen[path] {
			return nil, fmt.Errorf("-with %q: listed twice", w)
		}
		seen[path] = true
		if version != "" && replacedBy(spec.replace, path) != "" {
			return nil, fmt.Errorf("-with %q: a replaced module takes no version", w)
		}
		spec.with = append(spec.with, pluginRef{path: path, version: version})
	}
	if len(spec.with) == 0 {
		return nil, errors.New("nothing to add: give at least one -with MODULE[@VERSION]")
	}
	spec.causeway = *cw
	if _, replaced := spec.replace[causewayModule]; replaced && spec.causeway != "" {
		return nil, errors.New("-causeway and -replace " + causewayModule + "=DIR are exclusive")
	}
	if _, replaced := spec.replace[causewayModule]; !replaced && spec.causeway == "" {
		v := ownVersion()
		if v == "" {
			return nil, errors.New("this causeway binary has no module version (built from a checkout): pass -causeway VERSION or -replace " + causewayModule + "=DIR")
		}
		spec.causeway = v
	}
	if *out == "" {
		return nil, errors.New("-o: the binary to write is required")
	}
	abs, err := filepath.Abs(*out)
	if err != nil {
		return nil, fmt.Errorf("-o: %w", err)
	}
	spec.output = abs
	return spec, nil
}

// checkModulePath refuses what cannot be an import path; the go command
// checks the rest, but a flag value must not be able to inject into the
// generated source or go.mod.
func checkModulePath(p string) error {
	if p == "" {
		return errors.New("empty module path")
	}
	for _, r := range p {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("-._~/", r):
		default:
			return fmt.Errorf("%q is not a module path", p)
		}
	}
	if strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//") || strings.Contains(p, "..") {
		return fmt.Errorf("%q is not a module path", p)
	}
	return nil
}

// replacedBy returns the replaced module containing package path, if any.
func replacedBy(replace map[string]string, path string) string {
	best := ""
	for mod := range replace {
		if (path == mod || strings.HasPrefix(path, mod+"/")) && len(mod) > len(best) {
			best = mod
		}
	}
	return best
}

// ownVersion is the causeway module version this binary was built from, or
// "" for a build from a checkout.
func ownVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	if bi.Main.Path == causewayModule {
		return fetchable(bi.Main.Version)
	}
	for _, d := range bi.Deps {
		if d.Path == causewayModule && d.Replace == nil {
			return fetchable(d.Version)
		}
	}
	return ""
}

// fetchable returns v if the module proxy could serve it: not a checkout
// ("(devel)"), not modified ("+dirty"), not the placeholder of a replace.
func fetchable(v string) string {
	if v == "" || v == "(devel)" || v == zeroVersion || strings.Contains(v, "+") {
		return ""
	}
	return v
}

// generate returns the files of the temporary main module.
func generate(spec *buildSpec) (mainGo, goMod string) {
	var m strings.Builder
	m.WriteString("// Code generated by causeway build. DO NOT EDIT.\n\npackage main\n\nimport (\n\t\"os\"\n\n")
	m.WriteString("\t\"" + causewayModule + "/cmd/causeway/cli\"\n")
	for _, w := range spec.with {
		m.WriteString("\t_ \"" + w.path + "\"\n")
	}
	m.WriteString(")\n\nfunc main() { os.Exit(cli.Main(os.Args[1:])) }\n")

	var g strings.Builder
	g.WriteString("module causeway-custom\n\ngo 1.26.0\n\nrequire (\n")
	cv := spec.causeway
	if _, ok := spec.replace[causewayModule]; ok {
		cv = zeroVersion
	}
	requires := map[string]string{causewayModule: cv}
	for _, w := range spec.with {
		if mod := replacedBy(spec.replace, w.path); mod != "" {
			requires[mod] = zeroVersion
		}
	}
	for _, mod := range slices.Sorted(maps.Keys(requires)) {
		fmt.Fprintf(&g, "\t%s %s\n", mod, requires[mod])
	}
	g.WriteString(")\n")
	if len(spec.replace) > 0 {
		g.WriteString("\nreplace (\n")
		for _, mod := range slices.Sorted(maps.Keys(spec.replace)) {
			fmt.Fprintf(&g, "\t%s => %s\n", mod, quoteIfNeeded(spec.replace[mod]))
		}
		g.WriteString(")\n")
	}
	return m.String(), g.String()
}

func quoteIfNeeded(s string) string {
	if strings.ContainsAny(s, " \t\"'`\\") {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// build writes the temporary module, lets the go command resolve it, and
// builds the binary.
func build(ctx context.Context, spec *buildSpec, stderr io.Writer) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("the go command is needed to build: %w", err)
	}
	dir, err := os.MkdirTemp("", "causeway-build-")
	if err != nil {
		return fmt.Errorf("creating the build folder: %w", err)
	}
	if spec.keep {
		fmt.Fprintf(stderr, "causeway build: generated module in %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	mainGo, goMod := generate(spec)
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(mainGo), 0o644); err != nil {
		return fmt.Errorf("writing main.go: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(goMod), 0o644); err != nil {
		return fmt.Errorf("writing go.mod: %w", err)
	}
	goCmd := func(args ...string) error {
		cmd := exec.CommandContext(ctx, goBin, args...)
		cmd.Dir = dir
		// The generated module stands alone: no workspace of the caller's,
		// and go.mod/go.sum may be updated while resolving.
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		cmd.Stdout = stderr
		cmd.Stderr = stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
		}
		return nil
	}
	for _, w := range spec.with {
		if replacedBy(spec.replace, w.path) != "" {
			continue
		}
		v := w.version
		if v == "" {
			v = "latest"
		}
		if err := goCmd("get", w.path+"@"+v); err != nil {
			return err
		}
	}
	// No `go mod tidy`: it would fetch every dependency's test-only
	// modules. -mod=mod lets go build add just what the binary needs.
	ldflags := "-X " + causewayModule + "/cmd/causeway/cli.Version=" + customVersion(spec)
	return goCmd("build", "-trimpath", "-ldflags", ldflags, "-o", spec.output, ".")
}

// customVersion says what a built binary is: the causeway it was built
// against, plus the fact that it carries plugins.
func customVersion(spec *buildSpec) string {
	v := spec.causeway
	if v == "" {
		v = "dev"
	}
	return v + "+plugins"
}
