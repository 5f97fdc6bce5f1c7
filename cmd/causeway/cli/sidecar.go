package cli

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/causewayhq/causeway/gateway"
)

func init() {
	Register(Command{Name: "sidecar", Summary: "run the mesh sidecar beside a service", Run: runSidecar})
}

func runSidecar(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sidecar", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "sidecar.yaml", "sidecar file (reloaded on change and on SIGHUP)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	pprof := fs.Bool("pprof", false, "serve /debug/pprof/ on the admin listener (off by default)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "causeway sidecar:", err)
		return 2
	}
	sc, err := gateway.NewSidecar(ctx, gateway.SidecarOptions{ConfigPath: *config, Logger: log, Pprof: *pprof})
	if err != nil {
		printLoadError(stderr, "causeway sidecar", err)
		return 1
	}
	if err := sc.Serve(ctx); err != nil {
		log.Error("sidecar stopped", "error", err.Error())
		return 1
	}
	return 0
}
