package gateway

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
	slots   chan struct{}
	shadow  atomic.Pointer[upstream]
	hooks   *Hooks

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	dropped atomic.Int64
	sent    atomic.Int64
}

func newMirror(cfg *routes.Mirror, hooks *Hooks) *mirror {
	mr := &mirror{percent: cfg.Percent, maxBody: int64(cfg.MaxBody), slots: make(chan struct{}, cfg.MaxInflight), hooks: hooks}
	mr.ctx, mr.cancel = context.WithCancel(context.Background())
	return mr
}

// send copies out (the outbound request, headers already rewritten) to the
// shadow. A body is copied only when it was made replayable.
func (mr *mirror) send(out *http.Request) {
	sh := mr.shadow.Load()
	if sh == nil || mr.ctx.Err() != nil {
		return
	}
	if mr.percent < 100 && rand.IntN(100) >= mr.percent {
		return
	}
	if hasBody(out) && (out.GetBody == nil || out.ContentLength > mr.maxBody) {
		mr.dropped.Add(1)
		return
	}
	select {
	case mr.slots <- struct{}{}:
	default:
		mr.dropped.Add(1)
		return
	}
	ep, ok := sh.bal.pick(out, nil)
	if !ok {
		<-mr.slots
		mr.dropped.Add(1)
		return
	}
	ctx, cancel := context.WithTimeout(mr.ctx, sh.cfg.Timeout.D())
	cp := out.Clone(ctx)
	cp.URL.Scheme, cp.URL.Host = sh.scheme, ep.addr
	cp.Header.Set(MirrorHeader, "1")
	if out.GetBody != nil {
		body, err := out.GetBody()
		if err != nil {
			cancel()
			<-mr.slots
			return
		}
		cp.Body = body
	}
	mr.wg.Add(1)
	go func() {
		defer mr.wg.Done()
		defer func() { <-mr.slots }()
		defer cancel()
		start := time.Now()
		resp, err := sh.pool.transport.RoundTrip(cp)
		var status int
		if err != nil {
			status, _ = classify(mr.ctx, err).status()
		} else {
			status = resp.StatusCode
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
		}
		mr.sent.Add(1)
		mr.hooks.observe(sh.name, ep.label, status, time.Since(start))
	}()
}

// close abandons copies in flight and waits for their goroutines.
func (mr *mirror) close() {
	mr.cancel()
	mr.wg.Wait()
}
