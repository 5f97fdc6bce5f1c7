// Package clientip decides a request's client address from its TCP peer and
// the X-Forwarded-For and Forwarded chains, believing only hops added by
// trusted proxies.
// The edge resolves the address once per request; rate limits, plugins, the
// access log and X-Real-IP all read that one value, so they cannot disagree
// about who the client is.
package clientip

import (
	"net/http"
	"net/netip"
	"strings"
)

// Resolver holds the trusted proxies. The zero Resolver trusts nobody: the
// client is always the TCP peer.
type Resolver struct {
	trusted []netip.Prefix
}

// New returns a Resolver believing forwarded entries added by peers
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

// Resolve returns the client address of a request whose TCP peer is peer,
// whose X-Forwarded-For header values are xff and whose Forwarded (RFC
// 7239) header values are fwd, each in the order received.
//
// From an untrusted peer the client is the peer: what it claims about
// others is its own invention. From a trusted peer a chain is read from
// the right (the nearest hop) to the left; each trusted hop vouches for the
// entry before it, and the first address that is not a trusted proxy is the
// client. When every entry is a trusted proxy, the left-most one is.
//
// X-Forwarded-For entries are separated by commas; spaces and tabs around
// them and empty entries are ignored (RFC 9110 §5.6.1). An entry may carry
// a port ("192.0.2.1:5000", "[2001:db8::1]:5000"); IPv4-mapped IPv6 is
// unmapped and zones are dropped. Forwarded is read by ForwardedFor: the
// "for" node of each element is an entry; "unknown", an obfuscated node
// and an element without "for" are entries that are not addresses.
//
// A trusted peer may send one of the two headers or both. With one, that
// chain decides. With both, each is read: a proxy that writes one of them
// passes on whatever the client sent in the other, so neither may simply
// win (Envoy and Traefik read X-Forwarded-For alone; a proxy that writes
// only Forwarded, such as HAProxy's "option forwarded", would then let the
// client choose its address). The client is the address both chains reach;
// a chain that ends in trusted proxies only (a proxy that writes one header
// behind one that writes both, or a client writing trusted addresses into
// the header its proxy does not write) defers to the other. Two different
// untrusted addresses, or a chain that cannot be read, mean the client
// cannot be told: ok is false and client is the peer.
//
// ok is false when the client cannot be told: the peer is not an address,
// a trusted hop handed over an entry that is not one, or the two headers
// disagree. client is then the last address a trusted hop vouched for (for
// a rate-limit key; the peer when the headers disagree); a decision that
// must not fail open (an allow list) refuses instead.
func (r *Resolver) Resolve(peer netip.Addr, xff, fwd []string) (client netip.Addr, ok bool) {
	client, ok, _ = r.ResolveSource(peer, xff, fwd)
	return client, ok
}

// Source says which header named the client Resolve found.
type Source uint8

const (
	// FromPeer: no header named it (an untrusted peer, no chain, or the
	// client could not be told).
	FromPeer Source = iota
	// FromXFF: X-Forwarded-For named it (and Forwarded, when present,
	// agreed or ended in trusted proxies).
	FromXFF
	// FromForwarded: Forwarded named it and X-Forwarded-For, if any,
	// did not: an X-Forwarded-For sent on would not lead to the client.
	FromForwarded
)

// ResolveSource is Resolve that also says which header named the client.
func (r *Resolver) ResolveSource(peer netip.Addr, xff, fwd []string) (client netip.Addr, ok bool, src Source) {
	if !peer.IsValid() {
		return netip.Addr{}, false, FromPeer
	}
	peer = peer.Unmap().WithZone("")
	if !r.Trusts(peer) {
		return peer, true, FromPeer
	}
	hasXFF, hasFwd := present(xff), present(fwd)
	switch {
	case hasXFF && !hasFwd:
		a, st := r.walkXFF(peer, xff)
		return a, st != broken, FromXFF
	case hasFwd && !hasXFF:
		a, st := r.walkForwarded(peer, fwd)
		return a, st != broken, FromForwarded
	case !hasXFF && !hasFwd:
		return peer, true, FromPeer
	}
	a, sa := r.walkXFF(peer, xff)
	b, sb := r.walkForwarded(peer, fwd)
	switch {
	case sa == broken || sb == broken:
		return peer, false, FromPeer
	case a == b, sa == found && sb == exhausted:
		return a, true, FromXFF
	case sb == found && sa == exhausted:
		return b, true, FromForwarded
	}
	return peer, false, FromPeer
}

// walkState is how a walk of one chain ended.
type walkState uint8

const (
	found     walkState = iota // at an address that is not a trusted proxy
	exhausted                  // every entry was a trusted proxy
	broken                     // at an entry that is not an address
)

// present reports whether a header has any non-blank value.
func present(values []string) bool {
	for _, v := range values {
		if strings.Trim(v, " \t,") != "" {
			return true
		}
	}
	return false
}

func (r *Resolver) walkXFF(client netip.Addr, xff []string) (netip.Addr, walkState) {
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
				return client, broken
			}
			client = a
			if !r.Trusts(a) {
				return client, found
			}
		}
	}
	return client, exhausted
}

func (r *Resolver) walkForwarded(client netip.Addr, fwd []string) (netip.Addr, walkState) {
	nodes, ok := ForwardedFor(fwd)
	if !ok {
		return client, broken
	}
	_, a, st := r.walkNodes(client, nodes)
	return a, st
}

// walkNodes walks nodes from the right as walkForwarded does and also
// returns the index of the element it stopped at (-1 for none).
func (r *Resolver) walkNodes(client netip.Addr, nodes []Node) (int, netip.Addr, walkState) {
	for i := len(nodes) - 1; i >= 0; i-- {
		a := nodes[i].Addr
		if !a.IsValid() {
			return i, client, broken
		}
		client = a
		if !r.Trusts(a) {
			return i, client, found
		}
	}
	return 0, client, exhausted
}

// ForwardedHop returns the Forwarded element written by the trusted proxy
// that faced the client, whose "host" and "proto" say what the client
// addressed: the element the walk from the right stops at. Its "for" is
// the first node that is not a trusted proxy (or not an address: a proxy
// that hides its clients still states what they asked for), and the
// element to its right, or the peer for the right-most one, is a trusted
// hop that vouches for it. Elements further left are the client's own
// writing; the right-most element is the nearest proxy's, which behind a
// chain describes an inner hop (proto=http from an internal balancer).
// When every node is a trusted proxy, it is the left-most element.
//
// ok is false when peer is not a trusted proxy (its header is its own
// invention), when fwd holds no element, and when fwd is not RFC 7239
// syntax.
func (r *Resolver) ForwardedHop(peer netip.Addr, fwd []string) (hop Node, ok bool) {
	if !peer.IsValid() || !r.Trusts(peer) {
		return Node{}, false
	}
	nodes, good := ForwardedFor(fwd)
	if !good || len(nodes) == 0 {
		return Node{}, false
	}
	i, _, _ := r.walkNodes(peer, nodes)
	return nodes[i], true
}

// ResolveRemote is Resolve for a net/http RemoteAddr ("ip:port") and the
// request's headers.
func (r *Resolver) ResolveRemote(remoteAddr string, h http.Header) (netip.Addr, bool) {
	peer, _ := ParseAddr(remoteAddr)
	return r.Resolve(peer, h["X-Forwarded-For"], h["Forwarded"])
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
