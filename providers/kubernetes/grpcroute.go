package kubernetes

import (
	"cmp"
	"regexp"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// grpcRoutes translates GRPCRoutes as httpRoutes does HTTPRoutes, through
// the same attachment, backends and status: a gRPC call is an HTTP/2 POST
// to /SERVICE/METHOD.
func (t *translator) grpcRoutes() {
	if !t.ours {
		return
	}
	list := slices.Clone(t.s.GRPCRoutes)
	byAge(list, func(r *gatewayv1.GRPCRoute) metav1.Object { return r })
	for _, r := range list {
		if !t.inScope(r.Namespace) {
			continue
		}
		parents, ok := t.route(routeView{
			kind: kindGRPCRoute, obj: r, parentRefs: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames, rules: len(r.Spec.Rules),
			rule: func(i int, base []string) (translatedRule, *ruleError) {
				return t.grpcRule(r.Namespace, base, r.Spec.Rules[i])
			},
			ruleName: func(i int) *gatewayv1.SectionName { return r.Spec.Rules[i].Name },
		}, r.Status.Parents)
		if ok {
			t.res.GRPCRoutes[nn(r.Namespace, r.Name)] = gatewayv1.GRPCRouteStatus{RouteStatus: gatewayv1.RouteStatus{Parents: parents}}
		}
	}
}

func (t *translator) grpcRule(ns string, base []string, rule gatewayv1.GRPCRouteRule) (translatedRule, *ruleError) {
	var tr translatedRule
	matches := rule.Matches
	if len(matches) == 0 {
		matches = []gatewayv1.GRPCRouteMatch{{}}
	}
	for _, m := range matches {
		tm, err := grpcMatch(m)
		if err != nil {
			return tr, err
		}
		tr.matches = append(tr.matches, tm)
	}
	// The filters gRPC has are HTTPRoute's, with the same fields.
	filters := make([]gatewayv1.HTTPRouteFilter, 0, len(rule.Filters))
	for _, f := range rule.Filters {
		switch f.Type {
		case gatewayv1.GRPCRouteFilterRequestHeaderModifier:
			filters = append(filters, gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: f.RequestHeaderModifier})
		case gatewayv1.GRPCRouteFilterResponseHeaderModifier:
			filters = append(filters, gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: f.ResponseHeaderModifier})
		case gatewayv1.GRPCRouteFilterRequestMirror:
			filters = append(filters, gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestMirror, RequestMirror: f.RequestMirror})
		default:
			return tr, unsupported("filter %s is not supported", f.Type)
		}
	}
	if err := t.filters(ns, kindGRPCRoute, base, filters, nil, &tr); err != nil {
		return tr, err
	}
	refs := backendRefs(rule.BackendRefs, func(b gatewayv1.GRPCBackendRef) gatewayv1.BackendRef { return b.BackendRef })
	t.backends(ns, kindGRPCRoute, base, refs, &tr)
	return tr, nil
}

// grpcMatch maps a GRPCRouteMatch: the method to a path (/svc/method,
// /svc/ for every method of a service, /{service}/method for a method
// of any service), POST, and the headers.
func grpcMatch(m gatewayv1.GRPCRouteMatch) (translatedMatch, *ruleError) {
	tm := translatedMatch{match: routes.Match{Methods: []string{"POST"}}}
	tm.paths = []pathMatch{{prefix: "/"}}
	if mm := m.Method; mm != nil {
		svc, meth := ptrValue(mm.Service), ptrValue(mm.Method)
		if mm.Type != nil && *mm.Type == gatewayv1.GRPCMethodMatchRegularExpression {
			// The path is /SERVICE/METHOD: each part an RE2 expression of
			// its own, matched whole; a part not given is any name.
			svcRe, methRe := cmp.Or(svc, "[^/]+"), cmp.Or(meth, "[^/]+")
			for _, part := range []string{svcRe, methRe} {
				if _, err := regexp.Compile(part); err != nil {
					return tm, unsupported("gRPC service or method regular expression %q: %v", part, err)
				}
			}
			expr := "/(?:" + svcRe + ")/(?:" + methRe + ")"
			if _, err := routes.CompilePathRegex(expr); err != nil {
				return tm, unsupported("gRPC method regular expression: %v", err)
			}
			tm.paths = []pathMatch{{regex: expr}}
			return grpcHeaders(tm, m)
		}
		if mm.Type != nil && *mm.Type != gatewayv1.GRPCMethodMatchExact {
			return tm, unsupported("gRPC method match type %s is not supported (Exact and RegularExpression are)", *mm.Type)
		}
		for _, part := range []string{svc, meth} {
			if strings.ContainsAny(part, "/{}") {
				return tm, unsupported("gRPC service or method %q: '/', '{' and '}' are not allowed", part)
			}
		}
		switch {
		case svc != "" && meth != "":
			tm.paths = []pathMatch{{exact: "/" + svc + "/" + meth}}
		case svc != "":
			tm.paths = []pathMatch{{prefix: "/" + svc + "/"}}
		case meth != "":
			tm.paths = []pathMatch{{exact: "/{service}/" + meth}}
		}
	}
	return grpcHeaders(tm, m)
}

// grpcHeaders adds a GRPCRouteMatch's header matches, Exact or
// RegularExpression.
func grpcHeaders(tm translatedMatch, m gatewayv1.GRPCRouteMatch) (translatedMatch, *ruleError) {
	seen := map[string]bool{}
	for _, h := range m.Headers {
		if err := tm.addHeader(seen, string(h.Name), h.Value, h.Type != nil && *h.Type == gatewayv1.GRPCHeaderMatchRegularExpression); err != nil {
			return tm, err
		}
	}
	return tm, nil
}
