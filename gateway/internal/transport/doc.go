// Package transport holds the edge's hand-written upstream transports: H1,
// which sends HTTP/1.1 requests to plain upstreams on the calling goroutine
// (a body on a goroutine of its own beside the response, body.go) and keeps
// its own connection pool, with http.Transport as its fallback for
// upgrades, TLS and HTTP/2; the guard that keeps either from reusing a connection
// after a response that has no body by rule (emptyguard.go); and Mesh,
// which splits the hop to a sidecar between HTTP/1.1 and HTTP/2.
//
// It knows nothing of routes, upstreams or the request pipeline: the
// gateway's upstream pool builds these from an http.Transport it
// configured, and its attempt loop (retries, health, breaker) sits above.
package transport
