// Command causeway is the API gateway edge, the mesh sidecar, and their tools.
package main

import (
	"os"

	"github.com/causewayhq/causeway/cmd/causeway/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
