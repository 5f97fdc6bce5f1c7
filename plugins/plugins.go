// Package plugins is Causeway's plugin API and registry.
//
// A plugin registers a Factory from init under a unique name. The routes
// file's plugins section creates named instances of it (use + config); a
// route lists the instances it runs, in order, and the gateway wraps the
// route's handler with them through Instances.Chain. A factory decodes and
// checks its config when the file loads, so bad config is a load error with
// file:line:col and never a surprise at request time.
package plugins

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"sort"
	"sync"

	"github.com/causewayhq/causeway/internal/httperr"
	"github.com/causewayhq/causeway/routes"
)

// Instance is one configured plugin: it wraps the rest of the request path.
// Wrap is called once per route when the routes file loads, never per
// request. An Instance that holds resources (goroutines, files, caches) also
// implements io.Closer; Close is called once when a reload drops the
// instance or the edge stops, after the routes using it stopped taking new
// requests.
type Instance interface {
	Wrap(next http.Handler) http.Handler
}

// Factory turns an instance's config into an Instance. It decodes cfg with
// cfg.Decode (strict: unknown keys are errors, located in the routes file)
// and reports semantic problems with cfg.ErrorAt, so that every error names
// file:line:col. It must not serve or start anything that outlives a failed
// load: if it returns an error, nothing it opened may stay open.
type Factory func(ctx context.Context, cfg routes.Raw) (Instance, error)

// Func adapts a plain middleware function to Instance.
type Func func(next http.Handler) http.Handler

// Wrap calls f(next).
func (f Func) Wrap(next http.Handler) http.Handler { return f(next) }

var _ Instance = Func(nil)

var (
	mu       sync.RWMutex
	registry = map[string]Factory{}
)

// A plugin name is what routes files write after use:, and what
// `causeway version -plugins` lists: keep it plain.
var pluginNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// Register adds a plugin under name. It is meant to be called from init: an
// empty or malformed name, a nil factory or a name registered twice is a
// programming error and panics, so that two plugins fighting over one name
// are caught when the binary starts rather than by whichever init ran last.
func Register(name string, f Factory) {
	if !pluginNameRe.MatchString(name) {
		panic(fmt.Sprintf("plugins: Register: invalid plugin name %q (lower-case letters, digits, '.', '_', '-')", name))
	}
	if f == nil {
		panic(fmt.Sprintf("plugins: Register(%q): nil factory", name))
	}
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[name]; dup {
		panic(fmt.Sprintf("plugins: Register: plugin %q registered twice", name))
	}
	registry[name] = f
}

// Names returns the registered plugin names, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func lookup(name string) (Factory, bool) {
	mu.RLock()
	defer mu.RUnlock()
	f, ok := registry[name]
	return f, ok
}

// New creates the instance called name from its routes-file entry. An unknown
// plugin is an error located at the instance; errors from the factory are
// returned located in the routes file (as routes.Errors).
func New(ctx context.Context, name string, inst routes.PluginInst) (Instance, error) {
	at := &routes.Error{File: inst.Config.File, Path: "plugins." + name + ".use", Pos: routes.Pos{Line: 1, Col: 1}}
	if n := inst.Config.Node; n != nil {
		at.Pos = routes.Pos{Line: n.Line, Col: n.Column}
	}
	return newInstance(ctx, name, inst, at)
}

// newInstance is New with the position of the instance's use key, which
// only the loaded File knows.
func newInstance(ctx context.Context, name string, inst routes.PluginInst, at *routes.Error) (Instance, error) {
	factory, ok := lookup(inst.Use)
	if !ok {
		e := *at
		e.Msg = fmt.Sprintf("unknown plugin %q%s", inst.Use, knownPlugins())
		return nil, routes.Errors{&e}
	}
	i, err := callFactory(ctx, factory, inst.Config)
	if err != nil {
		return nil, located(name, inst, err)
	}
	if i == nil {
		return nil, located(name, inst, errors.New("the plugin returned no instance"))
	}
	return i, nil
}

// callFactory runs an out-of-tree factory so that a panic in it is a load
// error for the one file, not a crash of an edge that is reloading.
func callFactory(ctx context.Context, f Factory, cfg routes.Raw) (i Instance, err error) {
	defer func() {
		if p := recover(); p != nil {
			i, err = nil, fmt.Errorf("the plugin panicked: %v", p)
		}
	}()
	return f(ctx, cfg)
}

func knownPlugins() string {
	names := Names()
	if len(names) == 0 {
		return " (no plugins are registered in this binary)"
	}
	return fmt.Sprintf(" (registered: %v; out-of-tree plugins need `causeway build -with MODULE`)", names)
}

// located makes sure a factory's error names file:line:col: errors from
// cfg.Decode and cfg.ErrorAt already do; anything else is placed at the
// instance's config and prefixed with the instance it came from.
func located(name string, inst routes.PluginInst, err error) routes.Errors {
	var es routes.Errors
	if errors.As(err, &es) && len(es) > 0 {
		return es
	}
	var e *routes.Error
	if errors.As(err, &e) {
		return routes.Errors{e}
	}
	at := inst.Config.ErrorAt("", "plugin instance %q (%s): %v", name, inst.Use, err)
	return routes.Errors{at}
}

// Error answers with Causeway's JSON error body
// ({"error": msg, "status": status, "request_id": ...}), the same body every
// other part of the edge sends. msg is shown to the client: keep internals
// out of it.
func Error(w http.ResponseWriter, r *http.Request, status int, msg string) {
	httperr.Write(w, r, status, msg)
}

// RequestInfo is what the gateway knows about a request before its plugins
// run.
type RequestInfo struct {
	// Route is the name of the matched route.
	Route string
	// RequestID is the id the edge gave the request (also in the
	// X-Request-Id request header).
	RequestID string
	// ClientIP is the client's address as the edge believes it: the TCP
	// peer, or behind the file's trusted_proxies the right-most untrusted
	// X-Forwarded-For or Forwarded (for=) entry. The zero Addr means the
	// edge did not say.
	ClientIP netip.Addr
	// ClientIPUnresolved is set when a trusted proxy's X-Forwarded-For or
	// Forwarded entry was not an address, or the two headers named
	// different clients: ClientIP is then only the last hop that vouched
	// for the chain (the trusted peer when they disagree), and a decision
	// that must not fail open (an allow list) refuses instead.
	ClientIPUnresolved bool
}

type infoKey struct{}

// WithRequestInfo returns ctx carrying info; the gateway calls it once per
// request, before the route's plugins run.
func WithRequestInfo(ctx context.Context, info RequestInfo) context.Context {
	return context.WithValue(ctx, infoKey{}, info)
}

// Info returns the RequestInfo on ctx, or the zero RequestInfo when the
// request did not come through the gateway (e.g. in a plugin's unit test).
func Info(ctx context.Context) RequestInfo {
	info, _ := ctx.Value(infoKey{}).(RequestInfo)
	return info
}

// RequestID returns the request's id: from the gateway's RequestInfo, else
// from the X-Request-Id header the edge sets on every inbound request.
func RequestID(r *http.Request) string {
	if id := Info(r.Context()).RequestID; id != "" {
		return id
	}
	return r.Header.Get(httperr.RequestIDHeader)
}

// RequestIDHeader is the request header in which the edge passes the request
// id to plugins and upstreams.
const RequestIDHeader = httperr.RequestIDHeader

var _ io.Closer = (*Instances)(nil)
