package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/causewayhq/causeway/gateway"
	"github.com/causewayhq/causeway/routes"
)

func runSidecar(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, o := sidecarFlags()
	sf, code, ok := parseServerFlags(fs, o, args, stderr)
	if !ok {
		return code
	}
	if msg := wrongKind(sf.config, routes.KindSidecar); msg != "" {
		fmt.Fprintln(stderr, msg)
		return 1
	}
	log := sf.log
	installProcessLogger(log)
	// A process started by a SIGUSR2 upgrade takes over its parent's sockets.
	inherited, err := gateway.InheritedFromEnv()
	if err != nil {
		fmt.Fprintln(stderr, "causeway sidecar:", err)
		return 1
	}
	sc, err := gateway.NewSidecar(ctx, gateway.SidecarOptions{ConfigPath: sf.config, Logger: log, Pprof: sf.pprof, Inherited: inherited})
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
