package gateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/causewayhq/causeway/providers/kubernetes"
	"github.com/causewayhq/causeway/routes"
)

// outboundSources runs the source of the sidecar file's outbound.kubernetes
// block: at most one, the one the active generation's file asks for. The
// fragment it last delivered is merged into the outbound runtime of every
// generation built while it runs, file reloads included, so a change on
// either side rebuilds one generation through the server's one commit
// point.
type outboundSources struct {
	s *Sidecar

	mu      sync.Mutex
	key     *outboundKey    // the running source's settings
	frag    routes.Fragment // merged into the next build
	applied bool            // the source delivered and its services are live
	cancel  context.CancelFunc
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
	src, err := kubernetes.NewOutboundSource(want.cfg, want.opts, kubernetes.Options{Logger: ob.s.log.With("provider", "kubernetes")})
	if err != nil {
		return nil, &routes.Error{File: cfg.Path, Pos: cfg.At("outbound.kubernetes"), Path: "outbound.kubernetes", Msg: err.Error()}
	}
	return func() { ob.start(want, src) }, nil
}

// start stops the running source, if any, and starts src. It runs at a
// commit point, under the server's lock, so it does not wait for the old
// source, which may be blocked applying a fragment under that lock; the
// old source's applies are ignored from now on (apply checks its ctx).
func (ob *outboundSources) start(key *outboundKey, src *kubernetes.OutboundSource) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if ob.cancel != nil {
		ob.cancel()
	}
	ob.key, ob.cancel = key, nil
	if src == nil {
		ob.frag, ob.applied = routes.Fragment{}, false
		return
	}
	// A restarted source keeps the last fragment merged until it delivers
	// its own: a reload meanwhile must not drop the cluster's services.
	ctx, cancel := context.WithCancel(ob.s.bgCtx)
	ob.cancel = cancel
	ob.s.bg.Add(1)
	go func() { // owned by the server: Close cancels bgCtx and waits on bg
		defer ob.s.bg.Done()
		err := src.Run(ctx, func(frag routes.Fragment) error { return ob.apply(ctx, frag) })
		if err != nil && ctx.Err() == nil {
			ob.s.log.Error("outbound source stopped; the sidecar keeps the services it has", "provider", "kubernetes", "error", err.Error())
		}
	}()
}

// apply builds a generation with frag merged in. A refused fragment leaves
// the live one in place, so a later file reload does not pick it up.
func (ob *outboundSources) apply(ctx context.Context, frag routes.Fragment) error {
	if ctx.Err() != nil {
		return ctx.Err() // a replaced source: its view is no longer wanted
	}
	ob.mu.Lock()
	prev := ob.frag
	ob.frag = frag
	ob.mu.Unlock()
	err := ob.s.rebuild(ctx)
	ob.mu.Lock()
	if err != nil {
		ob.frag = prev
	} else if ctx.Err() == nil {
		ob.applied = true
	}
	ob.mu.Unlock()
	if err != nil {
		ob.s.log.Error("outbound services from Kubernetes refused; the active configuration stays", "error", err.Error())
	}
	return err
}

// ready is nil once the source has delivered services that are live:
// until then the local service could call only the file's.
func (ob *outboundSources) ready() error {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if ob.key != nil && !ob.applied {
		return errors.New("kubernetes: waiting for the first complete view of the cluster's services")
	}
	return nil
}

// merge returns f (the outbound runtime's file, made of the sidecar
// file's services) with the cluster's services added. A name the file
// defines is the file's: the cluster's route for that host is left out
// with a warning, so a file entry can pin or override one Service.
func (ob *outboundSources) merge(cfg *routes.Sidecar, f *routes.File) (*routes.File, error) {
	if cfg.Outbound.Kubernetes == nil {
		return f, nil
	}
	ob.mu.Lock()
	frag := ob.frag
	ob.mu.Unlock()
	fileNames := map[string]bool{}
	for name := range cfg.Outbound.Services {
		fileNames[strings.ToLower(name)] = true
	}
	kept := frag
	kept.Routes = nil
	for _, r := range frag.Routes {
		if fileNames[strings.ToLower(r.Match.Host)] {
			ob.s.log.Warn("outbound service name defined by the sidecar file and by Kubernetes; the file's is used", "name", r.Match.Host)
			continue
		}
		kept.Routes = append(kept.Routes, r)
	}
	m, err := f.Merge(kept)
	if err != nil {
		return nil, fmt.Errorf("with the outbound services from Kubernetes: %w", err)
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
