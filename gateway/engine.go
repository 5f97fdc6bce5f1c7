package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/h1"
	"github.com/causewayhq/causeway/gateway/internal/h1server"
	"github.com/causewayhq/causeway/routes"
)

// HTTP1EngineEnv names the environment variable that chooses the HTTP/1.1
// engine of the data listeners when the configuration file's
// server.http1_engine is left out: "causeway" (the default) or "net/http"
// (deprecated). `make test` runs its chosen suites again with "net/http"
// through it.
const HTTP1EngineEnv = "CAUSEWAY_HTTP1_ENGINE"

// http1Engine is the engine the data listeners serve HTTP/1.1 with: the
// file's, else the environment's (lookup), else routes.HTTP1EngineDefault.
func http1Engine(s routes.Server, lookup func(string) (string, bool)) (string, error) {
	if s.HTTP1Engine != "" {
		return s.HTTP1Engine, nil
	}
	v, ok := lookup(HTTP1EngineEnv)
	if !ok || v == "" {
		return routes.HTTP1EngineDefault, nil
	}
	if !slices.Contains(routes.HTTP1Engines, v) {
		return "", fmt.Errorf("%s: must be %q or %q (found %q)", HTTP1EngineEnv, routes.HTTP1EngineNetHTTP, routes.HTTP1EngineCauseway, v)
	}
	return v, nil
}

// httpServer is what serving, draining and closing need of a data
// listener's server, whichever engine it is.
type httpServer interface {
	Serve(ln net.Listener) error
	ServeTLS(ln net.Listener, certFile, keyFile string) error
	Shutdown(ctx context.Context) error
	Close() error
}

var (
	_ httpServer = netHTTPServer{}
	_ httpServer = (*h1server.Server)(nil)
)

// serverSpec is a data listener's server before the engine is chosen.
type serverSpec struct {
	handler http.Handler
	tls     *tls.Config // nil: plain
	h2c     bool        // plain listeners: HTTP/2 with prior knowledge too
}

// newDataServer builds a data listener's server with the timeouts and
// limits that stop slow or greedy clients, on the chosen engine.
func newDataServer(log *slog.Logger, s routes.Server, engine string, spec serverSpec) httpServer {
	if engine == routes.HTTP1EngineCauseway {
		return &h1server.Server{
			Handler:           spec.handler,
			TLSConfig:         spec.tls,
			ReadHeaderTimeout: s.ReadHeaderTimeout.D(),
			ReadTimeout:       s.ReadTimeout.D(),
			WriteTimeout:      s.WriteTimeout.D(),
			IdleTimeout:       s.IdleTimeout.D(),
			MaxHeaderBytes:    s.MaxHeaderBytes,
			H2C:               spec.h2c,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
	}
	lim := h1server.Limits(s.MaxHeaderBytes)
	srv := newHTTPServer(log, s, headLimits(spec.handler, lim))
	srv.TLSConfig = spec.tls
	if spec.h2c {
		withH2C(srv)
	}
	return netHTTPServer{Server: srv, lim: lim}
}

// netHTTPServer is the deprecated engine: net/http's server, whose plain
// listeners' connections answer net/http's own refusals as the own engine
// does (refusalConn; see nethttprefusal.go for why not over TLS).
type netHTTPServer struct {
	*http.Server
	lim h1.Limits
}

func (s netHTTPServer) Serve(ln net.Listener) error {
	return s.Server.Serve(refusalListener{Listener: ln, lim: s.lim, now: time.Now})
}
