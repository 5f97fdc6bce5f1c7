package gateway

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"

	"github.com/causewayhq/causeway/providers/kubernetes"
	"github.com/causewayhq/causeway/routes"
)

// outboundSources runs the source of the sidecar file's outbound.kubernetes
// block: at most one, the one the active generation's file asks for, whose
// fragment every generation built while it runs merges into its outbound
// runtime (fragmentSource).
type outboundSources struct {
	s   *Sidecar
	run fragmentSource

	mu  sync.Mutex
	key *outboundKey // the running source's settings
}

func (ob *outboundSources) init(s *Sidecar) {
	ob.s = s
	// The source logs what it loaded, with what it left out.
	ob.run = fragmentSource{
		what: "outbound services from Kubernetes", waiting: "kubernetes: waiting for the first complete view of the cluster's services",
		log: s.log, bgCtx: s.bgCtx, bg: &s.bg, rebuild: s.rebuild,
		// Endpoint changes (pods coming, going, changing readiness) update
		// the live outbound upstreams as the edge's do, without a build.
		inPlace: func(ctx context.Context, prev, next routes.Fragment, commit func()) bool {
			return s.server.updateEndpoints(ctx, "outbound services from Kubernetes", prev, next, commit, 1,
				func(g *generation[*sidecarGen]) *routes.File { return g.cfg.outbound },
				func(g *generation[*sidecarGen], f *routes.File) { g.cfg.outbound = f })
		},
	}
}

// outboundKey is what the running source was built from: a change to any
// of it starts a new one.
type outboundKey struct {
	cfg  routes.OutboundKubernetes
	opts kubernetes.OutboundOptions
}

// prepare checks the outbound.kubernetes block of cfg and returns the
// commit step that starts, restarts or stops the source. The source is
// built here (its kubeconfig read), so a bad one refuses the file; nothing
// runs until commit.
func (ob *outboundSources) prepare(cfg *routes.Sidecar) (commit func(), err error) {
	var want *outboundKey
	if cfg.Outbound != nil && cfg.Outbound.Kubernetes != nil {
		want = &outboundKey{cfg: *cfg.Outbound.Kubernetes, opts: kubernetes.OutboundOptions{
			TrustDomain: cfg.Identity.TrustDomain,
			// Bare names are the sidecar's own namespace's, as a pod's DNS
			// search path makes them.
			LocalNamespace: kubernetes.PodNamespace(),
		}}
	}
	ob.mu.Lock()
	same := reflect.DeepEqual(want, ob.key)
	ob.mu.Unlock()
	if same {
		return func() {}, nil
	}
	if want == nil {
		return func() { ob.start(nil, nil) }, nil
	}
	gauge := ob.s.metrics.outboundEndpoints
	src, err := kubernetes.NewOutboundSource(want.cfg, want.opts, kubernetes.Options{
		Logger: ob.s.log.With("provider", "kubernetes"),
		Translated: func(res kubernetes.OutboundResult) {
			gauge.WithLabelValues("callable").Set(float64(res.Endpoints))
			left := 0
			for _, l := range res.LeftOut {
				if l.Address != "" { // an endpoint, not a whole Service
					left++
				}
			}
			gauge.WithLabelValues("left_out").Set(float64(left))
		},
	})
	if err != nil {
		return nil, &routes.Error{File: cfg.Path, Pos: cfg.At("outbound.kubernetes"), Path: "outbound.kubernetes", Msg: err.Error()}
	}
	return func() { ob.start(want, src) }, nil
}

// start stops the running source, if any, and starts src (at a commit
// point: fragmentSource.start).
func (ob *outboundSources) start(key *outboundKey, src *kubernetes.OutboundSource) {
	ob.mu.Lock()
	ob.key = key
	ob.mu.Unlock()
	if src == nil {
		ob.s.metrics.outboundEndpoints.Reset() // no view of the cluster
		ob.run.start(nil)
		return
	}
	ob.run.start(src.Run)
}

// ready is nil once the source has delivered services that are live:
// until then the local service could call only the file's.
func (ob *outboundSources) ready() error { return ob.run.ready() }

// merge returns f (the outbound runtime's file, made of the sidecar
// file's services) with the cluster's services added. A name the file
// defines is the file's: routes.File.Merge keeps the first of two routes
// that match the same requests, and f's come first, so the cluster's
// route for that one host is left out with a warning (a file entry can
// pin or override one name of a Service).
func (ob *outboundSources) merge(cfg *routes.Sidecar, f *routes.File) (*routes.File, error) {
	if cfg.Outbound.Kubernetes == nil {
		return f, nil
	}
	m, err := f.Merge(ob.run.fragment())
	if err != nil {
		return nil, fmt.Errorf("with the outbound services from Kubernetes: %w", err)
	}
	for _, w := range m.Warnings[len(f.Warnings):] {
		ob.s.log.Warn("outbound services from Kubernetes", "warning", w.Error())
	}
	return m, nil
}

// outboundIdentities maps each upstream of f to the identity it must
// present: the peer label of outbound requests.
func outboundIdentities(f *routes.File) map[string]string {
	ids := make(map[string]string, len(f.Upstreams))
	for _, name := range slices.Sorted(maps.Keys(f.Upstreams)) {
		ids[name] = f.Upstreams[name].MeshIdentity
	}
	return ids
}
