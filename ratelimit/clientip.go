package ratelimit

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ClientIPFunc returns the client address of a request as the client_ip
// key sees it: the connection's peer, or, when the peer is one of the
// trusted proxies, the nearest address in X-Forwarded-For that is not a
// trusted proxy. Walking from the right means a client cannot choose its
// own key by sending a forged X-Forwarded-For: only entries appended by
// trusted proxies are believed. The gateway normally supplies its own
// KeySources.ClientIP; this is the fallback when it does not.
func ClientIPFunc(trusted []netip.Prefix) func(r *http.Request) string {
	return func(r *http.Request) string {
		peer, ok := parseAddr(r.RemoteAddr)
		if !ok {
			return ""
		}
		if !isTrusted(trusted, peer) {
			return peer.String()
		}
		client := peer
		hops := r.Header.Values("X-Forwarded-For")
		for i := len(hops) - 1; i >= 0; i-- {
			parts := strings.Split(hops[i], ",")
			for j := len(parts) - 1; j >= 0; j-- {
				a, ok := parseAddr(strings.TrimSpace(parts[j]))
				if !ok {
					// Garbage before a trusted hop: the last address a
					// trusted proxy vouched for is the best we know.
					return client.String()
				}
				client = a
				if !isTrusted(trusted, a) {
					return a.String()
				}
			}
		}
		return client.String()
	}
}

// parseAddr accepts "ip", "ip:port" and "[ipv6]:port".
func parseAddr(s string) (netip.Addr, bool) {
	if s == "" {
		return netip.Addr{}, false
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func isTrusted(trusted []netip.Prefix, a netip.Addr) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
