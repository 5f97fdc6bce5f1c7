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
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

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

// randomWorld is a small cluster drawn from r: Gateways, routes of both
// kinds of paths, Services that exist or not, grants, and policies of
// every kind of entry on every kind of target, so that the objects
// depend on each other in every way the translation knows.
type randomWorld struct {
	r *rand.Rand
	s *Snapshot
	n int // objects made so far, for unique names and ages
}

var (
	worldPaths = []string{"/", "/app", "/oauth2", "/oauth2/callback", "/app/callback", "/x"}
	worldHosts = []string{"", "a.example", "*.b.example", "c.b.example"}
)

func (w *randomWorld) pick(n int) int { return w.r.IntN(n) }

func (w *randomWorld) gateway() *gatewayv1.Gateway {
	var ls []gatewayv1.Listener
	for i := range 1 + w.pick(2) {
		ls = append(ls, httpListener("l"+strconv.Itoa(i), int32(80+w.pick(2)), worldHosts[w.pick(len(worldHosts))]))
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
		rl := rule(ms, backend([]string{"web", "api", "gone"}[w.pick(3)], int32(80+w.pick(2))))
		if w.pick(3) == 0 {
			rl.BackendRefs = append(rl.BackendRefs, backend("api", 80, int32(w.pick(3))))
		}
		if w.pick(4) == 0 {
			rl.Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier,
				RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "X-R", Value: strconv.Itoa(i)}}}}}
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
	n := []string{"web", "api", "gone"}[w.pick(3)]
	var eps []endpoint
	for range w.pick(3) {
		eps = append(eps, ready("10.244.0."+strconv.Itoa(1+w.pick(9))))
	}
	return svc("apps", n), slice("apps", n, n+"-1", "http", 8080, eps...)
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
	switch w.pick(7) {
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
	opts := TranslateOptions{Check: check}
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
