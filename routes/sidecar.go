package routes

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Sidecar is one sidecar file (docs/mesh.md "The sidecar file"), decoded and
// defaulted. The sidecar runs the gateway's engine with mesh identities on
// both sides: mTLS in, plain HTTP to the local service; plain HTTP from the
// local service, mTLS out.
type Sidecar struct {
	Version  int             `yaml:"version"`
	Identity SidecarIdentity `yaml:"identity"`
	Inbound  *Inbound        `yaml:"inbound"`
	Outbound *Outbound       `yaml:"outbound"`
	// Admin serves /metrics, /healthz, /readyz; loopback by default.
	Admin string `yaml:"admin"`
	// AdminAccess guards the admin listener as the routes file's admin
	// section does (admin is this file's listen address).
	AdminAccess AdminAccess `yaml:"admin_access"`
	// Server and AccessLog mean what they mean in the routes file and have
	// the same defaults; they apply to both listeners.
	Server    Server    `yaml:"server"`
	AccessLog AccessLog `yaml:"access_log"`
	// Tracing is as in the routes file (service name causeway-sidecar).
	Tracing *Tracing `yaml:"tracing"`

	// Path is the file read; Positions maps key paths to where they stand.
	Path      string         `yaml:"-" json:"-"`
	Positions map[string]Pos `yaml:"-" json:"-"`
	// Warnings: as File.Warnings.
	Warnings Errors `yaml:"-" json:"-"`
	// env: as File's.
	env *envValues
}

// SidecarIdentity is the workload's own certificate, key and trust bundle,
// re-read when the files change.
type SidecarIdentity struct {
	// Source and Socket are as in the routes file's mesh section: "files"
	// (the default) or "spire".
	Source string `yaml:"source"`
	Socket string `yaml:"socket"`
	// SPIFFEID is as in the mesh section: for source spire, which of
	// several SVIDs is this workload's.
	SPIFFEID   string `yaml:"spiffe_id"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	BundleFile string `yaml:"bundle_file"`
	// FederatedBundles is as in the mesh section: other trust domains'
	// bundle files, for source files.
	FederatedBundles map[string]string `yaml:"federated_bundles"`
	// TrustDomain, if set, refuses a certificate of another trust domain
	// and allow entries that could never verify.
	TrustDomain string `yaml:"trust_domain"`
}

// Inbound terminates mTLS from callers and forwards to the local service.
type Inbound struct {
	Listen string `yaml:"listen"`
	// ForwardTo is the local service, host:port on loopback.
	ForwardTo string `yaml:"forward_to"`
	// Allow lists the caller SPIFFE IDs let in; AllowTrustDomains lets in
	// every ID of a trust domain. A verified caller in neither gets 403.
	Allow             []string `yaml:"allow"`
	AllowTrustDomains []string `yaml:"allow_trust_domains"`
	// AllowServiceAccounts lets in Kubernetes ServiceAccounts by
	// "NAMESPACE/NAME": the ID spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/NAME
	// that the CA and SPIRE give their pods (identity.trust_domain).
	AllowServiceAccounts []string `yaml:"allow_service_accounts"`
	// Timeout bounds a request to the local service (default 30s).
	Timeout Duration `yaml:"timeout"`
	// Callers verifies the caller tokens the edge mints (docs/mesh.md).
	Callers *InboundCallers `yaml:"callers"`
	// Rules authorise by path on the workload and the caller; the first
	// rule that matches decides.
	Rules []InboundRule `yaml:"rules"`
}

// Outbound takes plain HTTP from the local service and sends it over mTLS
// to the service named by the request's Host.
type Outbound struct {
	// Listen must be a loopback address: it accepts plain, unauthenticated
	// HTTP and vouches for it with this workload's identity.
	Listen   string                     `yaml:"listen"`
	Services map[string]OutboundService `yaml:"services"`
	// Kubernetes adds the mesh's Services from the cluster to Services
	// (docs/kubernetes.md "Sidecar outbound services"). A name both give
	// is the file's.
	Kubernetes *OutboundKubernetes `yaml:"kubernetes"`
	// CallerToken: with inbound.callers set, a caller token the local
	// service passes on (as it passes on traceparent) is exchanged for one
	// addressed to the service called, with this workload added to its
	// delegation chain. These are the new tokens' lifetime and cache.
	CallerToken *CallerToken `yaml:"caller_token"`
}

// OutboundService is one service the local service may call.
type OutboundService struct {
	// Endpoints are the service's sidecars' inbound listeners.
	Endpoints []string `yaml:"endpoints"`
	// Identity is the SPIFFE ID the service's sidecars must present.
	Identity string `yaml:"identity"`
	Balance  string `yaml:"balance"` // as upstreams.*.balance; default round_robin
	// Timeout bounds a request (default 30s).
	Timeout Duration `yaml:"timeout"`
}

// OutboundKubernetes makes outbound services of the Services labelled
// MeshLabel: their EndpointSlices' ready pods, each reached on its inbound
// port and made to present the ID of its own pod's ServiceAccount.
type OutboundKubernetes struct {
	// Namespaces limits what is watched (empty: every namespace), as
	// providers.kubernetes.namespaces does for the edge.
	Namespaces []string `yaml:"namespaces"`
	// Kubeconfig is a kubeconfig file; empty: the in-cluster service
	// account.
	Kubeconfig string `yaml:"kubeconfig"`
	// InboundPort is where a peer pod's sidecar listens when the pod has
	// no InboundPortAnnotation (default DefaultSidecarInboundPort).
	InboundPort int `yaml:"inbound_port"`
	// ClusterDomain is the cluster's DNS suffix: NAME.NAMESPACE.svc.DOMAIN
	// is one of the names a Service is called by (default cluster.local).
	ClusterDomain string `yaml:"cluster_domain"`
	// Balance and Timeout apply to every Service, as
	// outbound.services.*.balance and timeout do to one.
	Balance string   `yaml:"balance"`
	Timeout Duration `yaml:"timeout"`
}

// The conventions of outbound.kubernetes (docs/kubernetes.md).
const (
	// MeshLabel, set to "true" on a Service, makes it callable through
	// the sidecars. A label rather than an annotation: the sidecars' watch
	// selects on it, so the other Services are never sent to them.
	MeshLabel = "causeway.dev/mesh"
	// InboundPortAnnotation on a Pod is the port its sidecar's inbound
	// listener is on, when not outbound.kubernetes.inbound_port.
	InboundPortAnnotation = "causeway.dev/inbound-port"
	// DefaultSidecarInboundPort is the port of DefaultSidecarInbound.
	DefaultSidecarInboundPort = 15443
	DefaultClusterDomain      = "cluster.local"
)

// Sidecar file defaults, documented in docs/mesh.md.
const (
	DefaultSidecarInbound  = ":15443"
	DefaultSidecarOutbound = "127.0.0.1:15001"
	DefaultSidecarAdmin    = "127.0.0.1:15000"
)

// LoadSidecar reads, decodes, defaults and validates the sidecar file at
// path. On failure the error is an Errors listing every problem found.
func LoadSidecar(path string) (*Sidecar, error) {
	return LoadSidecarEnv(path, os.LookupEnv)
}

// LoadSidecarEnv is LoadSidecar with the environment given by env.
func LoadSidecarEnv(path string, env LookupEnv) (*Sidecar, error) {
	return LoadSidecarWith(path, Options{Env: orNoEnv(env)})
}

// LoadSidecarWith is LoadSidecar with options (see ParseWith).
func LoadSidecarWith(path string, o Options) (*Sidecar, error) {
	data, err := ReadFile(path, "sidecar")
	if err != nil {
		return nil, err
	}
	return ParseSidecarWith(path, data, o)
}

// ParseSidecar decodes, defaults and validates a sidecar file held in
// memory; name is used in error messages.
func ParseSidecar(name string, data []byte) (*Sidecar, error) {
	return ParseSidecarEnv(name, data, os.LookupEnv)
}

// ParseSidecarEnv is ParseSidecar with the environment given by env (nil:
// no variable is set).
func ParseSidecarEnv(name string, data []byte, env LookupEnv) (*Sidecar, error) {
	return ParseSidecarWith(name, data, Options{Env: orNoEnv(env)})
}

// ParseSidecarWith is ParseSidecar with options; like ParseWith, it
// reports every problem in one run.
func ParseSidecarWith(name string, data []byte, o Options) (*Sidecar, error) {
	root, err := parseYAML(name, data)
	if err != nil {
		// parseYAML's messages speak of the routes file; say which file this is.
		var errs Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				e.Msg = strings.NewReplacer("a routes file", "a sidecar file",
					"version, upstreams and routes", "version, identity, inbound and outbound").Replace(e.Msg)
			}
		}
		return nil, err
	}
	d := newDecoder(name)
	d.env = o.env()
	s := &Sidecar{}
	d.decode(root, "", reflect.ValueOf(s).Elem())
	s.Path, s.Positions, s.env = name, d.pos, d.envVals
	if d.tooLarge {
		d.errs.sort()
		return nil, d.errs
	}
	s.applyDefaults()
	d.errs = append(d.errs, s.validate(d.doubt)...)
	errs := d.errs
	if o.CheckFiles {
		errs = append(errs, d.doubt.filter(checkFiles(s.Path, s.At, s.files()))...)
	}
	d.envVals.maskErrors(errs)
	d.envVals.maskErrors(s.Warnings)
	if len(errs) > 0 {
		errs.sort()
		return nil, errs
	}
	return s, nil
}

// At returns the position of path in the file, or of its nearest enclosing
// key when path itself is absent.
func (s *Sidecar) At(path string) Pos {
	return (&File{Positions: s.Positions}).At(path)
}

func (s *Sidecar) applyDefaults() {
	s.resolvePaths()
	if s.Admin == "" {
		s.Admin = DefaultSidecarAdmin
	}
	// The same server and access log defaults as the edge: the same engine
	// faces the same clients.
	f := &File{Server: s.Server, AccessLog: s.AccessLog}
	srv := &f.Server
	setDuration(&srv.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	srv.defaultBodyReadTimeout()
	setDuration(&srv.IdleTimeout, DefaultIdleTimeout)
	setDuration(&srv.ShutdownTimeout, DefaultShutdownTimeout)
	if srv.MaxHeaderBytes == 0 {
		srv.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if f.AccessLog.Output == "" {
		f.AccessLog.Output = "stdout"
	}
	if f.AccessLog.Sample == 0 {
		f.AccessLog.Sample = 1
	}
	s.Server, s.AccessLog = f.Server, f.AccessLog
	s.Tracing.applyDefaults(DefaultTracingSidecarName)
	if in := s.Inbound; in != nil {
		if in.Listen == "" {
			in.Listen = DefaultSidecarInbound
		}
		setDuration(&in.Timeout, DefaultUpstreamTimeout)
		if in.Callers != nil {
			in.Callers.applyDefaults()
		}
	}
	if out := s.Outbound; out != nil {
		if out.Listen == "" {
			out.Listen = DefaultSidecarOutbound
		}
		if s.Inbound != nil && s.Inbound.Callers != nil && out.CallerToken == nil {
			out.CallerToken = &CallerToken{}
		}
		if t := out.CallerToken; t != nil {
			_, set := s.Positions["outbound.caller_token.cache"]
			t.applyDefaults(set)
			if s.Inbound != nil && s.Inbound.Callers != nil {
				t.Header = s.Inbound.Callers.Header // one name on both sides of the service
			}
		}
		if k := out.Kubernetes; k != nil {
			if k.InboundPort == 0 {
				k.InboundPort = DefaultSidecarInboundPort
			}
			if k.ClusterDomain == "" {
				k.ClusterDomain = DefaultClusterDomain
			}
			if k.Balance == "" {
				k.Balance = DefaultBalance
			}
			setDuration(&k.Timeout, DefaultUpstreamTimeout)
		}
		for name, svc := range out.Services {
			if svc.Balance == "" {
				svc.Balance = DefaultBalance
			}
			setDuration(&svc.Timeout, DefaultUpstreamTimeout)
			out.Services[name] = svc
		}
	}
}

func (s *Sidecar) validate(doubt doubts) Errors {
	// The routes checker locates errors through a File's positions; the
	// sidecar's server and access_log sections are checked by the same code.
	c := &checker{f: &File{Path: s.Path, Positions: s.Positions, Server: s.Server, AccessLog: s.AccessLog, Tracing: s.Tracing}, doubt: doubt}
	if s.Version != 1 {
		c.errorf("version", "must be 1 (found %d)", s.Version)
	}
	c.checkServer()
	c.checkAccessLog()
	c.checkTracing()
	id := s.Identity
	c.sidecarTrustDomain = id.TrustDomain
	c.checkIdentitySource("identity", id.Source, id.Socket, id.SPIFFEID, id.TrustDomain, id.CertFile, id.KeyFile, id.BundleFile, id.FederatedBundles)
	var td spiffeid.TrustDomain
	if id.TrustDomain != "" {
		var err error
		if td, err = spiffeid.TrustDomainFromString(id.TrustDomain); err != nil {
			c.errorf("identity.trust_domain", "%q is not a trust domain: %v", id.TrustDomain, err)
		}
	}
	if s.Inbound == nil && s.Outbound == nil {
		c.errorf("", "a sidecar needs inbound, outbound or both")
	}
	listeners := map[string]string{"admin": s.Admin}
	if err := checkListenAddr(s.Admin); err != nil {
		c.errorf("admin", "%v", err)
	}
	if id.Source == SourceSPIRE {
		// The Workload API delivers the bundles of federated trust domains
		// too: callers and services there can verify.
		td = spiffeid.TrustDomain{}
	}
	if in := s.Inbound; in != nil {
		c.checkInbound(in, td, id.FederatedBundles)
		c.checkCallers(in)
		listeners["inbound.listen"] = in.Listen
	}
	if out := s.Outbound; out != nil {
		c.checkOutbound(out, td, id.FederatedBundles)
		if out.CallerToken != nil {
			c.checkCallerToken("outbound.caller_token", out.CallerToken)
			if s.Inbound == nil || s.Inbound.Callers == nil {
				c.errorf("outbound.caller_token", "needs inbound.callers: the tokens passed on are verified as the inbound ones are")
			}
		}
		listeners["outbound.listen"] = out.Listen
	}
	c.checkListenerClash(listeners)
	checkAdminAccess(c, "admin_access", s.AdminAccess, "admin", s.Admin)
	c.errs = doubt.filter(c.errs)
	c.errs.sort()
	c.warns.sort()
	s.Warnings = c.warns
	return c.errs
}

// checkInbound checks the inbound section; td, when set, is the only trust
// domain whose callers can verify, besides those of federated (a files
// identity's federated_bundles).
func (c *checker) checkInbound(in *Inbound, td spiffeid.TrustDomain, federated map[string]string) {
	if err := checkListenAddr(in.Listen); err != nil {
		c.errorf("inbound.listen", "%v", err)
	}
	switch {
	case in.ForwardTo == "":
		c.errorf("inbound.forward_to", "is required: the local service's host:port")
	case checkEndpoint(in.ForwardTo) != nil:
		c.errorf("inbound.forward_to", "%v", checkEndpoint(in.ForwardTo))
	case !isLoopback(in.ForwardTo):
		c.errorf("inbound.forward_to", "%q is not a loopback address: the hop to the local service is plain HTTP and must not leave the host", in.ForwardTo)
	}
	if len(in.Allow) == 0 && len(in.AllowTrustDomains) == 0 && len(in.AllowServiceAccounts) == 0 {
		c.errorf("inbound.allow", "list the caller SPIFFE IDs allowed in (or inbound.allow_trust_domains, inbound.allow_service_accounts): with none every caller is refused")
	}
	seen := map[string]bool{}
	for i, sa := range in.AllowServiceAccounts {
		p := fmt.Sprintf("inbound.allow_service_accounts[%d]", i)
		ns, name, ok := strings.Cut(sa, "/")
		switch {
		case !ok || !dns1123Label.MatchString(ns) || len(name) > 253 || !dns1123Subdomain.MatchString(name):
			c.errorf(p, "%q is not NAMESPACE/NAME of a ServiceAccount", sa)
			continue
		case c.sidecarTrustDomain == "":
			c.errorf(p, "needs identity.trust_domain: a ServiceAccount's ID is spiffe://TRUST_DOMAIN/ns/%s/sa/%s", ns, name)
			continue
		}
		id := ServiceAccountID(c.sidecarTrustDomain, ns, name)
		if seen[id] {
			c.errorf(p, "%s is listed twice", id)
		}
		seen[id] = true
	}
	for i, a := range in.Allow {
		p := fmt.Sprintf("inbound.allow[%d]", i)
		id, err := spiffeid.FromString(a)
		if err != nil {
			c.errorf(p, "%q is not a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH): %v", a, err)
			continue
		}
		if seen[id.String()] {
			c.errorf(p, "%s is listed twice", id)
		}
		seen[id.String()] = true
		if !td.IsZero() && !id.MemberOf(td) && federated[id.TrustDomain().Name()] == "" {
			c.errorf(p, "%s is outside the trust domain %s: its certificate could never verify against this bundle", id, td)
		}
	}
	for i, d := range in.AllowTrustDomains {
		p := fmt.Sprintf("inbound.allow_trust_domains[%d]", i)
		got, err := spiffeid.TrustDomainFromString(d)
		if err != nil {
			c.errorf(p, "%q is not a trust domain: %v", d, err)
			continue
		}
		if !td.IsZero() && got != td && federated[got.Name()] == "" {
			c.errorf(p, "%s is not the trust domain %s: its certificates could never verify against this bundle", got, td)
		}
	}
}

func (c *checker) checkOutbound(out *Outbound, td spiffeid.TrustDomain, federated map[string]string) {
	if err := checkListenAddr(out.Listen); err != nil {
		c.errorf("outbound.listen", "%v", err)
	} else if !isLoopback(out.Listen) {
		c.errorf("outbound.listen", "%q is not a loopback address: the outbound listener takes unauthenticated HTTP and sends it with this workload's identity, so only the local service may reach it", out.Listen)
	}
	if len(out.Services) == 0 && out.Kubernetes == nil {
		c.errorf("outbound.services", "list the services the local service calls (or take them from the cluster: outbound.kubernetes)")
	}
	if out.Kubernetes != nil {
		c.checkOutboundKubernetes(out.Kubernetes)
	}
	for _, name := range slices.Sorted(maps.Keys(out.Services)) {
		svc := out.Services[name]
		p := "outbound.services." + name
		c.checkName(p, "service", name)
		if out.Kubernetes != nil && strings.HasPrefix(name, KubernetesPrefix) {
			// The cluster's routes and upstreams are named with the
			// prefix; a file name never says it came from the cluster.
			c.errorf(p, "%q: names beginning with %q are the Kubernetes provider's", name, KubernetesPrefix)
		}
		if len(svc.Endpoints) == 0 {
			c.errorf(p+".endpoints", "is required: the service's sidecar addresses (host:port)")
		}
		seen := map[string]bool{}
		for i, ep := range svc.Endpoints {
			ep = strings.TrimSpace(ep)
			ip := fmt.Sprintf("%s.endpoints[%d]", p, i)
			if err := checkEndpoint(ep); err != nil {
				c.errorf(ip, "%v", err)
			}
			if seen[ep] {
				c.errorf(ip, "endpoint %q is listed twice", RedactValue(ep))
			}
			seen[ep] = true
		}
		switch id, err := spiffeid.FromString(svc.Identity); {
		case svc.Identity == "":
			c.errorf(p+".identity", "is required: the SPIFFE ID the service's sidecars must present")
		case err != nil:
			c.errorf(p+".identity", "%q is not a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH): %v", svc.Identity, err)
		case !td.IsZero() && !id.MemberOf(td) && federated[id.TrustDomain().Name()] == "":
			c.errorf(p+".identity", "%s is outside the trust domain %s: it could never verify against this bundle", id, td)
		}
		if !slices.Contains(balancers, svc.Balance) {
			c.errorf(p+".balance", "unknown balancer %q (one of %s)", svc.Balance, strings.Join(balancers, ", "))
		}
	}
}

// checkOutboundKubernetes checks outbound.kubernetes. The ServiceAccount
// IDs it makes need the trust domain they are named in.
func (c *checker) checkOutboundKubernetes(k *OutboundKubernetes) {
	const p = "outbound.kubernetes"
	if c.sidecarTrustDomain == "" {
		c.errorf(p, "needs identity.trust_domain: a pod's ID is spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT")
	}
	c.checkNamespaces(p+".namespaces", k.Namespaces)
	if k.InboundPort < 1 || k.InboundPort > 65535 {
		c.errorf(p+".inbound_port", "must be a port, 1 to 65535 (found %d)", k.InboundPort)
	}
	if len(k.ClusterDomain) > 253 || !dns1123Subdomain.MatchString(k.ClusterDomain) {
		c.errorf(p+".cluster_domain", "%q is not a DNS domain (lower-case letters, digits, '-' and '.')", k.ClusterDomain)
	}
	if !slices.Contains(balancers, k.Balance) {
		c.errorf(p+".balance", "unknown balancer %q (one of %s)", k.Balance, strings.Join(balancers, ", "))
	}
}

// checkListenerClash refuses two listeners on one port where their hosts
// overlap (the same host, or either one on every interface).
func (c *checker) checkListenerClash(listeners map[string]string) {
	keys := slices.Sorted(maps.Keys(listeners))
	for i, a := range keys {
		for _, b := range keys[i+1:] {
			ha, pa, errA := net.SplitHostPort(listeners[a])
			hb, pb, errB := net.SplitHostPort(listeners[b])
			if errA != nil || errB != nil || pa != pb || pa == "0" {
				continue
			}
			if ha == hb || isWildcardHost(ha) || isWildcardHost(hb) {
				c.errorf(b, "%q clashes with %s %q: each listener needs a port of its own", listeners[b], a, listeners[a])
			}
		}
	}
}

func isWildcardHost(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }

// isLoopback reports whether host:port names a loopback address.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// ServiceAccountID is the SPIFFE ID of a Kubernetes ServiceAccount's pods,
// as the mesh CA and SPIRE's Kubernetes registrations name them.
func ServiceAccountID(trustDomain, namespace, name string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + name
}
