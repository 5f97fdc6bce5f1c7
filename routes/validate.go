package routes

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/gorilla/mux"
)

// checker collects validation errors located through the file's positions.
type checker struct {
	f     *File
	errs  Errors
	warns Errors
	// doubt is what did not decode (nil: everything did); references
	// into a doubtful collection are not reported as undefined.
	doubt doubts
	// sidecarTrustDomain is a sidecar file's identity.trust_domain, which
	// its ServiceAccount allow entries are named in.
	sidecarTrustDomain string
	// firstUsing names the first route that lists each authenticator,
	// found in one pass when first asked (firstRouteUsing).
	firstUsing map[string]string
}

// warnf records a footgun at path: the file is accepted, the warning shown.
func (c *checker) warnf(path, format string, args ...any) {
	c.warns = append(c.warns, &Error{File: c.f.Path, Pos: c.f.At(path), Path: path, Msg: "warning: " + fmt.Sprintf(format, args...)})
}

// errorf records a problem at path; when path itself has no position (a key
// left out), the nearest enclosing key that has one is used.
func (c *checker) errorf(path, format string, args ...any) {
	c.errs = append(c.errs, &Error{File: c.f.Path, Pos: c.f.At(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

// At returns the position of path in the file, or of its nearest enclosing
// key when path itself is absent.
func (f *File) At(path string) Pos {
	for p := path; p != ""; p = parentPath(p) {
		if pos, ok := f.Positions[p]; ok {
			return pos
		}
	}
	return Pos{Line: 1, Col: 1}
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func (f *File) validate(doubt doubts) Errors {
	c := &checker{f: f, doubt: doubt}
	if f.Version != 1 {
		c.errorf("version", "must be 1 (found %d)", f.Version)
	}
	c.checkListen()
	for i, p := range f.TrustedProxies {
		pfx, err := ParsePrefix(p)
		if err != nil {
			c.errorf(fmt.Sprintf("trusted_proxies[%d]", i), "%v", err)
			continue
		}
		if pfx.Bits() == 0 {
			c.warnf(fmt.Sprintf("trusted_proxies[%d]", i), "%s trusts every peer: any client can then set X-Forwarded-For and choose its own address (rate limits, ip_filter, logs)", p)
		}
	}
	checkAdminAccess(c, "admin", f.Admin, "listen.admin", f.Listen.Admin)
	c.checkServer()
	c.checkAccessLog()
	c.checkTLS()
	c.checkRedis()
	c.checkMesh()
	c.checkAuthenticators()
	c.checkRateLimits()
	c.checkPlugins()
	c.checkUpstreams()
	c.checkProviders()
	c.checkRoutes()
	c.checkTracing()
	c.checkUnderscoreHeaders()
	c.errs = doubt.filter(c.errs)
	c.errs.sort()
	c.warns.sort()
	f.Warnings = c.warns
	return c.errs
}

// checkAdminAccess checks an admin section; listen is the admin listener's
// address, at listenKey.
func checkAdminAccess(c *checker, path string, a AdminAccess, listenKey, listen string) {
	for i, h := range a.AllowedHosts {
		if !hostRe.MatchString(h) {
			c.errorf(indexPath(path+".allowed_hosts", i), "%q is not a host name (no port, no scheme)", h)
		}
	}
	if a.TokenEnv != "" && !envName.MatchString(a.TokenEnv) {
		c.errorf(path+".token_env", "%q is not an environment variable name", a.TokenEnv)
	}
	if listen != "" && a.TokenEnv == "" && !isLoopback(listen) {
		c.warnf(listenKey, "the admin listener %s is reachable from other hosts and has no token (%s.token_env): /config and /metrics are open to anyone who reaches it", listen, path)
	}
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ParsePrefix parses a CIDR ("10.0.0.0/8") or a single address ("10.0.0.1").
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8", s)
		}
		if p.Addr().Is4In6() && p.Bits() < 96 {
			// "::ffff:10.0.0.0/8" reads as 10.0.0.0/8 but is ::/8 once
			// masked: IPv6 addresses (::1 among them) and not one IPv4
			// address, since peers are compared unmapped. Trusted as a
			// proxy, every local IPv6 client could forge its address; in a
			// deny list, the range meant would pass.
			return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped address with a prefix shorter than /96, which is the IPv6 range %s: write IPv4 ranges as IPv4 (10.0.0.0/8)", s, p.Masked())
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a CIDR", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (c *checker) checkListen() {
	l := c.f.Listen
	for key, addr := range map[string]string{"listen.http": l.HTTP, "listen.https": l.HTTPS, "listen.admin": l.Admin} {
		if addr == "" {
			continue
		}
		if err := checkListenAddr(addr); err != nil {
			c.errorf(key, "%v", err)
		}
	}
	if l.HTTPS != "" && c.f.TLS == nil {
		c.errorf("listen.https", "an https listener needs a tls section with certificates or acme")
	}
	// Port 0 (pick any free port) is how tests bind: not a clash.
	if l.HTTP != "" && l.HTTP == l.HTTPS && !anyPort(l.HTTP) {
		c.errorf("listen.https", "http and https listen on the same address %q", l.HTTP)
	}
	if l.Admin != "" && !anyPort(l.Admin) && (l.Admin == l.HTTP || l.Admin == l.HTTPS) {
		c.errorf("listen.admin", "the admin listener must have an address of its own")
	}
}

func anyPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port == "0"
}

func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. \":8080\" or \"127.0.0.1:8080\")", RedactValue(addr))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has an invalid port", addr)
	}
	return nil
}

func (c *checker) checkServer() {
	if c.f.RateLimitMemory.MaxKeys < 0 {
		c.errorf("rate_limit_memory.max_keys", "must not be negative (0: the default, 100000)")
	}
	if c.f.Server.MaxHeaderBytes < 1024 {
		c.errorf("server.max_header_bytes", "must be at least 1024 (found %d)", c.f.Server.MaxHeaderBytes)
	}
	if c.f.Server.MaxConnectionsPerIP < 0 {
		c.errorf("server.max_connections_per_ip", "must not be negative (0: no cap)")
	}
	if c.f.Server.MaxConnections < 0 {
		c.errorf("server.max_connections", "must not be negative (0: no cap)")
	}
	switch c.f.Server.PathNormalization {
	case "", PathNormalizationDefault, PathNormalizationStrict:
	default:
		c.errorf("server.path_normalization", "must be %q or %q (found %q)", PathNormalizationDefault, PathNormalizationStrict, c.f.Server.PathNormalization)
	}
	if e := c.f.Server.HTTP1Engine; e != "" && !slices.Contains(HTTP1Engines, e) {
		c.errorf("server.http1_engine", "must be %q or %q (found %q)", HTTP1EngineNetHTTP, HTTP1EngineCauseway, e)
	}
}

func (c *checker) checkAccessLog() {
	if s := c.f.AccessLog.Sample; s <= 0 || s > 1 {
		c.errorf("access_log.sample", "must be in (0, 1] (found %g)", s)
	}
}

// nameRe matches what regexp `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$` does
// (TestPatternsMatchTheirRegexps): a hand-written scan, as a model from a
// provider has tens of thousands of names to check on every change.
var nameRe namePattern

type namePattern struct{}

func (namePattern) MatchString(s string) bool {
	if len(s) == 0 || len(s) > 128 || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// checkName refuses names that would be awkward as metric labels or in logs.
func (c *checker) checkName(path, kind, name string) {
	if !nameRe.MatchString(name) {
		c.errorf(path, "%s name %q: use letters, digits, '.', '_' and '-' (at most 128)", kind, name)
	}
}

func (c *checker) checkPlugins() {
	for _, name := range slices.Sorted(maps.Keys(c.f.Plugins)) {
		p := "plugins." + name
		c.checkName(p, "plugin instance", name)
		if c.f.Plugins[name].Use == "" {
			c.errorf(p, "use: the registered plugin to instantiate is required")
		}
	}
}

var balancers = []string{"round_robin", "weighted", "least_request", "p2c_ewma", "ring_hash"}

func (c *checker) checkUpstreams() {
	for _, name := range slices.Sorted(maps.Keys(c.f.Upstreams)) {
		u := c.f.Upstreams[name]
		p := "upstreams." + name
		c.checkName(p, "upstream", name)
		switch {
		case len(u.Endpoints) == 0 && u.DNS == "" && u.DNSSRV == "" && u.EndpointsFile == "":
			// A provider's upstream may have none for a while (a Service
			// scaled to zero, a rollout): it answers 503 until endpoints
			// come, rather than refusing the whole model.
			if !c.f.merged || !strings.HasPrefix(name, KubernetesPrefix) {
				c.errorf(p, "needs endpoints or dns")
			}
		case len(u.Endpoints) > 0 && u.DNS != "":
			c.errorf(p+".dns", "endpoints and dns are exclusive: use one")
		}
		// Sized up front, and the key path made only for an error: a
		// provider's model has 100,000 endpoints, checked on every build.
		seen := make(map[string]bool, len(u.Endpoints))
		for i, ep := range u.Endpoints {
			ep = strings.TrimSpace(ep)
			ip := func() string { return p + ".endpoints[" + strconv.Itoa(i) + "]" }
			if err := checkEndpoint(ep); err != nil {
				c.errorf(ip(), "%v", err)
			}
			if seen[ep] {
				c.errorf(ip(), "endpoint %q is listed twice", RedactValue(ep))
			}
			seen[ep] = true
		}
		if u.DNS != "" {
			if err := checkEndpoint(u.DNS); err != nil {
				c.errorf(p+".dns", "%v", err)
			}
		}
		if !slices.Contains(balancers, u.Balance) {
			c.errorf(p+".balance", "unknown balancer %q (one of %s)", u.Balance, strings.Join(balancers, ", "))
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			c.errorf(p+".scheme", "must be http or https (found %q)", u.Scheme)
		}
		if u.MaxIdlePerHost < 0 {
			c.errorf(p+".max_idle_per_endpoint", "must not be negative")
		}
		c.checkUpstreamMesh(p, u)
		c.checkUpstreamTLS(p, u)
		c.checkUpstreamTraffic(p, u)
	}
}

func checkEndpoint(ep string) error {
	host, port, err := net.SplitHostPort(ep)
	if err != nil || host == "" {
		return fmt.Errorf("%q is not host:port", RedactValue(ep))
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return fmt.Errorf("%q has an invalid port", RedactValue(ep))
	}
	return nil
}

func (c *checker) checkRoutes() {
	if len(c.f.Routes) == 0 && c.f.Providers.Kubernetes == nil {
		c.errorf("routes", "no routes: the edge would answer 404 to everything")
	}
	// Sized up front: a provider's model has tens of thousands of routes.
	names := make(map[string]int, len(c.f.Routes))
	sigs := make(map[string]int, len(c.f.Routes))
	for i, r := range c.f.Routes {
		var k *knownRoute
		if i < len(c.f.known) {
			k = c.f.known[i]
		}
		// A route known from an earlier merge, whose own checks found
		// nothing then, is checked only against the rest of the model.
		known := k != nil && k.checked && k.clean
		errs, warns := len(c.errs), len(c.warns)
		if _, dup := names[r.Name]; known && !dup && len(r.Split) == 0 && len(r.Auth) == 0 && len(r.RateLimit) == 0 &&
			len(r.Plugins) == 0 && hasKey(c.f.Upstreams, r.Upstream) {
			// What checkRoute would do and find nothing in, without the
			// key path it makes: most of a provider's routes.
			names[r.Name] = i
		} else {
			c.checkRoute("routes["+strconv.Itoa(i)+"]", i, r, known, names)
		}
		var sig string
		if known {
			sig = k.sig
		} else {
			sig = r.Match.signature()
			if k != nil && !k.checked {
				// A route new to the memo: made by this merge, not yet
				// published, so no other merge reads it. Clean when no
				// check, alone or against the model, said anything.
				k.checked, k.clean, k.sig, k.underscoreFree = true, len(c.errs) == errs && len(c.warns) == warns, sig, r.underscoreFree()
			}
		}
		if j, dup := sigs[sig]; dup {
			c.errorf("routes["+strconv.Itoa(i)+"].match", "ambiguous: matches exactly the same requests as route %q (line %d); make one more specific", c.f.Routes[j].Name, c.f.At(fmt.Sprintf("routes[%d]", j)).Line)
		} else {
			sigs[sig] = i
		}
	}
}

// checkRoute checks route i at p. With known, the checks that depend on
// the route alone are left out (a MergeMemo saw them pass); those that
// read the rest of the model (references, duplicate names, oidc paths)
// always run, in the same order as for a full check.
func (c *checker) checkRoute(p string, i int, r Route, known bool, names map[string]int) {
	switch r.Name {
	case "":
		c.errorf(p, "name is required")
	default:
		if !known {
			c.checkName(p+".name", "route", r.Name)
		}
		if j, dup := names[r.Name]; dup {
			c.errorf(p+".name", "duplicate route name %q (first at line %d)", r.Name, c.f.At(fmt.Sprintf("routes[%d].name", j)).Line)
		} else {
			names[r.Name] = i
		}
	}
	if !known {
		c.checkMatch(p+".match", r.Match)
		if h := r.HostRewrite; h != "" {
			name, port, err := net.SplitHostPort(h)
			if err != nil {
				name, port = h, ""
			}
			if !hostRe.MatchString(name) || name[0] == '*' || (port != "" && !validPort(port)) {
				c.errorf(p+".host_rewrite", "%q is not a host name or host:port (no wildcard, lower case)", h)
			}
		}
		if r.StripPrefix && r.Match.PathPrefix == "" {
			c.errorf(p+".strip_prefix", "needs match.path_prefix")
		}
	}
	switch {
	case r.Upstream == "" && len(r.Split) == 0:
		c.errorf(p, "needs upstream or split")
	case r.Upstream != "" && len(r.Split) > 0:
		c.errorf(p+".split", "upstream and split are exclusive: use one")
	case r.Upstream != "":
		if !hasKey(c.f.Upstreams, r.Upstream) { // the path made only for an error
			c.checkRef(p+".upstream", "upstream", r.Upstream, false)
		}
	}
	if !known {
		c.checkSplitHeaders(p, r)
	}
	for j, s := range r.Split {
		sp := fmt.Sprintf("%s.split[%d]", p, j)
		c.checkRef(sp+".upstream", "upstream", s.Upstream, hasKey(c.f.Upstreams, s.Upstream))
		if s.Weight <= 0 && !known {
			c.errorf(sp+".weight", "must be a positive integer")
		}
	}
	for j, a := range r.Auth {
		c.checkRef(fmt.Sprintf("%s.auth[%d]", p, j), "authenticator", a, hasKey(c.f.Authenticators, a))
	}
	c.checkOIDCPaths(p, r)
	if len(r.RequireClaims) > 0 && len(r.Auth) == 0 && !known {
		c.errorf(p+".require_claims", "needs auth: claims come from an authenticated token")
	}
	for j, l := range r.RateLimit {
		c.checkRef(fmt.Sprintf("%s.rate_limit[%d]", p, j), "rate limit", l, hasKey(c.f.RateLimits, l))
	}
	for j, pl := range r.Plugins {
		c.checkRef(fmt.Sprintf("%s.plugins[%d]", p, j), "plugin instance", pl, hasKey(c.f.Plugins, pl))
	}
}

// refCollections names the section each kind of reference points into.
var refCollections = map[string]string{
	"upstream":        "upstreams",
	"authenticator":   "authenticators",
	"rate limit":      "rate_limits",
	"plugin instance": "plugins",
}

// checkRef reports a reference to something the file does not define,
// unless the section it points into did not decode (or its key was
// misspelled): the name may well be there, and that error says so.
func (c *checker) checkRef(path, kind, name string, ok bool) {
	if ok {
		return
	}
	if coll := refCollections[kind]; c.doubt[coll] || c.doubt[""] {
		return
	}
	c.errorf(path, "undefined %s %q", kind, name)
}

func hasKey[V any](m map[string]V, k string) bool {
	_, ok := m[k]
	return ok
}

var methodRe = regexp.MustCompile(`^[A-Z]+$`)

// hostRe matches what regexp
// `^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`
// does (TestPatternsMatchTheirRegexps): an optional "*." and then labels
// of lower-case letters, digits and inner hyphens, 1 to 63 long.
var hostRe hostPattern

// HostName reports whether s is a host name, or a wildcard "*.example.com",
// that the model takes as a route's match.host. A provider checks the
// hostnames it is given with it, so that one object's name the model
// cannot read is refused alone rather than with every route.
func HostName(s string) bool { return hostRe.MatchString(s) }

type hostPattern struct{}

func (hostPattern) MatchString(s string) bool {
	s, _ = strings.CutPrefix(s, "*.")
	if s == "" {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}

func (c *checker) checkMatch(p string, m Match) {
	if m.Host != "" && !hostRe.MatchString(m.Host) {
		c.errorf(p+".host", "%q is not a host name (a wildcard is \"*.example.com\"; no port)", m.Host)
	}
	if m.Path != "" && m.PathPrefix != "" {
		c.errorf(p+".path_prefix", "path and path_prefix are exclusive: use one")
	}
	if m.TLS && m.Plain {
		c.errorf(p+".plain", "tls and plain are exclusive: a route for both connections sets neither")
	}
	if m.PathRegex != "" {
		if m.Path != "" || m.PathPrefix != "" {
			c.errorf(p+".path_regex", "path_regex, path and path_prefix are exclusive: use one")
		}
		if _, err := CompilePathRegex(m.PathRegex); err != nil {
			c.errorf(p+".path_regex", "%v", err)
		}
	}
	if m.Path != "" {
		if !strings.HasPrefix(m.Path, "/") {
			c.errorf(p+".path", "must start with \"/\" (found %q)", m.Path)
		} else if err := checkTemplate(m.Path, false); err != nil {
			c.errorf(p+".path", "invalid path template: %v", err)
		}
	}
	if m.PathPrefix != "" {
		if !strings.HasPrefix(m.PathPrefix, "/") {
			c.errorf(p+".path_prefix", "must start with \"/\" (found %q)", m.PathPrefix)
		} else if err := checkTemplate(m.PathPrefix, true); err != nil {
			c.errorf(p+".path_prefix", "invalid path prefix: %v", err)
		}
	}
	c.checkMethods(p+".methods", m.Methods)
	for _, k := range sortedKeys(m.Headers) {
		if !httpTokenRe.MatchString(k) {
			c.errorf(p+".headers."+k, "%q is not a header name", k)
		}
	}
	for _, k := range sortedKeys(m.Query) {
		if k == "" {
			c.errorf(p+".query", "empty query parameter name")
		}
	}
	for _, k := range sortedKeys(m.HeadersRegex) {
		kp := p + ".headers_regex." + k
		if !httpTokenRe.MatchString(k) {
			c.errorf(kp, "%q is not a header name", k)
		}
		for h := range m.Headers {
			if strings.EqualFold(h, k) {
				c.errorf(kp, "header %q is also in headers: match it one way", k)
			}
		}
		if _, err := CompilePathRegex(m.HeadersRegex[k]); err != nil {
			c.errorf(kp, "%v", err)
		}
	}
	for _, k := range sortedKeys(m.QueryRegex) {
		kp := p + ".query_regex." + k
		if k == "" {
			c.errorf(p+".query_regex", "empty query parameter name")
		}
		if _, dup := m.Query[k]; dup {
			c.errorf(kp, "parameter %q is also in query: match it one way", k)
		}
		if _, err := CompilePathRegex(m.QueryRegex[k]); err != nil {
			c.errorf(kp, "%v", err)
		}
	}
}

// checkTemplate reports a path template mux cannot compile. Only a
// template ({var}) can fail: literal paths are not compiled here, which
// was a third of validating 20,000 routes.
func checkTemplate(p string, prefix bool) error {
	if !strings.ContainsAny(p, "{}") {
		return nil
	}
	if prefix {
		return mux.NewRouter().PathPrefix(p).GetError()
	}
	return mux.NewRouter().Path(p).GetError()
}

var httpTokenRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// signature is a canonical form of the match: two routes with the same
// signature match exactly the same requests, so precedence cannot tell them
// apart and file order would silently decide.
func (m Match) signature() string {
	methods := m.Methods
	if len(methods) > 1 {
		methods = slices.Clone(methods)
		sort.Strings(methods)
	}
	// Written piece by piece rather than with fmt: the same text, and a
	// provider's model has tens of thousands of routes to sign per change.
	var b strings.Builder
	b.Grow(32 + len(m.Host) + len(m.Path) + len(m.PathPrefix) + len(m.PathRegex))
	for i, piece := range [...]string{"h=", m.Host, "|p=", m.Path, "|pp=", m.PathPrefix, "|re=", m.PathRegex, "|m=", strings.Join(methods, ","), "|tls=", strconv.FormatBool(m.TLS)} {
		if i%2 == 1 {
			piece = sigText(piece)
		}
		b.WriteString(piece)
	}
	if m.Plain {
		b.WriteString("|plain")
	}
	for _, k := range sortedKeys(m.Headers) {
		fmt.Fprintf(&b, "|H:%s=%s", sigText(strings.ToLower(k)), sigText(m.Headers[k]))
	}
	for _, k := range sortedKeys(m.Query) {
		fmt.Fprintf(&b, "|Q:%s=%s", sigText(k), sigText(m.Query[k]))
	}
	for _, k := range sortedKeys(m.HeadersRegex) {
		fmt.Fprintf(&b, "|HR:%s=%s", sigText(strings.ToLower(k)), sigText(m.HeadersRegex[k]))
	}
	for _, k := range sortedKeys(m.QueryRegex) {
		fmt.Fprintf(&b, "|QR:%s=%s", sigText(k), sigText(m.QueryRegex[k]))
	}
	return b.String()
}

// sigText is one value of a signature: as it is, or quoted when it holds
// a character that could make it read as more than one piece ('|' between
// pieces, '=' between a key and its value) or as a quoted one. A header or
// query value may hold any text, and "a: 1|H:b=2" once signed as "a: 1"
// and "b: 2" together: Merge left the second route out as the first's
// duplicate although they match different requests. Quoted text ends at
// its closing quote, so every signature reads back one way only, and
// values without those characters read as they always did.
func sigText(s string) string {
	if strings.ContainsAny(s, "|=\"\\") {
		return strconv.Quote(s)
	}
	return s
}

// checkUnderscoreHeaders refuses header names with "_" that the edge would
// never see: such request headers are dropped as they arrive unless
// server.allow_underscore_headers is set, so the check, match or key would
// silently never apply.
func (c *checker) checkUnderscoreHeaders() {
	if c.f.Server.AllowUnderscoreHeaders {
		return
	}
	check := func(path, name string) {
		if strings.Contains(name, "_") {
			c.errorf(path, "header name %q contains '_': such request headers are dropped unless server.allow_underscore_headers is true", name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.f.Authenticators)) {
		if k := c.f.Authenticators[name].APIKey; k != nil {
			check("authenticators."+name+".api_key.header", k.Header)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.f.RateLimits)) {
		for _, part := range RateLimitKeyParts(c.f.RateLimits[name].Key) {
			if h, ok := strings.CutPrefix(part, "header:"); ok {
				check("rate_limits."+name+".key", h)
			}
		}
	}
	for i, r := range c.f.Routes {
		if i < len(c.f.known) && c.f.known[i] != nil && c.f.known[i].underscoreFree {
			continue // checked when it was first merged: no '_' anywhere
		}
		for _, h := range sortedKeys(r.Match.Headers) {
			check(fmt.Sprintf("routes[%d].match.headers.%s", i, h), h)
		}
		for _, h := range sortedKeys(r.Match.HeadersRegex) {
			check(fmt.Sprintf("routes[%d].match.headers_regex.%s", i, h), h)
		}
		for j, sp := range r.Split {
			for _, h := range sortedKeys(sp.Headers) {
				check(fmt.Sprintf("routes[%d].split[%d].headers.%s", i, j, h), h)
			}
		}
	}
}

// checkMethods checks a list of methods at p: each a method, none twice.
func (c *checker) checkMethods(p string, methods []string) {
	seen := map[string]bool{}
	for i, meth := range methods {
		mp := fmt.Sprintf("%s[%d]", p, i)
		if !methodRe.MatchString(meth) {
			c.errorf(mp, "%q is not an HTTP method", meth)
		}
		if seen[meth] {
			c.errorf(mp, "method %s is listed twice", meth)
		}
		seen[meth] = true
	}
}

// checkOIDCPaths refuses a route that signs in through an oidc
// authenticator when no route using that authenticator can match its
// redirect_path (or logout_path): the authenticator serves those paths
// only on its own routes, so the provider's callback would reach another
// route or none, and sign-in could never finish. Only what surely cannot
// match counts (a different literal path, a prefix that does not cover
// it, methods without GET): templates and header or query conditions are
// given the benefit of the doubt.
func (c *checker) checkOIDCPaths(p string, r Route) {
	for _, a := range r.Auth {
		auth, ok := c.f.Authenticators[a]
		if !ok || auth.OIDC == nil || c.firstRouteUsing(a) != r.Name {
			continue // reported once, at the first route using it
		}
		for _, key := range []string{"redirect_path", "logout_path"} {
			path := auth.OIDC.RedirectPath
			if key == "logout_path" {
				path = auth.OIDC.LogoutPath
			}
			if path == "" {
				continue
			}
			reached := false
			for _, other := range c.f.Routes {
				if slices.Contains(other.Auth, a) && mayMatchGET(other.Match, path) {
					reached = true
					break
				}
			}
			if !reached {
				c.errorf(p+".match", "signs in through %q, but no route using it matches its %s %s: the authenticator answers that path only on its own routes; add a route for it with auth: %s (path_prefix: %s), or set %s under this route's path", a, key, path, a, path, key)
			}
		}
	}
}

// firstRouteUsing names the first route that lists authenticator a. The
// answers are found for every authenticator in one pass: asked for each
// route of an oidc authenticator in turn, a scan each time made a
// policy's 20,000 routes 400 million comparisons.
func (c *checker) firstRouteUsing(a string) string {
	if c.firstUsing == nil {
		c.firstUsing = map[string]string{}
		for _, r := range c.f.Routes {
			for _, x := range r.Auth {
				if _, ok := c.firstUsing[x]; !ok {
					c.firstUsing[x] = r.Name
				}
			}
		}
	}
	return c.firstUsing[a]
}

// mayMatchGET reports whether m could match a GET for path.
func mayMatchGET(m Match, path string) bool {
	if len(m.Methods) > 0 && !slices.Contains(m.Methods, "GET") {
		return false
	}
	switch {
	case m.Path != "":
		return m.Path == path || strings.Contains(m.Path, "{")
	case m.PathPrefix != "":
		return strings.HasPrefix(path, m.PathPrefix) || strings.Contains(m.PathPrefix, "{")
	}
	return true
}

// maxPathRegex bounds a path_regex's length: RE2 matches in linear time,
// but a huge expression still costs memory per route.
const maxPathRegex = 1024

// CompilePathRegex compiles a match.path_regex (or a value of
// headers_regex or query_regex) as the router uses it: the whole path (or
// value) must match.
func CompilePathRegex(expr string) (*regexp.Regexp, error) {
	if len(expr) > maxPathRegex {
		return nil, fmt.Errorf("longer than %d bytes", maxPathRegex)
	}
	// The expression alone first, so an error quotes what the file says.
	if _, err := regexp.Compile(expr); err != nil {
		return nil, fmt.Errorf("not an RE2 regular expression: %w", err)
	}
	return regexp.Compile("^(?:" + expr + ")$")
}

// validPort reports whether p is a TCP port number, 1 to 65535.
func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535 && strconv.Itoa(n) == p
}

// sortedKeys is slices.Sorted(maps.Keys(m)) without the iterator's
// allocation when m is empty: most routes have no header or query
// conditions, and every change from a provider validates every route.
func sortedKeys[V any](m map[string]V) []string {
	if len(m) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}
