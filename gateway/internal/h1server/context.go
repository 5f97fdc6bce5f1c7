package h1server

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/causewayhq/causeway/gateway/internal/h1"
)

// requestContext is a request's context: the one context.Context the
// handler gets, kept in the request's perRequest (so it costs no
// allocation of its own). It answers the values net/http's server puts in
// a request's context (http.ServerContextKey, http.LocalAddrContextKey)
// without a context.WithValue for each, holds one value a handler stores
// in it (SetValue) without the context.WithValue and the Request copy of
// r.WithContext, and is cancelled, with a cause, when the client leaves,
// when the request ends, or when a handler ends it (Cancel).
//
// The cancellation itself is a real context.WithCancelCause context,
// embedded: a context of another type could not take its place. Below a
// context of a type the context package does not know, every
// context.WithCancel or context.AfterFunc started under a
// context.WithValue (the transport's, httptrace's) costs a goroutine,
// since the context package then only calls an AfterFunc method of the
// immediate parent; the embedded context's own Value answers the context
// package's lookup of its cancel context, so children register with it as
// they do under net/http.
//
// It is never pooled or reused: a handler, or a goroutine it started, may
// keep the context after the request ended (and then sees it cancelled).
// That is also what keeps its end watch (WatchEnd) with its request: a
// watch stopped late, by a response body read after its connection went
// back to the upstream pool and on to another request, finds this
// request's context, never the other's.
type requestContext struct {
	context.Context // context.WithCancelCause of the server's base context
	cancel          context.CancelCauseFunc
	conn            *conn
	// The one value SetValue stores, written once before set is; a
	// reader that sees set sees both.
	key, val any
	set      atomic.Bool

	// One function to call when the context ends (WatchEnd), in place of
	// the upstream client's context.AfterFunc. watchSeq numbers the
	// watches, so that a stop meant for an earlier one (the client's
	// attempt on a stale connection) cannot remove a later one; ended:
	// end ran. Guarded by watchMu.
	watchMu  sync.Mutex
	watchFn  func()
	watchSeq uint64
	ended    bool
}

// requestContextKey finds a request's requestContext under the contexts a
// handler derives from it.
type requestContextKey struct{}

// init makes c the context of a request on conn.
func (c *requestContext) init(conn *conn) {
	c.Context, c.cancel = context.WithCancelCause(conn.srv.baseCtx)
	c.conn = conn
}

// end cancels the context with cause and then calls its end watch, if one
// is set: every cancellation of a request's context comes through here
// (the request's end, the client leaving, Cancel). The watch runs after
// the cancel, so a watcher that undoes its own effect (the upstream
// client clearing a read deadline the watch had expired) and checks Err
// afterwards finds the context ended, as under context.AfterFunc.
func (c *requestContext) end(cause error) {
	c.cancel(cause)
	c.watchMu.Lock()
	f := c.watchFn
	c.watchFn, c.ended = nil, true
	c.watchMu.Unlock()
	if f != nil {
		f()
	}
}

// WatchEnd arranges for f to be called once when the context ends, as
// context.AfterFunc(c, f) would, but on the goroutine that ends it and
// without allocating. It holds one watch at a time: ok is false when one
// is set already (the caller then uses context.AfterFunc). When the
// context has ended already, f is called now. StopWatch(seq) removes the
// watch.
func (c *requestContext) WatchEnd(f func()) (seq uint64, ok bool) {
	c.watchMu.Lock()
	if c.watchFn != nil {
		c.watchMu.Unlock()
		return 0, false
	}
	c.watchSeq++
	seq = c.watchSeq
	if c.ended {
		c.watchMu.Unlock()
		f()
		return seq, true
	}
	c.watchFn = f
	c.watchMu.Unlock()
	return seq, true
}

// StopWatch removes the watch seq unless it was called already (or is
// being called), as the stop func of context.AfterFunc: true means f will
// not be called.
func (c *requestContext) StopWatch(seq uint64) bool {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	if c.watchFn == nil || c.watchSeq != seq {
		return false
	}
	c.watchFn = nil
	return true
}

func (c *requestContext) Value(key any) any {
	switch key {
	case requestContextKey{}:
		return c
	case h1.EndWatchKey{}:
		if c.conn.srv.baseCtx.Done() != nil {
			// The server's context can end too, and that reaches
			// this one without passing through end: no watch then.
			return nil
		}
		return c
	case http.LocalAddrContextKey:
		return c.conn.netc.LocalAddr()
	}
	if c.set.Load() && key == c.key {
		return c.val
	}
	return c.Context.Value(key)
}

// SetValue stores val under key in the context of a request this server
// serves, as context.WithValue would in a context that every later
// context of the request derives from, so that the request need not be
// copied (r.WithContext) to carry it. A request's context holds one such
// value: false when ctx is not such a context, when it holds a value
// already, or when key is one its context answers itself; the caller then
// uses context.WithValue. Call it before ctx reaches another goroutine
// that reads key.
func SetValue(ctx context.Context, key, val any) bool {
	c, ok := ctx.Value(requestContextKey{}).(*requestContext)
	if !ok || key == nil || c.set.Load() {
		return false
	}
	switch key {
	case requestContextKey{}, http.LocalAddrContextKey, http.ServerContextKey:
		return false
	}
	c.key, c.val = key, val
	c.set.Store(true)
	return true
}

// WriteDeadlineCleared reports whether ctx is (or derives from) the
// context of a request this server serves without a WriteTimeout: the
// connection's write deadline was then cleared as the request started,
// before its handler ran, so a deadline an earlier response on the
// connection left cannot cut this one, and the handler need not clear it
// again (the gateway's write-stall timeout, which would otherwise set the
// same deadline a second time on every request).
func WriteDeadlineCleared(ctx context.Context) bool {
	c, ok := ctx.Value(requestContextKey{}).(*requestContext)
	return ok && c.conn.srv.WriteTimeout <= 0
}

// Cancel returns the function that cancels, with a cause, the context of
// the request this server serves that ctx is or derives from (nil when it
// is none): context.Cause then reports the cause on it and on every
// context derived from it, as for context.WithCancelCause. A handler that
// bounds the whole request (the gateway's route timeout) uses it instead
// of a context and a request copy of its own.
func Cancel(ctx context.Context) context.CancelCauseFunc {
	c, ok := ctx.Value(requestContextKey{}).(*requestContext)
	if !ok {
		return nil
	}
	// Through end, so that the end watch runs.
	return c.end
}
