// Command gen-schema writes docs/routes.schema.json and
// docs/sidecar.schema.json from the routes package's types.
package main

import (
	"log"
	"os"
	"path/filepath"

	"github.com/causewayhq/causeway/routes"
)

func main() {
	dir := filepath.Join("..", "docs")
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	for name, sidecar := range map[string]bool{"routes.schema.json": false, "sidecar.schema.json": true} {
		data, err := routes.JSONSchema(sidecar)
		if err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
