// Package gateway is Causeway's data plane in both roles: the Edge (the
// public entrypoint) and the Sidecar (the mesh proxy beside a service). It
// is the only package that wires auth, ratelimit, plugins, mesh and edgetls
// together.
//
// A request:
//
//	listener (connection caps) ─ TLS (edgetls / mesh) ─ net/http
//	  └─ server.live ─► generation ─► runtime.ServeHTTP
//	       entry pass: hop-by-hop, client address, sanitising, request id, trace
//	       router.match ─► route chain, in feature order:
//	         tracing ─ plugins(before auth) ─ auth ─ rate limit ─ plugins
//	           └─ forwarder: split / header override, circuit breaker
//	                └─ ReverseProxy ─► proxy.Upstream's transport (the attempt loop,
//	                     internal/proxy): balancer.Pick ─ try ─ Classify ─ retry?
//	                     ─ Pick(avoid) ..., over internal/transport's pools
//	       access log, metrics
//
// A configuration file's life (server.go):
//
//	load ─► role.build(generation)        nothing live is touched;
//	          │  shared resources from     refpools (pools, tracers, logs,
//	          │                            identity, JWKS, Redis)
//	          ├─ error ─► refuse: undo steps, then release steps
//	          └─ ok ───► commit: swap server.live, run commit steps (cannot fail)
//	                      └─► retire the old generation when its last request
//	                          ends: release steps; a resource's last user closes it
//
// docs/architecture.md has the package map and where new stages, balancers
// and plugins go.
package gateway
