package kubernetes

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
)

// incrementalBase is the edge file policies are checked against in the
// differential tests: policyBase's entries, and an oidc authenticator a
// policy may name, whose callback only some routes reach.
const incrementalBase = `version: 1
listen: {http: ":8080"}
providers: {kubernetes: {}}
authenticators:
  corp: {basic: {htpasswd_file: /dev/null}}
  sso: {oidc: {issuer: "https://id.example", client_id: c, client_secret_env: SSO_SECRET, session: {keys_env: SSO_KEYS}}}
rate_limits:
  per-ip: {key: client_ip, limit: 10, per: 1s}
plugins:
  cors: {use: cors, config: {allow_origins: ["https://a.example"]}}
`

// randomWorld is a small cluster drawn from r: Gateways whose listeners
// admit routes by namespace label or from every namespace, HTTPRoutes
// and GRPCRoutes with mirrors and timeouts, Services that exist or not
// (one in the mesh, one behind a BackendTLSPolicy) with EndpointSlices
// that change apart from them, Pods, grants, and policies of every kind
// of entry on every kind of target, so that the objects depend on each
// other in every way the translation knows.
type randomWorld struct {
	r *rand.Rand
	s *Snapshot
	n int // objects made so far, for unique names and ages
	// caPEM is a CA bundle for BackendTLSPolicies' ConfigMaps; cert and
	// key a pair for HTTPS listeners' Secret (none: no HTTPS listeners).
	caPEM     string
	cert, key []byte
}

var (
	worldPaths = []string{"/", "/app", "/oauth2", "/oauth2/callback", "/app/callback", "/x"}
	worldHosts = []string{"", "a.example", "*.b.example", "c.b.example"}
)

func (w *randomWorld) pick(n int) int { return w.r.IntN(n) }

func (w *randomWorld) gateway() *gatewayv1.Gateway {
	var ls []gatewayv1.Listener
	for i := range 1 + w.pick(2) {
		l := httpListener("l"+strconv.Itoa(i), int32(80+w.pick(2)), worldHosts[w.pick(len(worldHosts))])
		switch w.pick(4) {
		case 0:
			l.AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: ptr(gatewayv1.NamespacesFromAll)}}
		case 1:
			l.AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: ptr(gatewayv1.NamespacesFromSelector),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}}
		}
		ls = append(ls, l)
	}
	if w.cert != nil && w.pick(2) == 0 {
		ls = append(ls, gatewayv1.Listener{Name: "tls", Port: 443, Protocol: gatewayv1.HTTPSProtocolType, Hostname: ptr(gatewayv1.Hostname("a.example")),
			TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "cert"}}}})
	}
	g := gw("apps", "gw"+strconv.Itoa(w.pick(2)), ls...)
	g.CreationTimestamp.Time = g.CreationTimestamp.Add(0)
	return g
}

func (w *randomWorld) httpRoute() *gatewayv1.HTTPRoute {
	w.n++
	var rules []gatewayv1.HTTPRouteRule
	for i := range 1 + w.pick(3) {
		var ms []gatewayv1.HTTPRouteMatch
		for range w.pick(3) {
			m := prefix(worldPaths[w.pick(len(worldPaths))])
			if w.pick(2) == 0 {
				m = exact(worldPaths[w.pick(len(worldPaths))])
			}
			if w.pick(4) == 0 {
				m.Method = ptr(gatewayv1.HTTPMethodPost)
			}
			ms = append(ms, m)
		}
		rl := rule(ms, w.backendRef())
		if w.pick(3) == 0 {
			rl.BackendRefs = append(rl.BackendRefs, backend("api", 80, int32(w.pick(3))))
		}
		if w.pick(4) == 0 {
			rl.Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier,
				RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "X-R", Value: strconv.Itoa(i)}}}}}
		}
		if w.pick(6) == 0 {
			rl.Filters = append(rl.Filters, gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestMirror,
				RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{BackendRef: w.backendRef().BackendObjectReference}})
		}
		if w.pick(6) == 0 {
			rl.Timeouts = &gatewayv1.HTTPRouteTimeouts{BackendRequest: ptr(gatewayv1.Duration("5s"))}
		}
		if w.pick(2) == 0 {
			rl.Name = ptr(gatewayv1.SectionName([]string{"a", "b"}[w.pick(2)]))
		}
		rules = append(rules, rl)
	}
	ns := "apps"
	if w.pick(5) == 0 {
		ns = "other"
	}
	if ns == "other" {
		// Across namespaces: only a grant lets these through.
		for i := range rules {
			for j := range rules[i].BackendRefs {
				if w.pick(2) == 0 {
					rules[i].BackendRefs[j].Namespace = ptr(gatewayv1.Namespace("apps"))
				}
			}
		}
	}
	rt := route(ns, "r"+strconv.Itoa(w.pick(6)), rules)
	rt.CreationTimestamp.Time = rt.CreationTimestamp.Add(-3600e9 * 0)
	rt.ResourceVersion = strconv.Itoa(w.n)
	rt.Spec.ParentRefs = []gatewayv1.ParentReference{parent("apps", "gw"+strconv.Itoa(w.pick(2)))}
	if w.pick(4) == 0 {
		rt.Spec.ParentRefs = append(rt.Spec.ParentRefs, parent("apps", "gw"+strconv.Itoa(w.pick(3))))
	}
	if h := worldHosts[w.pick(len(worldHosts))]; h != "" {
		rt.Spec.Hostnames = []gatewayv1.Hostname{gatewayv1.Hostname(h)}
	}
	return rt
}

// worldServices are the Services routes name: "gone" never exists,
// "pay" is in the mesh, "tls" has a BackendTLSPolicy now and then.
var worldServices = []string{"web", "api", "gone", "pay", "tls"}

func (w *randomWorld) backendRef() gatewayv1.HTTPBackendRef {
	return backend(worldServices[w.pick(len(worldServices))], int32(80+w.pick(2)))
}

func (w *randomWorld) grpcRoute() *gatewayv1.GRPCRoute {
	w.n++
	var rules []gatewayv1.GRPCRouteRule
	for range 1 + w.pick(2) {
		rl := gatewayv1.GRPCRouteRule{
			Matches:     []gatewayv1.GRPCRouteMatch{method([]string{"pkg.Svc", "pkg.Other"}[w.pick(2)], []string{"", "Get"}[w.pick(2)])},
			BackendRefs: []gatewayv1.GRPCBackendRef{{BackendRef: w.backendRef().BackendRef}},
		}
		if w.pick(2) == 0 {
			rl.Name = ptr(gatewayv1.SectionName("a"))
		}
		rules = append(rules, rl)
	}
	r := grpcRouteOf("apps", "g"+strconv.Itoa(w.pick(3)), rules...)
	r.ResourceVersion = strconv.Itoa(w.n)
	r.Spec.ParentRefs = []gatewayv1.ParentReference{parent("apps", "gw"+strconv.Itoa(w.pick(2)))}
	return r
}

// endpointSlice is a new EndpointSlice for Service n: its first or a
// second one, so that a Service's slices change apart from it.
func (w *randomWorld) endpointSlice(n string) *discoveryv1.EndpointSlice {
	w.n++
	name := n + "-" + strconv.Itoa(1+w.pick(2))
	if n == "pay" {
		var eps []meshEP
		for i := range w.pick(3) {
			eps = append(eps, meshEP{ip: "10.1.0." + strconv.Itoa(1+w.pick(9)), pod: "pay-" + strconv.Itoa(i+w.pick(2)), ready: ptr(true)})
		}
		es := meshSlice("apps", n, name, eps...)
		es.ResourceVersion = strconv.Itoa(w.n)
		return es
	}
	var eps []endpoint
	for range w.pick(3) {
		eps = append(eps, ready("10.244.0."+strconv.Itoa(1+w.pick(9))))
	}
	es := slice("apps", n, name, "http", 8080, eps...)
	if w.pick(4) == 0 {
		es.Ports[0].AppProtocol = ptr("kubernetes.io/h2c")
	}
	es.ResourceVersion = strconv.Itoa(w.n)
	return es
}

// policySpecs are the entries a policy may set: rate limits, plugins,
// the file's authenticators (one signs in through oidc), and an inline
// api_key and oidc authenticator with their secrets.
var policySpecs = []string{
	`"rateLimits":[{"config":{"key":"client_ip","limit":5,"per":"1m"}}]`,
	`"rateLimits":[{"ref":"per-ip"}],"plugins":[{"ref":"cors"}]`,
	`"authenticators":[{"ref":"corp"}],"requireClaims":{"role":"admin"}`,
	`"authenticators":[{"ref":"sso"}]`,
	`"plugins":[{"use":"headers","config":{"request":{"set":{"X-P":"1"}}}}]`,
	`"authenticators":[{"config":{"api_key":{"header":"X-Key"}},"secrets":{"apiKeys":{"name":"keys"}}}]`,
	`"authenticators":[{"config":{"oidc":{"issuer":"https://id.example","client_id":"c"}},"secrets":{"clientSecret":{"name":"keys","key":"alice"},"sessionKeys":{"name":"oidc","key":"session"}}}]`,
	`"authenticators":[{"config":{"oidc":{"issuer":"https://id.example","client_id":"c","redirect_path":"/app/callback"}},"secrets":{"clientSecret":{"name":"keys","key":"alice"},"sessionKeys":{"name":"oidc","key":"session"}}}]`,
}

func (w *randomWorld) policy() *CausewayPolicy {
	w.n++
	tgt := target(kindGateway, "gw"+strconv.Itoa(w.pick(2)))
	switch w.pick(3) {
	case 1:
		tgt = target(kindHTTPRoute, "r"+strconv.Itoa(w.pick(6)))
	case 2:
		tgt = target(kindHTTPRoute, "r"+strconv.Itoa(w.pick(6)), []string{"a", "b"}[w.pick(2)])
	}
	p := policy("apps", "p"+strconv.Itoa(w.pick(4)), w.pick(5), tgt)
	if err := json.Unmarshal([]byte("{"+policySpecs[w.pick(len(policySpecs))]+"}"), &p.Spec); err != nil {
		panic(err)
	}
	p.Spec.TargetRefs = tgt
	p.ResourceVersion = strconv.Itoa(w.n)
	return p
}

func (w *randomWorld) service() (*corev1.Service, *discoveryv1.EndpointSlice) {
	n := worldServices[w.pick(len(worldServices))]
	s := svc("apps", n)
	if n == "pay" || n == "tls" && w.pick(3) == 0 {
		s.Labels = map[string]string{routes.MeshLabel: "true"}
	}
	if w.pick(4) == 0 {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "alt", Port: 81})
	}
	return s, w.endpointSlice(n)
}

// replace puts o into list in place of the object of its name, or adds
// it; del removes the object of o's name instead.
func replace[T interface {
	GetNamespace() string
	GetName() string
}](list []T, o T, del bool) []T {
	list = slices.Clone(list)
	i := slices.IndexFunc(list, func(x T) bool { return x.GetNamespace() == o.GetNamespace() && x.GetName() == o.GetName() })
	switch {
	case i >= 0 && del:
		return slices.Delete(list, i, i+1)
	case i >= 0:
		list[i] = o
	case !del:
		list = append(list, o)
	}
	return list
}

// change makes one random change to the world, as a new snapshot: the
// old one is left as it was, as the watcher's are.
func (w *randomWorld) change() string {
	next := *w.s
	del := w.pick(4) == 0
	var what string
	kinds := 13
	if w.cert != nil {
		kinds++
	}
	switch w.pick(kinds) {
	case 0, 1, 2:
		r := w.httpRoute()
		next.HTTPRoutes = replace(next.HTTPRoutes, r, del)
		what = "route " + r.Name
	case 3:
		g := w.gateway()
		next.Gateways = replace(next.Gateways, g, del && len(next.Gateways) > 1)
		what = "gateway " + g.Name
	case 4:
		sv, es := w.service()
		next.Services = replace(next.Services, sv, del)
		next.EndpointSlices = replace(next.EndpointSlices, es, del)
		what = "service " + sv.Name
	case 5:
		p := w.policy()
		next.Policies = replace(next.Policies, p, del)
		what = "policy " + p.Name
	case 6:
		g := &gatewayv1beta1.ReferenceGrant{ObjectMeta: objMeta("apps", "grant", 0), Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: groupName, Kind: kindHTTPRoute, Namespace: "other"}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Kind: kindService}}}}
		next.ReferenceGrants = replace(next.ReferenceGrants, g, w.pick(2) == 0)
		what = "grant"
	case 7:
		es := w.endpointSlice(worldServices[w.pick(len(worldServices))])
		next.EndpointSlices = replace(next.EndpointSlices, es, del)
		what = "slice " + es.Name
	case 8:
		n := []string{"apps", "other"}[w.pick(2)]
		ns := &corev1.Namespace{ObjectMeta: objMeta("", n, 0)}
		if w.pick(2) == 0 {
			ns.Labels = map[string]string{"env": "prod"}
		}
		next.Namespaces = replace(next.Namespaces, ns, false)
		what = "namespace " + n + " " + fmt.Sprint(ns.Labels)
	case 9:
		r := w.grpcRoute()
		next.GRPCRoutes = replace(next.GRPCRoutes, r, del)
		what = "grpc route " + r.Name
	case 10:
		p := btlsPolicy("apps", "bt"+strconv.Itoa(w.pick(2)), w.pick(3), []string{"tls", "web", "pay"}[w.pick(3)], "", "tls.example", "ca")
		if w.pick(3) == 0 {
			p.Spec.Validation.SubjectAltNames = []gatewayv1.SubjectAltName{{Type: gatewayv1.URISubjectAltNameType, URI: gatewayv1.AbsoluteURI(id("apps", "pay"))}}
		}
		if w.pick(2) == 0 {
			// A policy over two Services: one joining the mesh changes
			// what the policy does to the other's routes.
			p.Spec.TargetRefs = append(p.Spec.TargetRefs, btlsPolicy("apps", "", 0, []string{"tls", "web"}[w.pick(2)], "", "").Spec.TargetRefs...)
		}
		next.BackendTLSPolicies = replace(next.BackendTLSPolicies, p, del)
		what = "backend TLS policy " + p.Name
	case 11:
		pem := w.caPEM
		if w.pick(3) == 0 {
			pem = "not a certificate"
		}
		next.ConfigMaps = replace(next.ConfigMaps, caMap("apps", "ca", map[string]string{caCertKey: pem}), del)
		what = "config map"
	case 13:
		key := w.key
		if w.pick(3) == 0 {
			key = []byte("not a key")
		}
		sec := &corev1.Secret{ObjectMeta: objMeta("apps", "cert", 0), Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": w.cert, "tls.key": key}}
		next.Secrets = replace(next.Secrets, sec, del)
		what = "certificate Secret"
	case 12:
		p := meshPod("apps", "pay-"+strconv.Itoa(w.pick(3)), []string{"pay", "pay-v2"}[w.pick(2)])
		next.Pods = replace(next.Pods, p, del)
		what = "pod " + p.Name
	}
	w.s = &next
	return fmt.Sprintf("%s (delete %t)", what, del)
}

func newRandomWorld(seed uint64) *randomWorld {
	w := &randomWorld{r: rand.New(rand.NewPCG(seed, 1)), s: world()}
	w.s.Gateways = []*gatewayv1.Gateway{w.gateway()}
	w.s.Secrets = []*corev1.Secret{
		opaque("apps", "keys", map[string]string{"alice": aliceKey}),
		opaque("apps", "oidc", map[string]string{"session": "c2Vzc2lvbi1rZXktb2YtMzItYnl0ZXMtZXhhY3RseSE="}),
	}
	w.s.Namespaces = []*corev1.Namespace{{ObjectMeta: objMeta("", "apps", 0)}, {ObjectMeta: objMeta("", "other", 0)}}
	w.s.Namespaces[0].Labels = map[string]string{"env": "prod"}
	return w
}

// differentialCheck is the model's validation of a policy's check
// against incrementalBase.
func differentialCheck(t *testing.T) CheckPolicy {
	t.Helper()
	base, err := routes.ParseWith("edge.yaml", []byte(incrementalBase), routes.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return func(frag routes.Fragment) error {
		_, err := base.Merge(frag)
		return err
	}
}

// TestTranslatorDifferential applies random sequences of changes (routes,
// Gateways, Services, policies, grants added, changed and removed) and
// checks, after every one, that what the long-lived Translator makes of
// the snapshot is what a translation from scratch makes of it, and that
// checking each policy with the shapes of its routes judges every policy
// (and so every route and status) as checking it with every route does.
func TestTranslatorDifferential(t *testing.T) {
	check := differentialCheck(t)
	seeds, steps := 120, 25
	if testing.Short() {
		seeds = 30
	}
	opts := TranslateOptions{Check: check, MeshTrustDomain: testTD}
	invalid, accepted := 0, 0
	for seed := range seeds {
		w := newRandomWorld(uint64(seed))
		tr := NewTranslator(routes.KubernetesProvider{}, opts)
		var log []string
		for step := range steps {
			log = append(log, w.change())
			got := tr.Translate(w.s)
			want := TranslateWith(routes.KubernetesProvider{}, w.s, opts)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d step %d: the Translator differs from a translation from scratch after %q", seed, step, log)
			}
			every := newTranslator(routes.KubernetesProvider{GatewayClass: routes.DefaultGatewayClass}, w.s)
			every.opts, every.checkEveryRoute = opts, true
			full := every.run()
			if !reflect.DeepEqual(got, full) {
				for k, st := range got.Policies {
					if !reflect.DeepEqual(st, full.Policies[k]) {
						t.Logf("policy %s: shapes %+v\nevery route %+v", k, st, full.Policies[k])
					}
				}
				t.Fatalf("seed %d step %d: checking policies by shape differs from checking every route after %q", seed, step, log)
			}
			for _, st := range got.Policies {
				for _, a := range st.Ancestors {
					for _, c := range a.Conditions {
						switch {
						case strings.Contains(c.Message, "on the routes it applies to"):
							invalid++
						case c.Reason == string(gatewayv1.PolicyReasonAccepted):
							accepted++
						}
					}
				}
			}
		}
	}
	// The worlds must reach both outcomes of a check, or the comparison
	// proves nothing.
	t.Logf("policy ancestors judged: %d accepted, %d refused by the check with their routes", accepted, invalid)
	if invalid == 0 || accepted == 0 {
		t.Fatalf("the random worlds judged %d policies accepted and %d refused with their routes: both must occur", accepted, invalid)
	}
}

// TestTranslatorIncremental applies random sequences of changes to every
// kind of object a route's translation reads (routes of both kinds added,
// edited and removed; Services and their EndpointSlices apart; Gateways
// and listeners; Namespaces relabelled under label-selecting listeners;
// grants; CausewayPolicies and BackendTLSPolicies attached and detached;
// ConfigMaps; Pods of a mesh Service) and checks after each that the
// long-lived Translator, which reuses what it translated of routes whose
// inputs did not change, gives exactly what a fresh Translator gives:
// fragment, statuses and all. While each snapshot is translated and its
// fragment merged into an edge's model, another goroutine reads every
// value of the Result before it, as the status loop and the generation
// before do, so that -race sees any write into what they share. It also
// checks that the entries kept are only the snapshot's routes', and that
// routes were reused (or the comparison proves nothing).
func TestTranslatorIncremental(t *testing.T) {
	check := differentialCheck(t)
	ca := string(testutil.NewCA(t).PEM())
	cert, key := selfSigned(t, "a.example")
	seeds, steps := 160, 30
	if testing.Short() {
		seeds = 30
	}
	opts := TranslateOptions{Check: check, MeshTrustDomain: testTD, HTTPS: true}
	edge, err := routes.ParseWith("edge.yaml", []byte(incrementalBase), routes.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reused, translated := 0, 0
	for seed := range seeds {
		w := newRandomWorld(uint64(1000 + seed))
		w.caPEM, w.cert, w.key = ca, cert, key
		w.s.ConfigMaps = []*corev1.ConfigMap{caMap("apps", "ca", map[string]string{caCertKey: ca})}
		tr := NewTranslator(routes.KubernetesProvider{}, opts)
		var log []string
		var prev *Result
		for step := range steps {
			log = append(log, w.change())
			done := make(chan struct{})
			go func(r *Result) {
				defer close(done)
				if r != nil {
					readAll(reflect.ValueOf(r), map[uintptr]bool{})
				}
			}(prev)
			got := tr.Translate(w.s)
			// And the edge takes the fragment, as Source.Run's apply does:
			// merging it defaults what it holds.
			_, _ = edge.Merge(got.Fragment)
			<-done
			want := NewTranslator(routes.KubernetesProvider{}, opts).Translate(w.s)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d step %d: the incremental translation differs from a fresh one after %q\n%s", seed, step, log, resultDiff(got, want))
			}
			reused += tr.reused
			translated += tr.translated
			if n := len(w.s.HTTPRoutes) + len(w.s.GRPCRoutes); len(tr.kept) > n {
				t.Fatalf("seed %d step %d: %d route entries kept for %d routes", seed, step, len(tr.kept), n)
			}
			for obj := range tr.kept {
				if !slices.ContainsFunc(w.s.HTTPRoutes, func(r *gatewayv1.HTTPRoute) bool { return metav1.Object(r) == obj }) && !slices.ContainsFunc(w.s.GRPCRoutes, func(r *gatewayv1.GRPCRoute) bool { return metav1.Object(r) == obj }) {
					t.Fatalf("seed %d step %d: an entry is kept for %s/%s, which the snapshot no longer has", seed, step, obj.GetNamespace(), obj.GetName())
				}
			}
			for k := range tr.slices {
				if !slices.Contains(w.s.EndpointSlices, k.es) {
					t.Fatalf("seed %d step %d: EndpointSlice %s is kept but gone", seed, step, k.es.Name)
				}
			}
			prev = &got
		}
	}
	t.Logf("routes reused %d, translated %d", reused, translated)
	if reused == 0 || translated == 0 {
		t.Fatalf("routes reused %d, translated %d: both must occur", reused, translated)
	}
}

// readAll reads every value reachable from v, as a reader of a Result
// on another goroutine would.
func readAll(v reflect.Value, seen map[uintptr]bool) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() || seen[v.Pointer()] {
			return
		}
		seen[v.Pointer()] = true
		readAll(v.Elem(), seen)
	case reflect.Interface:
		if !v.IsNil() {
			readAll(v.Elem(), seen)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			readAll(v.Field(i), seen)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			readAll(v.Index(i), seen)
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			readAll(it.Key(), seen)
			readAll(it.Value(), seen)
		}
	case reflect.String:
		_ = len(v.String())
	default:
		if v.CanInterface() {
			_ = v.Interface()
		} else {
			_ = v.String() // an unexported field: its kind's zero reading
		}
	}
}

// resultDiff says where two Results differ first, field by field.
func resultDiff(a, b Result) string {
	var out []string
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, fmt.Sprintf("%s:\n incremental %+v\n fresh       %+v", va.Type().Field(i).Name, va.Field(i).Interface(), vb.Field(i).Interface()))
		}
	}
	return strings.Join(out, "\n")
}

// TestTranslatorReuseSharedInputs: changes that reach a kept route only
// through what every route may read, each from one snapshot to the next:
// the kept route must not survive them.
func TestTranslatorReuseSharedInputs(t *testing.T) {
	ca := string(testutil.NewCA(t).PEM())
	toWeb := route("apps", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))})
	tests := []struct {
		name   string
		before func(s *Snapshot)
		after  func(s *Snapshot)
	}{
		{
			// The policy names Services web and tls; tls joining the mesh
			// makes it unusable (no SPIFFE IDs listed), so web's upstream
			// answers 503: the route to web read neither tls nor the policy.
			name: "a Service a BackendTLSPolicy names joins the mesh",
			before: func(s *Snapshot) {
				p := btlsPolicy("apps", "bt", 0, "web", "", "web.example", "ca")
				p.Spec.TargetRefs = append(p.Spec.TargetRefs, btlsPolicy("apps", "", 0, "tls", "", "").Spec.TargetRefs...)
				s.BackendTLSPolicies = []*gatewayv1.BackendTLSPolicy{p}
				s.Services = append(s.Services, svc("apps", "tls"))
			},
			after: func(s *Snapshot) {
				tls := svc("apps", "tls")
				tls.Labels = map[string]string{routes.MeshLabel: "true"}
				s.Services = []*corev1.Service{s.Services[0], tls}
			},
		},
		{
			name:   "the namespace stops matching the listener's selector",
			before: func(s *Snapshot) {},
			after: func(s *Snapshot) {
				s.Namespaces = []*corev1.Namespace{{ObjectMeta: objMeta("", "apps", 0)}}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := world()
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{toWeb}
			l := httpListener("http", 80, "")
			l.AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: ptr(gatewayv1.NamespacesFromSelector),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}}
			s.Gateways = []*gatewayv1.Gateway{gw("apps", "gw", l)}
			s.Namespaces = []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "apps", Labels: map[string]string{"env": "prod"}}}}
			s.ConfigMaps = []*corev1.ConfigMap{caMap("apps", "ca", map[string]string{caCertKey: ca})}
			tc.before(s)
			tr := NewTranslator(routes.KubernetesProvider{}, TranslateOptions{})
			first := tr.Translate(s)
			next := *s
			tc.after(&next)
			got := tr.Translate(&next)
			want := NewTranslator(routes.KubernetesProvider{}, TranslateOptions{}).Translate(&next)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("the kept route survived the change:\n%s", resultDiff(got, want))
			}
			if reflect.DeepEqual(first, want) {
				t.Fatal("the change changes nothing: the case proves nothing")
			}
		})
	}
}
