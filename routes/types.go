// Package routes defines Causeway's declarative routes file: its types, loading
// with line:col positions, defaults and validation. It knows no other Causeway
// package; everything else reads these types.
package routes

import (
	"encoding/json"
	"slices"
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
	// RateLimitMemory bounds the in-memory rate limiter (docs/ratelimit.md).
	RateLimitMemory RateLimitMemory       `yaml:"rate_limit_memory"`
	Plugins         map[string]PluginInst `yaml:"plugins"`
	Upstreams       map[string]Upstream   `yaml:"upstreams"`
	Routes          []Route               `yaml:"routes"`
	Tracing         *Tracing              `yaml:"tracing"`
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
	// env holds the values that came from ${VAR} references (RedactEnv).
	env *envValues
	// merged marks a file with a provider's fragment in it (Merge).
	merged bool
	// known is, for each of Routes, what a MergeMemo knew of it (nil:
	// nothing; it is checked in full). Set by MergeWith for its Normalize
	// only.
	known []*knownRoute
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
	// Gateways, when set, are the only Gateways (NAMESPACE/NAME, of the
	// class) this edge serves: it translates and serves them and the
	// routes attached to them, and writes status for them only, so one
	// edge deployment per Gateway (or per set of Gateways) gives each its
	// own listeners and address. Empty: every Gateway of the class.
	Gateways []string `yaml:"gateways"`
	// Kubeconfig is a kubeconfig file; empty: the in-cluster service
	// account.
	Kubeconfig string `yaml:"kubeconfig"`
	// Policies watches CausewayPolicies (default true); false for a
	// cluster without the CausewayPolicy CRD. While it is on and the CRD
	// cannot be listed, the provider contributes nothing: routes are
	// never served without the policies meant for them.
	Policies *bool `yaml:"policies"`
	// StatusAddress is the address written into the status of every
	// Gateway this edge serves (status.addresses), where clients and
	// tools such as external-dns look for it. The edge does not assign
	// addresses: whatever is in front of it (a LoadBalancer Service, a
	// node port, a DNS name) does, so it is named here. Unset: no
	// address is written.
	StatusAddress *StatusAddress `yaml:"status_address"`
	// InboundPort is where a mesh Service's pod's sidecar listens when the
	// pod has no InboundPortAnnotation (default
	// DefaultSidecarInboundPort): a backend labelled MeshLabel is called
	// there over mTLS, as a sidecar's outbound.kubernetes calls it.
	InboundPort int `yaml:"inbound_port"`
	// ExternalNameServices lets routes use ExternalName Services as
	// backends (default false). Such a Service names any host the edge
	// can reach, its own admin listener and the cloud's metadata address
	// included, so any namespace that may create a Service and a route
	// could make the edge call it: allow it only where every namespace's
	// authors are trusted that far. Even then, a name that is an IP
	// address or localhost is refused.
	ExternalNameServices bool `yaml:"external_name_services"`
}

// StatusAddress names a Gateway's address in exactly one way.
type StatusAddress struct {
	// IP is a fixed IP address.
	IP string `yaml:"ip"`
	// Hostname is a fixed DNS name.
	Hostname string `yaml:"hostname"`
	// Service is NAMESPACE/NAME of the Service in front of the edge: its
	// load balancer's addresses (status.loadBalancer.ingress) once it has
	// them, or its cluster IPs when it is not of type LoadBalancer.
	Service string `yaml:"service"`
}

// ServesGateway reports whether this edge serves the Gateway ns/name
// (of its class): every one when Gateways is empty.
func (k KubernetesProvider) ServesGateway(ns, name string) bool {
	return len(k.Gateways) == 0 || slices.Contains(k.Gateways, ns+"/"+name)
}

// PoliciesOn reports whether CausewayPolicies are watched.
func (k KubernetesProvider) PoliciesOn() bool { return k.Policies == nil || *k.Policies }

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
	// HTTP1Engine is what serves HTTP/1.1 on the data listeners:
	// "causeway" (the edge's own engine) or "net/http" (Go's server, kept
	// for one release and logged as deprecated). HTTP/2 is net/http's with
	// either.
	// Left out, the CAUSEWAY_HTTP1_ENGINE environment variable chooses,
	// else HTTP1EngineDefault.
	HTTP1Engine string `yaml:"http1_engine"`
}

// HTTP/1.1 engines (server.http1_engine).
const (
	HTTP1EngineNetHTTP  = "net/http"
	HTTP1EngineCauseway = "causeway"
)

// HTTP1EngineDefault is the engine when neither the file nor the
// CAUSEWAY_HTTP1_ENGINE environment variable names one. net/http stays
// selectable, deprecated, for one release.
const HTTP1EngineDefault = HTTP1EngineCauseway

// HTTP1Engines are the values server.http1_engine takes.
var HTTP1Engines = []string{HTTP1EngineNetHTTP, HTTP1EngineCauseway}

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

	// FromProviders are certificates a provider added (the Secrets of
	// Gateway HTTPS listeners), after the file's own: never in a file,
	// never shown.
	FromProviders []InlineCertificate `yaml:"-" json:"-"`
}

// InlineCertificate is a certificate and key held in memory rather than
// named by file: what a provider read from its own source.
type InlineCertificate struct {
	// Source names where it came from, for errors and logs ("Secret
	// shop/web-tls"); never the key.
	Source  string
	CertPEM []byte
	KeyPEM  []byte
	// Hosts, when given, are the only server names the pair is served
	// for: the hostname of the Gateway listener that names it, exact
	// ("shop.example.com") or a wildcard ("*.example.com", one or more
	// labels before the suffix, as the Gateway API reads a listener's).
	// Without Hosts the pair is served for the names it carries. A pair
	// served by its own names only would let one Gateway's Secret, naming
	// another Gateway's host, win that host's handshakes.
	Hosts []string
	// Default makes the pair the one served to a client that names no
	// host, or a host no certificate is for, when the file has no
	// certificate of its own (the file's first is the default then).
	// Without a pair marked Default such handshakes are refused with an
	// unrecognized_name alert: the first pair of a list a tenant can add
	// to (the oldest Gateway's Secret) must not become what every
	// SNI-less client is shown.
	Default bool
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
	// HandshakeWait is how long a handshake waits for a certificate still
	// being ordered before it fails; the order goes on.
	HandshakeWait Duration `yaml:"handshake_wait"`
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
	// CallerToken sends mesh upstreams a signed token of the request's
	// principal (docs/mesh.md).
	CallerToken *CallerToken `yaml:"caller_token"`
}

// Authenticator is one named way of authenticating clients. Exactly one of
// JWT, APIKey, Basic, ExtAuthz and OIDC is set.
type Authenticator struct {
	JWT      *JWT      `yaml:"jwt"`
	APIKey   *APIKey   `yaml:"api_key"`
	Basic    *Basic    `yaml:"basic"`
	ExtAuthz *ExtAuthz `yaml:"ext_authz"`
	OIDC     *OIDC     `yaml:"oidc"`

	// SecretsFrom names where the in-memory secrets of a provider's
	// authenticator came from (a Kubernetes Secret, "Secret NS/NAME"), for
	// errors: they have no file to name. Never set by the file.
	SecretsFrom string `yaml:"-" json:"-"`
}

// OIDC signs browsers in through an OpenID Connect provider
// (authorization-code flow with PKCE) and keeps the session in a sealed
// cookie.
type OIDC struct {
	// Issuer is the provider's issuer URL; its discovery document is
	// Issuer/.well-known/openid-configuration.
	Issuer string `yaml:"issuer"`
	// AllowInsecureHTTP lets the issuer be plain http on a host that is
	// not loopback: anyone on the path could then mint sessions.
	AllowInsecureHTTP bool   `yaml:"allow_insecure_http"`
	ClientID          string `yaml:"client_id"`
	// ClientSecretEnv names the environment variable holding the client
	// secret (none: a public client, PKCE only).
	ClientSecretEnv string `yaml:"client_secret_env"`
	// ClientSecret is the client secret itself, held in memory: a
	// provider's, read from a Kubernetes Secret. Never from the file,
	// never shown.
	ClientSecret string `yaml:"-" json:"-"`
	// PrivateKeyFile is a PEM private key (RSA, or ECDSA P-256, P-384 or
	// P-521) the client authenticates with at the token endpoint by
	// signing a JWT assertion (private_key_jwt, OIDC Core 9), instead of a
	// shared secret: the provider holds only the public key. Exclusive
	// with ClientSecretEnv.
	PrivateKeyFile string `yaml:"private_key_file"`
	// PrivateKeyID is the assertion's kid: the key's id as registered at
	// the provider (none: no kid, for providers that hold one key).
	PrivateKeyID string `yaml:"private_key_id"`
	// Scopes requested; openid is always added (default DefaultOIDCScopes).
	Scopes []string `yaml:"scopes"`
	// RedirectPath is the callback on the request's own host (default
	// DefaultOIDCRedirectPath). A route using the authenticator must match it.
	RedirectPath string `yaml:"redirect_path"`
	// RedirectURL is the whole callback URL, registered at the provider
	// (https://app.example.com/oauth2/callback). Set, it is the only
	// redirect_uri the edge ever sends, whatever Host or X-Forwarded-*
	// a request carries, and its path is the callback path. Unset, the
	// callback is on the scheme and host the client addressed: the
	// request's own, or X-Forwarded-Proto and X-Forwarded-Host from a peer
	// in trusted_proxies (a load balancer that terminates TLS).
	RedirectURL string `yaml:"redirect_url" secret:"url"`
	// LogoutPath ends the session, then signs out at the provider when it
	// advertises an end_session_endpoint (none: no logout path).
	LogoutPath string `yaml:"logout_path"`
	// PostLogoutRedirectURL is where the provider sends the browser after
	// signing out (registered there); without a provider logout, where the
	// edge does (default "/").
	PostLogoutRedirectURL string `yaml:"post_logout_redirect_url" secret:"url"`
	// ForwardClaims maps an ID token claim to the upstream header that
	// carries it.
	ForwardClaims map[string]string `yaml:"forward_claims"`
	// ForwardAccessToken sends the access token upstream as
	// Authorization: Bearer.
	ForwardAccessToken bool `yaml:"forward_access_token"`
	// RefreshBefore is how long before the ID or access token expires the
	// refresh token is used (default DefaultOIDCRefreshBefore).
	RefreshBefore Duration `yaml:"refresh_before"`
	// OnError is deny (default) or allow: what happens to a session whose
	// tokens have expired when the provider cannot be reached to refresh
	// them. A sign-in always needs the provider.
	OnError string `yaml:"on_error"`
	// StatusOnError answers a request the provider's absence refuses
	// (default DefaultOIDCStatusOnError).
	StatusOnError int `yaml:"status_on_error"`
	// Realm is the authenticator's name in errors (default: its name).
	Realm   string       `yaml:"realm"`
	Session *OIDCSession `yaml:"session"`
}

// OIDCSession is the sealed session cookie of an oidc authenticator.
type OIDCSession struct {
	// KeysEnv names the environment variable holding the sealing keys:
	// base64 of 32 bytes each, separated by commas; the first seals, all
	// open.
	KeysEnv string `yaml:"keys_env"`
	// Keys is the value KeysEnv would hold, in memory: a provider's, read
	// from a Kubernetes Secret. Never from the file, never shown.
	Keys string `yaml:"-" json:"-"`
	// Cookie is the cookie's name (default "__Host-causeway-" + the
	// authenticator's name); the sign-in state cookie is Cookie + "-login".
	Cookie string `yaml:"cookie"`
	// IdleTimeout ends a session unused this long (default
	// DefaultOIDCIdleTimeout).
	IdleTimeout Duration `yaml:"idle_timeout"`
	// AbsoluteTimeout ends a session this long after sign-in, used or not
	// (default DefaultOIDCAbsoluteTimeout).
	AbsoluteTimeout Duration `yaml:"absolute_timeout"`
	// Store is where the session lives: cookie (the default: all of it
	// sealed in the cookie) or redis (the cookie carries only a sealed
	// random id; tokens and claims are kept in the redis section's Redis,
	// so sessions survive restarts, are shared by replicas and a logout
	// revokes them everywhere).
	Store string `yaml:"store"`
}

// ExtAuthz asks an external authorization server about each request.
// Exactly one of GRPCAddress, HTTPURL and OPAURL is set.
type ExtAuthz struct {
	// GRPCAddress is host:port of an envoy.service.auth.v3.Authorization
	// server (Envoy's ext_authz API).
	GRPCAddress string `yaml:"grpc_address"`
	// GRPCTLS speaks TLS to GRPCAddress (roots: CAFile, else the system's).
	GRPCTLS bool `yaml:"grpc_tls"`
	// HTTPURL is a forward-auth endpoint (Traefik's forwardAuth): 2xx
	// allows, anything else is the answer to the client.
	HTTPURL string `yaml:"http_url" secret:"url"`
	// OPAURL is an OPA data API URL (http://opa:8181/v1/data/PATH) whose
	// input is the request as Envoy's CheckRequest, as for OPA's Envoy plugin.
	OPAURL string `yaml:"opa_url" secret:"url"`
	// CAFile holds the roots that verify an https or gRPC TLS server.
	CAFile string `yaml:"ca_file"`
	// AllowInsecure lets a server that is not on loopback be reached
	// without TLS.
	AllowInsecure bool `yaml:"allow_insecure"`
	// Timeout bounds one check (default DefaultExtAuthzTimeout).
	Timeout Duration `yaml:"timeout"`
	// Headers are the request headers sent (default: all but hop-by-hop).
	Headers []string `yaml:"headers"`
	// Body sends the request body, up to a size.
	Body *ExtAuthzBody `yaml:"body"`
	// OnError is allow or deny (default): what happens when the server
	// cannot be reached, times out or answers nonsense.
	OnError string `yaml:"on_error"`
	// StatusOnError is the status of a request denied by on_error: deny
	// (default 403, as Envoy's status_on_error).
	StatusOnError int `yaml:"status_on_error"`
	// UpstreamHeaders are the response headers of an allowing http_url
	// server copied to the upstream request (Traefik's authResponseHeaders).
	// A gRPC server's OK headers and an OPA decision's headers all go
	// upstream, as in Envoy; for them the list names the headers whose
	// client-sent copies are removed, so that an allow that does not set
	// one never passes the client's on. Client copies are removed in every
	// mode.
	UpstreamHeaders []string `yaml:"upstream_headers"`
	// ClaimsFromHeaders maps a header an http_url server sets on an allow
	// to a claim of the principal, for require_claims, forward_claims and
	// rate limits (gRPC and OPA give claims as dynamic_metadata).
	ClaimsFromHeaders map[string]string `yaml:"claims_from_headers"`
	// ForwardClaims maps a claim name to the upstream header that carries it.
	ForwardClaims map[string]string `yaml:"forward_claims"`
	// Cache remembers allow decisions for a short time.
	Cache *ExtAuthzCache `yaml:"cache"`
}

// ExtAuthzBody sends up to MaxBytes of the request body to the server.
type ExtAuthzBody struct {
	MaxBytes int `yaml:"max_bytes"`
	// AllowPartial sends the first MaxBytes of a longer body; without it a
	// longer body gets 413, as in Envoy.
	AllowPartial bool `yaml:"allow_partial"`
}

// ExtAuthzCache remembers allow decisions by Key for TTL.
type ExtAuthzCache struct {
	TTL Duration `yaml:"ttl"`
	// Key lists what identifies a decision: method, host, path (with the
	// query), client_ip, header:NAME.
	Key  []string `yaml:"key"`
	Size int      `yaml:"size"`
}

// Basic authenticates clients by HTTP Basic credentials checked against an
// htpasswd file of bcrypt or argon2id hashes.
type Basic struct {
	// HtpasswdFile holds lines of user:hash.
	HtpasswdFile string `yaml:"htpasswd_file"`
	// Htpasswd is what HtpasswdFile would hold, in memory: a provider's,
	// read from a Kubernetes Secret. Never from the file, never shown.
	Htpasswd []byte `yaml:"-" json:"-"`
	// Realm is sent in WWW-Authenticate (default: the authenticator's name).
	Realm string `yaml:"realm"`
	// KeepToken forwards the Authorization header to the upstream
	// (default: stripped).
	KeepToken bool `yaml:"keep_token"`
	// ForwardUser sets this upstream header to the user name.
	ForwardUser string `yaml:"forward_user"`
	// CacheTTL is how long a verified user:password pair is remembered, so
	// that a client does not pay a bcrypt or argon2id verification on every
	// request (default DefaultBasicCacheTTL; 0s turns the cache off).
	CacheTTL *Duration `yaml:"cache_ttl"`
	// FailureLimit bounds failed attempts per client address (default
	// DefaultBasicFailureLimit per DefaultBasicFailurePer).
	FailureLimit *FailureLimit `yaml:"failure_limit"`
}

// FailureLimit allows Limit failed attempts per Per from one client, Burst
// at once (default Limit); past it the client gets 429 until a token
// comes back, whatever it sends.
type FailureLimit struct {
	Limit int      `yaml:"limit"`
	Per   Duration `yaml:"per"`
	Burst int      `yaml:"burst"`
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
	// HMACSecret is the HMAC secret itself, in memory: a provider's, read
	// from a Kubernetes Secret. Never from the file, never shown.
	HMACSecret []byte   `yaml:"-" json:"-"`
	Algorithms []string `yaml:"algorithms"`
	Leeway     Duration `yaml:"leeway"`
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
	// Keys is what KeysFile would hold, in memory: a provider's, made from
	// a Kubernetes Secret. Never from the file, never shown.
	Keys []byte `yaml:"-" json:"-"`
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
	// Mode is how a limit counted in Redis decides: exact (the default,
	// one round trip per decision) or lease (tokens taken from Redis in
	// leases and spent locally; docs/ratelimit.md).
	Mode string `yaml:"mode"`
}

// RateLimitMemory bounds the table of the in-memory rate limiter (the
// limiter without redis, and the fallback of on_error: allow), so that a
// client rotating keys cannot grow it without bound.
type RateLimitMemory struct {
	// MaxKeys is the most keys held (0: the default, 100,000). At the
	// bound, new keys share overflow buckets; no key's count is dropped
	// before its bucket has refilled.
	MaxKeys int `yaml:"max_keys"`
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
	Scheme string `yaml:"scheme"`
	// TLS verifies an https upstream against its own roots and names
	// instead of the system roots and the endpoint's address.
	TLS            *UpstreamTLS    `yaml:"tls"`
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
	// Timeout is the longest a request on this route may take, from its
	// arrival to the end of the response, stages (authentication, rate
	// limits, plugins) and retries included: 504 when the response has not
	// started, the response cut when it has. A protocol upgrade (WebSocket)
	// is bounded until it succeeds, not after. 0: no bound but the
	// upstream's own timeouts (Gateway API's HTTPRoute timeouts.request).
	Timeout Duration `yaml:"timeout"`
	// HostRewrite replaces the Host the upstream receives (host or
	// host:port); X-Forwarded-Host and Forwarded still carry the client's.
	// Empty: the client's Host is passed on. Gateway API's URLRewrite
	// hostname; Envoy's host_rewrite_literal.
	HostRewrite string `yaml:"host_rewrite"`
}

// Match selects requests. Every set field must match.
type Match struct {
	Host       string `yaml:"host"`
	Path       string `yaml:"path"`
	PathPrefix string `yaml:"path_prefix"`
	// PathRegex is an RE2 regular expression the whole cleaned path must
	// match (anchored at both ends whether or not it says so); exclusive
	// with path and path_prefix. Gateway API's RegularExpression.
	PathRegex string            `yaml:"path_regex"`
	Methods   []string          `yaml:"methods"`
	Headers   map[string]string `yaml:"headers"`
	Query     map[string]string `yaml:"query"`
	// HeadersRegex and QueryRegex match a header's (its values joined
	// by ",", as Envoy does) or a query parameter's (its first value)
	// whole value against an RE2 expression. Gateway API's
	// RegularExpression header and query matches.
	HeadersRegex map[string]string `yaml:"headers_regex"`
	QueryRegex   map[string]string `yaml:"query_regex"`
	// TLS, when true, matches only requests that reached the edge over TLS
	// (its https listener): how the connection was made, never what the
	// request line or a header says. Gateway API routes attached only to
	// HTTPS listeners get it.
	TLS bool `yaml:"tls"`
	// Plain, when true, matches only requests that reached the edge
	// without TLS (its http listener): tls's counterpart, and exclusive
	// with it. Gateway API routes attached only to HTTP listeners get it
	// where an HTTPS listener has the host, so that over TLS only that
	// listener's routes answer.
	Plain bool `yaml:"plain"`
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
	// env holds the file's values from ${VAR} references, masked in the
	// errors ErrorAt makes.
	env *envValues
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
