// Package rewrite is the "rewrite" plugin: it rewrites the request path with
// regular expressions before the upstream sees it, or answers with a
// redirect.
package rewrite

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/routes"
)

func init() { plugins.Register("rewrite", factory) }

// Config is the plugin's config: section.
type Config struct {
	// Rules are tried in order; the first whose Match matches the path
	// applies, and no other.
	Rules []Rule `yaml:"rules"`
}

// Rule is one rewrite or redirect.
type Rule struct {
	// Match is a Go regular expression (RE2) matched against the
	// URL path; anchor it with ^ and $ to match the whole path.
	Match string `yaml:"match"`
	// Replace is the new path (with $1, ${name} for groups); it may end
	// in "?query", which is put before the request's own query.
	// For a redirect it may also be an absolute http(s) URL.
	Replace string `yaml:"replace"`
	// Redirect, when set (301, 302, 303, 307 or 308), answers with that
	// status and Location instead of rewriting.
	Redirect int `yaml:"redirect"`
	// Scheme, Host and Port make a redirect to a path absolute, each
	// part kept from the request where it is not set: "https" alone sends
	// the client to the same host over TLS, as the Gateway API's
	// RequestRedirect asks. Port is left out of the Location when it is
	// the scheme's own; unset, it is the scheme's own when Scheme is set,
	// else the request's.
	Scheme string `yaml:"scheme"`
	Host   string `yaml:"host"`
	Port   int    `yaml:"port"`
}

// Rewrite is a configured instance.
type Rewrite struct {
	rules []rule
}

type rule struct {
	re       *regexp.Regexp
	replace  string
	redirect int
	// absolute: scheme, host and port for a redirect to a path.
	scheme, host string
	port         int
	absolute     bool
}

var _ plugins.Instance = (*Rewrite)(nil)

func factory(_ context.Context, raw routes.Raw) (plugins.Instance, error) {
	var cfg Config
	if err := raw.Decode(&cfg); err != nil {
		return nil, err
	}
	return New(cfg, raw)
}

// groupRefRe finds group references; "$$" is a literal "$" and is
// matched first so that "$$1" is not read as a reference to group 1.
var groupRefRe = regexp.MustCompile(`\$\$|\$(\{[^}]*\}|[A-Za-z0-9_]+)`)

// New checks cfg and builds the instance; errors are located through raw.
func New(cfg Config, raw routes.Raw) (*Rewrite, error) {
	if len(cfg.Rules) == 0 {
		return nil, raw.ErrorAt("rules", "rules is required: a list of {match, replace[, redirect]}")
	}
	rw := &Rewrite{}
	for i, r := range cfg.Rules {
		key := "rules[" + strconv.Itoa(i) + "]"
		if r.Match == "" {
			return nil, plugins.ConfigError(raw, key, "match is required")
		}
		re, err := regexp.Compile(r.Match)
		if err != nil {
			return nil, plugins.ConfigError(raw, key+".match", "%v", err)
		}
		switch r.Redirect {
		case 0:
			if !strings.HasPrefix(r.Replace, "/") {
				return nil, plugins.ConfigError(raw, key+".replace", "a rewritten path must start with \"/\" (found %q)", r.Replace)
			}
		case 301, 302, 303, 307, 308:
			// With scheme, host or port the result is always a path: "$1"
			// of "^(.*)$" is the whole path.
			if r.Scheme == "" && r.Host == "" && r.Port == 0 &&
				!strings.HasPrefix(r.Replace, "/") && !strings.HasPrefix(r.Replace, "https://") && !strings.HasPrefix(r.Replace, "http://") {
				return nil, plugins.ConfigError(raw, key+".replace", "a redirect goes to a path (\"/...\") or an http(s) URL (found %q)", r.Replace)
			}
		default:
			return nil, plugins.ConfigError(raw, key+".redirect", "%d is not a redirect status (301, 302, 303, 307, 308)", r.Redirect)
		}
		// A reference to a group that does not exist expands to "" silently
		// at request time; catch the typo now.
		for _, m := range groupRefRe.FindAllStringSubmatch(r.Replace, -1) {
			if m[0] == "$$" {
				continue
			}
			name := strings.Trim(m[1], "{}")
			if n, err := strconv.Atoi(name); err == nil {
				if n > re.NumSubexp() {
					return nil, plugins.ConfigError(raw, key+".replace", "$%d, but match has %d group(s)", n, re.NumSubexp())
				}
			} else if re.SubexpIndex(name) < 0 {
				return nil, plugins.ConfigError(raw, key+".replace", "no group named %q in match", name)
			}
		}
		absolute := r.Scheme != "" || r.Host != "" || r.Port != 0
		if absolute {
			switch {
			case r.Redirect == 0:
				return nil, plugins.ConfigError(raw, key, "scheme, host and port apply to a redirect only")
			case strings.HasPrefix(r.Replace, "https://") || strings.HasPrefix(r.Replace, "http://"):
				return nil, plugins.ConfigError(raw, key+".replace", "with scheme, host or port, replace is a path (\"/...\"), not a URL")
			case r.Scheme != "" && r.Scheme != "http" && r.Scheme != "https":
				return nil, plugins.ConfigError(raw, key+".scheme", "%q: http or https", r.Scheme)
			case r.Port < 0 || r.Port > 65535:
				return nil, plugins.ConfigError(raw, key+".port", "%d is not a port", r.Port)
			case r.Host != "" && !validHost(r.Host):
				return nil, plugins.ConfigError(raw, key+".host", "%q is not a host name (no port, path or user)", r.Host)
			}
		}
		rw.rules = append(rw.rules, rule{re: re, replace: r.Replace, redirect: r.Redirect,
			scheme: r.Scheme, host: r.Host, port: r.Port, absolute: absolute})
	}
	return rw, nil
}

// Wrap applies the first matching rule.
func (rw *Rewrite) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		for _, ru := range rw.rules {
			m := ru.re.FindStringSubmatchIndex(p)
			if m == nil {
				continue
			}
			target := string(ru.re.ExpandString(nil, ru.replace, p, m))
			newPath, query, _ := strings.Cut(target, "?")
			query = joinQuery(query, r.URL.RawQuery)
			if hasDotSegment(newPath) {
				// "/static/$1" with "..%2F..%2Fetc" would leave the prefix the
				// rule was written to confine the request to.
				plugins.Error(w, r, http.StatusBadRequest, "invalid path")
				return
			}
			if ru.redirect != 0 {
				prefix := ""
				if ru.absolute {
					var ok bool
					if prefix, ok = ru.origin(r); !ok {
						plugins.Error(w, r, http.StatusBadRequest, "invalid host")
						return
					}
				}
				redirect(w, r, ru.redirect, prefix, newPath, query)
				return
			}
			r = r.Clone(r.Context())
			r.URL.Path = cleanPath(newPath)
			r.URL.RawPath = ""
			r.URL.RawQuery = query
			r.RequestURI = r.URL.RequestURI()
			break
		}
		next.ServeHTTP(w, r)
	})
}

func joinQuery(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "&" + b
}

func hasDotSegment(p string) bool {
	if !strings.HasPrefix(p, "/") {
		// An absolute redirect URL: look at its path only.
		if u, err := url.Parse(p); err == nil {
			p = u.Path
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// cleanPath collapses repeated slashes, keeping a trailing slash.
func cleanPath(p string) string {
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// origin is "scheme://host[:port]" for a rule with scheme, host or port,
// the parts it does not set taken from the request. A request host that
// is not a plain name or address is refused: it would go into Location.
func (ru *rule) origin(r *http.Request) (string, bool) {
	scheme := ru.scheme
	if scheme == "" {
		scheme = "http"
		if r.TLS != nil {
			scheme = "https"
		}
	}
	reqHost, reqPort := r.Host, ""
	if h, p, err := net.SplitHostPort(r.Host); err == nil {
		reqHost, reqPort = h, p
	}
	reqHost = strings.TrimSuffix(strings.TrimPrefix(reqHost, "["), "]")
	host := ru.host
	if host == "" {
		if !validHost(reqHost) {
			return "", false
		}
		host = reqHost
	}
	port := ""
	switch {
	case ru.port != 0:
		port = strconv.Itoa(ru.port)
	case ru.scheme == "":
		port = reqPort // the listener's port, as the client reached it
	}
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host, true
}

// validHost: a DNS name or an IP address, nothing that could change what
// a URL means (no "/", "@", "?", "#", "\\", spaces or a port).
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return !strings.Contains(h, "%")
	}
	return strings.IndexFunc(h, func(c rune) bool {
		return (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '.'
	}) < 0
}

func redirect(w http.ResponseWriter, r *http.Request, status int, origin, target, query string) {
	loc := target
	if origin != "" || strings.HasPrefix(target, "/") {
		// A captured group must not turn "/$1" into "//evil.example" or
		// "/\evil.example", which browsers read as another host.
		loc = origin + (&url.URL{Path: cleanPath(target)}).EscapedPath()
	}
	if query != "" {
		loc += "?" + query
	}
	w.Header().Set("Location", loc)
	w.WriteHeader(status)
}
