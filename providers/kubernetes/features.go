package kubernetes

import (
	"slices"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/features"
)

// supportedFeatures are the Gateway API features the edge implements, as
// every GatewayClass of our controller lists them in its status
// (GEP-2162). Tools read them there, and the conformance suite
// (test/conformance) takes the tests to run from them, so a feature is
// listed only once its conformance tests pass.
var supportedFeatures = []features.FeatureName{
	features.SupportGateway,
	features.SupportGatewayHTTPListenerIsolation,
	features.SupportReferenceGrant,
	features.SupportHTTPRoute,
	features.SupportHTTPRouteQueryParamMatching,
	features.SupportHTTPRouteMethodMatching,
	features.SupportHTTPRouteResponseHeaderModification,
	features.SupportHTTPRoutePortRedirect,
	features.SupportHTTPRouteSchemeRedirect,
	features.SupportHTTPRoutePathRedirect,
	features.SupportHTTPRouteHostRewrite,
	features.SupportHTTPRoutePathRewrite,
	features.SupportHTTPRouteRequestMirror,
	features.SupportHTTPRouteRequestTimeout,
	features.SupportHTTPRouteBackendTimeout,
	features.SupportHTTPRouteNamedRouteRule,
	features.SupportHTTPRoute303RedirectStatusCode,
	features.SupportHTTPRoute307RedirectStatusCode,
	features.SupportHTTPRoute308RedirectStatusCode,
	features.SupportHTTPRouteBackendProtocolH2C,
	features.SupportHTTPRouteBackendProtocolWebSocket,
	features.SupportGRPCRoute,
	features.SupportBackendTLSPolicy,
	features.SupportBackendTLSPolicySANValidation,
}

// SupportedFeatures returns the features the edge implements, sorted by
// name as the GatewayClass status requires.
func SupportedFeatures() []features.FeatureName {
	out := slices.Clone(supportedFeatures)
	slices.Sort(out)
	return slices.Compact(out)
}

func classFeatures() []gatewayv1.SupportedFeature {
	fs := SupportedFeatures()
	out := make([]gatewayv1.SupportedFeature, len(fs))
	for i, f := range fs {
		out[i] = gatewayv1.SupportedFeature{Name: gatewayv1.FeatureName(f)}
	}
	return out
}
