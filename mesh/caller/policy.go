package caller

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/routes"
)

// Policy is a sidecar's inbound rules: the first rule whose match fits a
// request decides it on the workload that calls (the mTLS peer) and the
// user it calls for (the verified caller token). A request no rule matches
// is let in: the inbound allow list has admitted its workload already.
type Policy struct {
	rules []rule
}

type rule struct {
	index      int
	path       string
	pathPrefix string
	methods    []string
	workloads  []mesh.ID
	callers    *callerRule
}

type callerRule struct {
	anonymous      bool
	authenticators []string
	claims         [][2]string // sorted by claim
	maxHops        int         // -1: the verifier's bound only
	through        []mesh.ID
}

// Decision is a refusal: the status (401 without a usable caller token,
// 403 otherwise) and why, for the log and the client.
type Decision struct {
	Status int
	Rule   int // index in inbound.rules
	Reason string
}

// NewPolicy compiles inbound rules (validated by routes already).
func NewPolicy(rules []routes.InboundRule) (*Policy, error) {
	p := &Policy{}
	for i, r := range rules {
		cr := rule{index: i, path: r.Match.Path, pathPrefix: r.Match.PathPrefix, methods: r.Match.Methods}
		var err error
		if cr.workloads, err = parseIDs(r.Workloads); err != nil {
			return nil, fmt.Errorf("inbound.rules[%d].workloads: %w", i, err)
		}
		if c := r.Callers; c != nil {
			cc := &callerRule{anonymous: c.Anonymous, authenticators: c.Authenticators, maxHops: -1}
			if c.MaxHops != nil {
				cc.maxHops = *c.MaxHops
			}
			for _, k := range slices.Sorted(maps.Keys(c.RequireClaims)) {
				cc.claims = append(cc.claims, [2]string{k, c.RequireClaims[k]})
			}
			if cc.through, err = parseIDs(c.Through); err != nil {
				return nil, fmt.Errorf("inbound.rules[%d].callers.through: %w", i, err)
			}
			cr.callers = cc
		}
		p.rules = append(p.rules, cr)
	}
	return p, nil
}

// Empty reports whether there are no rules.
func (p *Policy) Empty() bool { return p == nil || len(p.rules) == 0 }

// Decide applies the rules to r from peer, with v the verified caller token
// (nil when the request carried none). nil means allowed.
func (p *Policy) Decide(r *http.Request, peer mesh.ID, v *Verified) *Decision {
	if p == nil {
		return nil
	}
	for i := range p.rules {
		ru := &p.rules[i]
		if !ru.matches(r) {
			continue
		}
		if len(ru.workloads) > 0 && !slices.Contains(ru.workloads, peer) {
			return &Decision{Status: http.StatusForbidden, Rule: ru.index, Reason: fmt.Sprintf("workload %s is not allowed here", peer)}
		}
		if ru.callers == nil {
			return nil
		}
		return ru.callers.decide(ru.index, v)
	}
	return nil
}

func (ru *rule) matches(r *http.Request) bool {
	path := r.URL.Path
	switch {
	case ru.path != "" && path != ru.path:
		return false
	case ru.pathPrefix != "" && !hasPathPrefix(path, ru.pathPrefix):
		return false
	}
	return len(ru.methods) == 0 || slices.Contains(ru.methods, r.Method)
}

// hasPathPrefix matches whole segments: /admin matches /admin and
// /admin/x, not /administrator, as the routes file's path_prefix does.
func hasPathPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/'
}

func (c *callerRule) decide(index int, v *Verified) *Decision {
	deny := func(format string, args ...any) *Decision {
		return &Decision{Status: http.StatusForbidden, Rule: index, Reason: fmt.Sprintf(format, args...)}
	}
	if v == nil {
		return &Decision{Status: http.StatusUnauthorized, Rule: index, Reason: "a caller token is required"}
	}
	p := v.Principal
	if p.Anonymous && !c.anonymous {
		return deny("an authenticated caller is required")
	}
	if len(c.authenticators) > 0 && !slices.Contains(c.authenticators, p.Authenticator) {
		return deny("authenticator %q is not accepted here", p.Authenticator)
	}
	for _, kv := range c.claims {
		if got, ok := p.Claim(kv[0]); !ok || got != kv[1] {
			return deny("claim %q does not have the required value", kv[0])
		}
	}
	if c.maxHops >= 0 && v.Hops() > c.maxHops {
		return deny("%d hops exceed %d", v.Hops(), c.maxHops)
	}
	for _, w := range c.through {
		if !slices.Contains(v.Chain, w) {
			return deny("the request did not pass through %s", w)
		}
	}
	return nil
}

func parseIDs(ss []string) ([]mesh.ID, error) {
	ids := make([]mesh.ID, 0, len(ss))
	for _, s := range ss {
		id, err := mesh.ParseID(s)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}
