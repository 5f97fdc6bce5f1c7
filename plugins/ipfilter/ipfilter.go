// Package ipfilter is the "ip_filter" plugin: it lets a request through by
// the client's IP address, with CIDR allow and deny lists. Behind other
// proxies, the client address is read from X-Forwarded-For, believing only
// the hops added by listed trusted proxies.
package ipfilter

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/routes"
)

func init() { plugins.Register("ip_filter", factory) }

// Config is the plugin's config: section.
type Config struct {
	// Allow lets only these addresses or CIDRs in (empty: everyone not denied).
	Allow []string `yaml:"allow"`
	// Deny keeps these out; deny wins over allow.
	Deny []string `yaml:"deny"`
	// TrustedProxies are the peers whose X-Forwarded-For entries are
	// believed. The client is the right-most address in the chain (TCP peer
	// last) that is not a trusted proxy. Left out, the client address the
	// edge determined with the file's top-level trusted_proxies is used.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// Filter is a configured instance.
type Filter struct {
	allow, deny, trusted []netip.Prefix
}

var _ plugins.Instance = (*Filter)(nil)

func factory(_ context.Context, raw routes.Raw) (plugins.Instance, error) {
	var cfg Config
	if err := raw.Decode(&cfg); err != nil {
		return nil, err
	}
	return New(cfg, raw)
}

// New checks cfg and builds the instance; errors are located through raw.
func New(cfg Config, raw routes.Raw) (*Filter, error) {
	f := &Filter{}
	var err error
	if f.allow, err = prefixes(cfg.Allow, "allow", raw); err != nil {
		return nil, err
	}
	if f.deny, err = prefixes(cfg.Deny, "deny", raw); err != nil {
		return nil, err
	}
	if f.trusted, err = prefixes(cfg.TrustedProxies, "trusted_proxies", raw); err != nil {
		return nil, err
	}
	if len(f.allow) == 0 && len(f.deny) == 0 {
		return nil, raw.ErrorAt("", "needs allow or deny (a list of addresses or CIDRs)")
	}
	return f, nil
}

func prefixes(list []string, key string, raw routes.Raw) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := routes.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, raw.ErrorAt(key, "%v", err)
		}
		if p.Addr().Is4In6() {
			// "::ffff:10.0.0.0/104" would never match: addresses are unmapped.
			return nil, raw.ErrorAt(key, "%q: write IPv4-mapped ranges as IPv4", s)
		}
		out = append(out, p)
	}
	return out, nil
}

func contains(list []netip.Prefix, a netip.Addr) bool {
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP returns the client's address as this filter sees it; ok is false
// when it cannot be told (an unparsable peer or forwarded entry).
func (f *Filter) ClientIP(r *http.Request) (netip.Addr, bool) {
	if len(f.trusted) == 0 {
		if a := plugins.Info(r.Context()).ClientIP; a.IsValid() {
			return a.Unmap().WithZone(""), true
		}
	}
	peer, ok := parseAddr(r.RemoteAddr)
	if !ok {
		return netip.Addr{}, false
	}
	if len(f.trusted) == 0 || !contains(f.trusted, peer) {
		return peer, true
	}
	client := peer
	// Walk from the nearest hop outwards; each trusted hop vouches for the
	// entry before it. The first untrusted address is as far as the chain
	// can be believed.
	values := r.Header.Values("X-Forwarded-For")
	for i := len(values) - 1; i >= 0; i-- {
		hops := strings.Split(values[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			h := strings.TrimSpace(hops[j])
			if h == "" {
				continue
			}
			a, ok := parseAddr(h)
			if !ok {
				return netip.Addr{}, false
			}
			client = a
			if !contains(f.trusted, a) {
				return client, true
			}
		}
	}
	return client, true
}

// parseAddr accepts "ip", "ip:port" and "[ipv6]:port"; IPv4-mapped IPv6 is
// unmapped so that IPv4 rules match dual-stack listeners.
func parseAddr(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// Allowed reports whether a may pass.
func (f *Filter) Allowed(a netip.Addr) bool {
	if contains(f.deny, a) {
		return false
	}
	return len(f.allow) == 0 || contains(f.allow, a)
}

// Wrap refuses requests from addresses that may not pass with 403.
func (f *Filter) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An address that cannot be told is refused: a filter that fails
		// open on a garbled header is a filter anyone can walk around.
		if a, ok := f.ClientIP(r); !ok || !f.Allowed(a) {
			plugins.Error(w, r, http.StatusForbidden, "forbidden")
			return
		}
		next.ServeHTTP(w, r)
	})
}
