// Package kubernetes is the Kubernetes Gateway API provider: it watches
// GatewayClasses, Gateways, HTTPRoutes, GRPCRoutes, ReferenceGrants,
// Services, EndpointSlices, Secrets and Causeway's own policies, and turns
// one consistent view of them (a Snapshot) into a routes.Fragment that is
// merged with the routes file and swapped as one generation, like a file
// reload. It writes the objects' status back (one leader among replicas).
//
// Translate is a pure function from a Snapshot to a Result, so the mapping
// is tested table by table without an API server; the watching, the
// debouncing and the status writes are the Provider's, and are tested
// against a real kube-apiserver (internal/testk8s).
//
// The same package gives sidecars their outbound services
// (routes.OutboundKubernetes): TranslateOutbound maps the mesh's Services,
// their EndpointSlices and Pods onto outbound routes whose every endpoint
// is held to its own pod's ServiceAccount ID, and OutboundWatcher and
// OutboundSource watch them with the edge watcher's client, debounce and
// endpoint rules.
package kubernetes
