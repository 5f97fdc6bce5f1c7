package gateway

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/causewayhq/causeway/routes"
)

// fragmentRun is what a provider source does: deliver a fragment to apply
// each time its view changes, never before it is complete, until ctx ends.
type fragmentRun func(ctx context.Context, apply func(routes.Fragment) error) error

// fragmentSource runs a server's one provider source (the edge's routes
// from Kubernetes, the sidecar's outbound services) and keeps the fragment
// it last delivered, which every generation built while it runs merges in,
// file reloads included: a change on either side rebuilds one model
// through the server's one rebuild and commit path.
type fragmentSource struct {
	// what names the fragment in logs ("routes from Kubernetes").
	what string
	// waiting is ready's answer until the first fragment is live.
	waiting string
	log     *slog.Logger
	// bgCtx and bg are the server's: Close cancels bgCtx and waits on bg.
	bgCtx   context.Context
	bg      *sync.WaitGroup
	rebuild func(context.Context) error
	// loaded, when set, gives the log attributes of an applied fragment.
	loaded func(routes.Fragment) []any
	// inPlace, when set, may apply next to the live generation without a
	// build, when it differs from prev (the live fragment) in a way the
	// generation can follow in place. It calls commit, which makes next
	// the fragment later builds merge, at the point where next becomes
	// live, and reports whether it did.
	// ctx is the source's: once it ends, nothing it delivers is applied.
	inPlace func(ctx context.Context, prev, next routes.Fragment, commit func()) bool

	mu      sync.Mutex
	frag    routes.Fragment // merged into the next build
	running bool            // a source is on
	applied bool            // it delivered and its fragment is live
	cancel  context.CancelFunc
}

// fragment is what a build merges in now.
func (fs *fragmentSource) fragment() routes.Fragment {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.frag
}

// start stops the running source, if any, and starts run (nil: none). It
// runs at a commit point, under the server's lock, so it does not wait
// for the old source to end: that one may be blocked applying a fragment,
// which needs the same lock. Its applies are ignored from now on (apply
// checks its ctx).
func (fs *fragmentSource) start(run fragmentRun) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.cancel != nil {
		fs.cancel()
	}
	fs.cancel, fs.running = nil, run != nil
	if run == nil {
		// Off: the next build has no fragment to merge.
		fs.frag, fs.applied = routes.Fragment{}, false
		return
	}
	// A restarted source (its settings changed) keeps the last fragment
	// merged until it delivers its own: a file reload meanwhile must not
	// drop what the old one gave.
	ctx, cancel := context.WithCancel(fs.bgCtx)
	fs.cancel = cancel
	fs.bg.Add(1)
	go func() { // owned by the server: Close cancels bgCtx and waits on bg
		defer fs.bg.Done()
		err := run(ctx, func(frag routes.Fragment) error { return fs.apply(ctx, frag) })
		if err != nil && ctx.Err() == nil {
			fs.log.Error("source of "+fs.what+" stopped; the last ones stay served", "provider", "kubernetes", "error", err.Error())
		}
	}()
}

// apply builds a generation with frag merged in. A refused fragment leaves
// the fragment of the live generation in place, so a later file reload
// does not pick up what was refused.
func (fs *fragmentSource) apply(ctx context.Context, frag routes.Fragment) error {
	if ctx.Err() != nil {
		return ctx.Err() // a replaced source: its view is no longer wanted
	}
	fs.mu.Lock()
	prev, applied := fs.frag, fs.applied
	fs.mu.Unlock()
	if applied && fs.inPlace != nil {
		commit := func() {
			fs.mu.Lock()
			fs.frag = frag
			fs.mu.Unlock()
		}
		if fs.inPlace(ctx, prev, frag, commit) {
			return nil
		}
	}
	fs.mu.Lock()
	fs.frag = frag
	fs.mu.Unlock()
	err := fs.rebuild(ctx)
	fs.mu.Lock()
	if err != nil {
		fs.frag = prev
	} else if ctx.Err() == nil {
		fs.applied = true
	}
	fs.mu.Unlock()
	if err != nil {
		fs.log.Error(fs.what+" refused; the active configuration stays", "error", err.Error())
		return err
	}
	if fs.loaded != nil {
		fs.log.Info(fs.what+" loaded", fs.loaded(frag)...)
	}
	return nil
}

// ready is nil unless a source is on and has not yet delivered a fragment
// that is live.
func (fs *fragmentSource) ready() error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.running && !fs.applied {
		return errors.New(fs.waiting)
	}
	return nil
}
