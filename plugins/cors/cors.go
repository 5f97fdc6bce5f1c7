// Package cors is the "cors" plugin: Cross-Origin Resource Sharing as the
// Fetch standard (https://fetch.spec.whatwg.org/#http-cors-protocol) defines
// it. It answers preflight requests itself and adds the CORS response headers
// to actual requests from allowed origins.
package cors

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/routes"
)

func init() { plugins.Register("cors", factory) }

// Config is the plugin's config: section.
type Config struct {
	// AllowOrigins lists origins ("https://app.example.com"), origins with a
	// wildcard for any subdomain ("https://*.example.com"), or "*" for any.
	AllowOrigins []string `yaml:"allow_origins"`
	// AllowMethods a preflight may ask for (default GET, HEAD, POST; those
	// three are always allowed, as the standard says). "*" allows any.
	AllowMethods []string `yaml:"allow_methods"`
	// AllowHeaders a preflight may ask for. "*" allows any.
	AllowHeaders []string `yaml:"allow_headers"`
	// ExposeHeaders are response headers scripts may read.
	ExposeHeaders []string `yaml:"expose_headers"`
	// AllowCredentials lets the browser send cookies and read the response.
	AllowCredentials bool `yaml:"allow_credentials"`
	// MaxAge is how long a browser may cache a preflight (0: not sent).
	MaxAge routes.Duration `yaml:"max_age"`
}

// CORS is a configured instance.
type CORS struct {
	anyOrigin    bool
	origins      map[string]bool
	wildcards    []wildcard
	anyMethod    bool
	methods      map[string]bool
	anyHeader    bool
	headers      map[string]bool
	methodsList  string
	exposeList   string
	credentials  bool
	maxAge       string
	varyOnOrigin bool
}

// wildcard is "https://*.example.com": same scheme, a host that ends in
// ".example.com" with at least one label before it, any port.
type wildcard struct{ prefix, suffix string }

var (
	_ plugins.Instance = (*CORS)(nil)
	_ plugins.Phaser   = (*CORS)(nil)
)

// Phase puts CORS before authentication and rate limits: a browser sends
// its preflight without credentials, so after auth it would get 401 and
// never send the real request; and an error from auth or a rate limit
// needs the CORS headers too, or the script cannot read it.
func (*CORS) Phase() plugins.Phase { return plugins.BeforeAuth }

var safelistedMethods = []string{"GET", "HEAD", "POST"}

func factory(_ context.Context, raw routes.Raw) (plugins.Instance, error) {
	var cfg Config
	if err := raw.Decode(&cfg); err != nil {
		return nil, err
	}
	return New(cfg, raw)
}

// New checks cfg and builds the instance; errors are located through raw.
func New(cfg Config, raw routes.Raw) (*CORS, error) {
	c := &CORS{
		origins:     map[string]bool{},
		methods:     map[string]bool{},
		headers:     map[string]bool{},
		credentials: cfg.AllowCredentials,
	}
	if len(cfg.AllowOrigins) == 0 {
		return nil, raw.ErrorAt("allow_origins", "allow_origins is required: list the origins (\"https://app.example.com\") allowed to call this route, or \"*\"")
	}
	for _, o := range cfg.AllowOrigins {
		switch o {
		case "*":
			c.anyOrigin = true
		case "null":
			return nil, raw.ErrorAt("allow_origins", "origin \"null\" is sent by sandboxed and file: documents; allowing it allows any of them")
		default:
			w, exact, err := parseOrigin(o)
			if err != "" {
				return nil, raw.ErrorAt("allow_origins", "%q: %s", o, err)
			}
			if exact != "" {
				c.origins[exact] = true
			} else {
				c.wildcards = append(c.wildcards, w)
			}
		}
	}
	if c.anyOrigin && cfg.AllowCredentials {
		// The standard refuses "Access-Control-Allow-Origin: *" with
		// credentials; echoing every origin instead would hand any site the
		// user's session.
		return nil, raw.ErrorAt("allow_credentials", "allow_credentials cannot be combined with allow_origins \"*\": list the origins")
	}
	methods := cfg.AllowMethods
	if len(methods) == 0 {
		methods = safelistedMethods
	}
	for _, m := range methods {
		if m == "*" {
			c.anyMethod = true
			continue
		}
		if !isToken(m) {
			return nil, raw.ErrorAt("allow_methods", "%q is not an HTTP method", m)
		}
		c.methods[m] = true
	}
	c.methodsList = strings.Join(methods, ", ")
	for _, h := range cfg.AllowHeaders {
		if h == "*" {
			c.anyHeader = true
			continue
		}
		if !isToken(h) {
			return nil, raw.ErrorAt("allow_headers", "%q is not a header name", h)
		}
		c.headers[strings.ToLower(h)] = true
	}
	for _, h := range cfg.ExposeHeaders {
		if h != "*" && !isToken(h) {
			return nil, raw.ErrorAt("expose_headers", "%q is not a header name", h)
		}
		if h == "*" && cfg.AllowCredentials {
			return nil, raw.ErrorAt("expose_headers", "\"*\" means the literal header name \"*\" when credentials are allowed: list the headers")
		}
	}
	c.exposeList = strings.Join(cfg.ExposeHeaders, ", ")
	if cfg.MaxAge.D() > 0 {
		c.maxAge = strconv.FormatInt(int64(cfg.MaxAge.D().Seconds()), 10)
	}
	// A response that depends on Origin must say so, or a shared cache would
	// hand one origin's answer to another.
	c.varyOnOrigin = !c.anyOrigin || cfg.AllowCredentials
	return c, nil
}

// parseOrigin returns the canonical exact origin, or a wildcard, or why o
// is not an origin.
func parseOrigin(o string) (wildcard, string, string) {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return wildcard{}, "", "not an origin: use scheme://host[:port], e.g. https://app.example.com"
	}
	if u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return wildcard{}, "", "an origin has no path, query or user: use scheme://host[:port]"
	}
	host := strings.ToLower(u.Host)
	// Browsers leave the default port out of Origin.
	if (u.Scheme == "https" && strings.HasSuffix(host, ":443")) || (u.Scheme == "http" && strings.HasSuffix(host, ":80")) {
		host = host[:strings.LastIndexByte(host, ':')]
	}
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		if strings.Contains(rest, "*") || !strings.Contains(rest, ".") {
			return wildcard{}, "", "a wildcard covers one label under a domain with at least two labels, e.g. https://*.example.com"
		}
		return wildcard{prefix: u.Scheme + "://", suffix: "." + rest}, "", ""
	}
	if strings.Contains(host, "*") {
		return wildcard{}, "", "a wildcard must be the first label, e.g. https://*.example.com"
	}
	return wildcard{}, u.Scheme + "://" + host, ""
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func (c *CORS) originAllowed(origin string) bool {
	if c.anyOrigin {
		return true
	}
	if c.origins[origin] {
		return true
	}
	for _, w := range c.wildcards {
		rest, ok := strings.CutPrefix(origin, w.prefix)
		if !ok {
			continue
		}
		host := rest
		if i := strings.LastIndexByte(rest, ':'); i >= 0 {
			host = rest[:i]
		}
		if label, ok := strings.CutSuffix(host, w.suffix); ok && label != "" && !strings.ContainsAny(label, "/@") {
			return true
		}
	}
	return false
}

// Wrap answers preflights and decorates actual requests.
func (c *CORS) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			// Not a CORS request; a cached response still depends on Origin.
			if c.varyOnOrigin {
				w.Header().Add("Vary", "Origin")
			}
			next.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			c.preflight(w, r, origin)
			return
		}
		if !c.originAllowed(origin) {
			// The browser enforces CORS: without our headers it withholds
			// the response from the script. The request itself is not ours
			// to refuse (a plain form post needs no permission).
			if c.varyOnOrigin {
				w.Header().Add("Vary", "Origin")
			}
			next.ServeHTTP(w, r)
			return
		}
		hw := plugins.HookHeader(w, func(_ int, h http.Header) {
			// The upstream's own CORS headers would contradict ours.
			h.Del("Access-Control-Allow-Origin")
			h.Del("Access-Control-Allow-Credentials")
			h.Del("Access-Control-Expose-Headers")
			c.allowOrigin(h, origin)
			if c.exposeList != "" {
				h.Set("Access-Control-Expose-Headers", c.exposeList)
			}
		})
		next.ServeHTTP(hw, r)
		hw.Done()
	})
}

func (c *CORS) allowOrigin(h http.Header, origin string) {
	if c.anyOrigin && !c.credentials {
		h.Set("Access-Control-Allow-Origin", "*")
	} else {
		h.Set("Access-Control-Allow-Origin", origin)
	}
	if c.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if c.varyOnOrigin && !slices.Contains(h.Values("Vary"), "Origin") {
		h.Add("Vary", "Origin")
	}
}

// preflight answers an OPTIONS request carrying
// Access-Control-Request-Method. It never reaches the upstream: the answer
// is this configuration's, and a refused preflight gets 403 with the JSON
// error body so that the reason shows in the browser's network panel.
func (c *CORS) preflight(w http.ResponseWriter, r *http.Request, origin string) {
	h := w.Header()
	h.Add("Vary", "Origin")
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	if !c.originAllowed(origin) {
		plugins.Error(w, r, http.StatusForbidden, "CORS: origin not allowed")
		return
	}
	method := r.Header.Get("Access-Control-Request-Method")
	if !c.anyMethod && !c.methods[method] && !slices.Contains(safelistedMethods, method) {
		plugins.Error(w, r, http.StatusForbidden, "CORS: method not allowed")
		return
	}
	var asked []string
	for _, v := range r.Header.Values("Access-Control-Request-Headers") {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.ToLower(strings.TrimSpace(f)); f != "" {
				asked = append(asked, f)
			}
		}
	}
	for _, f := range asked {
		// "*" does not cover Authorization (Fetch: it must be listed).
		if !c.headers[f] && (!c.anyHeader || f == "authorization") {
			plugins.Error(w, r, http.StatusForbidden, "CORS: request header not allowed")
			return
		}
	}
	c.allowOrigin(h, origin)
	// Echo what was asked for: it is allowed, and it works with credentials,
	// where a literal "*" would not.
	if c.anyMethod {
		h.Set("Access-Control-Allow-Methods", method)
	} else {
		h.Set("Access-Control-Allow-Methods", c.methodsList)
	}
	if len(asked) > 0 {
		h.Set("Access-Control-Allow-Headers", strings.Join(asked, ", "))
	}
	if c.maxAge != "" {
		h.Set("Access-Control-Max-Age", c.maxAge)
	}
	w.WriteHeader(http.StatusNoContent)
}
