package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"

	"context"
	"errors"
	"net/http"

	"github.com/causewayhq/causeway/routes"
)

// feature is a long-lived part of the edge (authentication, rate limiting,
// plugins, TLS, mesh identity) that is configured from every routes file the
// edge loads.
//
// A reload is build, commit, retire (as in Caddy): prepare builds what one
// configuration needs and touches nothing anyone can observe (no certificate
// served, identity presented, limiter store, exporter or log changes); the
// file can still be refused by a later feature or by the runtime. Only
// Edge.commit, once the whole configuration is built, runs each feature's
// commit step. A refused configuration runs the undo steps instead. The
// release func frees what prepare built once that configuration is retired
// (or at once when it is refused).
type feature interface {
	prepare(ctx context.Context, f, prev *routes.File) (prepared, func() error, error)
	// ready is nil when the feature can serve (e.g. JWKS keys are loaded).
	ready() error
	close() error
}

// chainOrder is every route's chain, in order, stated once (as CoreDNS's
// plugin.cfg): features contribute stages under these names, and the edge
// assembles them in this order, then the proxy. A name no feature fills
// is left out. Resources (TLS, the mesh identity) are not stages.
var chainOrder = [...]string{
	stageTracing,           // the server span covers everything after it
	stagePluginsBeforeAuth, // plugins of phase BeforeAuth (CORS preflights)
	stageAuth,              // authentication; records the principal
	stageRateLimit,         // limits, keyed by the principal where asked
	stagePlugins,           // the other plugins, in the route's order
}

const (
	stageTracing           = "tracing"
	stagePluginsBeforeAuth = "plugins before auth"
	stageAuth              = "auth"
	stageRateLimit         = "ratelimit"
	stagePlugins           = "plugins"
)

// orderStages lists the stages the features contributed in chain order.
// A stage under a name chainOrder does not have, or two features filling
// one name, is a programming error.
func orderStages(contributed []map[string]Stage) []Stage {
	byName := map[string]Stage{}
	for _, m := range contributed {
		for name, s := range m {
			if _, dup := byName[name]; dup {
				panic("gateway: two features contribute the stage " + name)
			}
			byName[name] = s
		}
	}
	var out []Stage
	for _, name := range chainOrder {
		if s := byName[name]; s != nil {
			out = append(out, s)
			delete(byName, name)
		}
	}
	for name := range byName {
		panic("gateway: stage " + name + " has no place in chainOrder")
	}
	return out
}

// prepared is what a feature contributes to one configuration.
type prepared struct {
	// stages are its steps of every route's chain, by their name in
	// chainOrder (nil: none).
	stages map[string]Stage
	tlsFor proxy.TLSConfigFunc // TLS for upstream connections, or nil
	// tlsKey identifies the identity material behind tlsFor, so upstream
	// pools are rebuilt when it changes and shared while it does not.
	tlsKey string
	// caller sends caller tokens to mesh upstreams (nil: no change).
	caller *callerSend
	// commit makes what prepare built the live state (the certificates
	// served, the identity, the limiter store). It runs at the single
	// commit point, after every feature prepared and the runtime was
	// built, so it cannot fail. nil: nothing to switch.
	commit func()
	// undo frees what prepare built for a configuration that is refused;
	// it never runs once commit has. nil: nothing to free.
	undo func()
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
	if err := e.sources.ready(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
