package kubernetes

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/causewayhq/causeway/routes"
)

// Snapshot is one consistent view of the objects the provider watches,
// taken only after every informer's cache has synced. Translate reads it
// and never changes it.
type Snapshot struct {
	GatewayClasses  []*gatewayv1.GatewayClass
	Gateways        []*gatewayv1.Gateway
	HTTPRoutes      []*gatewayv1.HTTPRoute
	GRPCRoutes      []*gatewayv1.GRPCRoute
	ReferenceGrants []*gatewayv1beta1.ReferenceGrant
	Services        []*corev1.Service
	EndpointSlices  []*discoveryv1.EndpointSlice
	Secrets         []*corev1.Secret
	// Namespaces are needed for listeners that admit routes by namespace
	// label (allowedRoutes.namespaces.from: Selector).
	Namespaces []*corev1.Namespace
	// Policies are the CausewayPolicies; Secrets then also hold the
	// Opaque Secrets they may name.
	Policies []*CausewayPolicy
	// Pods name the identity of a mesh Service's endpoints; watched only
	// when the edge has a mesh section, and slimmed as the sidecar's are.
	Pods []*corev1.Pod
	// BackendTLSPolicies say how the edge calls Services over TLS;
	// ConfigMaps hold their CA bundles, each slimmed to its ca.crt.
	BackendTLSPolicies []*gatewayv1.BackendTLSPolicy
	ConfigMaps         []*corev1.ConfigMap
}

// Result is what Translate makes of a Snapshot: the model's fragment and
// the status each object should have. Objects that are not ours (another
// controller's GatewayClass, a route attached to no Gateway of ours) have
// no entry, so their status is never touched.
type Result struct {
	Fragment       routes.Fragment
	GatewayClasses map[string]gatewayv1.GatewayClassStatus
	Gateways       map[types.NamespacedName]gatewayv1.GatewayStatus
	HTTPRoutes     map[types.NamespacedName]gatewayv1.HTTPRouteStatus
	GRPCRoutes     map[types.NamespacedName]gatewayv1.GRPCRouteStatus
	Policies       map[types.NamespacedName]gatewayv1.PolicyStatus
	// BackendTLSPolicies: the status of each BackendTLSPolicy a route of
	// ours reaches.
	BackendTLSPolicies map[types.NamespacedName]gatewayv1.PolicyStatus
	// LeftOut is what of a mesh backend is not called and why: an
	// endpoint whose pod or ServiceAccount could not be resolved.
	LeftOut []LeftOut
	// Origins name, for each status above, the object it was derived
	// from: the status writer finds objects by name, and a name may by
	// then belong to another object (deleted and created again) or to a
	// later generation of the same one. A status is written only to the
	// object of its origin; one without an origin is not written.
	Origins map[ObjectKey]Origin
}

// ObjectKey names an object whose status a Result holds. Namespace is
// empty for a GatewayClass.
type ObjectKey struct {
	Kind            string
	Namespace, Name string
}

// Origin is the object a status was derived from: its UID (which a
// deleted and recreated object does not share) and the generation read.
type Origin struct {
	UID        types.UID
	Generation int64
}

// The kinds of ObjectKey.
const (
	originGatewayClass     = "GatewayClass"
	originGateway          = "Gateway"
	originHTTPRoute        = "HTTPRoute"
	originGRPCRoute        = "GRPCRoute"
	originPolicy           = "CausewayPolicy"
	originBackendTLSPolicy = "BackendTLSPolicy"
)

// originOf is the Origin of o.
func originOf(o metav1.Object) Origin {
	return Origin{UID: o.GetUID(), Generation: o.GetGeneration()}
}
