// Package clientip decides a request's client address from its TCP peer and
// the X-Forwarded-For chain, believing only hops added by trusted proxies.
// The edge resolves the address once per request; rate limits, plugins, the
// access log and X-Real-IP all read that one value, so they cannot disagree
// about who the client is.
package clientip

import (
	"net/netip"
	"strings"
)

// Resolver holds the trusted proxies. The zero Resolver trusts nobody: the
// client is always the TCP peer.
type Resolver struct {
	trusted []netip.Prefix
}

// New returns a Resolver believing X-Forwarded-For entries added by peers
// inside trusted. Prefixes are unmapped so an IPv4 range also matches the
// IPv4-mapped form a dual-stack listener reports.
func New(trusted []netip.Prefix) *Resolver {
	r := &Resolver{trusted: make([]netip.Prefix, 0, len(trusted))}
	for _, p := range trusted {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		r.trusted = append(r.trusted, p.Masked())
	}
	return r
}

// Trusts reports whether a is a trusted proxy.
func (r *Resolver) Trusts(a netip.Addr) bool {
	if r == nil || !a.IsValid() {
		return false
	}
	a = a.Unmap().WithZone("")
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// HasTrusted reports whether any proxy is trusted at all.
func (r *Resolver) HasTrusted() bool { return r != nil && len(r.trusted) > 0 }

// Resolve returns the client address of a request whose TCP peer is peer and
// whose X-Forwarded-For header values are xff (in the order received).
//
// From an untrusted peer the client is the peer: what it claims about
// others is its own invention. From a trusted peer the chain is read from
// the right (the nearest hop) to the left; each trusted hop vouches for the
// entry before it, and the first address that is not a trusted proxy is the
// client. When every entry is a trusted proxy, the left-most one is.
//
// Entries are separated by commas; spaces and tabs around them and empty
// entries are ignored (RFC 9110 §5.6.1). An entry may carry a port
// ("192.0.2.1:5000", "[2001:db8::1]:5000"); IPv4-mapped IPv6 is unmapped and
// zones are dropped.
//
// ok is false when the chain cannot be read to its end: the peer is not an
// address, or a trusted hop handed over an entry that is not one. client is
// then the last address a trusted hop vouched for (for a rate-limit key);
// a decision that must not fail open (an allow list) refuses instead.
func (r *Resolver) Resolve(peer netip.Addr, xff []string) (client netip.Addr, ok bool) {
	if !peer.IsValid() {
		return netip.Addr{}, false
	}
	client = peer.Unmap().WithZone("")
	if !r.Trusts(client) {
		return client, true
	}
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		for len(v) > 0 {
			entry := v
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				v = ""
			}
			entry = strings.Trim(entry, " \t")
			if entry == "" {
				continue
			}
			a, parsed := ParseAddr(entry)
			if !parsed {
				return client, false
			}
			client = a
			if !r.Trusts(a) {
				return client, true
			}
		}
	}
	return client, true
}

// ResolveRemote is Resolve for a net/http RemoteAddr ("ip:port").
func (r *Resolver) ResolveRemote(remoteAddr string, xff []string) (netip.Addr, bool) {
	peer, _ := ParseAddr(remoteAddr)
	return r.Resolve(peer, xff)
}

// ParseAddr accepts "ip", "ip:port", "[ipv6]" and "[ipv6]:port". The result
// is unmapped (IPv4-mapped IPv6 becomes IPv4) and carries no zone. The form
// is told from the brackets and colons first, so the common cases parse
// once and never build an error value.
func ParseAddr(s string) (netip.Addr, bool) {
	if s == "" {
		return netip.Addr{}, false
	}
	var a netip.Addr
	switch {
	case s[0] == '[' && s[len(s)-1] == ']':
		inner, err := netip.ParseAddr(s[1 : len(s)-1])
		if err != nil || !inner.Is6() {
			return netip.Addr{}, false
		}
		a = inner
	case s[0] == '[' || strings.Count(s, ":") == 1:
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	default:
		var err error
		if a, err = netip.ParseAddr(s); err != nil {
			return netip.Addr{}, false
		}
	}
	return a.Unmap().WithZone(""), true
}
