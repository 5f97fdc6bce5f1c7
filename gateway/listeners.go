package gateway

import (
	"github.com/causewayhq/causeway/routes"
)

// dataServers builds the servers of the http and https listeners.
func (e *Edge) dataServers(f *routes.File) ([]dataServer, error) {
	var out []dataServer
	if e.httpLn != nil {
		out = append(out, dataServer{srv: e.newServer(f, e), ln: e.httpLn})
	}
	return out, nil
}

func defaultFeatures(e *Edge) []feature { return nil }
