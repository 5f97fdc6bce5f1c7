package kubernetes

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"go.yaml.in/yaml/v3"

	"github.com/causewayhq/causeway/plugins/respond"
	"github.com/causewayhq/causeway/routes"
)

// How policies attach (GEP-713, direct attachment): a policy names
// Gateways, routes, or a route's rule by its name (sectionName). A rule
// takes the policy of the most specific target that has one, whole (the
// policies are not merged field by field): its rule's, else its route's,
// else its Gateway's. Two policies on the same target: the older wins and
// the other is Conflicted there.

// policyTarget is what a targetRef names.
type policyTarget struct {
	kind    string
	ns      string
	name    string
	section string // a rule's name; "" for the whole object
}

// policyState is one policy as judged.
type policyState struct {
	obj *CausewayPolicy
	// invalid is why the policy cannot apply at all ("" when it can).
	invalid string
	// built is what the policy contributes to the routes it applies to.
	built *policyRoute
	// targets are the policy's targetRefs, with each one's outcome.
	targets []targetOutcome
	// applied are the indexes in the fragment's routes of the routes it
	// was applied to.
	applied []int
	// own are the names of the entries it added to the fragment.
	own []string
}

type targetOutcome struct {
	ref    gatewayv1.LocalPolicyTargetReferenceWithSectionName
	target policyTarget
	reason gatewayv1.PolicyConditionReason
	msg    string
}

// policyRoute is what a policy sets on each route it applies to.
type policyRoute struct {
	// deny is the plugin that answers 500 in place of the route: the
	// policy is not valid.
	deny string
	// own are the names of the entries the policy added to the fragment.
	own           []string
	auth          []string
	requireClaims map[string]string
	rateLimits    []string
	plugins       []string
}

// CheckPolicy judges what a policy adds to the model before the model
// takes it: the authenticators, rate limits and plugin instances of frag,
// built as the edge would build them, with one route that uses them all.
// A policy it refuses is Invalid and left out, rather than refusing the
// whole model with it. The edge gives one; without it, only the policy's
// own form is checked.
type CheckPolicy func(frag routes.Fragment) error

// policies judges every policy in scope and indexes the valid ones by
// target, oldest first.
func (t *translator) policies() {
	if !t.ours {
		return
	}
	list := slices.Clone(t.s.Policies)
	byAge(list, func(p *CausewayPolicy) metav1.Object { return p })
	for _, p := range list {
		if !t.inScope(p.Namespace) {
			continue
		}
		ps := &policyState{obj: p}
		ps.built, ps.invalid = t.buildPolicy(p)
		if ps.built != nil {
			ps.own = ps.built.own
		}
		if ps.invalid != "" {
			// Fail closed: a route whose policy is not valid is not
			// served without it; it answers 500 until the policy is fixed.
			ps.built = t.denyPolicy(p)
		}
		for _, ref := range p.Spec.TargetRefs {
			o := targetOutcome{ref: ref, reason: gatewayv1.PolicyReasonAccepted}
			o.target = policyTarget{kind: string(ref.Kind), ns: p.Namespace, name: string(ref.Name)}
			if ref.SectionName != nil {
				o.target.section = string(*ref.SectionName)
			}
			switch {
			case string(ref.Group) != groupName || (o.target.kind != kindGateway && o.target.kind != kindHTTPRoute && o.target.kind != kindGRPCRoute):
				o.reason, o.msg = gatewayv1.PolicyReasonInvalid, fmt.Sprintf("a target must be a Gateway, HTTPRoute or GRPCRoute of %s (found %s %s)", groupName, ref.Kind, ref.Group)
			case o.target.kind == kindGateway && o.target.section != "":
				o.reason, o.msg = gatewayv1.PolicyReasonInvalid, "sectionName on a Gateway (a listener) is not supported: target the Gateway, or the routes"
			case !t.policyTargetExists(o.target):
				o.reason, o.msg = gatewayv1.PolicyReasonTargetNotFound, fmt.Sprintf("%s %s/%s%s does not exist", o.target.kind, o.target.ns, o.target.name, sectionSuffix(o.target.section))
			default:
				if winner, taken := t.policyByTarget[o.target]; taken {
					o.reason, o.msg = gatewayv1.PolicyReasonConflicted, fmt.Sprintf("CausewayPolicy %s, older, already applies to this target", winner.obj.Name)
				} else {
					t.policyByTarget[o.target] = ps
					if ps.invalid != "" {
						o.reason, o.msg = gatewayv1.PolicyReasonInvalid, ps.invalid+" (the routes it applies to answer 500 until it is fixed)"
					}
				}
			}
			ps.targets = append(ps.targets, o)
		}
		t.policyOrder = append(t.policyOrder, ps)
	}
}

func sectionSuffix(s string) string {
	if s == "" {
		return ""
	}
	return " (rule " + s + ")"
}

// policyTargetExists reports whether the object (and the named rule) a
// target names exists.
func (t *translator) policyTargetExists(pt policyTarget) bool {
	switch pt.kind {
	case kindGateway:
		return t.gwsAny[nn(pt.ns, pt.name)]
	case kindHTTPRoute:
		r := t.httpRouteByName[nn(pt.ns, pt.name)]
		if r == nil {
			return false
		}
		return pt.section == "" || slices.ContainsFunc(r.Spec.Rules, func(rule gatewayv1.HTTPRouteRule) bool {
			return rule.Name != nil && string(*rule.Name) == pt.section
		})
	case kindGRPCRoute:
		r := t.grpcRouteByName[nn(pt.ns, pt.name)]
		if r == nil {
			return false
		}
		return pt.section == "" || slices.ContainsFunc(r.Spec.Rules, func(rule gatewayv1.GRPCRouteRule) bool {
			return rule.Name != nil && string(*rule.Name) == pt.section
		})
	}
	return false
}

// policyFor is the policy that applies to a rule of a route attached to
// gws (oldest Gateway first), and records where it applied.
func (t *translator) policyFor(kind, ns, routeName string, rule *gatewayv1.SectionName, gws []*gatewayState) *policyState {
	if len(t.policyByTarget) == 0 {
		return nil
	}
	if rule != nil {
		if ps := t.policyByTarget[policyTarget{kind: kind, ns: ns, name: routeName, section: string(*rule)}]; ps != nil {
			return ps
		}
	}
	if ps := t.policyByTarget[policyTarget{kind: kind, ns: ns, name: routeName}]; ps != nil {
		return ps
	}
	for _, gs := range gws {
		if ps := t.policyByTarget[policyTarget{kind: kindGateway, ns: gs.obj.Namespace, name: gs.obj.Name}]; ps != nil {
			return ps
		}
	}
	return nil
}

// checkApplied checks each valid policy again with the routes it was
// applied to: what holds for one route of the policy's own may not hold
// for these (an OIDC authenticator needs a route that matches its
// redirect_path). A policy that fails here becomes Invalid and its
// routes answer 500, so the model stays one the edge accepts: one
// namespace's policy cannot hold back the whole cluster's routes.
//
// The check is given what of those routes it can depend on, each shape
// once (appliedShapes), not every route: a Gateway-wide policy applies to
// thousands, and the check (a model merge, memoized by what it is given)
// would otherwise run again over all of them whenever any route changed.
func (t *translator) checkApplied() {
	if t.opts.Check == nil {
		return
	}
	for _, ps := range t.policyOrder {
		if ps.invalid != "" || len(ps.applied) == 0 || ps.built == nil || ps.built.deny != "" {
			continue
		}
		frag := routes.Fragment{
			Upstreams:      map[string]routes.Upstream{},
			Plugins:        map[string]routes.PluginInst{},
			Authenticators: map[string]routes.Authenticator{},
			RateLimits:     map[string]routes.RateLimit{},
		}
		if t.checkEveryRoute {
			frag.Routes = make([]routes.Route, 0, len(ps.applied))
			for _, i := range ps.applied {
				frag.Routes = append(frag.Routes, t.res.Fragment.Routes[i])
			}
		} else {
			frag.Routes = t.appliedShapes(ps.obj, ps.applied)
		}
		for _, r := range frag.Routes {
			for _, u := range append([]string{r.Upstream}, splitUpstreams(r.Split)...) {
				if v, ok := t.res.Fragment.Upstreams[u]; ok {
					// Without its endpoints: the check is memoized by
					// what it is given, and pods coming and going would
					// otherwise check the policy again with every route
					// it applies to. A provider's upstream may have none;
					// the model checks the endpoints themselves.
					v.Endpoints = nil
					frag.Upstreams[u] = v
					// And the upstream it mirrors to, which the model
					// requires to exist.
					if m := v.Mirror; m != nil {
						if mv, ok := t.res.Fragment.Upstreams[m.Upstream]; ok {
							mv.Endpoints = nil
							frag.Upstreams[m.Upstream] = mv
						}
					}
				}
			}
			for _, p := range r.Plugins {
				if v, ok := t.res.Fragment.Plugins[p]; ok {
					frag.Plugins[p] = v
				}
			}
			for _, a := range r.Auth {
				if v, ok := t.res.Fragment.Authenticators[a]; ok {
					frag.Authenticators[a] = v
				}
			}
			for _, l := range r.RateLimit {
				if v, ok := t.res.Fragment.RateLimits[l]; ok {
					frag.RateLimits[l] = v
				}
			}
		}
		if !t.checkEveryRoute {
			frag.Upstreams[policyCheckUpstream(ps.obj)] = routes.Upstream{Endpoints: []string{"127.0.0.1:9"}}
		}
		err := t.opts.Check(frag)
		if err == nil {
			continue
		}
		msg := appliedRoutePrefix.ReplaceAllString(keyPaths(err), "")
		ps.invalid = truncateMessage("on the routes it applies to: " + msg)
		for _, n := range ps.own {
			delete(t.res.Fragment.Authenticators, n)
			delete(t.res.Fragment.RateLimits, n)
			delete(t.res.Fragment.Plugins, n)
		}
		ps.built = t.denyPolicy(ps.obj)
		for _, i := range ps.applied {
			ps.built.apply(&t.res.Fragment.Routes[i])
		}
		for j := range ps.targets {
			if ps.targets[j].reason == gatewayv1.PolicyReasonAccepted {
				ps.targets[j].reason, ps.targets[j].msg = gatewayv1.PolicyReasonInvalid, ps.invalid+" (the routes it applies to answer 500 until it is fixed)"
			}
		}
	}
}

// appliedShapes is what the routes a policy applies to can contribute to
// its check, each distinct shape once, in their order. The model judges a
// policy's entries on a route by the route's own stages (authenticators,
// claims, rate limits, plugins: the policy's and the route's own), and by
// where it matches only to find a route for an OIDC authenticator's
// redirect_path and logout_path, across every route that uses it. So a
// shape keeps the route's stages, and its match only when one of its
// authenticators may sign in through OIDC (one of the file's, which the
// provider cannot see, may); its name and upstream are the check's own,
// since what a route's own match and upstream are worth is the model's to
// judge with the route itself, policy or not. A policy over 10,000 routes
// of one shape is checked with one route, and a route change that leaves
// the shapes as they were is answered from the edge's memo.
//
// applied are the routes' indexes in the fragment. This runs on every
// snapshot over every route a policy applies to, so a shape already seen
// costs no allocation: the key is built in one buffer, and looked up
// without copying it.
func (t *translator) appliedShapes(p *CausewayPolicy, applied []int) []routes.Route {
	up := policyCheckUpstream(p)
	seen := map[string]bool{}
	var out []routes.Route
	var key []byte
	var claims []string
	// Every string with its length before it, so no two shapes write the
	// same key.
	str := func(s string) {
		key = strconv.AppendInt(key, int64(len(s)), 10)
		key = append(key, ':')
		key = append(key, s...)
	}
	num := func(n int) {
		key = strconv.AppendInt(key, int64(n), 10)
		key = append(key, ';')
	}
	for _, i := range applied {
		r := &t.res.Fragment.Routes[i]
		keepMatch := slices.ContainsFunc(r.Auth, func(a string) bool {
			auth, ok := t.res.Fragment.Authenticators[a]
			return !ok || auth.OIDC != nil
		})
		key = key[:0]
		for _, list := range [][]string{r.Auth, r.RateLimit, r.Plugins} {
			num(len(list))
			for _, x := range list {
				str(x)
			}
		}
		num(len(r.RequireClaims))
		claims = claims[:0]
		for k := range r.RequireClaims {
			claims = append(claims, k)
		}
		slices.Sort(claims)
		for _, k := range claims {
			str(k)
			str(r.RequireClaims[k])
		}
		if keepMatch {
			// The whole match, as the route has it: two routes of one
			// signature are one route to the model (the first wins).
			key = fmt.Appendf(key, "match:%#v", r.Match)
		}
		if seen[string(key)] {
			continue
		}
		seen[string(key)] = true
		n := strconv.Itoa(len(out))
		shape := routes.Route{
			Name:          name(append(policyNamePrefix(p), "check", n)...),
			Auth:          r.Auth,
			RequireClaims: r.RequireClaims,
			RateLimit:     r.RateLimit,
			Plugins:       r.Plugins,
			Upstream:      up,
		}
		if keepMatch {
			shape.Match = r.Match
		} else {
			// A host of its own for each shape: a route that matches
			// exactly what another route matches is left out of the
			// model, unchecked.
			shape.Match = routes.Match{Host: "s" + n + ".policy-check.invalid", PathPrefix: "/"}
		}
		out = append(out, shape)
	}
	return out
}

// policyCheckUpstream is the upstream of the routes a policy is checked
// with: one that exists, which no real route uses.
func policyCheckUpstream(p *CausewayPolicy) string {
	return name(append(policyNamePrefix(p), "check")...)
}

// appliedRoutePrefix is the model's "routes[N].match: " before an error
// about one of the routes: an index into the edge's merged model, which
// means nothing to the policy's author.
var appliedRoutePrefix = regexp.MustCompile(`routes\[\d+\](\.[a-z_]+)?: `)

func splitUpstreams(split []routes.SplitTarget) []string {
	out := make([]string, len(split))
	for i, s := range split {
		out[i] = s.Upstream
	}
	return out
}

// apply sets the policy's stages on a route.
func (pr *policyRoute) apply(r *routes.Route) {
	if pr == nil {
		return
	}
	if pr.deny != "" {
		r.Plugins, r.Upstream, r.Split = []string{pr.deny}, unresolvedUpstream, nil
		r.Auth, r.RequireClaims, r.RateLimit = nil, nil, nil
		return
	}
	r.Auth = slices.Clone(pr.auth)
	r.RequireClaims = pr.requireClaims
	r.RateLimit = slices.Clone(pr.rateLimits)
	if len(pr.plugins) > 0 {
		r.Plugins = append(slices.Clip(r.Plugins), pr.plugins...)
	}
}

// policyNamePrefix is the beginning of the model names a policy's own
// authenticators, rate limits and plugins get.
func policyNamePrefix(p *CausewayPolicy) []string {
	return []string{p.Namespace, "policy", namePart(p.Name)}
}

// buildPolicy turns a policy's spec into model entries, added to the
// fragment only when the whole policy is valid. The reason it is not
// valid is returned instead, in words for its status, never with a
// secret's value.
func (t *translator) buildPolicy(p *CausewayPolicy) (*policyRoute, string) {
	spec := p.Spec
	if len(spec.Authenticators) == 0 && len(spec.RateLimits) == 0 && len(spec.Plugins) == 0 {
		return nil, "the policy sets no authenticators, rate limits or plugins"
	}
	if len(spec.RequireClaims) > 0 && len(spec.Authenticators) == 0 {
		return nil, "requireClaims needs authenticators"
	}
	frag := routes.Fragment{
		Authenticators: map[string]routes.Authenticator{},
		RateLimits:     map[string]routes.RateLimit{},
		Plugins:        map[string]routes.PluginInst{},
	}
	pr := &policyRoute{requireClaims: spec.RequireClaims}
	// rename maps a generated name back to the spec's field, for errors.
	rename := map[string]string{}
	base := policyNamePrefix(p)
	for i, a := range spec.Authenticators {
		field := fmt.Sprintf("spec.authenticators[%d]", i)
		n, err := t.policyAuthenticator(p, a, name(append(base, "auth", strconv.Itoa(i))...), field, &frag)
		if err != "" {
			return nil, err
		}
		pr.auth = append(pr.auth, n)
		rename["authenticators."+n] = field + ".config"
	}
	for i, rl := range spec.RateLimits {
		field := fmt.Sprintf("spec.rateLimits[%d]", i)
		switch {
		case (rl.Ref == "") == (len(rl.Config) == 0):
			return nil, field + ": set one of ref and config"
		case rl.Ref != "":
			if err := checkRef(field, rl.Ref); err != "" {
				return nil, err
			}
			pr.rateLimits = append(pr.rateLimits, rl.Ref)
		default:
			var c routes.RateLimit
			if err := decodeStrict(field+".config", rl.Config, &c); err != nil {
				return nil, truncateMessage(err.Error())
			}
			n := name(append(base, "ratelimit", strconv.Itoa(i))...)
			frag.RateLimits[n] = c
			pr.rateLimits = append(pr.rateLimits, n)
			rename["rate_limits."+n] = field + ".config"
		}
	}
	for i, pl := range spec.Plugins {
		field := fmt.Sprintf("spec.plugins[%d]", i)
		switch {
		case (pl.Ref == "") == (pl.Use == ""):
			return nil, field + ": set one of ref and use"
		case pl.Ref != "":
			if len(pl.Config) > 0 {
				return nil, field + ": config goes with use, not with ref"
			}
			if err := checkRef(field, pl.Ref); err != "" {
				return nil, err
			}
			pr.plugins = append(pr.plugins, pl.Ref)
		default:
			n := name(append(base, "plugin", strconv.Itoa(i))...)
			inst := routes.PluginInst{Use: pl.Use}
			if len(pl.Config) > 0 {
				var cfg any
				if err := json.Unmarshal(pl.Config, &cfg); err != nil {
					return nil, field + ".config: " + err.Error()
				}
				if bad := pluginLocalSource(cfg, field+".config"); bad != "" {
					return nil, fmt.Sprintf("%s reads the edge's own files or environment, which a policy's plugins may not", bad)
				}
				if pl.Use == "headers" {
					if bad := edgeOwnedInHeaders(cfg); bad != "" {
						return nil, fmt.Sprintf("%s.config.request: header %q: the edge sets it for the upstream (or drops every client's copy), and a policy may not state it", field, bad)
					}
				}
				raw, err := rawConfig(n, cfg)
				if err != nil {
					return nil, field + ".config: " + err.Error()
				}
				inst.Config = raw
			}
			frag.Plugins[n] = inst
			pr.plugins = append(pr.plugins, n)
			rename["plugins."+n] = field
		}
	}
	if err := t.checkPolicy(p, pr, frag); err != nil {
		msg := checkRoutePaths.ReplaceAllStringFunc(keyPaths(err), func(m string) string {
			sub := checkRoutePaths.FindStringSubmatch(m)
			return map[string]string{"auth": "spec.authenticators", "rate_limit": "spec.rateLimits", "plugins": "spec.plugins"}[sub[1]] + "[" + sub[2] + "].ref"
		})
		// Longest first: a name may begin with another.
		keys := make([]string, 0, len(rename))
		for k := range rename {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int { return len(b) - len(a) })
		for _, k := range keys {
			msg = strings.ReplaceAll(msg, k, rename[k])
		}
		return nil, truncateMessage(msg)
	}
	for k, v := range frag.Authenticators {
		t.res.Fragment.Authenticators[k] = v
		pr.own = append(pr.own, k)
	}
	for k, v := range frag.RateLimits {
		t.res.Fragment.RateLimits[k] = v
		pr.own = append(pr.own, k)
	}
	for k, v := range frag.Plugins {
		t.res.Fragment.Plugins[k] = v
		pr.own = append(pr.own, k)
	}
	return pr, ""
}

// denyPolicy is what an invalid policy sets: a 500 in the edge's error
// format (a gRPC status for gRPC calls) before any stage or upstream.
func (t *translator) denyPolicy(p *CausewayPolicy) *policyRoute {
	pname := name(append(policyNamePrefix(p), "invalid")...)
	raw, err := rawConfig(pname, respond.Config{Status: 500, Error: "the route's CausewayPolicy is not valid"})
	if err != nil {
		return nil // cannot happen: a fixed, valid config
	}
	t.res.Fragment.Plugins[pname] = routes.PluginInst{Use: "respond", Config: raw}
	t.res.Fragment.Upstreams[unresolvedUpstream] = routes.Upstream{}
	return &policyRoute{deny: pname}
}

// checkRoutePaths finds, in the model's errors about the check's route
// (the only route of the check), a reference in its stage lists: entry i
// is the policy's entry i of the same list.
var checkRoutePaths = regexp.MustCompile(`routes\[\d+\]\.(auth|rate_limit|plugins)\[(\d+)\]`)

// checkRef refuses a ref to a name the provider made: a policy refers to
// the file's entries, never to another policy's (whose secrets it would
// borrow).
func checkRef(field, ref string) string {
	if strings.HasPrefix(ref, routes.KubernetesPrefix) {
		return fmt.Sprintf("%s.ref: %q is not a name of the edge's routes file", field, ref)
	}
	return ""
}

// checkPolicy runs the edge's check on a fragment with the policy's
// entries and one route that uses them.
func (t *translator) checkPolicy(p *CausewayPolicy, pr *policyRoute, frag routes.Fragment) error {
	up := policyCheckUpstream(p)
	frag.Upstreams = map[string]routes.Upstream{up: {Endpoints: []string{"127.0.0.1:9"}}}
	// A host of its own: a route that matches exactly what a file route
	// matches is left out of the model, unchecked.
	frag.Routes = []routes.Route{{Name: up, Match: routes.Match{Host: "policy-check.invalid", PathPrefix: "/"}, Upstream: up}}
	pr.apply(&frag.Routes[0])
	if t.opts.Check == nil {
		return nil
	}
	return t.opts.Check(frag)
}

// policyAuthenticator resolves one of a policy's authenticators into the
// model name a route uses, adding a defined one to frag.
func (t *translator) policyAuthenticator(p *CausewayPolicy, a PolicyAuthenticator, n, field string, frag *routes.Fragment) (string, string) {
	if (a.Ref == "") == (len(a.Config) == 0) {
		return "", field + ": set one of ref and config"
	}
	if a.Ref != "" {
		if a.Secrets != nil {
			return "", field + ": secrets go with config, not with ref (the file's authenticator has its own)"
		}
		return a.Ref, checkRef(field, a.Ref)
	}
	var c routes.Authenticator
	if err := decodeStrict(field+".config", a.Config, &c); err != nil {
		return "", truncateMessage(err.Error())
	}
	// The edge's own files and environment are not a namespace's to read:
	// a policy's secrets come from its namespace's Secrets.
	if bad := edgeLocalSources(c); bad != "" {
		return "", fmt.Sprintf("%s.config: %s reads the edge's own files or environment; a policy's secrets come from Secrets (secrets)", field, bad)
	}
	if at, h := sharedForwardedHeader(c); at != "" {
		return "", fmt.Sprintf("%s.config.%s: %q: a policy forwards only into X- headers the edge does not set itself (every route of the edge drops a client's copy of a forwarded header, other namespaces' routes too)", field, at, h)
	}
	if err := t.policySecrets(p, field+".secrets", a.Secrets, &c); err != "" {
		return "", err
	}
	frag.Authenticators[n] = c
	return n, ""
}

// edgeLocalSources names the first key of c that reads a file or an
// environment variable of the edge.
func edgeLocalSources(c routes.Authenticator) string {
	switch {
	case c.JWT != nil && len(c.JWT.PublicKeyFiles) > 0:
		return "jwt.public_key_files"
	case c.JWT != nil && c.JWT.HMACSecretEnv != "":
		return "jwt.hmac_secret_env"
	case c.JWT != nil && c.JWT.HMACSecretFile != "":
		return "jwt.hmac_secret_file"
	case c.APIKey != nil && c.APIKey.KeysFile != "":
		return "api_key.keys_file"
	case c.Basic != nil && c.Basic.HtpasswdFile != "":
		return "basic.htpasswd_file"
	case c.ExtAuthz != nil && c.ExtAuthz.CAFile != "":
		return "ext_authz.ca_file"
	case c.OIDC != nil && c.OIDC.ClientSecretEnv != "":
		return "oidc.client_secret_env"
	case c.OIDC != nil && c.OIDC.PrivateKeyFile != "":
		return "oidc.private_key_file"
	case c.OIDC != nil && c.OIDC.Session != nil && c.OIDC.Session.KeysEnv != "":
		return "oidc.session.keys_env"
	}
	return ""
}

// sharedForwardedHeader names the first upstream header c would set that
// a policy may not (its key path and the header). The edge removes a
// client's copy of every header any authenticator forwards from every
// request on every route, so that no upstream takes a client's X-Client
// for the edge's: a policy forwarding into Authorization, Cookie or
// Content-Type would strip them from the routes of every namespace and of
// the edge's own file. A policy's forwarded headers are X- headers that
// are not the edge's own (X-Forwarded-*, X-Request-Id, X-Real-Ip).
func sharedForwardedHeader(c routes.Authenticator) (string, string) {
	type fwd struct{ at, header string }
	var list []fwd
	claims := func(at string, m map[string]string) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			list = append(list, fwd{at + ".forward_claims." + k, m[k]})
		}
	}
	switch {
	case c.APIKey != nil && c.APIKey.ForwardName != "":
		list = append(list, fwd{"api_key.forward_name", c.APIKey.ForwardName})
	case c.Basic != nil && c.Basic.ForwardUser != "":
		list = append(list, fwd{"basic.forward_user", c.Basic.ForwardUser})
	case c.JWT != nil:
		claims("jwt", c.JWT.ForwardClaims)
	case c.OIDC != nil:
		claims("oidc", c.OIDC.ForwardClaims)
	case c.ExtAuthz != nil:
		for i, h := range c.ExtAuthz.UpstreamHeaders {
			list = append(list, fwd{fmt.Sprintf("ext_authz.upstream_headers[%d]", i), h})
		}
		claims("ext_authz", c.ExtAuthz.ForwardClaims)
	}
	for _, f := range list {
		h := http.CanonicalHeaderKey(f.header)
		if !strings.HasPrefix(h, "X-") || routes.EdgeStatedHeader(h) {
			return f.at, f.header
		}
	}
	return "", ""
}

// pluginLocalSource finds, in a policy plugin's config, the first key (by
// its path from at) that names a file or an environment variable of the
// edge: by the routes file's convention, a key ending in _file, _files,
// _dir or _env (respond's body_file, and any plugin's that follows it).
// Such a plugin would read the edge's ServiceAccount token or keys files
// and serve them to whoever the namespace's author likes.
func pluginLocalSource(cfg any, at string) string {
	switch v := cfg.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			for _, suffix := range []string{"_file", "_files", "_dir", "_env"} {
				if strings.HasSuffix(k, suffix) {
					return at + "." + k
				}
			}
			if bad := pluginLocalSource(v[k], at+"."+k); bad != "" {
				return bad
			}
		}
	case []any:
		for i, e := range v {
			if bad := pluginLocalSource(e, fmt.Sprintf("%s[%d]", at, i)); bad != "" {
				return bad
			}
		}
	}
	return ""
}

// policySecrets reads the Secrets an authenticator names into it.
func (t *translator) policySecrets(p *CausewayPolicy, field string, s *AuthenticatorSecrets, c *routes.Authenticator) string {
	if s == nil {
		return ""
	}
	var from []string
	value := func(key string, ref *SecretKeyRef) ([]byte, string) {
		sec, err := t.policySecret(p.Namespace, field+"."+key, ref.Name)
		if err != "" {
			return nil, err
		}
		v, ok := sec.Data[ref.Key]
		if !ok || len(v) == 0 {
			return nil, fmt.Sprintf("%s.%s: Secret %s/%s has no key %q, or it is empty", field, key, p.Namespace, ref.Name, ref.Key)
		}
		from = append(from, "Secret "+p.Namespace+"/"+ref.Name)
		return v, ""
	}
	type use struct {
		key  string
		set  bool
		fits bool
	}
	for _, u := range []use{
		{"hmacSecret", s.HMACSecret != nil, c.JWT != nil},
		{"apiKeys", s.APIKeys != nil, c.APIKey != nil},
		{"htpasswd", s.Htpasswd != nil, c.Basic != nil},
		{"clientSecret", s.ClientSecret != nil, c.OIDC != nil},
		{"sessionKeys", s.SessionKeys != nil, c.OIDC != nil},
	} {
		if u.set && !u.fits {
			return fmt.Sprintf("%s.%s does not fit this kind of authenticator", field, u.key)
		}
	}
	var err string
	if s.HMACSecret != nil {
		var v []byte
		if v, err = value("hmacSecret", s.HMACSecret); err != "" {
			return err
		}
		c.JWT.HMACSecret = bytes.TrimRight(v, "\r\n")
	}
	if s.Htpasswd != nil {
		if c.Basic.Htpasswd, err = value("htpasswd", s.Htpasswd); err != "" {
			return err
		}
	}
	if s.ClientSecret != nil {
		var v []byte
		if v, err = value("clientSecret", s.ClientSecret); err != "" {
			return err
		}
		c.OIDC.ClientSecret = strings.TrimRight(string(v), "\r\n")
	}
	if s.SessionKeys != nil {
		var v []byte
		if v, err = value("sessionKeys", s.SessionKeys); err != "" {
			return err
		}
		if c.OIDC.Session == nil {
			c.OIDC.Session = &routes.OIDCSession{}
		}
		c.OIDC.Session.Keys = strings.TrimSpace(string(v))
	}
	if s.APIKeys != nil {
		sec, err := t.policySecret(p.Namespace, field+".apiKeys", s.APIKeys.Name)
		if err != "" {
			return err
		}
		// The keys file's lines: each client's name and the SHA-256 of its
		// key. The key itself is not kept. An empty entry is a client
		// without a key (one being revoked, say): no request carries an
		// empty key, and two of them would share a hash and refuse the
		// whole policy, failing every other client closed.
		var b strings.Builder
		for _, k := range slices.Sorted(maps.Keys(sec.Data)) {
			v := bytes.TrimRight(sec.Data[k], "\r\n")
			if len(v) == 0 {
				continue
			}
			sum := sha256.Sum256(v)
			b.WriteString(k + ":" + hex.EncodeToString(sum[:]) + "\n")
		}
		if b.Len() == 0 {
			return fmt.Sprintf("%s.apiKeys: Secret %s/%s has no keys", field, p.Namespace, s.APIKeys.Name)
		}
		c.APIKey.Keys = []byte(b.String())
		from = append(from, "Secret "+p.Namespace+"/"+s.APIKeys.Name)
	}
	slices.Sort(from)
	c.SecretsFrom = strings.Join(slices.Compact(from), ", ")
	return ""
}

// policySecret finds an Opaque Secret of the policy's namespace.
func (t *translator) policySecret(ns, field, secretName string) (*corev1.Secret, string) {
	sec := t.secrets[nn(ns, secretName)]
	switch {
	case sec == nil:
		return nil, fmt.Sprintf("%s: Secret %s/%s not found (only Opaque Secrets are read)", field, ns, secretName)
	case sec.Type != corev1.SecretTypeOpaque && sec.Type != "":
		return nil, fmt.Sprintf("%s: Secret %s/%s is of type %s, not Opaque", field, ns, secretName, sec.Type)
	}
	return sec, ""
}

// decodeStrict decodes a policy's JSON config (at field, for errors) with
// the routes file's own decoder: its keys, durations and lists, and its
// refusal of unknown keys, with the key meant suggested.
func decodeStrict(field string, raw json.RawMessage, into any) error {
	// JSON is YAML.
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %s", field, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) != 1 {
		return fmt.Errorf("%s: not an object", field)
	}
	if err := (routes.Raw{Node: doc.Content[0], Path: field}).Decode(into); err != nil {
		return errors.New(keyPaths(err))
	}
	return nil
}

// keyPaths renders the routes model's errors by key path alone: a
// policy's problems are in its own fields, not at a line of the edge's
// file.
func keyPaths(err error) string {
	var list routes.Errors
	var one *routes.Error
	switch {
	case errors.As(err, &list):
	case errors.As(err, &one):
		list = routes.Errors{one}
	default:
		return err.Error()
	}
	msgs := make([]string, 0, len(list))
	for _, e := range list {
		// Masked as routes.Error masks it: a status is read by whoever
		// may read the policy.
		if msg := routes.RedactText(e.Msg); e.Path == "" {
			msgs = append(msgs, msg)
		} else {
			msgs = append(msgs, e.Path+": "+msg)
		}
	}
	return strings.Join(msgs, "; ")
}

// policyStatuses computes each judged policy's status: one ancestor per
// Gateway of ours the policy reaches (for a route target, the Gateways the
// route is attached to), or the target itself when it does not exist.
func (t *translator) policyStatuses() {
	for _, ps := range t.policyOrder {
		p := ps.obj
		gen := p.Generation
		type entry struct {
			ref    gatewayv1.ParentReference
			reason gatewayv1.PolicyConditionReason
			msg    string
		}
		var entries []entry
		add := func(ref gatewayv1.ParentReference, o targetOutcome) {
			for i := range entries {
				if parentRefEqual(entries[i].ref, ref) {
					// The first failure on an ancestor is what it says.
					if entries[i].reason == gatewayv1.PolicyReasonAccepted && o.reason != gatewayv1.PolicyReasonAccepted {
						entries[i].reason, entries[i].msg = o.reason, o.msg
					}
					return
				}
			}
			entries = append(entries, entry{ref: ref, reason: o.reason, msg: o.msg})
		}
		for _, o := range ps.targets {
			switch {
			case o.reason == gatewayv1.PolicyReasonTargetNotFound || o.reason == gatewayv1.PolicyReasonInvalid && !t.policyTargetExists(o.target):
				add(targetParentRef(o), o)
			case o.target.kind == kindGateway:
				if gs := t.gws[nn(o.target.ns, o.target.name)]; gs != nil {
					add(gatewayParentRef(gs), o)
				}
			default:
				for _, gs := range t.routeGateways[policyTarget{kind: o.target.kind, ns: o.target.ns, name: o.target.name}] {
					add(gatewayParentRef(gs), o)
				}
			}
		}
		if len(entries) == 0 {
			if t.staleAncestors(p.Namespace, p.Status.Ancestors) {
				t.res.Policies[nn(p.Namespace, p.Name)] = gatewayv1.PolicyStatus{}
			}
			continue // nothing of ours: another edge's to answer for
		}
		// The Gateway API's PolicyStatus holds at most 16 ancestors.
		if len(entries) > 16 {
			entries = entries[:16]
		}
		st := gatewayv1.PolicyStatus{Ancestors: []gatewayv1.PolicyAncestorStatus{}}
		for _, e := range entries {
			ok := e.reason == gatewayv1.PolicyReasonAccepted
			st.Ancestors = append(st.Ancestors, gatewayv1.PolicyAncestorStatus{
				AncestorRef:    e.ref,
				ControllerName: routes.KubernetesControllerName,
				Conditions:     []metav1.Condition{condition(string(gatewayv1.PolicyConditionAccepted), ok, string(e.reason), e.msg, gen)},
			})
		}
		t.res.Policies[nn(p.Namespace, p.Name)] = st
	}
}

// staleAncestors is staleParents for a policy's ancestors: one that no
// longer reaches this edge's Gateways loses the entries it wrote there.
func (t *translator) staleAncestors(ns string, stored []gatewayv1.PolicyAncestorStatus) bool {
	if len(t.cfg.Gateways) == 0 {
		return false
	}
	return slices.ContainsFunc(stored, func(a gatewayv1.PolicyAncestorStatus) bool {
		return a.ControllerName == routes.KubernetesControllerName && ownsRef(t.cfg, ns, a.AncestorRef)
	})
}

func gatewayParentRef(gs *gatewayState) gatewayv1.ParentReference {
	g, k := gatewayv1.Group(groupName), gatewayv1.Kind(kindGateway)
	ns := gatewayv1.Namespace(gs.obj.Namespace)
	return gatewayv1.ParentReference{Group: &g, Kind: &k, Namespace: &ns, Name: gatewayv1.ObjectName(gs.obj.Name)}
}

func targetParentRef(o targetOutcome) gatewayv1.ParentReference {
	g, k := o.ref.Group, o.ref.Kind
	ns := gatewayv1.Namespace(o.target.ns)
	ref := gatewayv1.ParentReference{Group: &g, Kind: &k, Namespace: &ns, Name: o.ref.Name}
	if o.ref.SectionName != nil {
		s := *o.ref.SectionName
		ref.SectionName = &s
	}
	return ref
}

func parentRefEqual(a, b gatewayv1.ParentReference) bool {
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	return ptrValue(a.Group) == ptrValue(b.Group) && ptrValue(a.Kind) == ptrValue(b.Kind) &&
		ptrValue(a.Namespace) == ptrValue(b.Namespace) && a.Name == b.Name &&
		str((*string)(a.SectionName)) == str((*string)(b.SectionName))
}

// truncateMessage keeps a condition message readable (the API allows 32768).
func truncateMessage(msg string) string {
	if len(msg) > 1024 {
		return msg[:1021] + "..."
	}
	return msg
}

// routeKey names a route for routeGateways.
func routeKey(kind string, obj metav1.Object) policyTarget {
	return policyTarget{kind: kind, ns: obj.GetNamespace(), name: obj.GetName()}
}

// edgeOwnedInHeaders names the first request header a headers plugin's
// config (as JSON decoded it) sets or adds that the edge owns
// (edgeOwnedHeader): the same rule as a route's RequestHeaderModifier.
func edgeOwnedInHeaders(cfg any) string {
	m, _ := cfg.(map[string]any)
	req, _ := m["request"].(map[string]any)
	for _, op := range []string{"set", "add"} {
		names, _ := req[op].(map[string]any)
		for _, n := range slices.Sorted(maps.Keys(names)) {
			if edgeOwnedHeader(n) {
				return n
			}
		}
	}
	return ""
}
