package cli

import (
	"context"
	"io"

	"github.com/causewayhq/causeway/gateway"
)

func init() {
	Register(Command{Name: "sidecar", Summary: "run the mesh sidecar beside a service", Run: runSidecar})
}

func runSidecar(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	sf, ok := parseServerFlags("sidecar", "sidecar.yaml", "sidecar file (reloaded on change and on SIGHUP)", sidecarGOGC, args, stderr)
	if !ok {
		return 2
	}
	log := sf.log
	sc, err := gateway.NewSidecar(ctx, gateway.SidecarOptions{ConfigPath: sf.config, Logger: log, Pprof: sf.pprof})
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
