package h1server

import (
	"context"
	"net/http"
	"sync/atomic"
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
type requestContext struct {
	context.Context // context.WithCancelCause of the server's base context
	cancel          context.CancelCauseFunc
	conn            *conn
	// The one value SetValue stores, written once before set is; a
	// reader that sees set sees both.
	key, val any
	set      atomic.Bool
}

// requestContextKey finds a request's requestContext under the contexts a
// handler derives from it.
type requestContextKey struct{}

// init makes c the context of a request on conn.
func (c *requestContext) init(conn *conn) {
	c.Context, c.cancel = context.WithCancelCause(conn.srv.baseCtx)
	c.conn = conn
}

func (c *requestContext) Value(key any) any {
	switch key {
	case requestContextKey{}:
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
	return c.cancel
}
