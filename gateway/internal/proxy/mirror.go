package proxy

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// MirrorHeader marks a mirrored request, so the shadow service can tell a
// copy from real traffic.
const MirrorHeader = "X-Causeway-Mirror"

// mirror copies a share of an upstream's requests to a shadow upstream,
// fire and forget: the client never waits for the shadow and never sees
// its answer. Copies in flight are bounded; beyond the bound they are
// dropped rather than queued, so a slow shadow cannot slow the edge.
type mirror struct {
	percent int
	maxBody int64
	Slots   chan struct{}
	Shadow  atomic.Pointer[Upstream]
	hooks   *Hooks

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	Dropped atomic.Int64
	Sent    atomic.Int64
}

func newMirror(cfg *routes.Mirror, hooks *Hooks) *mirror {
	mr := &mirror{percent: cfg.Percent, maxBody: int64(cfg.MaxBody), Slots: make(chan struct{}, cfg.MaxInflight), hooks: hooks}
	mr.ctx, mr.cancel = context.WithCancel(context.Background())
	return mr
}

// send copies out (the outbound request, headers already rewritten) to the
// shadow. A body is copied only when it was made replayable.
func (mr *mirror) send(out *http.Request) {
	sh := mr.Shadow.Load()
	if sh == nil || mr.ctx.Err() != nil {
		return
	}
	if mr.percent < 100 && rand.IntN(100) >= mr.percent {
		return
	}
	if hasBody(out) && (out.GetBody == nil || out.ContentLength > mr.maxBody) {
		mr.Dropped.Add(1)
		return
	}
	select {
	case mr.Slots <- struct{}{}:
	default:
		mr.Dropped.Add(1)
		return
	}
	ep, ok := sh.Bal.Pick(out, nil)
	if !ok {
		<-mr.Slots
		mr.Dropped.Add(1)
		return
	}
	ctx, cancel := context.WithTimeout(mr.ctx, sh.Cfg.Timeout.D())
	cp := out.Clone(ctx)
	cp.URL.Scheme, cp.URL.Host = sh.Scheme, ep.Addr
	cp.Header.Set(MirrorHeader, "1")
	if out.GetBody != nil {
		body, err := out.GetBody()
		if err != nil {
			cancel()
			<-mr.Slots
			return
		}
		cp.Body = body
	}
	mr.wg.Add(1)
	go func() {
		defer mr.wg.Done()
		defer func() { <-mr.Slots }()
		defer cancel()
		start := time.Now()
		resp, err := sh.Pool.Transport.RoundTrip(cp)
		var status int
		if err != nil {
			status, _ = Classify(mr.ctx, err).Status()
		} else {
			status = resp.StatusCode
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
		}
		mr.Sent.Add(1)
		mr.hooks.observe(sh.Name, ep.Label, status, time.Since(start))
	}()
}

// close abandons copies in flight and waits for their goroutines.
func (mr *mirror) close() {
	mr.cancel()
	mr.wg.Wait()
}
