package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
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
// active generation's file asks for, whose fragment every generation
// built while it runs merges in (fragmentSource).
type routeSources struct {
	e   *Edge
	run fragmentSource

	mu  sync.Mutex
	cfg *routes.KubernetesProvider // the running source's settings
	// meshTD is the trust domain of the mesh section the running source
	// was started with ("" without one): mesh backends are called with it,
	// and Pods are watched only with it.
	meshTD string
	// base is the routes file of the live generation, before the
	// fragment was merged: what a policy's entries are checked against;
	// baseData is its text.
	base     *routes.File
	baseData []byte
	src      RouteSource
	// checked memoizes checkPolicy for base: a snapshot of the cluster
	// checks every policy, most of them unchanged.
	checked map[[32]byte]error
	// memo keeps what checking the fragment's routes found of each route
	// alone, so a change re-checks only the routes it touched (and every
	// route against the rest of the model).
	memo routes.MergeMemo
}

func (rs *routeSources) init(e *Edge) {
	rs.e = e
	rs.run = fragmentSource{
		what: "routes from Kubernetes", waiting: "kubernetes: waiting for the first complete view of the cluster",
		log: e.log, bgCtx: e.bgCtx, bg: &e.bg, rebuild: e.rebuild,
		loaded: func(frag routes.Fragment) []any {
			return []any{"routes", len(frag.Routes), "upstreams", len(frag.Upstreams)}
		},
		inPlace: e.updateEndpoints,
	}
}

// updateEndpoints applies a fragment of the edge's routes from
// Kubernetes in place when only endpoints changed (server.updateEndpoints):
// the generation's model is its routes file.
func (e *Edge) updateEndpoints(ctx context.Context, prev, next routes.Fragment, commit func()) bool {
	return e.server.updateEndpoints(ctx, "routes from Kubernetes", prev, next, commit, 0,
		func(g *generation[*routes.File]) *routes.File { return g.cfg },
		func(g *generation[*routes.File], f *routes.File) { g.cfg = f })
}

// updateEndpoints applies next in place when it differs from prev, the
// fragment of the live generation, only in upstreams' endpoints: the
// upstreams of the generation's runtime rt take the new sets (as dns and
// endpoints_file upstreams follow theirs), and no generation is built.
// Pods coming and going are most of a cluster's changes, and building a
// generation of 10,000 routes takes a good part of a second. Endpoints
// that stay keep their health and ejection state. Each upstream's set is
// swapped atomically; the model (routes, policies, upstreams' settings)
// is the one that was validated and committed, so no partial model is
// ever served. Anything unexpected returns false, and next is built as a
// whole. Both the edge's routes and the sidecar's outbound services from
// Kubernetes come this way; model and setModel read and replace the
// merged model of runtime rt that the active generation keeps (under the
// server's lock: requests never read it).
func (s *server[C]) updateEndpoints(ctx context.Context, what string, prev, next routes.Fragment, commit func(), rt int,
	model func(*generation[C]) *routes.File, setModel func(*generation[C], *routes.File)) bool {
	changed, ok := routes.EndpointsChanged(prev, next)
	if !ok {
		return false
	}
	for name, eps := range changed {
		if routes.CheckEndpoints(name, eps) != nil {
			return false // the build refuses it, with the error in its place
		}
	}
	// Under the server's lock no build runs: one that ran before has
	// committed the generation updated here, one that runs after merges
	// next.
	s.mu.Lock()
	defer s.mu.Unlock()
	if ctx.Err() != nil {
		return true // a replaced source: apply ignores it too
	}
	r := s.active.runtime(rt)
	f := model(s.active)
	if r == nil || f == nil {
		return false
	}
	for name := range changed {
		live, inFile := f.Upstreams[name]
		u := r.upstreams[name]
		// The live generation must hold exactly prev's endpoints, else the
		// fragment it merged was not prev.
		if u == nil || !inFile || !slices.Equal(live.Endpoints, prev.Upstreams[name].Endpoints) ||
			live.DNS != "" || live.DNSSRV != "" || live.EndpointsFile != "" {
			return false
		}
	}
	commit()
	// The generation's model shows the new endpoints too (/config): a
	// copy, as requests may be reading the one the runtime holds.
	nf := *f
	nf.Upstreams = maps.Clone(f.Upstreams)
	for name, eps := range changed {
		up := nf.Upstreams[name]
		up.Endpoints = eps
		nf.Upstreams[name] = up
		if err := r.upstreams[name].SetEndpoints(eps); err != nil {
			// Checked above: only upstreams that list their endpoints.
			s.log.Error("endpoints of "+what, "upstream", name, "error", err.Error())
		}
	}
	setModel(s.active, &nf)
	s.log.Debug("endpoints of "+what+" updated in place", "upstreams", len(changed))
	return true
}

// fragment is what a build merges in now.
func (rs *routeSources) fragment() routes.Fragment { return rs.run.fragment() }

// prepare checks the providers section of f and returns the commit step
// that starts, restarts or stops the source. Building the source (reading
// a kubeconfig) happens here, so a bad one refuses the file like any
// other error; nothing runs until commit.
func (rs *routeSources) prepare(f *routes.File) (commit func(), err error) {
	want := f.Providers.Kubernetes
	meshTD := ""
	if f.Mesh != nil {
		meshTD = f.Mesh.TrustDomain
	}
	rs.mu.Lock()
	same := reflect.DeepEqual(want, rs.cfg) && meshTD == rs.meshTD
	rs.mu.Unlock()
	if same {
		return func() {}, nil
	}
	if want == nil {
		return func() { rs.start(nil, nil, "") }, nil
	}
	newSource := rs.e.opts.RouteSource
	if newSource == nil {
		// The https listener is bound at start, from the file the edge
		// started with; Gateways' HTTPS listeners are served there.
		https := f.Listen.HTTPS != "" && f.TLS != nil
		newSource = func(cfg routes.KubernetesProvider, log *slog.Logger) (RouteSource, error) {
			m := rs.e.metrics
			for _, r := range []string{"written", "failed"} {
				m.statusWrites.WithLabelValues(r) // zeros from the start, so rate() works
			}
			return kubernetes.NewSource(cfg, kubernetes.Options{Logger: log, HTTPS: https, Check: rs.checkPolicy, MeshTrustDomain: meshTD,
				Leading: m.leading, StatusWritten: m.statusWritten})
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
	return func() { rs.start(&cfg, src, meshTD) }, nil
}

// start stops the running source, if any, and starts src (at a commit
// point: fragmentSource.start).
func (rs *routeSources) start(cfg *routes.KubernetesProvider, src RouteSource, meshTD string) {
	rs.mu.Lock()
	rs.cfg, rs.src, rs.meshTD = cfg, src, meshTD
	rs.mu.Unlock()
	if src == nil {
		rs.run.start(nil)
		return
	}
	rs.run.start(src.Run)
}

// ready is nil once the source has delivered a model that is live: until
// then the edge serves only the file's routes, and a load balancer should
// not send it traffic meant for the cluster's.
func (rs *routeSources) ready() error { return rs.run.ready() }

// merge returns f with the source's fragment in it, when f enables one.
func (rs *routeSources) merge(f *routes.File) (*routes.File, error) {
	if f.Providers.Kubernetes == nil {
		return f, nil
	}
	memo := &rs.memo
	if rs.e.opts.noReuse {
		memo = nil // the reference: every route checked in full
	}
	m, err := f.MergeWith(rs.fragment(), memo)
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
