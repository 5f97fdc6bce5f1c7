// Package ipfilter is the "ip_filter" plugin: it lets a request through by
// the client's IP address, with CIDR allow and deny lists. Behind other
// proxies, the client address is read from X-Forwarded-For or Forwarded
// (for=), believing only the hops added by listed trusted proxies.
package ipfilter

import (
	"context"
	"net/http"
	"net/netip"
	"strings"

	"github.com/causewayhq/causeway/internal/clientip"
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
	// TrustedProxies are the peers whose X-Forwarded-For and Forwarded
	// entries are believed. The client is the right-most address in the chain (TCP peer
	// last) that is not a trusted proxy. Left out, the client address the
	// edge determined with the file's top-level trusted_proxies is used.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// Filter is a configured instance.
type Filter struct {
	allow, deny, trusted []netip.Prefix
	// resolver reads the forwarding headers with the filter's own trusted_proxies;
	// nil without them.
	resolver *clientip.Resolver
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
	if len(f.trusted) > 0 {
		f.resolver = clientip.New(f.trusted)
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
// when it cannot be told (an unparsable peer or forwarded entry). Without
// trusted_proxies of its own the filter takes the address the edge
// resolved; with them it resolves the chain itself, with the same resolver.
func (f *Filter) ClientIP(r *http.Request) (netip.Addr, bool) {
	if f.resolver == nil {
		info := plugins.Info(r.Context())
		if info.ClientIPUnresolved {
			return netip.Addr{}, false
		}
		if a := info.ClientIP; a.IsValid() {
			return a.Unmap().WithZone(""), true
		}
	}
	a, ok := f.resolver.ResolveRemote(r.RemoteAddr, r.Header)
	if !ok {
		return netip.Addr{}, false
	}
	return a, true
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
