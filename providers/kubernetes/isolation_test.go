package kubernetes

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// answerOf says which route of rs answers a request, choosing as the
// edge's router does for the routes the translator makes: the exact host,
// then wildcard hosts by longest suffix, then routes without a host; in
// the first of those with a matching route, the longest literal path,
// then exact before prefix before no path, then TLS-only (or plain-only)
// first, and never a TLS-only route for a plain request nor a plain-only
// one for a TLS request. It names
// the answering route's NAMESPACE/ROUTE, "404" for the isolation routes,
// and "none" when nothing matches (the edge's own 404).
func answerOf(rs []routes.Route, host, path string, tls bool) string {
	type class struct{ ok func(string) bool }
	classes := []class{{ok: func(h string) bool { return h == host }}}
	var suffixes []string
	for _, r := range rs {
		if strings.HasPrefix(r.Match.Host, "*.") && hostCovers(r.Match.Host, host) && !slices.Contains(suffixes, r.Match.Host) {
			suffixes = append(suffixes, r.Match.Host)
		}
	}
	slices.SortFunc(suffixes, func(a, b string) int { return len(b) - len(a) })
	for _, s := range suffixes {
		classes = append(classes, class{ok: func(h string) bool { return h == s }})
	}
	classes = append(classes, class{ok: func(h string) bool { return h == "" }})
	for _, c := range classes {
		var best *routes.Route
		key := func(r *routes.Route) [3]int {
			lit, kind := len(r.Match.Path+r.Match.PathPrefix), 0
			switch {
			case r.Match.Path != "":
				kind = 2
			case r.Match.PathPrefix != "":
				kind = 1
			}
			t := 0
			if r.Match.TLS || r.Match.Plain {
				t = 1
			}
			return [3]int{lit, kind, t}
		}
		for i := range rs {
			r := &rs[i]
			m := r.Match
			if !c.ok(m.Host) || (m.TLS && !tls) || (m.Plain && tls) || len(m.Methods)+len(m.Headers)+len(m.Query) > 0 {
				continue
			}
			if (m.Path != "" && m.Path != path) || (m.PathPrefix != "" && !strings.HasPrefix(path, m.PathPrefix)) {
				continue
			}
			if best == nil || cmpKey(key(r), key(best)) > 0 {
				best = r
			}
		}
		if best != nil {
			if strings.HasPrefix(best.Name, routes.KubernetesPrefix+"Isolation.") {
				return "404"
			}
			parts := strings.Split(strings.TrimPrefix(best.Name, routes.KubernetesPrefix), ".")
			return parts[0] + "/" + parts[1]
		}
	}
	return "none"
}

func cmpKey(a, b [3]int) int { return slices.Compare(a[:], b[:]) }

func listenerFrom(name string, proto gatewayv1.ProtocolType, host string, from gatewayv1.FromNamespaces) gatewayv1.Listener {
	l := httpListener(name, 80, host)
	l.Protocol = proto
	if proto == gatewayv1.HTTPSProtocolType {
		l.Port = 443
		l.TLS = &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "cert"}}}
	}
	l.AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: ptr(from)}}
	return l
}

// onListener is a route of ns on apps/gw's listener section ("": every
// listener that admits it).
func onListener(ns, name, section string, hosts []string, path string) *gatewayv1.HTTPRoute {
	p := parent("apps", "gw")
	if section != "" {
		p.SectionName = ptr(gatewayv1.SectionName(section))
	}
	return route(ns, name, []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{prefix(path)}, backend("web", 80))},
		parents(p), hostnames(hosts...))
}

// A request goes to the most specific listener whose hostname matches it,
// and only that listener's routes answer it (the Gateway API's listener
// precedence; conformance GatewayHTTPListenerIsolation). A tenant's route
// on a broad listener must not answer for a host a narrower listener has,
// whether it names the host or names none and the edge's router would
// fall back to it; its status stays Accepted.
func TestTranslateListenerIsolation(t *testing.T) {
	all, same := gatewayv1.NamespacesFromAll, gatewayv1.NamespacesFromSame
	http, https := gatewayv1.HTTPProtocolType, gatewayv1.HTTPSProtocolType
	type req struct {
		host, path string
		tls        bool
		want       string
	}
	for _, tc := range []struct {
		name      string
		listeners []gatewayv1.Listener
		routes    []*gatewayv1.HTTPRoute
		reqs      []req
	}{{
		name: "a tenant names the owner's host on the broad listener",
		listeners: []gatewayv1.Listener{
			listenerFrom("public", http, "", all), listenerFrom("ops", http, "ops.example", same),
		},
		routes: []*gatewayv1.HTTPRoute{
			onListener("apps", "ops", "ops", nil, "/ops"),
			onListener("tenant", "named", "public", []string{"ops.example"}, "/"),
		},
		reqs: []req{
			{"ops.example", "/ops", false, "apps/ops"},
			{"ops.example", "/", false, "404"},
			{"ops.example", "/x", false, "404"},
			{"ops.example", "/x", true, "404"},
			{"other.example", "/", false, "none"},
		},
	}, {
		name: "a tenant's any-host route on the broad listener",
		listeners: []gatewayv1.Listener{
			listenerFrom("public", http, "", all), listenerFrom("ops", http, "ops.example", same),
		},
		routes: []*gatewayv1.HTTPRoute{
			onListener("apps", "ops", "ops", nil, "/ops"),
			onListener("tenant", "any", "public", nil, "/"),
			onListener("tenant", "wild", "public", []string{"*.example"}, "/w"),
		},
		reqs: []req{
			{"ops.example", "/ops", false, "apps/ops"},
			{"ops.example", "/x", false, "404"},
			{"ops.example", "/w", false, "404"},
			{"other.example", "/w", false, "tenant/wild"},
			{"other.example", "/x", false, "tenant/any"},
			{"ops.example.net", "/x", false, "tenant/any"},
		},
	}, {
		// Attached to both listeners: served for every host, and by name
		// for the host whose catch-all would keep it from the any-host copy.
		name: "the owner's route on every listener",
		listeners: []gatewayv1.Listener{
			listenerFrom("public", http, "", all), listenerFrom("ops", http, "ops.example", same),
			listenerFrom("wops", http, "*.ops.example", same),
		},
		routes: []*gatewayv1.HTTPRoute{
			onListener("apps", "ops", "", nil, "/ops"),
			onListener("tenant", "any", "", nil, "/"),
		},
		reqs: []req{
			{"ops.example", "/ops", false, "apps/ops"},
			{"a.ops.example", "/ops", false, "apps/ops"},
			{"other.example", "/ops", false, "apps/ops"},
			{"ops.example", "/x", false, "404"},
			{"a.ops.example", "/x", false, "404"},
			{"other.example", "/x", false, "tenant/any"},
		},
	}, {
		name: "wildcard listeners nest",
		listeners: []gatewayv1.Listener{
			listenerFrom("empty", http, "", all), listenerFrom("w", http, "*.example.com", all),
			listenerFrom("wfoo", http, "*.foo.example.com", all), listenerFrom("abc", http, "abc.foo.example.com", all),
		},
		routes: []*gatewayv1.HTTPRoute{
			onListener("apps", "empty", "empty", []string{"bar.com", "*.example.com", "*.foo.example.com", "abc.foo.example.com"}, "/empty"),
			onListener("apps", "w", "w", []string{"bar.com", "*.example.com", "*.foo.example.com", "abc.foo.example.com"}, "/w"),
			onListener("apps", "wfoo", "wfoo", []string{"bar.com", "*.example.com", "*.foo.example.com", "abc.foo.example.com"}, "/wfoo"),
			onListener("apps", "abc", "abc", []string{"bar.com", "*.example.com", "*.foo.example.com", "abc.foo.example.com"}, "/abc"),
		},
		reqs: []req{
			{"bar.com", "/empty", false, "apps/empty"},
			{"bar.com", "/w", false, "none"},
			{"bar.example.com", "/empty", false, "404"},
			{"bar.example.com", "/w", false, "apps/w"},
			{"bar.example.com", "/wfoo", false, "404"},
			{"bar.foo.example.com", "/w", false, "404"},
			{"bar.foo.example.com", "/wfoo", false, "apps/wfoo"},
			{"x.bar.foo.example.com", "/wfoo", false, "apps/wfoo"},
			{"abc.foo.example.com", "/wfoo", false, "404"},
			{"abc.foo.example.com", "/empty", false, "404"},
			{"abc.foo.example.com", "/abc", false, "apps/abc"},
		},
	}, {
		// HTTP and HTTPS listeners are the edge's two listeners: an
		// HTTPS listener's host is isolated from broader HTTPS listeners,
		// and from any-host routes of HTTP listeners, which the edge also
		// serves over TLS; a plain request for it is the HTTP listeners'.
		name: "an HTTPS listener's host",
		listeners: []gatewayv1.Listener{
			listenerFrom("public", http, "", all), listenerFrom("secure", https, "", all), listenerFrom("ops", https, "ops.example", same),
		},
		routes: []*gatewayv1.HTTPRoute{
			onListener("apps", "ops", "ops", nil, "/ops"),
			onListener("tenant", "plain", "public", nil, "/"),
			onListener("tenant", "secure", "secure", nil, "/s"),
			onListener("tenant", "named", "secure", []string{"ops.example"}, "/n"),
		},
		reqs: []req{
			{"ops.example", "/ops", true, "apps/ops"},
			{"ops.example", "/x", true, "404"},
			{"ops.example", "/s", true, "404"},
			{"ops.example", "/n", true, "404"},
			{"ops.example", "/x", false, "tenant/plain"},
			{"other.example", "/s", true, "tenant/secure"},
		},
	}, {
		// Over TLS the edge serves the HTTP listeners' routes too: the
		// HTTPS listener's host must not fall back to them.
		name: "an HTTPS listener's host under a broad HTTP listener",
		listeners: []gatewayv1.Listener{
			listenerFrom("public", http, "", all), listenerFrom("ops", https, "ops.example", same),
		},
		routes: []*gatewayv1.HTTPRoute{
			onListener("apps", "ops", "ops", nil, "/ops"),
			onListener("tenant", "plain", "public", nil, "/"),
			onListener("tenant", "wild", "public", []string{"*.example"}, "/w"),
		},
		reqs: []req{
			{"ops.example", "/ops", true, "apps/ops"},
			{"ops.example", "/x", true, "404"},
			{"ops.example", "/w", true, "404"},
			{"ops.example", "/x", false, "tenant/plain"},
			{"ops.example", "/w", false, "tenant/wild"},
			{"other.example", "/x", true, "tenant/plain"},
		},
	}, {
		name: "an HTTP listener's host under a broad HTTPS listener",
		listeners: []gatewayv1.Listener{
			listenerFrom("secure", https, "", all), listenerFrom("ops", http, "ops.example", same),
		},
		routes: []*gatewayv1.HTTPRoute{
			onListener("apps", "ops", "ops", nil, "/ops"),
			onListener("tenant", "secure", "secure", nil, "/"),
		},
		reqs: []req{
			{"ops.example", "/ops", false, "apps/ops"},
			// Over TLS the HTTPS listener's: the HTTP listener's route
			// is plain-only.
			{"ops.example", "/ops", true, "tenant/secure"},
			{"ops.example", "/x", true, "tenant/secure"},
			{"ops.example", "/x", false, "none"},
			{"other.example", "/x", true, "tenant/secure"},
		},
	}, {
		// The leak the plain-only match closes: a tenant's route on an
		// all-namespaces HTTP listener naming the host of an HTTPS
		// listener that admits only the owner was served over TLS too,
		// where it answered every path the owner's routes do not match.
		name: "a tenant names an HTTPS listener's host on a broad HTTP listener",
		listeners: []gatewayv1.Listener{
			listenerFrom("public", http, "", all), listenerFrom("ops", https, "ops.example", same),
		},
		routes: []*gatewayv1.HTTPRoute{
			onListener("apps", "ops", "ops", nil, "/ops"),
			onListener("tenant", "named", "public", []string{"ops.example"}, "/"),
			onListener("tenant", "wild", "public", []string{"*.example"}, "/w"),
		},
		reqs: []req{
			{"ops.example", "/ops", true, "apps/ops"},
			{"ops.example", "/x", true, "404"},
			{"ops.example", "/", true, "404"},
			{"ops.example", "/w", true, "404"},
			{"ops.example", "/x", false, "tenant/named"}, // plain: the HTTP listener's
			{"ops.example", "/ops", false, "tenant/named"},
			{"other.example", "/w", true, "tenant/wild"}, // no HTTPS listener has it
			{"other.example", "/w", false, "tenant/wild"},
		},
	}, {
		// An HTTP listener's host under a broader HTTP listener, with a
		// broader HTTPS listener too: plain requests for it are the narrow
		// HTTP listener's (the broad one's fall-back stopped), TLS ones the
		// HTTPS listener's, which now answers them (the isolation route is
		// for plain connections only).
		name: "an HTTP listener's host under broader HTTP and HTTPS listeners",
		listeners: []gatewayv1.Listener{
			listenerFrom("public", http, "", all), listenerFrom("ops", http, "ops.example", same),
			listenerFrom("secure", https, "*.example", same),
		},
		routes: []*gatewayv1.HTTPRoute{
			onListener("apps", "ops", "ops", nil, "/ops"),
			onListener("apps", "secure", "secure", nil, "/s"),
			onListener("tenant", "named", "public", []string{"ops.example"}, "/"),
			onListener("tenant", "any", "public", nil, "/"),
		},
		reqs: []req{
			{"ops.example", "/ops", false, "apps/ops"},
			{"ops.example", "/x", false, "404"},
			{"ops.example", "/s", false, "404"},
			{"ops.example", "/s", true, "apps/secure"},
			{"ops.example", "/ops", true, "404"},
			{"ops.example", "/x", true, "404"},
			{"a.example", "/x", true, "404"},
			{"a.example", "/x", false, "tenant/any"},
			{"other.net", "/x", true, "tenant/any"},
		},
	}, {
		// Attached to an HTTP and an HTTPS listener alike: served on both
		// connections, never plain-only.
		name: "a route on both protocols",
		listeners: []gatewayv1.Listener{
			listenerFrom("http", http, "", same), listenerFrom("https", https, "", same),
		},
		routes: []*gatewayv1.HTTPRoute{
			onListener("apps", "both", "", nil, "/"),
			onListener("apps", "redirect", "http", nil, "/r"),
		},
		reqs: []req{
			{"a.example", "/x", true, "apps/both"},
			{"a.example", "/x", false, "apps/both"},
			{"a.example", "/r", false, "apps/redirect"},
			{"a.example", "/r", true, "apps/both"}, // the HTTP listener's route is not the HTTPS one's
		},
	}, {
		name: "no narrower listener: nothing changes",
		listeners: []gatewayv1.Listener{
			listenerFrom("a", http, "a.example", all), listenerFrom("b", http, "b.example", same),
		},
		routes: []*gatewayv1.HTTPRoute{
			onListener("tenant", "a", "a", nil, "/"),
			onListener("apps", "b", "b", nil, "/b"),
		},
		reqs: []req{
			{"a.example", "/x", false, "tenant/a"},
			{"b.example", "/x", false, "none"},
			{"b.example", "/b", false, "apps/b"},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			s := world()
			s.Gateways[0].Spec.Listeners = tc.listeners
			s.Namespaces = []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}, {ObjectMeta: metav1.ObjectMeta{Name: "tenant"}}}
			s.Services = append(s.Services, svc("tenant", "web"))
			cert, key := selfSigned(t, "ops.example")
			s.Secrets = []*corev1.Secret{{ObjectMeta: objMeta("apps", "cert", 0), Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": cert, "tls.key": key}}}
			s.HTTPRoutes = tc.routes
			res := TranslateWith(routes.KubernetesProvider{}, s, TranslateOptions{HTTPS: true})
			for _, r := range tc.routes {
				st := res.HTTPRoutes[nn(r.Namespace, r.Name)]
				if len(st.Parents) != 1 {
					t.Fatalf("%s/%s: status %+v", r.Namespace, r.Name, st)
				}
				if acc := condOf(st.Parents[0].Conditions, string(gatewayv1.RouteConditionAccepted)); acc.Status != metav1.ConditionTrue {
					t.Errorf("%s/%s: Accepted %s %s %q; the spec accepts a route whose hostnames intersect its listener's", r.Namespace, r.Name, acc.Status, acc.Reason, acc.Message)
				}
			}
			for _, q := range tc.reqs {
				if got := answerOf(res.Fragment.Routes, q.host, q.path, q.tls); got != q.want {
					t.Errorf("%s%s (TLS %t): answered by %s, want %s", q.host, q.path, q.tls, got, q.want)
				}
			}
			if t.Failed() {
				for _, r := range res.Fragment.Routes {
					t.Logf("  %s: %s", r.Name, routeSummary(r))
				}
			}
			mergeable(t, res.Fragment)
		})
	}
}
