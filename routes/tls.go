package routes

import (
	"fmt"
	"net/url"
)

func (f *File) defaultTLS() {
	if f.TLS == nil {
		return
	}
	if f.TLS.MinVersion == "" {
		f.TLS.MinVersion = "1.2"
	}
	if a := f.TLS.ACME; a != nil {
		if a.Cache == "" {
			a.Cache = "dir"
		}
		if a.DirectoryURL == "" {
			a.DirectoryURL = "https://acme-v02.api.letsencrypt.org/directory"
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
	if len(t.Certificates) == 0 && t.ACME == nil {
		c.errorf("tls", "needs certificates or acme")
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
		for i, h := range a.Hosts {
			if !hostRe.MatchString(h) || h[0] == '*' {
				c.errorf(fmt.Sprintf("tls.acme.hosts[%d]", i), "%q is not a host name (ACME HTTP-01/TLS-ALPN-01 cannot issue wildcards)", h)
			}
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
			c.errorf("tls.acme.directory_url", "%q is not an https URL", a.DirectoryURL)
		}
		if od := a.OnDemand; od != nil {
			if u, err := url.Parse(od.Ask); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				c.errorf("tls.acme.on_demand.ask", "%q is not an http(s) URL", od.Ask)
			}
			if od.Burst < 0 {
				c.errorf("tls.acme.on_demand.burst", "must not be negative")
			}
		}
	}
}
