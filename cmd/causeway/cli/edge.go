package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/causewayhq/causeway/gateway"
	"github.com/causewayhq/causeway/internal/memlimit"
	"github.com/causewayhq/causeway/routes"
)

// serverFlags is what a server command (edge, sidecar) takes from its flags.
type serverFlags struct {
	config string
	log    *slog.Logger
	pprof  bool
}

// Garbage-collector targets (GOGC). The edge trades memory for CPU: at
// Go's default of 100 its small live heap is collected dozens of times a
// second under load, and 400 cut CPU per proxied request by about a sixth
// (docs/performance.md). The sidecar runs beside every service, where
// memory is what counts, so it keeps Go's default.
const (
	edgeGOGC    = 400
	sidecarGOGC = 100
)

// cgroupRoot is where /proc and /sys are; tests point it at a fake tree.
var cgroupRoot = "/"

// setMemoryLimit gives the garbage collector a soft limit at 90% of the
// container's memory limit, unless GOMEMLIMIT sets one. With the edge's
// GOGC of 400 the heap may grow to five times what is live; near the
// limit the collector runs more often instead of the kernel killing the
// process (10,000 idle TLS connections: about 600 MiB without a limit,
// 320 MiB under one; docs/performance.md).
func setMemoryLimit(log *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return // the runtime has read it
	}
	limit, err := memlimit.FromCgroup(cgroupRoot)
	if err != nil {
		log.Warn("no GC memory limit: reading the cgroup's memory limit failed", "error", err.Error())
		return
	}
	if limit > 0 {
		soft := limit / 10 * 9
		debug.SetMemoryLimit(soft)
		log.Info("GC soft memory limit set from the cgroup (GOMEMLIMIT overrides)", "limit_bytes", soft, "cgroup_limit_bytes", limit)
	}
}

// serverOpts are the flags the long-running commands (edge, sidecar) share.
type serverOpts struct {
	config, logLevel, logFormat string
	pprof                       bool
	gogc                        int
}

// serverFlagSet defines a server command's flags.
func serverFlagSet(name, defaultConfig, configHelp string, defaultGOGC int) (*flag.FlagSet, *serverOpts) {
	fs, o := newFlagSet(name), &serverOpts{}
	fs.StringVar(&o.config, "config", defaultConfig, configHelp)
	enumVar(fs, &o.logLevel, "log-level", "info", "log `LEVEL`: debug, info, warn, error", "debug", "info", "warn", "error")
	enumVar(fs, &o.logFormat, "log-format", "json", "log `FORMAT`: json (one object a line) or text (key=value)", "json", "text")
	fs.BoolVar(&o.pprof, "pprof", false, "serve /debug/pprof/ on the admin listener (off by default)")
	fs.IntVar(&o.gogc, "gogc", defaultGOGC, "garbage collector target percentage, as GOGC (-1 turns the collector off)")
	return fs, o
}

func edgeFlags() (*flag.FlagSet, *serverOpts) {
	return serverFlagSet("edge", "causeway.yaml", "the routes `FILE` (reloaded on change and on SIGHUP)", edgeGOGC)
}

func sidecarFlags() (*flag.FlagSet, *serverOpts) {
	return serverFlagSet("sidecar", "sidecar.yaml", "the sidecar `FILE` (reloaded on change and on SIGHUP)", sidecarGOGC)
}

// parseServerFlags parses a server command's flags, builds its logger and
// sets the GC target: -gogc when given, else the GOGC environment variable
// when set, else the command's default. ok is false when the command must
// end now, with code (0 after -h).
func parseServerFlags(fs *flag.FlagSet, o *serverOpts, args []string, stderr io.Writer) (sf serverFlags, code int, ok bool) {
	name := fs.Name()
	withHelp(fs, stderr)
	if code, ok := parseFlags(fs, args); !ok {
		return serverFlags{}, code, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "causeway %s: unexpected argument %q (the file is given with -config)\n", name, fs.Arg(0))
		return serverFlags{}, 2, false
	}
	gogcSet := false
	fs.Visit(func(f *flag.Flag) { gogcSet = gogcSet || f.Name == "gogc" })
	if gogcSet || os.Getenv("GOGC") == "" {
		debug.SetGCPercent(o.gogc)
	}
	log, err := newLogger(stderr, o.logLevel, o.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "causeway %s: %v\n", name, err)
		return serverFlags{}, 2, false
	}
	setMemoryLimit(log)
	return serverFlags{config: o.config, log: log, pprof: o.pprof}, 0, true
}

func runEdge(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, o := edgeFlags()
	sf, code, ok := parseServerFlags(fs, o, args, stderr)
	if !ok {
		return code
	}
	if msg := wrongKind(sf.config, routes.KindEdge); msg != "" {
		fmt.Fprintln(stderr, msg)
		return 1
	}
	log := sf.log
	installProcessLogger(log)
	// A process started by a SIGUSR2 upgrade takes over its parent's sockets.
	inherited, err := gateway.InheritedFromEnv()
	if err != nil {
		fmt.Fprintln(stderr, "causeway edge:", err)
		return 1
	}
	edge, err := gateway.NewEdge(ctx, gateway.EdgeOptions{ConfigPath: sf.config, Logger: log, Pprof: sf.pprof, Inherited: inherited})
	if err != nil {
		printLoadError(stderr, "causeway edge", err)
		return 1
	}
	if err := edge.Serve(ctx); err != nil {
		log.Error("edge stopped", "error", err.Error())
		return 1
	}
	return 0
}

type validateOpts struct {
	kind      string
	skipFiles bool
}

func validateFlags() (*flag.FlagSet, *validateOpts) {
	fs, o := newFlagSet("validate"), &validateOpts{}
	enumVar(fs, &o.kind, "kind", "", "the `KIND` of file: edge or sidecar (default: told from the file's top-level keys)", routes.KindEdge, routes.KindSidecar)
	fs.BoolVar(&o.skipFiles, "skip-files", false, "check everything but the files the configuration names (certificates, keys, key lists), for a file written for another machine")
	return fs, o
}

func runValidate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, o := validateFlags()
	withHelp(fs, stderr)
	kind, skipFiles := &o.kind, &o.skipFiles
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	path := fs.Arg(0)
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "causeway validate:", err)
		return 1
	}
	k := *kind
	if k == "" {
		if k = routes.DetectKind(data); k == "" {
			k = routes.KindEdge
		}
	}
	var warnings routes.Errors
	switch k {
	case routes.KindEdge:
		if *skipFiles {
			var f *routes.File
			if f, err = routes.Load(path); err == nil {
				warnings = f.Warnings
			}
		} else {
			warnings, err = gateway.Check(ctx, path)
		}
	case routes.KindSidecar:
		var sc *routes.Sidecar
		if sc, err = routes.LoadSidecarWith(path, routes.Options{CheckFiles: !*skipFiles}); err == nil {
			warnings = sc.Warnings
		}
	default:
		fmt.Fprintf(stderr, "causeway validate: -kind %q: want edge or sidecar\n", k)
		return 2
	}
	if err != nil {
		printLoadError(stderr, "", err)
		return 1
	}
	// Warnings do not fail validation: the file is accepted as it is.
	printLoadError(stderr, "", warnings)
	fmt.Fprintf(stdout, "%s: ok (%s file)\n", path, k)
	return 0
}

// wrongKind says in one line that a server command was given the other
// kind of file; "" when the file is of the kind wanted, or cannot be read
// or told (the load then reports it properly).
func wrongKind(path, want string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	got := routes.DetectKind(data)
	if got == "" || got == want {
		return ""
	}
	article := "a"
	if got == routes.KindEdge {
		article = "an"
	}
	return fmt.Sprintf("causeway %s: %s is %s %s file (it has the %s file's keys): run causeway %s -config %s", want, path, article, got, got, got, path)
}

// printLoadError prints one error a line; a routes.Errors already names
// file:line:col for each.
func printLoadError(w io.Writer, prefix string, err error) {
	var list routes.Errors
	if errors.As(err, &list) {
		for _, e := range list {
			fmt.Fprintln(w, e.Error())
		}
		return
	}
	if prefix != "" {
		fmt.Fprintf(w, "%s: %v\n", prefix, err)
		return
	}
	fmt.Fprintln(w, err)
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("invalid -log-level %q", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("invalid -log-format %q: json or text", format)
}

// installProcessLogger makes log the process's default logger, once, at
// the start of a server command: libraries that log on their own (go-redis,
// through internal/redisclient; the standard log package) then write the
// same format as the server instead of plain text.
func installProcessLogger(log *slog.Logger) { slog.SetDefault(log) }
