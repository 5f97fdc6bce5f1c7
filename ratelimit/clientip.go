package ratelimit

import (
	"net/http"
	"net/netip"

	"github.com/causewayhq/causeway/internal/clientip"
)

// ClientIPFunc returns the client address of a request as the client_ip
// key sees it: the connection's peer, or, when the peer is one of the
// trusted proxies, the nearest address in X-Forwarded-For or Forwarded
// (for=) that is not a trusted proxy (internal/clientip, the resolver the
// edge uses). Walking
// from the right means a client cannot choose its own key by sending a
// forged X-Forwarded-For: only entries appended by trusted proxies are
// believed. The gateway supplies the address it resolved once per request
// in KeySources.ClientIP; this is the fallback when it does not.
func ClientIPFunc(trusted []netip.Prefix) func(r *http.Request) string {
	res := clientip.New(trusted)
	return func(r *http.Request) string {
		// A broken chain still keys on the last hop that vouched for it:
		// every such request then shares one bucket rather than escaping.
		a, _ := res.ResolveRemote(r.RemoteAddr, r.Header)
		if !a.IsValid() {
			return ""
		}
		return a.String()
	}
}
