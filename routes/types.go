// Package routes defines Causeway's declarative routes file: its types, loading
// with line:col positions, defaults and validation. It knows no other Causeway
// package; everything else reads these types.
package routes

import (
	"encoding/json"
	"time"

	"go.yaml.in/yaml/v3"
)

// File is one routes file, decoded and defaulted. Field names follow the YAML
// keys of the public contract (docs/routes.md and the generated
// docs/routes.schema.json).
type File struct {
	Version        int                      `yaml:"version"`
	Listen         Listen                   `yaml:"listen"`
	TrustedProxies []string                 `yaml:"trusted_proxies"`
	Server         Server                   `yaml:"server"`
	AccessLog      AccessLog                `yaml:"access_log"`
	TLS            *TLS                     `yaml:"tls"`
	Redis          *Redis                   `yaml:"redis"`
	Mesh           *Mesh                    `yaml:"mesh"`
	Authenticators map[string]Authenticator `yaml:"authenticators"`
	RateLimits     map[string]RateLimit     `yaml:"rate_limits"`
	Plugins        map[string]PluginInst    `yaml:"plugins"`
	Upstreams      map[string]Upstream      `yaml:"upstreams"`
	Routes         []Route                  `yaml:"routes"`
	Tracing        *Tracing                 `yaml:"tracing"`
	// Admin guards the admin listener (listen.admin).
	Admin AdminAccess `yaml:"admin"`
	// Providers are sources of routes besides this file (docs/kubernetes.md).
	Providers Providers `yaml:"providers"`

	// Path is the file the configuration was read from ("" when loaded from bytes
	// without a name). Positions maps key paths such as "routes[0].upstream" to
	// where they stand in the file, for errors found after decoding.
	Path      string         `yaml:"-" json:"-"`
	Positions map[string]Pos `yaml:"-" json:"-"`
	// Warnings are footguns validation found in an accepted file (each
	// with its position): validate prints them, the edge logs them.
	Warnings Errors `yaml:"-" json:"-"`
	// merged marks a file with a provider's fragment in it (Merge).
	merged bool
}

// AdminAccess guards the admin API against other hosts and other users of
// the machine. A request is answered only when its Host is an IP literal,
// localhost, or listed in AllowedHosts (a page served from a DNS name that
// a browser resolves to the admin address cannot read it: DNS rebinding).
// With TokenEnv, every path but /healthz and /readyz (the probes) needs
// Authorization: Bearer with the token held in that environment variable.
type AdminAccess struct {
	AllowedHosts []string `yaml:"allowed_hosts"`
	TokenEnv     string   `yaml:"token_env"`
}

// Providers are the sources whose routes and upstreams are merged with the
// file's own into one model, validated and swapped as one generation.
type Providers struct {
	Kubernetes *KubernetesProvider `yaml:"kubernetes"`
}

// KubernetesProvider turns Gateway API objects (GatewayClass, Gateway,
// HTTPRoute) and the Services and EndpointSlices they name into routes and
// upstreams. The names it makes begin with KubernetesPrefix.
type KubernetesProvider struct {
	// GatewayClass is the name of the GatewayClass whose Gateways this
	// edge serves (default "causeway"); the class must name
	// KubernetesControllerName as its controllerName.
	GatewayClass string `yaml:"gateway_class"`
	// Namespaces limits what is watched (empty: every namespace). Smaller
	// scopes need only namespaced RBAC, except for GatewayClasses, which
	// are cluster-scoped.
	Namespaces []string `yaml:"namespaces"`
	// Kubeconfig is a kubeconfig file; empty: the in-cluster service
	// account.
	Kubeconfig string `yaml:"kubeconfig"`
}

// KubernetesControllerName is the GatewayClass controllerName the edge
// answers for; KubernetesPrefix begins every route and upstream name the
// Kubernetes provider makes, so they cannot collide with the file's.
const (
	KubernetesControllerName = "causeway.dev/gateway-controller"
	KubernetesPrefix         = "k8s."
	DefaultGatewayClass      = "causeway"
)

// Listen holds the listener addresses. An empty address disables that listener.
type Listen struct {
	HTTP  string `yaml:"http"`
	HTTPS string `yaml:"https"`
	Admin string `yaml:"admin"`
}

// Server holds the timeouts and limits that protect the edge from slow or
// greedy clients. Zero values are replaced by the defaults in Defaults.
type Server struct {
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	ReadTimeout       Duration `yaml:"read_timeout"`
	WriteTimeout      Duration `yaml:"write_timeout"`
	IdleTimeout       Duration `yaml:"idle_timeout"`
	MaxHeaderBytes    int      `yaml:"max_header_bytes"`
	ShutdownTimeout   Duration `yaml:"shutdown_timeout"`
	// MaxConnectionsPerIP caps concurrent connections from one client
	// address on each data listener (0, the default: no cap; behind a load
	// balancer every connection comes from a few addresses).
	// MaxConnections caps them in total on each data listener; left out of
	// the file, the gateway derives a cap from the file-descriptor limit,
	// and an explicit 0 means no cap.
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	MaxConnections      int `yaml:"max_connections"`
	// BodyReadTimeout is the longest the edge waits for the next bytes of a
	// request body (reset at every read, so a slow but moving upload lives);
	// a pointer so that an explicit 0 (off) differs from "not set" (the
	// default, DefaultBodyReadTimeout).
	BodyReadTimeout *Duration `yaml:"body_read_timeout"`
	// WriteStallTimeout is the longest one write of the response may make
	// no progress (a client that stopped reading); then the connection
	// (HTTP/2: the stream) is closed and the upstream request cancelled.
	// A pointer for the same reason as BodyReadTimeout; 0 turns it off.
	WriteStallTimeout *Duration `yaml:"write_stall_timeout"`
	// PathNormalization is "default" (the empty value) or "strict". Both
	// refuse encoded control characters and resolve dot segments; strict
	// also refuses what upstreams decode or split differently from the
	// edge: double-encoded ".", "/" and "\", backslashes, and ";"
	// parameters.
	PathNormalization string `yaml:"path_normalization"`
	// AllowUnderscoreHeaders keeps request headers whose names contain "_".
	// Off by default, as in nginx: CGI, WSGI and PHP map X_User_Id and
	// X-User-Id to the same variable, so a client could pass one as the
	// other past a check that only knows the dashed name.
	AllowUnderscoreHeaders bool `yaml:"allow_underscore_headers"`
}

// Path normalisation modes (server.path_normalization).
const (
	PathNormalizationDefault = "default"
	PathNormalizationStrict  = "strict"
)

// AccessLog configures the one-line-per-request JSON log.
type AccessLog struct {
	// Output is "stdout" (default), "stderr", "off", or a file path.
	Output string `yaml:"output"`
	// Sample is the share of requests logged, 0 < Sample <= 1 (default 1).
	// Responses with status >= 500 are always logged.
	Sample float64 `yaml:"sample"`
}

// TLS configures north-south TLS termination on listen.https.
type TLS struct {
	MinVersion   string        `yaml:"min_version"`
	Certificates []Certificate `yaml:"certificates"`
	ACME         *ACME         `yaml:"acme"`
	ClientCAFile string        `yaml:"client_ca_file"`
	ClientAuth   string        `yaml:"client_auth"` // require | verify_if_given
	HSTS         *HSTS         `yaml:"hsts"`
	// RedirectHTTP makes listen.http redirect to HTTPS (308); default true.
	// With false, listen.http serves the routes too (ACME challenges still
	// answered), e.g. behind a load balancer that terminates some TLS itself.
	RedirectHTTP *bool `yaml:"redirect_http"`
}

// Certificate is one static certificate/key pair, chosen by SNI.
type Certificate struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// ACME configures certificates obtained with golang.org/x/crypto/acme/autocert.
type ACME struct {
	Email        string    `yaml:"email"`
	Hosts        []string  `yaml:"hosts"`
	CacheDir     string    `yaml:"cache_dir"`
	Cache        string    `yaml:"cache"` // dir (default) | redis
	DirectoryURL string    `yaml:"directory_url" secret:"url"`
	CARootsFile  string    `yaml:"ca_roots_file"`
	OnDemand     *OnDemand `yaml:"on_demand"`
}

// OnDemand lets a name outside acme.hosts get a certificate at its first
// handshake when the Ask endpoint answers 200 for it.
type OnDemand struct {
	Ask string `yaml:"ask" secret:"url"`
	// RateLimit bounds orders: at most Burst at once, then one every Interval.
	Interval Duration `yaml:"interval"`
	Burst    int      `yaml:"burst"`
}

// HSTS adds Strict-Transport-Security to HTTPS responses.
type HSTS struct {
	MaxAge            Duration `yaml:"max_age"`
	IncludeSubdomains bool     `yaml:"include_subdomains"`
	Preload           bool     `yaml:"preload"`
}

// Redis configures the shared store for rate limits (and the ACME cache).
type Redis struct {
	URL         string   `yaml:"url" secret:"url"`
	Addrs       []string `yaml:"addrs"`
	MasterName  string   `yaml:"master_name"` // Sentinel
	Username    string   `yaml:"username"`
	PasswordEnv string   `yaml:"password_env"`
	DB          int      `yaml:"db"`
	OnError     string   `yaml:"on_error"` // allow | deny
	Timeout     Duration `yaml:"timeout"`
	KeyPrefix   string   `yaml:"key_prefix"`
}

// Mesh is the edge's own workload identity, used for mTLS to upstreams.
type Mesh struct {
	TrustDomain string `yaml:"trust_domain"`
	// Source is where the identity comes from: "files" (cert_file, key_file,
	// bundle_file; the default) or "spire" (the SPIFFE Workload API at
	// Socket).
	Source string `yaml:"source"`
	// Socket is the Workload API address for source spire
	// (unix:///run/spire/agent/api.sock); empty: SPIFFE_ENDPOINT_SOCKET.
	Socket string `yaml:"socket"`
	// SPIFFEID, for source spire, picks this workload's SVID by its ID when
	// the Workload API hands out several (more than one registration entry
	// matches the process); empty: the agent's first.
	SPIFFEID   string `yaml:"spiffe_id"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	BundleFile string `yaml:"bundle_file"`
	// FederatedBundles, for source files, maps other trust domains to
	// their bundle files, so that peers of those domains verify (e.g. a
	// SPIRE deployment's domain, its bundle from `spire-server bundle
	// show`). With source spire the Workload API delivers them.
	FederatedBundles map[string]string `yaml:"federated_bundles"`
	// Require refuses upstreams without mesh_identity.
	Require bool `yaml:"require"`
}

// Authenticator is one named way of authenticating clients. Exactly one of
// JWT and APIKey is set.
type Authenticator struct {
	JWT    *JWT    `yaml:"jwt"`
	APIKey *APIKey `yaml:"api_key"`
}

// JWT verifies JSON Web Tokens.
type JWT struct {
	Issuer    string   `yaml:"issuer"`
	Audiences []string `yaml:"audiences"`
	JWKSURL   string   `yaml:"jwks_url" secret:"url"`
	// AllowInsecureHTTP lets jwks_url be plain http to a host that is not
	// loopback: anyone on the path could then swap the keys.
	AllowInsecureHTTP bool     `yaml:"allow_insecure_http"`
	PublicKeyFiles    []string `yaml:"public_key_files"`
	HMACSecretEnv     string   `yaml:"hmac_secret_env"`
	HMACSecretFile    string   `yaml:"hmac_secret_file"`
	Algorithms        []string `yaml:"algorithms"`
	Leeway            Duration `yaml:"leeway"`
	// ForwardClaims maps a claim name to the upstream header that carries it.
	ForwardClaims map[string]string `yaml:"forward_claims"`
	// From says where the token is read; default: Authorization: Bearer.
	From *TokenSource `yaml:"from"`
	// KeepToken forwards the credential to the upstream (default: stripped).
	KeepToken bool `yaml:"keep_token"`
	// JWKSRefresh bounds the JWKS cache lifetime taken from Cache-Control.
	JWKSRefresh *Bounds `yaml:"jwks_refresh"`
	// Realm is sent in WWW-Authenticate (default: the authenticator's name).
	Realm string `yaml:"realm"`
	// MaxTokenBytes refuses longer tokens before any parsing (default 8192).
	MaxTokenBytes int `yaml:"max_token_bytes"`
	// TokenCache is how many verified tokens are remembered until their exp
	// (default DefaultTokenCache; 0 turns the cache off).
	TokenCache *int `yaml:"token_cache"`
}

// TokenSource names one place a credential is read from.
type TokenSource struct {
	Header string `yaml:"header"`
	Cookie string `yaml:"cookie"`
	Query  string `yaml:"query"`
}

// Bounds is a [Min, Max] duration range.
type Bounds struct {
	Min Duration `yaml:"min"`
	Max Duration `yaml:"max"`
}

// APIKey authenticates clients by a key compared against hashed keys.
type APIKey struct {
	Header   string `yaml:"header"`
	Query    string `yaml:"query"`
	KeysFile string `yaml:"keys_file"` // lines of "name:sha256hex"
	// KeepToken forwards the key to the upstream (default: stripped).
	KeepToken bool `yaml:"keep_token"`
	// ForwardName sets this upstream header to the key's name.
	ForwardName string `yaml:"forward_name"`
}

// RateLimit allows Limit requests per Per on average, and Burst at once.
type RateLimit struct {
	// Key is client_ip, header:NAME, claim:NAME, api_key, route, or several
	// of them joined with "+" (e.g. "route+client_ip").
	Key   string   `yaml:"key"`
	Limit int      `yaml:"limit"`
	Per   Duration `yaml:"per"`
	Burst int      `yaml:"burst"`
	// IPv6Prefix is how many leading bits of an IPv6 client address the
	// client_ip part keeps (default 64): one host usually owns a whole /64
	// and could otherwise rotate addresses to escape its limit.
	IPv6Prefix int `yaml:"ipv6_prefix"`
}

// PluginInst is a named, configured instance of a registered plugin.
type PluginInst struct {
	Use    string `yaml:"use"`
	Config Raw    `yaml:"config"`
}

// Tracing exports OpenTelemetry spans over OTLP/HTTP. Without it the edge
// still propagates W3C trace context (and logs the trace id) but records
// nothing.
type Tracing struct {
	// OTLPEndpoint is the collector's OTLP/HTTP base URL, e.g.
	// http://otel-collector:4318 (spans are POSTed to /v1/traces).
	OTLPEndpoint string `yaml:"otlp_endpoint" secret:"url"`
	// SampleRatio is the share of new traces recorded, in [0, 1] (default
	// 1). A trace the caller already sampled or refused keeps its decision.
	SampleRatio *float64 `yaml:"sample_ratio"`
	// ServiceName is the service.name resource attribute (default
	// causeway-edge, or causeway-sidecar in a sidecar file).
	ServiceName string `yaml:"service_name"`
}

// Upstream is a named group of endpoints requests are proxied to.
type Upstream struct {
	Endpoints    []string `yaml:"endpoints"`
	DNS          string   `yaml:"dns"`
	MeshIdentity string   `yaml:"mesh_identity"`
	Balance      string   `yaml:"balance"`
	// Scheme is http (default) or https for upstreams outside the mesh that
	// terminate TLS themselves.
	Scheme         string          `yaml:"scheme"`
	HealthCheck    *HealthCheck    `yaml:"health_check"`
	Timeout        Duration        `yaml:"timeout"`
	ConnectTimeout Duration        `yaml:"connect_timeout"`
	MaxIdlePerHost int             `yaml:"max_idle_per_endpoint"`
	Retries        *Retries        `yaml:"retries"`
	CircuitBreaker *CircuitBreaker `yaml:"circuit_breaker"`

	// DNSSRV is an SRV name (_http._tcp.orders.internal) whose targets and
	// ports are the endpoints; exclusive with endpoints and dns.
	DNSSRV string `yaml:"dns_srv"`
	// DNSServer is the resolver (host:port) asked for dns and dns_srv
	// (default: the first nameserver of /etc/resolv.conf).
	DNSServer string `yaml:"dns_server"`
	// DNSRefresh bounds how often names are resolved again: the answer's TTL,
	// but not sooner than Min nor later than Max.
	DNSRefresh *Bounds `yaml:"dns_refresh"`
	// EndpointsFile lists endpoints, one host:port (optionally followed by a
	// weight) a line; the file is watched and the set follows its changes.
	EndpointsFile string `yaml:"endpoints_file"`
	// Weights gives endpoints of the weighted and ring_hash balancers a
	// weight other than 1, by host:port.
	Weights map[string]int `yaml:"weights"`
	// HashOn is the ring_hash key: header:NAME, cookie:NAME or client_ip.
	HashOn string `yaml:"hash_on"`
	// Protocol to the upstream: http1 (default), h2c (HTTP/2 without TLS, for
	// gRPC servers) or h2 (HTTP/2 over TLS only).
	Protocol string `yaml:"protocol"`
	// Mirror copies requests to a shadow upstream whose answers are dropped.
	Mirror *Mirror `yaml:"mirror"`
}

// Mirror sends a copy of a share of an upstream's requests to another
// upstream, fire and forget.
type Mirror struct {
	Upstream string `yaml:"upstream"`
	// Percent of requests mirrored (default 100).
	Percent int `yaml:"percent"`
	// MaxInflight bounds the copies in flight; beyond it copies are dropped
	// (default 64).
	MaxInflight int `yaml:"max_inflight"`
	// MaxBody is the largest request body copied (default 64KiB); requests
	// with a larger or unknown-length body are not mirrored.
	MaxBody int `yaml:"max_body"`
}

// HealthCheck is an active health check.
type HealthCheck struct {
	Path               string   `yaml:"path"`
	Interval           Duration `yaml:"interval"`
	Timeout            Duration `yaml:"timeout"`
	HealthyThreshold   int      `yaml:"healthy_threshold"`
	UnhealthyThreshold int      `yaml:"unhealthy_threshold"`
}

// Retries says when a failed attempt is tried again.
type Retries struct {
	Attempts      int      `yaml:"attempts"`
	On            []string `yaml:"on"`
	BudgetPercent int      `yaml:"budget_percent"`
	PerTryTimeout Duration `yaml:"per_try_timeout"`
	// Backoff is the first wait before a retry; it doubles per retry up to
	// MaxBackoff, with full jitter.
	Backoff    Duration `yaml:"backoff"`
	MaxBackoff Duration `yaml:"max_backoff"`
	// NonIdempotent allows retrying POST and PATCH (only ever with a small,
	// replayable body).
	NonIdempotent bool `yaml:"non_idempotent"`
	// MaxBody is the largest request body kept to be replayed (default
	// 64KiB); a request with a larger body is tried once.
	MaxBody int `yaml:"max_body"`
}

// CircuitBreaker bounds concurrency and ejects failing endpoints.
type CircuitBreaker struct {
	MaxPending     int      `yaml:"max_pending"`
	MaxRequests    int      `yaml:"max_requests"`
	Consecutive5xx int      `yaml:"consecutive_5xx"`
	EjectFor       Duration `yaml:"eject_for"`
	// MaxEjectedPercent caps the share of endpoints ejected at once
	// (default 50).
	MaxEjectedPercent int `yaml:"max_ejected_percent"`
	// ConsecutiveFailures of the upstream as a whole open the breaker
	// (0: never); it stays open for OpenFor, then lets HalfOpenRequests
	// probes through.
	ConsecutiveFailures int      `yaml:"consecutive_failures"`
	OpenFor             Duration `yaml:"open_for"`
	HalfOpenRequests    int      `yaml:"half_open_requests"`
}

// Route sends matching requests to an upstream.
type Route struct {
	Name          string            `yaml:"name"`
	Match         Match             `yaml:"match"`
	Auth          StringList        `yaml:"auth"`
	RequireClaims map[string]string `yaml:"require_claims"`
	RateLimit     StringList        `yaml:"rate_limit"`
	Plugins       []string          `yaml:"plugins"`
	StripPrefix   bool              `yaml:"strip_prefix"`
	Upstream      string            `yaml:"upstream"`
	Split         []SplitTarget     `yaml:"split"`
}

// Match selects requests. Every set field must match.
type Match struct {
	Host       string            `yaml:"host"`
	Path       string            `yaml:"path"`
	PathPrefix string            `yaml:"path_prefix"`
	Methods    []string          `yaml:"methods"`
	Headers    map[string]string `yaml:"headers"`
	Query      map[string]string `yaml:"query"`
}

// SplitTarget is one weighted share of a route's traffic.
type SplitTarget struct {
	Upstream string `yaml:"upstream"`
	Weight   int    `yaml:"weight"`
	// Headers, when set, send every request carrying all of them (exact
	// values) to this target whatever the weights say (X-Canary: "true").
	Headers map[string]string `yaml:"headers"`
}

// Pos is a position in a file, 1-based.
type Pos struct {
	Line int `json:"line"`
	Col  int `json:"col"`
}

// Duration is a time.Duration written as a Go duration string ("250ms").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalText writes d as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// StringList is one string or a list of strings.
type StringList []string

// Raw is a YAML value kept undecoded (a plugin's config), decoded later by
// its owner with the same strict rules and positions as the rest of the file.
type Raw struct {
	Node *yaml.Node `json:"-"`
	// File and Path locate the value for error messages.
	File string `json:"-"`
	Path string `json:"-"`
	// expanded marks the nodes that came from ${VAR} references, which
	// number and boolean fields accept even when quoted.
	expanded map[*yaml.Node]bool
}

// MarshalJSON shows the raw value as JSON (for the admin API's /config).
func (r Raw) MarshalJSON() ([]byte, error) {
	if r.Node == nil {
		return []byte("null"), nil
	}
	var v any
	if err := r.Node.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// MarshalYAML writes d as a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// MarshalYAML writes the raw value as it was in the file.
func (r Raw) MarshalYAML() (any, error) { return r.Node, nil }
