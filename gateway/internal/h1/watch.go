package h1

// EndWatchKey is the context key under which the server engine's request
// context (h1server) answers itself to the upstream client (transport),
// which uses it, in place of context.AfterFunc, to be told when the
// request ends: context.AfterFunc costs two allocations per request and
// makes its parent allocate a children map (two more). It lives here, in
// the package both sides already share, so that neither imports the
// other; the client declares the methods it needs where it uses them.
type EndWatchKey struct{}
