package kubernetes

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// policyBase is the edge's own file the policies' entries are checked
// against: one authenticator, one rate limit and one plugin to refer to.
const policyBase = `version: 1
listen: {http: ":8080"}
providers: {kubernetes: {}}
authenticators:
  corp: {basic: {htpasswd_file: /dev/null}}
rate_limits:
  per-ip: {key: client_ip, limit: 10, per: 1s}
plugins:
  cors: {use: cors, config: {allow_origins: ["https://a.example"]}}
`

// testCheck is the routes model's own validation of a policy's entries,
// merged into policyBase: what the edge's check does, without building.
func testCheck(t *testing.T) CheckPolicy {
	t.Helper()
	base, err := routes.ParseWith("edge.yaml", []byte(policyBase), routes.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return func(frag routes.Fragment) error {
		_, err := base.Merge(frag)
		return err
	}
}

type policyOpt func(*CausewayPolicy)

func policy(ns, name string, age int, targets []gatewayv1.LocalPolicyTargetReferenceWithSectionName, opts ...policyOpt) *CausewayPolicy {
	p := &CausewayPolicy{ObjectMeta: objMeta(ns, name, age), Spec: CausewayPolicySpec{TargetRefs: targets}}
	for _, o := range opts {
		o(p)
	}
	return p
}

func target(kind, name string, section ...string) []gatewayv1.LocalPolicyTargetReferenceWithSectionName {
	ref := gatewayv1.LocalPolicyTargetReferenceWithSectionName{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{
		Group: groupName, Kind: gatewayv1.Kind(kind), Name: gatewayv1.ObjectName(name)}}
	if len(section) > 0 {
		ref.SectionName = ptr(gatewayv1.SectionName(section[0]))
	}
	return []gatewayv1.LocalPolicyTargetReferenceWithSectionName{ref}
}

func authRef(name string) policyOpt {
	return func(p *CausewayPolicy) {
		p.Spec.Authenticators = append(p.Spec.Authenticators, PolicyAuthenticator{Ref: name})
	}
}

func authConfig(config string, secrets *AuthenticatorSecrets) policyOpt {
	return func(p *CausewayPolicy) {
		p.Spec.Authenticators = append(p.Spec.Authenticators, PolicyAuthenticator{Config: json.RawMessage(config), Secrets: secrets})
	}
}

func opaque(ns, name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: objMeta(ns, name, 0), Type: corev1.SecretTypeOpaque, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

func namedRule(n string, matches []gatewayv1.HTTPRouteMatch, backends ...gatewayv1.HTTPBackendRef) gatewayv1.HTTPRouteRule {
	r := rule(matches, backends...)
	r.Name = ptr(gatewayv1.SectionName(n))
	return r
}

// policySummary is a route's path and the stages a policy gave it.
func policySummary(r routes.Route) string {
	s := r.Match.Path + r.Match.PathPrefix + " auth=" + strings.Join(r.Auth, ",")
	if len(r.RateLimit) > 0 {
		s += " rl=" + strings.Join(r.RateLimit, ",")
	}
	if len(r.Plugins) > 0 {
		s += " plugins=" + strings.Join(r.Plugins, ",")
	}
	if r.Upstream == unresolvedUpstream {
		s += " -> unresolved"
	}
	return s
}

const aliceKey = "alice-key-0123456789"

func TestTranslatePolicies(t *testing.T) {
	twoRules := func() *gatewayv1.HTTPRoute {
		return route("apps", "r", []gatewayv1.HTTPRouteRule{
			namedRule("admin", []gatewayv1.HTTPRouteMatch{exact("/admin")}, backend("web", 80)),
			namedRule("shop", []gatewayv1.HTTPRouteMatch{exact("/shop")}, backend("web", 80)),
		})
	}
	keys := &AuthenticatorSecrets{APIKeys: &SecretRef{Name: "keys"}}
	tests := []struct {
		name     string
		policies []*CausewayPolicy
		edit     func(*Snapshot)
		want     []string
		// status is each policy's first ancestor's Accepted reason, and a
		// piece of its message.
		status map[string][2]string
		check  func(t *testing.T, res Result)
	}{
		{
			name:     "a route's policy with API keys from a Secret",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), authConfig(`{"api_key": {"header": "X-Key"}}`, keys))},
			want:     []string{"/admin auth=k8s.apps.policy.p.auth.0", "/shop auth=k8s.apps.policy.p.auth.0"},
			status:   map[string][2]string{"p": {"Accepted", ""}},
			check: func(t *testing.T, res Result) {
				a := res.Fragment.Authenticators["k8s.apps.policy.p.auth.0"]
				if a.APIKey == nil || a.APIKey.Header != "X-Key" {
					t.Fatalf("authenticator %+v", a)
				}
				sum := sha256.Sum256([]byte(aliceKey))
				if got, want := string(a.APIKey.Keys), "alice:"+hex.EncodeToString(sum[:])+"\n"; got != want {
					t.Errorf("keys %q, want %q", got, want)
				}
				if strings.Contains(string(a.APIKey.Keys), aliceKey) {
					t.Error("the model holds the key itself, not its hash")
				}
				if a.SecretsFrom != "Secret apps/keys" {
					t.Errorf("SecretsFrom %q", a.SecretsFrom)
				}
			},
		},
		{
			name: "rule beats route beats Gateway",
			policies: []*CausewayPolicy{
				policy("apps", "on-gw", 0, target(kindGateway, "gw"), authRef("corp")),
				policy("apps", "on-route", 1, target(kindHTTPRoute, "r"), authRef("corp"), func(p *CausewayPolicy) {
					p.Spec.RateLimits = []PolicyRateLimit{{Ref: "per-ip"}}
				}),
				policy("apps", "on-rule", 2, target(kindHTTPRoute, "r", "admin"), authRef("corp"), func(p *CausewayPolicy) {
					p.Spec.RequireClaims = map[string]string{"role": "admin"}
					p.Spec.Plugins = []PolicyPlugin{{Ref: "cors"}, {Use: "headers", Config: json.RawMessage(`{"request": {"set": {"X-Policy": "rule"}}}`)}}
				}),
			},
			edit: func(s *Snapshot) {
				s.HTTPRoutes = append(s.HTTPRoutes, route("apps", "other", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/other")}, backend("web", 80))}))
			},
			want: []string{
				"/other auth=corp",
				"/admin auth=corp plugins=cors,k8s.apps.policy.on-rule.plugin.1",
				"/shop auth=corp rl=per-ip",
			},
			status: map[string][2]string{"on-gw": {"Accepted", ""}, "on-route": {"Accepted", ""}, "on-rule": {"Accepted", ""}},
			check: func(t *testing.T, res Result) {
				for _, r := range res.Fragment.Routes {
					if r.Match.Path == "/admin" && r.RequireClaims["role"] != "admin" {
						t.Errorf("the rule's route lost requireClaims: %v", r.RequireClaims)
					}
					if r.Match.Path == "/shop" && len(r.RequireClaims) != 0 {
						t.Errorf("the rule's claims leaked to another rule: %v", r.RequireClaims)
					}
				}
			},
		},
		{
			name: "two policies on one target: the older wins, the other is Conflicted",
			policies: []*CausewayPolicy{
				policy("apps", "newer", 5, target(kindHTTPRoute, "r"), authRef("corp"), func(p *CausewayPolicy) { p.Spec.RateLimits = []PolicyRateLimit{{Ref: "per-ip"}} }),
				policy("apps", "older", 1, target(kindHTTPRoute, "r"), authRef("corp")),
			},
			want:   []string{"/admin auth=corp", "/shop auth=corp"},
			status: map[string][2]string{"older": {"Accepted", ""}, "newer": {"Conflicted", "older"}},
		},
		{
			name:     "a policy reading the edge's own files is refused, and its routes fail closed",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), authConfig(`{"api_key": {"keys_file": "/etc/causeway/keys"}}`, nil))},
			want:     []string{"/admin auth= plugins=k8s.apps.policy.p.invalid -> unresolved", "/shop auth= plugins=k8s.apps.policy.p.invalid -> unresolved"},
			status:   map[string][2]string{"p": {"Invalid", "api_key.keys_file reads the edge's own files"}},
		},
		{
			name:     "an environment variable of the edge is refused too",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), authConfig(`{"jwt": {"hmac_secret_env": "REDIS_PASSWORD", "algorithms": ["HS256"]}}`, nil))},
			want:     []string{"/admin auth= plugins=k8s.apps.policy.p.invalid -> unresolved", "/shop auth= plugins=k8s.apps.policy.p.invalid -> unresolved"},
			status:   map[string][2]string{"p": {"Invalid", "jwt.hmac_secret_env"}},
		},
		{
			name:     "empty entries are clients without a key, left out",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), authConfig(`{"api_key": {"header": "X-Key"}}`, &AuthenticatorSecrets{APIKeys: &SecretRef{Name: "some-empty"}}))},
			edit: func(s *Snapshot) {
				s.Secrets = append(s.Secrets, opaque("apps", "some-empty", map[string]string{"alice": aliceKey + "\n", "bob": "", "carol": "\r\n"}))
			},
			want:   []string{"/admin auth=k8s.apps.policy.p.auth.0", "/shop auth=k8s.apps.policy.p.auth.0"},
			status: map[string][2]string{"p": {"Accepted", ""}},
			check: func(t *testing.T, res Result) {
				sum := sha256.Sum256([]byte(aliceKey))
				if got, want := string(res.Fragment.Authenticators["k8s.apps.policy.p.auth.0"].APIKey.Keys), "alice:"+hex.EncodeToString(sum[:])+"\n"; got != want {
					t.Errorf("keys %q, want %q", got, want)
				}
			},
		},
		{
			name:     "a Secret of empty entries only has no keys",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), authConfig(`{"api_key": {"header": "X-Key"}}`, &AuthenticatorSecrets{APIKeys: &SecretRef{Name: "all-empty"}}))},
			edit: func(s *Snapshot) {
				s.Secrets = append(s.Secrets, opaque("apps", "all-empty", map[string]string{"bob": "", "carol": "\n"}))
			},
			want:   []string{"/admin auth= plugins=k8s.apps.policy.p.invalid -> unresolved", "/shop auth= plugins=k8s.apps.policy.p.invalid -> unresolved"},
			status: map[string][2]string{"p": {"Invalid", "Secret apps/all-empty has no keys"}},
		},
		{
			name:     "a missing Secret",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), authConfig(`{"api_key": {}}`, &AuthenticatorSecrets{APIKeys: &SecretRef{Name: "gone"}}))},
			want:     []string{"/admin auth= plugins=k8s.apps.policy.p.invalid -> unresolved", "/shop auth= plugins=k8s.apps.policy.p.invalid -> unresolved"},
			status:   map[string][2]string{"p": {"Invalid", "Secret apps/gone not found"}},
		},
		{
			name:     "a Secret of another namespace is not read",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), authConfig(`{"api_key": {}}`, &AuthenticatorSecrets{APIKeys: &SecretRef{Name: "theirs"}}))},
			edit: func(s *Snapshot) {
				s.Secrets = append(s.Secrets, opaque("other", "theirs", map[string]string{"bob": "k"}))
			},
			want:   []string{"/admin auth= plugins=k8s.apps.policy.p.invalid -> unresolved", "/shop auth= plugins=k8s.apps.policy.p.invalid -> unresolved"},
			status: map[string][2]string{"p": {"Invalid", "Secret apps/theirs not found"}},
		},
		{
			name: "an HMAC secret from a Secret",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"),
				authConfig(`{"jwt": {"algorithms": ["HS256"], "issuer": "x"}}`, &AuthenticatorSecrets{HMACSecret: &SecretKeyRef{Name: "hmac", Key: "k"}}))},
			edit: func(s *Snapshot) {
				s.Secrets = append(s.Secrets, opaque("apps", "hmac", map[string]string{"k": "a-secret-of-32-bytes-or-more....\n"}))
			},
			want:   []string{"/admin auth=k8s.apps.policy.p.auth.0", "/shop auth=k8s.apps.policy.p.auth.0"},
			status: map[string][2]string{"p": {"Accepted", ""}},
			check: func(t *testing.T, res Result) {
				a := res.Fragment.Authenticators["k8s.apps.policy.p.auth.0"]
				if a.JWT == nil || string(a.JWT.HMACSecret) != "a-secret-of-32-bytes-or-more...." {
					t.Fatalf("authenticator %+v", a.JWT)
				}
			},
		},
		{
			name:     "an unknown key is refused, as in the file",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), authConfig(`{"api_key": {"heder": "X-Key"}}`, keys))},
			want:     []string{"/admin auth= plugins=k8s.apps.policy.p.invalid -> unresolved", "/shop auth= plugins=k8s.apps.policy.p.invalid -> unresolved"},
			status:   map[string][2]string{"p": {"Invalid", `spec.authenticators[0].config.api_key.heder: unknown key (did you mean "header"?)`}},
		},
		{
			name:     "the edge's check refuses: the message names the policy's field",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), authRef("nope"))},
			want:     []string{"/admin auth= plugins=k8s.apps.policy.p.invalid -> unresolved", "/shop auth= plugins=k8s.apps.policy.p.invalid -> unresolved"},
			status:   map[string][2]string{"p": {"Invalid", `spec.authenticators[0].ref`}},
		},
		{
			name: "a rate limit defined in the policy is checked by the model",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), func(p *CausewayPolicy) {
				p.Spec.RateLimits = []PolicyRateLimit{{Config: json.RawMessage(`{"key": "client_ip", "limit": 0, "per": "1s"}`)}}
			})},
			want:   []string{"/admin auth= plugins=k8s.apps.policy.p.invalid -> unresolved", "/shop auth= plugins=k8s.apps.policy.p.invalid -> unresolved"},
			status: map[string][2]string{"p": {"Invalid", "spec.rateLimits[0].config.limit"}},
		},
		{
			name: "a rate limit and a plugin defined in the policy, with durations as the file writes them",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), func(p *CausewayPolicy) {
				p.Spec.RateLimits = []PolicyRateLimit{{Config: json.RawMessage(`{"key": "client_ip", "limit": 5, "per": "1m", "burst": 10}`)}, {Ref: "per-ip"}}
				p.Spec.Plugins = []PolicyPlugin{{Use: "headers", Config: json.RawMessage(`{"response": {"set": {"X-Policy": "p"}}}`)}}
			})},
			want:   []string{"/admin auth= rl=k8s.apps.policy.p.ratelimit.0,per-ip plugins=k8s.apps.policy.p.plugin.0", "/shop auth= rl=k8s.apps.policy.p.ratelimit.0,per-ip plugins=k8s.apps.policy.p.plugin.0"},
			status: map[string][2]string{"p": {"Accepted", ""}},
			check: func(t *testing.T, res Result) {
				rl := res.Fragment.RateLimits["k8s.apps.policy.p.ratelimit.0"]
				if rl.Limit != 5 || rl.Per.D() != time.Minute || rl.Burst != 10 {
					t.Errorf("rate limit %+v", rl)
				}
			},
		},
		{
			name:     "a ref to a missing rate limit names the policy's field",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), func(p *CausewayPolicy) { p.Spec.RateLimits = []PolicyRateLimit{{Ref: "per-ip"}, {Ref: "gone"}} })},
			want:     []string{"/admin auth= plugins=k8s.apps.policy.p.invalid -> unresolved", "/shop auth= plugins=k8s.apps.policy.p.invalid -> unresolved"},
			status:   map[string][2]string{"p": {"Invalid", "spec.rateLimits[1].ref"}},
		},
		{
			name:     "a policy may not borrow another policy's authenticator",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), authRef("k8s.other.policy.q.auth.0"))},
			want:     []string{"/admin auth= plugins=k8s.apps.policy.p.invalid -> unresolved", "/shop auth= plugins=k8s.apps.policy.p.invalid -> unresolved"},
			status:   map[string][2]string{"p": {"Invalid", "not a name of the edge's routes file"}},
		},
		{
			name: "an OIDC authenticator on routes without one for its callback: Invalid, never the whole model",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), authConfig(`{"oidc": {"issuer": "https://id.example", "client_id": "shop"}}`,
				&AuthenticatorSecrets{ClientSecret: &SecretKeyRef{Name: "keys", Key: "alice"}, SessionKeys: &SecretKeyRef{Name: "keys", Key: "alice"}}))},
			want:   []string{"/admin auth= plugins=k8s.apps.policy.p.invalid -> unresolved", "/shop auth= plugins=k8s.apps.policy.p.invalid -> unresolved"},
			status: map[string][2]string{"p": {"Invalid", "redirect_path /oauth2/callback"}},
			check: func(t *testing.T, res Result) {
				if len(res.Fragment.Authenticators) != 0 {
					t.Errorf("the invalid policy's authenticators stayed in the model: %v", res.Fragment.Authenticators)
				}
			},
		},
		{
			name: "with a rule for the callback it is accepted",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), authConfig(`{"oidc": {"issuer": "https://id.example", "client_id": "shop"}}`,
				&AuthenticatorSecrets{ClientSecret: &SecretKeyRef{Name: "keys", Key: "alice"}, SessionKeys: &SecretKeyRef{Name: "keys", Key: "alice"}}))},
			edit: func(s *Snapshot) {
				s.HTTPRoutes[0].Spec.Rules = append(s.HTTPRoutes[0].Spec.Rules, rule([]gatewayv1.HTTPRouteMatch{exact("/oauth2/callback")}, backend("web", 80)))
			},
			want:   []string{"/admin auth=k8s.apps.policy.p.auth.0", "/shop auth=k8s.apps.policy.p.auth.0", "/oauth2/callback auth=k8s.apps.policy.p.auth.0"},
			status: map[string][2]string{"p": {"Accepted", ""}},
		},
		{
			name:     "a missing target",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "gone"), authRef("corp"))},
			want:     []string{"/admin auth=", "/shop auth="},
			status:   map[string][2]string{"p": {"TargetNotFound", "HTTPRoute apps/gone does not exist"}},
		},
		{
			name:     "a missing rule",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r", "nope"), authRef("corp"))},
			want:     []string{"/admin auth=", "/shop auth="},
			status:   map[string][2]string{"p": {"TargetNotFound", "(rule nope)"}},
		},
		{
			name:     "a policy in another namespace does not reach the route",
			policies: []*CausewayPolicy{policy("other", "p", 0, target(kindHTTPRoute, "r"), authRef("corp"))},
			want:     []string{"/admin auth=", "/shop auth="},
			status:   map[string][2]string{"p": {"TargetNotFound", "HTTPRoute other/r"}},
		},
		{
			name:     "a Gateway of another class: not ours to answer for",
			policies: []*CausewayPolicy{policy("apps", "p", 0, target(kindGateway, "theirs"), authRef("corp"))},
			edit: func(s *Snapshot) {
				g := gw("apps", "theirs", httpListener("http", 80, ""))
				g.Spec.GatewayClassName = "other"
				s.Gateways = append(s.Gateways, g)
			},
			want: []string{"/admin auth=", "/shop auth="},
			check: func(t *testing.T, res Result) {
				if _, ok := res.Policies[nn("apps", "p")]; ok {
					t.Errorf("status written for a policy of another class's Gateway: %+v", res.Policies)
				}
			},
		},
		{
			name:     "a Service target is refused",
			policies: []*CausewayPolicy{policy("apps", "p", 0, []gatewayv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Group: "", Kind: "Service", Name: "web"}}}, authRef("corp"))},
			want:     []string{"/admin auth=", "/shop auth="},
			status:   map[string][2]string{"p": {"Invalid", "a target must be a Gateway, HTTPRoute or GRPCRoute"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := world()
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{twoRules()}
			s.Secrets = []*corev1.Secret{opaque("apps", "keys", map[string]string{"alice": aliceKey})}
			s.Policies = tc.policies
			if tc.edit != nil {
				tc.edit(s)
			}
			res := TranslateWith(routes.KubernetesProvider{}, s, TranslateOptions{Check: testCheck(t)})
			var got []string
			for _, r := range res.Fragment.Routes {
				got = append(got, policySummary(r))
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			for pname, want := range tc.status {
				st, ok := res.Policies[nn(tc.policies[0].Namespace, pname)]
				if !ok || len(st.Ancestors) == 0 {
					t.Errorf("policy %s: no status", pname)
					continue
				}
				c := st.Ancestors[0].Conditions[0]
				if c.Reason != want[0] || !strings.Contains(c.Message, want[1]) || (c.Status == metav1.ConditionTrue) != (want[0] == "Accepted") {
					t.Errorf("policy %s: %s %s %q, want %s with %q", pname, c.Status, c.Reason, c.Message, want[0], want[1])
				}
				if c.ObservedGeneration != 3 {
					t.Errorf("observedGeneration %d", c.ObservedGeneration)
				}
				for _, sec := range s.Secrets {
					for _, v := range sec.Data {
						// An empty value is in every message.
						if v := strings.TrimSpace(string(v)); v != "" && strings.Contains(c.Message, v) {
							t.Errorf("status shows a Secret's value: %q", c.Message)
						}
					}
				}
			}
			if tc.check != nil {
				tc.check(t, res)
			}
		})
	}
}

// A policy on a Gateway reaches the routes of every namespace attached to
// it, and its ancestor is the Gateway.
func TestTranslatePolicyAncestors(t *testing.T) {
	s := world()
	s.Gateways[0].Spec.Listeners[0].AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: ptr(gatewayv1.NamespacesFromAll)}}
	s.Services = append(s.Services, svc("shop", "web"))
	s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("shop", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))}, parents(parent("apps", "gw")))}
	s.Policies = []*CausewayPolicy{
		policy("apps", "gwp", 0, target(kindGateway, "gw"), authRef("corp")),
		policy("shop", "rp", 0, target(kindHTTPRoute, "r"), authRef("corp"), func(p *CausewayPolicy) { p.Spec.RateLimits = []PolicyRateLimit{{Ref: "per-ip"}} }),
	}
	res := TranslateWith(routes.KubernetesProvider{}, s, TranslateOptions{Check: testCheck(t)})
	if len(res.Fragment.Routes) != 1 || policySummary(res.Fragment.Routes[0]) != "/ auth=corp rl=per-ip" {
		t.Fatalf("routes %v", summaries(res.Fragment))
	}
	for _, key := range []string{"apps/gwp", "shop/rp"} {
		ns, n, _ := strings.Cut(key, "/")
		st := res.Policies[nn(ns, n)]
		if len(st.Ancestors) != 1 {
			t.Fatalf("%s: ancestors %+v", key, st.Ancestors)
		}
		a := st.Ancestors[0]
		if string(a.AncestorRef.Name) != "gw" || string(*a.AncestorRef.Namespace) != "apps" || string(*a.AncestorRef.Kind) != kindGateway || a.ControllerName != routes.KubernetesControllerName {
			t.Errorf("%s: ancestor %+v", key, a)
		}
	}
}

// A policy's forwarded headers are dropped from client requests on every
// route of the edge, so a policy may forward only into X- headers that
// are not the edge's own: into Authorization, Cookie or Content-Type it
// would strip them from the routes of every other namespace. Each kind of
// authenticator's forwarding keys are checked, and the message names the
// key at fault.
func TestTranslatePolicyForwardedHeaders(t *testing.T) {
	keys := &AuthenticatorSecrets{APIKeys: &SecretRef{Name: "keys"}}
	tests := []struct {
		config  string
		secrets *AuthenticatorSecrets
		// want is "" for Accepted, else a piece of the Invalid message.
		want string
	}{
		{`{"api_key": {"header": "X-Key", "forward_name": "X-Client"}}`, keys, ""},
		{`{"api_key": {"header": "X-Key", "forward_name": "x-client"}}`, keys, ""},
		{`{"api_key": {"header": "X-Key"}}`, keys, ""},
		{`{"api_key": {"header": "X-Key", "forward_name": "Authorization"}}`, keys, `api_key.forward_name: "Authorization"`},
		{`{"api_key": {"header": "X-Key", "forward_name": "cookie"}}`, keys, `api_key.forward_name: "cookie"`},
		{`{"api_key": {"header": "X-Key", "forward_name": "Content-Type"}}`, keys, `api_key.forward_name: "Content-Type"`},
		{`{"api_key": {"header": "X-Key", "forward_name": "Proxy-Authorization"}}`, keys, `api_key.forward_name`},
		{`{"api_key": {"header": "X-Key", "forward_name": "X-Forwarded-User"}}`, keys, `api_key.forward_name: "X-Forwarded-User"`},
		{`{"api_key": {"header": "X-Key", "forward_name": "X-Real-Ip"}}`, keys, `api_key.forward_name`},
		{`{"basic": {"forward_user": "Remote-User"}}`, nil, `basic.forward_user: "Remote-User"`},
		{`{"jwt": {"algorithms": ["HS256"], "forward_claims": {"sub": "X-User", "email": "Accept"}}}`, nil, `jwt.forward_claims.email: "Accept"`},
		{`{"oidc": {"issuer": "https://id.example", "client_id": "c", "forward_claims": {"sub": "Traceparent"}}}`, nil, `oidc.forward_claims.sub`},
		{`{"ext_authz": {"http_url": "https://authz.example/check", "upstream_headers": ["X-Tenant", "Authorization"]}}`, nil, `ext_authz.upstream_headers[1]: "Authorization"`},
		{`{"ext_authz": {"http_url": "https://authz.example/check", "forward_claims": {"sub": "Grpc-Timeout"}}}`, nil, `ext_authz.forward_claims.sub`},
		{`{"ext_authz": {"http_url": "https://authz.example/check", "upstream_headers": ["X-Tenant"], "forward_claims": {"sub": "X-User"}}}`, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.config, func(t *testing.T) {
			s := world()
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/r")}, backend("web", 80))})}
			s.Secrets = []*corev1.Secret{opaque("apps", "keys", map[string]string{"alice": aliceKey})}
			s.Policies = []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), authConfig(tc.config, tc.secrets))}
			res := TranslateWith(routes.KubernetesProvider{}, s, TranslateOptions{Check: testCheck(t)})
			c := res.Policies[nn("apps", "p")].Ancestors[0].Conditions[0]
			if tc.want == "" {
				if c.Reason != "Accepted" {
					t.Fatalf("%s %q, want Accepted", c.Reason, c.Message)
				}
				if len(res.Fragment.Authenticators) != 1 {
					t.Fatalf("the policy's authenticator is not in the model: %v", res.Fragment.Authenticators)
				}
				return
			}
			if c.Reason != "Invalid" || !strings.Contains(c.Message, "spec.authenticators[0].config."+tc.want) {
				t.Fatalf("%s %q, want Invalid naming %s", c.Reason, c.Message, tc.want)
			}
			if len(res.Fragment.Authenticators) != 0 {
				t.Fatalf("a refused policy's authenticator reached the model: %v", res.Fragment.Authenticators)
			}
			if got := policySummary(res.Fragment.Routes[0]); !strings.HasSuffix(got, "-> unresolved") {
				t.Fatalf("the route of a refused policy: %s, want it failing closed", got)
			}
		})
	}
}

// A plugin defined in a policy may not read the edge's files or
// environment: by the routes file's convention, any key ending in _file,
// _files, _dir or _env, at any depth of its config (respond's body_file
// would serve the edge's ServiceAccount token to the namespace's author).
func TestTranslatePolicyPluginsReadNoEdgeFiles(t *testing.T) {
	tests := []struct {
		use, config string
		// want is "" for Accepted, else a piece of the Invalid message.
		want string
	}{
		{"respond", `{"status": 200, "body": "hello"}`, ""},
		{"headers", `{"request": {"set": {"X-File": "a_file"}}}`, ""},
		{"respond", `{"status": 200, "body_file": "/var/run/secrets/kubernetes.io/serviceaccount/token"}`, "spec.plugins[0].config.body_file reads the edge's own files"},
		{"respond", `{"status": 200, "body_file": "keys"}`, "spec.plugins[0].config.body_file"},
		{"headers", `{"request": {"set": {"X-A": "b"}}, "extra": [{"tls_dir": "/etc"}]}`, "spec.plugins[0].config.extra[0].tls_dir"},
		{"headers", `{"nested": {"token_env": "AWS_SECRET_ACCESS_KEY"}}`, "spec.plugins[0].config.nested.token_env"},
		{"headers", `{"ca_files": ["/etc/ssl/private/key.pem"]}`, "spec.plugins[0].config.ca_files"},
	}
	for _, tc := range tests {
		t.Run(tc.config, func(t *testing.T) {
			s := world()
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{exact("/r")}, backend("web", 80))})}
			s.Policies = []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), func(p *CausewayPolicy) {
				p.Spec.Plugins = []PolicyPlugin{{Use: tc.use, Config: json.RawMessage(tc.config)}}
			})}
			res := TranslateWith(routes.KubernetesProvider{}, s, TranslateOptions{Check: testCheck(t)})
			c := res.Policies[nn("apps", "p")].Ancestors[0].Conditions[0]
			if tc.want == "" {
				if c.Reason != "Accepted" {
					t.Fatalf("%s %q, want Accepted", c.Reason, c.Message)
				}
				return
			}
			if c.Reason != "Invalid" || !strings.Contains(c.Message, tc.want) {
				t.Fatalf("%s %q, want Invalid with %q", c.Reason, c.Message, tc.want)
			}
			if _, ok := res.Fragment.Plugins["k8s.apps.policy.p.plugin.0"]; ok {
				t.Fatal("a refused policy's plugin reached the model")
			}
			if got := policySummary(res.Fragment.Routes[0]); !strings.HasSuffix(got, "-> unresolved") {
				t.Fatalf("the route of a refused policy: %s, want it failing closed", got)
			}
		})
	}
}

// What the model judges of an authenticator by the routes that use it is
// checked with the routes a policy was applied to, as served: an oidc
// authenticator whose redirect_path none of them matches would pass the
// first check (its one route matches every path) and then make the edge
// refuse the whole model, every other namespace's changes with it. Such a
// policy is Invalid, its entries are left out, and its routes fail closed;
// with the redirect path under the route's path it is Accepted.
func TestTranslatePolicyCheckedWithItsRoutes(t *testing.T) {
	sessionKeys := &AuthenticatorSecrets{SessionKeys: &SecretKeyRef{Name: "oidc", Key: "session"}}
	tests := []struct {
		name, config string
		want         [2]string // the status's reason and a piece of its message
		routes       []string
	}{
		{"the callback outside the route's paths", `{"oidc": {"issuer": "https://id.example", "client_id": "c"}}`,
			[2]string{"Invalid", "redirect_path /oauth2/callback"},
			[]string{"/app auth= plugins=k8s.apps.policy.p.invalid -> unresolved", "/app/ auth= plugins=k8s.apps.policy.p.invalid -> unresolved"}},
		{"the callback under the route's path", `{"oidc": {"issuer": "https://id.example", "client_id": "c", "redirect_path": "/app/callback"}}`,
			[2]string{"Accepted", ""},
			[]string{"/app auth=k8s.apps.policy.p.auth.0", "/app/ auth=k8s.apps.policy.p.auth.0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := world()
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule([]gatewayv1.HTTPRouteMatch{prefix("/app")}, backend("web", 80))})}
			s.Secrets = []*corev1.Secret{opaque("apps", "oidc", map[string]string{"session": "c2Vzc2lvbi1rZXktb2YtMzItYnl0ZXMtZXhhY3RseSE="})}
			s.Policies = []*CausewayPolicy{policy("apps", "p", 0, target(kindHTTPRoute, "r"), authConfig(tc.config, sessionKeys))}
			res := TranslateWith(routes.KubernetesProvider{}, s, TranslateOptions{Check: testCheck(t)})
			c := res.Policies[nn("apps", "p")].Ancestors[0].Conditions[0]
			if c.Reason != tc.want[0] || !strings.Contains(c.Message, tc.want[1]) {
				t.Fatalf("%s %q, want %s with %q", c.Reason, c.Message, tc.want[0], tc.want[1])
			}
			var got []string
			for _, r := range res.Fragment.Routes {
				got = append(got, policySummary(r))
			}
			if strings.Join(got, "\n") != strings.Join(tc.routes, "\n") {
				t.Fatalf("routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.routes, "\n"))
			}
			// Whatever the policy says, the edge takes the fragment.
			if err := testCheck(t)(res.Fragment); err != nil {
				t.Fatalf("the model refuses the fragment: %v", err)
			}
			if _, ok := res.Fragment.Authenticators["k8s.apps.policy.p.auth.0"]; ok != (tc.want[0] == "Accepted") {
				t.Fatalf("the policy's authenticator in the model: %v, want %v", ok, tc.want[0] == "Accepted")
			}
		})
	}
}

// The check of a policy with the routes it applies to is given their
// upstreams without endpoints: the edge memoizes checks by what they are
// given, so pods coming and going must not check the policy again with
// every route it applies to.
func TestTranslatePolicyCheckWithoutEndpoints(t *testing.T) {
	tests := []struct {
		name string
		eps  []endpoint
	}{
		{name: "two pods", eps: []endpoint{ready("10.0.0.1"), ready("10.0.0.2")}},
		{name: "one pod replaced", eps: []endpoint{ready("10.0.0.3")}},
		{name: "no pods", eps: nil},
	}
	var first []routes.Fragment
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := world()
			s.EndpointSlices = []*discoveryv1.EndpointSlice{slice("apps", "web", "web-1", "http", 8080, tt.eps...)}
			s.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))}, parents(parent("apps", "gw")))}
			s.Policies = []*CausewayPolicy{policy("apps", "gwp", 0, target(kindGateway, "gw"), authRef("corp"))}
			check := testCheck(t)
			var applied []routes.Fragment
			res := TranslateWith(routes.KubernetesProvider{}, s, TranslateOptions{Check: func(frag routes.Fragment) error {
				if len(frag.Routes) > 0 && frag.Routes[0].Match.Host != "policy-check.invalid" {
					applied = append(applied, frag)
				}
				return check(frag)
			}})
			if st := res.Policies[nn("apps", "gwp")]; len(st.Ancestors) != 1 {
				t.Fatalf("policy status %+v", st)
			}
			if len(applied) != 1 {
				t.Fatalf("%d checks with the applied routes, want 1", len(applied))
			}
			for name, u := range applied[0].Upstreams {
				if len(u.Endpoints) > 0 && name != policyCheckUpstream(s.Policies[0]) {
					t.Fatalf("upstream %s checked with endpoints %v", name, u.Endpoints)
				}
			}
			if first == nil {
				first = applied
			} else if !reflect.DeepEqual(first, applied) {
				t.Fatalf("the check changed with the endpoints alone:\n%+v\n%+v", first, applied)
			}
		})
	}
}
