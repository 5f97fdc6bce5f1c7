package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/causewayhq/causeway/auth"
	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/providers/kubernetes"
	"github.com/causewayhq/causeway/routes"
)

// RouteSource is a source of routes besides the routes file: the
// Kubernetes provider. Run delivers a fragment each time the source's view
// changes, never before the source is complete (its caches synced), and
// returns when ctx ends. apply returns the refusal when the fragment, merged
// with the file, is not a valid model: the edge keeps what it serves, and
// the source says so in its own status.
type RouteSource interface {
	Run(ctx context.Context, apply func(routes.Fragment) error) error
}

// NewRouteSource builds the source of a providers.kubernetes section. It
// is an option so that tests can feed fragments directly; the default is
// the Kubernetes provider.
type NewRouteSource func(cfg routes.KubernetesProvider, log *slog.Logger) (RouteSource, error)

// routeSources runs the edge's route source: at most one, the one the
// active generation's file asks for. The fragment it last delivered is
// merged into every generation built while it runs, file reloads
// included, so a change on either side rebuilds one model.
type routeSources struct {
	e *Edge

	mu      sync.Mutex
	cfg     *routes.KubernetesProvider // the running source's settings
	frag    routes.Fragment            // merged into the next build
	applied bool                       // the source delivered and its model is live
	cancel  context.CancelFunc
	// base is the routes file of the live generation, before the
	// fragment was merged: what a policy's entries are checked against;
	// baseData is its text.
	base     *routes.File
	baseData []byte
	src      RouteSource
	// checked memoizes checkPolicy for base: a snapshot of the cluster
	// checks every policy, most of them unchanged.
	checked map[[32]byte]error
}

// fragment is what a build merges in now.
func (rs *routeSources) fragment() routes.Fragment {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.frag
}

// prepare checks the providers section of f and returns the commit step
// that starts, restarts or stops the source. Building the source (reading
// a kubeconfig) happens here, so a bad one refuses the file like any
// other error; nothing runs until commit.
func (rs *routeSources) prepare(f *routes.File) (commit func(), err error) {
	want := f.Providers.Kubernetes
	rs.mu.Lock()
	same := reflect.DeepEqual(want, rs.cfg)
	rs.mu.Unlock()
	if same {
		return func() {}, nil
	}
	if want == nil {
		return func() { rs.start(nil, nil) }, nil
	}
	newSource := rs.e.opts.RouteSource
	if newSource == nil {
		// The https listener is bound at start, from the file the edge
		// started with; Gateways' HTTPS listeners are served there.
		https := f.Listen.HTTPS != "" && f.TLS != nil
		newSource = func(cfg routes.KubernetesProvider, log *slog.Logger) (RouteSource, error) {
			return kubernetes.NewSource(cfg, kubernetes.Options{Logger: log, HTTPS: https, Check: rs.checkPolicy})
		}
	}
	src, err := newSource(*want, rs.e.log.With("provider", "kubernetes"))
	if err != nil {
		return nil, &routes.Error{File: f.Path, Path: "providers.kubernetes", Msg: err.Error(), Pos: f.At("providers.kubernetes")}
	}
	cfg := *want
	if rs.e.opts.checkOnly {
		// validate: the source is built (its settings checked), never run.
		return func() {}, nil
	}
	return func() { rs.start(&cfg, src) }, nil
}

// start stops the running source, if any, and starts src. It runs at a
// commit point, under the server's lock, so it does not wait for the old
// source to end: that one may be blocked applying a fragment, which needs
// the same lock. Its applies are ignored from now on (apply checks ctx).
func (rs *routeSources) start(cfg *routes.KubernetesProvider, src RouteSource) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.cancel != nil {
		rs.cancel()
	}
	rs.cfg, rs.cancel, rs.src = cfg, nil, src
	if src == nil {
		// Off: the next build has no fragment to merge.
		rs.frag, rs.applied = routes.Fragment{}, false
		return
	}
	// A restarted source (its settings changed) keeps the last fragment
	// merged until it delivers its own: a file reload meanwhile must not
	// drop the cluster's routes.
	ctx, cancel := context.WithCancel(rs.e.bgCtx)
	rs.cancel = cancel
	rs.e.bg.Add(1)
	go func() { // owned by the server: Close cancels bgCtx and waits on bg
		defer rs.e.bg.Done()
		err := src.Run(ctx, func(frag routes.Fragment) error { return rs.apply(ctx, frag) })
		if err != nil && ctx.Err() == nil {
			rs.e.log.Error("route source stopped; the edge serves the last model it built", "provider", "kubernetes", "error", err.Error())
		}
	}()
}

// apply builds a generation with frag merged in. A refused fragment leaves
// the fragment of the live generation in place, so a later file reload
// does not pick up what was refused.
func (rs *routeSources) apply(ctx context.Context, frag routes.Fragment) error {
	if ctx.Err() != nil {
		return ctx.Err() // a replaced source: its view is no longer wanted
	}
	rs.mu.Lock()
	prev := rs.frag
	rs.frag = frag
	rs.mu.Unlock()
	err := rs.e.rebuild(ctx)
	rs.mu.Lock()
	if err != nil {
		rs.frag = prev
	} else if ctx.Err() == nil {
		rs.applied = true
	}
	rs.mu.Unlock()
	if err != nil {
		rs.e.log.Error("routes from Kubernetes refused; the active configuration stays", "error", err.Error())
		return err
	}
	rs.e.log.Info("routes from Kubernetes loaded", "routes", len(frag.Routes), "upstreams", len(frag.Upstreams))
	return nil
}

// ready is nil once the source has delivered a model that is live: until
// then the edge serves only the file's routes, and a load balancer should
// not send it traffic meant for the cluster's.
func (rs *routeSources) ready() error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.cfg != nil && !rs.applied {
		return errors.New("kubernetes: waiting for the first complete view of the cluster")
	}
	return nil
}

// merge returns f with the source's fragment in it, when f enables one.
func (rs *routeSources) merge(f *routes.File) (*routes.File, error) {
	if f.Providers.Kubernetes == nil {
		return f, nil
	}
	m, err := f.Merge(rs.fragment())
	if err != nil {
		return nil, fmt.Errorf("with the routes from Kubernetes: %w", err)
	}
	return m, nil
}

// setBase records the file of a generation being committed. A file whose
// text changed makes the running source judge its policies again: one may
// name an authenticator the file has just gained or lost.
func (rs *routeSources) setBase(f *routes.File, data []byte) {
	rs.mu.Lock()
	if rs.base != nil && bytes.Equal(rs.baseData, data) {
		rs.mu.Unlock()
		return // the same text: keep the file the memo knows
	}
	resync := rs.base != nil
	rs.base, rs.baseData = f, data
	src := rs.src
	rs.mu.Unlock()
	if r, ok := src.(interface{ Resync() }); ok && resync {
		r.Resync()
	}
}

// checkPolicy builds what a CausewayPolicy adds (frag: its authenticators,
// rate limits and plugin instances, and one route that uses them) as the
// edge would, against the file the edge serves, then releases it. A
// refusal here leaves that policy out with its reason in its status, where
// it would otherwise refuse the whole model with every other change.
func (rs *routeSources) checkPolicy(frag routes.Fragment) error {
	rs.mu.Lock()
	base := rs.base
	rs.mu.Unlock()
	if base == nil {
		return errors.New("no routes file loaded yet")
	}
	// Keyed by everything frag holds, the in-memory secrets' bytes
	// behind their pointers too, so a rotated Secret is checked again.
	key := policyMemoKey(base, frag)
	rs.mu.Lock()
	err, seen := rs.checked[key]
	rs.mu.Unlock()
	if seen {
		return err
	}
	err = rs.buildPolicy(base, frag)
	rs.mu.Lock()
	if rs.checked == nil || len(rs.checked) >= 4096 {
		rs.checked = map[[32]byte]error{}
	}
	rs.checked[key] = err
	rs.mu.Unlock()
	return err
}

func (rs *routeSources) buildPolicy(base *routes.File, frag routes.Fragment) error {
	m, err := base.Merge(frag)
	if err != nil {
		return err
	}
	// Only what the policy's route uses is built: the file's other
	// authenticators and plugins are the file's to answer for.
	mini := &routes.File{Path: m.Path, Positions: m.Positions, Redis: m.Redis,
		Authenticators: map[string]routes.Authenticator{}, Plugins: map[string]routes.PluginInst{}}
	for _, r := range frag.Routes {
		for _, a := range r.Auth {
			mini.Authenticators[a] = m.Authenticators[a]
		}
		for _, p := range r.Plugins {
			mini.Plugins[p] = m.Plugins[p]
		}
	}
	ctx, cancel := context.WithTimeout(rs.e.bgCtx, 10*time.Second)
	defer cancel()
	opts := auth.Options{Logger: slog.New(slog.DiscardHandler), Now: rs.e.opts.Clock}
	for _, ft := range rs.e.features {
		if a, ok := ft.(*authFeature); ok {
			opts.JWKS = a.jwks
		}
	}
	set, err := auth.NewSet(ctx, mini, nil, opts)
	if err != nil {
		return err
	}
	set.Close()
	inst, err := plugins.NewInstances(ctx, mini)
	if err != nil {
		return err
	}
	return inst.Close()
}
