package routes

import (
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// dns1123Label is a Kubernetes namespace name.
var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// dns1123Subdomain is a Kubernetes object name such as a GatewayClass's.
var dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func (c *checker) checkProviders() {
	k := c.f.Providers.Kubernetes
	if k == nil {
		return
	}
	const p = "providers.kubernetes"
	if len(k.GatewayClass) > 253 || !dns1123Subdomain.MatchString(k.GatewayClass) {
		c.errorf(p+".gateway_class", "%q is not a Kubernetes object name (lower-case letters, digits, '-' and '.')", k.GatewayClass)
	}
	c.checkNamespaces(p+".namespaces", k.Namespaces)
	c.checkGateways(p+".gateways", k.Gateways, k.Namespaces)
	if a := k.StatusAddress; a != nil {
		c.checkStatusAddress(p+".status_address", *a, k.Namespaces)
	}
	if k.InboundPort < 1 || k.InboundPort > 65535 {
		c.errorf(p+".inbound_port", "must be a port, 1 to 65535 (found %d)", k.InboundPort)
	}
	if c.f.merged {
		return
	}
	// The provider's names carry its prefix; the file keeps out of it so
	// that a name always says where it came from.
	for i, r := range c.f.Routes {
		if strings.HasPrefix(r.Name, KubernetesPrefix) {
			c.errorf(fmt.Sprintf("routes[%d].name", i), "%q: names beginning with %q are the Kubernetes provider's", r.Name, KubernetesPrefix)
		}
	}
	for name := range c.f.Upstreams {
		if strings.HasPrefix(name, KubernetesPrefix) {
			c.errorf("upstreams."+name, "%q: names beginning with %q are the Kubernetes provider's", name, KubernetesPrefix)
		}
	}
	for _, section := range []struct {
		key   string
		names []string
	}{
		{"plugins", slices.Collect(maps.Keys(c.f.Plugins))},
		{"authenticators", slices.Collect(maps.Keys(c.f.Authenticators))},
		{"rate_limits", slices.Collect(maps.Keys(c.f.RateLimits))},
	} {
		for _, name := range section.names {
			if strings.HasPrefix(name, KubernetesPrefix) {
				c.errorf(section.key+"."+name, "%q: names beginning with %q are the Kubernetes provider's", name, KubernetesPrefix)
			}
		}
	}
}

// Fragment is what a provider contributes to the model: routes, the
// upstreams they send to, and the plugin instances, authenticators and
// rate limits they use, named with the provider's prefix.
type Fragment struct {
	Routes         []Route
	Upstreams      map[string]Upstream
	Plugins        map[string]PluginInst
	Authenticators map[string]Authenticator
	RateLimits     map[string]RateLimit
	// Certificates are served on the https listener after the file's own
	// (the file's win a name both have), those with Hosts only for the
	// names their Hosts match. Without a tls section there is no https
	// listener, and they are left out.
	Certificates []InlineCertificate
}

// Merge returns the file's own configuration with frag added, defaulted and
// validated as one model: the same checks a file alone goes through. f is
// not changed. A name of frag that f already uses is refused, never
// overridden.
func (f *File) Merge(frag Fragment) (*File, error) { return f.MergeWith(frag, nil) }

// MergeWith is Merge with a memo of the same source's earlier fragments
// (nil: none): the routes of frag it already knows are not checked again
// on their own, only against the rest of the model. The result, and every
// error, is the same as Merge's.
func (f *File) MergeWith(frag Fragment, memo *MergeMemo) (*File, error) {
	m := *f
	m.Routes = append(make([]Route, 0, len(f.Routes)+len(frag.Routes)), f.Routes...)
	var known, next []*knownRoute
	var view memoView
	if memo != nil {
		known = make([]*knownRoute, len(f.Routes), len(f.Routes)+len(frag.Routes))
		next = make([]*knownRoute, 0, len(frag.Routes))
		view = memo.view()
	}
	// Two routes that match exactly the same requests make a file
	// ambiguous; from a provider they are the Gateway API's tie, which the
	// first route wins (the file's, then the oldest object's). The later
	// one is left out, with a warning, rather than refusing the model.
	sigs := make(map[string]string, len(m.Routes)+len(frag.Routes))
	for _, r := range f.Routes {
		sigs[r.Match.signature()] = r.Name
	}
	var shadowed Errors
	kept := make([]int, 0, len(frag.Routes))
	for i := range frag.Routes {
		r := &frag.Routes[i]
		var k *knownRoute
		if memo != nil {
			if k = view.lookup(i, r); k == nil {
				k = &knownRoute{raw: r.clone(), rawSig: r.Match.signature()}
			}
		}
		var sig string
		if k != nil {
			sig = k.rawSig
		} else {
			sig = r.Match.signature()
		}
		if memo != nil {
			// Every route of the fragment, shadowed or not, at its own
			// index: the next fragment's routes are looked for there.
			next = append(next, k)
		}
		if first, dup := sigs[sig]; dup {
			shadowed = append(shadowed, &Error{File: f.Path, Path: "providers", Msg: fmt.Sprintf("route %q matches exactly the same requests as %q, which was first and wins", r.Name, first)})
			continue
		}
		sigs[sig] = r.Name
		kept = append(kept, i)
		if memo != nil {
			known = append(known, k)
		}
	}
	if len(kept) == len(frag.Routes) {
		// Nothing shadowed, the usual case: one copy of the whole slice
		// rather than 20,000 of one route.
		m.Routes = append(m.Routes, frag.Routes...)
	} else {
		for _, i := range kept {
			m.Routes = append(m.Routes, frag.Routes[i])
		}
	}
	var errs Errors
	m.Upstreams = mergeNamed(f.Path, "upstreams", f.Upstreams, frag.Upstreams, &errs)
	m.Plugins = mergeNamed(f.Path, "plugins", f.Plugins, frag.Plugins, &errs)
	m.Authenticators = mergeNamed(f.Path, "authenticators", f.Authenticators, frag.Authenticators, &errs)
	m.RateLimits = mergeNamed(f.Path, "rate_limits", f.RateLimits, frag.RateLimits, &errs)
	if len(errs) > 0 {
		return nil, errs
	}
	if f.TLS != nil && len(frag.Certificates) > 0 {
		t := *f.TLS
		t.FromProviders = append(slices.Clip(f.TLS.FromProviders), frag.Certificates...)
		m.TLS = &t
	}
	m.merged = true
	// The file's paths were made absolute when it loaded: with no Path,
	// defaulting does not resolve them a second time.
	m.Path = ""
	m.known = known
	err := m.Normalize()
	m.Path, m.known = f.Path, nil
	// What the checks learnt of the fragment's routes holds whatever the
	// model's fate: it is of each route alone.
	if memo != nil {
		memo.publish(next)
	}
	if err != nil {
		return nil, err
	}
	m.Warnings = append(m.Warnings, shadowed...)
	return &m, nil
}

// mergeNamed is the file's named entries of one section with a provider's
// added; a name both define is refused, never overridden.
func mergeNamed[V any](path, section string, file, frag map[string]V, errs *Errors) map[string]V {
	// Always a copy: defaulting writes into the merged model's maps, and
	// the file's must stay as loaded.
	out := make(map[string]V, len(file)+len(frag))
	maps.Copy(out, file)
	for _, k := range slices.Sorted(maps.Keys(frag)) {
		if _, dup := out[k]; dup {
			*errs = append(*errs, &Error{File: path, Path: section + "." + k, Msg: "defined by the file and by a provider"})
		}
		out[k] = frag[k]
	}
	return out
}

// checkStatusAddress: exactly one way of naming the address, each well
// formed; a Service must be one the provider watches, or it could never
// be found.
func (c *checker) checkStatusAddress(p string, a StatusAddress, namespaces []string) {
	set := 0
	for _, v := range []string{a.IP, a.Hostname, a.Service} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		c.errorf(p, "set exactly one of ip, hostname or service")
	}
	if a.IP != "" {
		if _, err := netip.ParseAddr(a.IP); err != nil || strings.Contains(a.IP, "%") {
			c.errorf(p+".ip", "%q is not an IP address", a.IP)
		}
	}
	if h := a.Hostname; h != "" {
		if len(h) > 253 || !dns1123Subdomain.MatchString(h) {
			c.errorf(p+".hostname", "%q is not a DNS name (lower-case letters, digits, '-' and '.'; no wildcard, no port)", h)
		} else if _, err := netip.ParseAddr(h); err == nil {
			c.errorf(p+".hostname", "%q is an IP address: use ip", h)
		}
	}
	if s := a.Service; s != "" {
		ns, name, ok := strings.Cut(s, "/")
		switch {
		case !ok || !dns1123Label.MatchString(ns) || !dns1123Label.MatchString(name):
			c.errorf(p+".service", "%q is not NAMESPACE/NAME of a Service", s)
		case len(namespaces) > 0 && !slices.Contains(namespaces, ns):
			c.errorf(p+".service", "namespace %q is not among providers.kubernetes.namespaces, so the Service would never be seen", ns)
		}
	}
}

// checkNamespaces: a list of Kubernetes namespaces (the edge's provider's
// and the sidecar's), each a namespace name, listed once.
func (c *checker) checkNamespaces(p string, namespaces []string) {
	seen := map[string]bool{}
	for i, ns := range namespaces {
		np := fmt.Sprintf("%s[%d]", p, i)
		if !dns1123Label.MatchString(ns) {
			c.errorf(np, "%q is not a namespace name (lower-case letters, digits and '-', at most 63)", ns)
		}
		if seen[ns] {
			c.errorf(np, "namespace %q is listed twice", ns)
		}
		seen[ns] = true
	}
}

// checkGateways: each NAMESPACE/NAME of a Gateway, listed once, in a
// namespace the provider watches (or it could never be served).
func (c *checker) checkGateways(p string, gateways, namespaces []string) {
	seen := map[string]bool{}
	for i, g := range gateways {
		gp := fmt.Sprintf("%s[%d]", p, i)
		ns, name, ok := strings.Cut(g, "/")
		switch {
		case !ok || !dns1123Label.MatchString(ns) || len(name) > 253 || !dns1123Subdomain.MatchString(name):
			c.errorf(gp, "%q is not NAMESPACE/NAME of a Gateway", g)
		case len(namespaces) > 0 && !slices.Contains(namespaces, ns):
			c.errorf(gp, "namespace %q is not among providers.kubernetes.namespaces, so the Gateway would never be seen", ns)
		}
		if seen[g] {
			c.errorf(gp, "Gateway %q is listed twice", g)
		}
		seen[g] = true
	}
}
