package routes

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Defaults of the tls section; docs/tls.md documents them.
const (
	DefaultOnDemandInterval = time.Minute
	DefaultOnDemandBurst    = 10
	DefaultHSTSMaxAge       = 365 * 24 * time.Hour
	// DefaultACMEHandshakeWait is tls.acme.handshake_wait: an order takes
	// seconds when the CA is well, and clients give up on a handshake well
	// before an order gives up.
	DefaultACMEHandshakeWait = 30 * time.Second
	// MaxACMEHandshakeWait is autocert's own bound on an order: waiting
	// longer can never bring a certificate.
	MaxACMEHandshakeWait = 5 * time.Minute
)

func (f *File) defaultTLS() {
	if f.TLS == nil {
		return
	}
	if f.TLS.MinVersion == "" {
		f.TLS.MinVersion = "1.2"
	}
	if f.TLS.RedirectHTTP == nil {
		redirect := true
		f.TLS.RedirectHTTP = &redirect
	}
	if f.TLS.ClientCAFile != "" && f.TLS.ClientAuth == "" {
		// A client CA with no policy most likely means "only these clients".
		f.TLS.ClientAuth = "require"
	}
	if h := f.TLS.HSTS; h != nil {
		setDuration(&h.MaxAge, DefaultHSTSMaxAge)
	}
	if a := f.TLS.ACME; a != nil {
		if a.Cache == "" {
			a.Cache = "dir"
		}
		if a.DirectoryURL == "" {
			a.DirectoryURL = "https://acme-v02.api.letsencrypt.org/directory"
		}
		for i, h := range a.Hosts {
			a.Hosts[i] = strings.ToLower(h)
		}
		setDuration(&a.HandshakeWait, DefaultACMEHandshakeWait)
		if od := a.OnDemand; od != nil {
			setDuration(&od.Interval, DefaultOnDemandInterval)
			if od.Burst == 0 {
				od.Burst = DefaultOnDemandBurst
			}
		}
	}
}

func (c *checker) checkTLS() {
	t := c.f.TLS
	if t == nil {
		return
	}
	if t.MinVersion != "1.2" && t.MinVersion != "1.3" {
		c.errorf("tls.min_version", "must be \"1.2\" or \"1.3\" (found %q)", t.MinVersion)
	}
	// With the Kubernetes provider, the certificates may all come from the
	// Secrets of Gateway HTTPS listeners.
	if len(t.Certificates) == 0 && t.ACME == nil && c.f.Providers.Kubernetes == nil {
		c.errorf("tls", "needs certificates or acme (or providers.kubernetes, whose Gateways name Secrets)")
	}
	for i, cert := range t.Certificates {
		p := fmt.Sprintf("tls.certificates[%d]", i)
		if cert.CertFile == "" {
			c.errorf(p, "cert_file is required")
		}
		if cert.KeyFile == "" {
			c.errorf(p, "key_file is required")
		}
	}
	switch t.ClientAuth {
	case "", "require", "verify_if_given":
	default:
		c.errorf("tls.client_auth", "must be require or verify_if_given (found %q)", t.ClientAuth)
	}
	if t.ClientAuth != "" && t.ClientCAFile == "" {
		c.errorf("tls.client_auth", "needs tls.client_ca_file")
	}
	if a := t.ACME; a != nil {
		if len(a.Hosts) == 0 && a.OnDemand == nil {
			c.errorf("tls.acme.hosts", "list the host names to obtain certificates for (or configure on_demand)")
		}
		seen := map[string]bool{}
		for i, h := range a.Hosts {
			p := fmt.Sprintf("tls.acme.hosts[%d]", i)
			if !hostRe.MatchString(h) || h[0] == '*' {
				c.errorf(p, "%q is not a host name (ACME HTTP-01/TLS-ALPN-01 cannot issue wildcards)", h)
			} else if !strings.Contains(h, ".") {
				c.errorf(p, "%q is not a fully qualified name: a CA issues only for names with a dot", h)
			}
			if seen[h] {
				c.errorf(p, "host %q is listed twice", h)
			}
			seen[h] = true
		}
		switch a.Cache {
		case "dir":
			if a.CacheDir == "" {
				c.errorf("tls.acme.cache_dir", "is required: without it every restart orders new certificates")
			}
		case "redis":
			if c.f.Redis == nil {
				c.errorf("tls.acme.cache", "cache: redis needs the redis section")
			}
		default:
			c.errorf("tls.acme.cache", "must be dir or redis (found %q)", a.Cache)
		}
		if u, err := url.Parse(a.DirectoryURL); err != nil || u.Scheme != "https" || u.Host == "" {
			c.errorf("tls.acme.directory_url", "%q is not an https URL", RedactValue(a.DirectoryURL))
		}
		// Negative values and non-durations are refused while decoding.
		if a.HandshakeWait.D() > MaxACMEHandshakeWait {
			c.errorf("tls.acme.handshake_wait", "must be at most %s, the longest an order runs (found %s)", MaxACMEHandshakeWait, a.HandshakeWait.D())
		}
		if od := a.OnDemand; od != nil {
			if u, err := url.Parse(od.Ask); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				c.errorf("tls.acme.on_demand.ask", "%q is not an http(s) URL", RedactValue(od.Ask))
			}
			if od.Burst < 0 {
				c.errorf("tls.acme.on_demand.burst", "must not be negative")
			}
			if od.Interval < 0 {
				c.errorf("tls.acme.on_demand.interval", "must not be negative")
			}
		}
	}
	if h := t.HSTS; h != nil {
		switch {
		case h.MaxAge < 0:
			c.errorf("tls.hsts.max_age", "must not be negative")
		case h.Preload && (h.MaxAge.D() < DefaultHSTSMaxAge || !h.IncludeSubdomains):
			// Browsers' preload lists refuse anything less (hstspreload.org).
			c.errorf("tls.hsts.preload", "needs max_age of at least 8760h (one year) and include_subdomains: true")
		}
	}
}
