package gateway

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"

	"github.com/causewayhq/causeway/routes"
)

type atomicRuntime = atomic.Pointer[runtime]

// feature is a long-lived part of the edge (authentication, rate limiting,
// plugins, TLS, mesh identity) that is configured from every routes file the
// edge loads. prepare builds what one configuration needs without touching
// the active one; release frees what prepare built once that configuration
// is retired.
type feature interface {
	prepare(ctx context.Context, f, prev *routes.File) (prepared, func() error, error)
	// ready is nil when the feature can serve (e.g. JWKS keys are loaded).
	ready() error
	close() error
}

// activator is a feature that must know when the configuration it
// prepared becomes the active one (a load can still fail after prepare).
type activator interface {
	activate()
}

// prepared is what a feature contributes to one configuration.
type prepared struct {
	stage  Stage         // a step in every route's chain, or nil
	tlsFor tlsConfigFunc // TLS for upstream connections, or nil
	// tlsKey identifies the identity material behind tlsFor, so upstream
	// pools are rebuilt when it changes and shared while it does not.
	tlsKey string
	// beforeAuth is a step placed before authentication and rate limits
	// (plugins of phase BeforeAuth, such as CORS), or nil.
	beforeAuth Stage
}

// stageFunc adapts a function to Stage.
type stageFunc func(routes.Route) (func(http.Handler) http.Handler, error)

func (f stageFunc) Middleware(r routes.Route) (func(http.Handler) http.Handler, error) { return f(r) }

// readiness reports every feature that is not ready.
func (e *Edge) readiness() error {
	var errs []error
	for _, ft := range e.features {
		if err := ft.ready(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
