package kubernetes

import (
	"slices"
	"strings"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/plugins/respond"
	"github.com/causewayhq/causeway/routes"
)

// Listener isolation. The Gateway API sends a request to the most specific
// listener whose hostname matches it (an exact name, then wildcards by
// longest suffix, then a listener without a hostname), and only that
// listener's routes may answer it: a route attached to a broad listener
// must never answer for a host that a narrower listener, perhaps admitting
// fewer namespaces, has. The edge merges every Gateway it serves onto its
// own two listeners, http and https, and tells routes apart by host and
// path only, so "more specific" is judged across all of its Gateways'
// listeners of one protocol: HTTP listeners (whatever their port) make
// the edge's http listener, HTTPS ones its https listener.
//
// Two things enforce it:
//   - a route attached through listener L is not served for a hostname
//     that a more specific listener of L's protocol matches whole
//     (isolated);
//   - a host that a more specific listener names, where a broader one
//     would also match it, gets a route of its own at the lowest
//     precedence that answers 404 (isolationRoutes): the edge's router
//     falls back from an exact host to wildcard hosts and then to routes
//     without a host when no route of the exact host matches, and this
//     route stops that fallback.
//
// Over TLS, only HTTPS listeners take requests: a route attached only
// through HTTP listeners is served for plain connections only (match
// plain) for a hostname an HTTPS listener matches whole (tlsClaimed),
// whatever the HTTP listeners' namespaces; with no such HTTPS listener
// it is served over TLS too, as it always was.
//
// Every listener of a served Gateway with a protocol the edge serves
// counts, valid or not: an owner's listener that is broken for a while
// (a certificate not there yet) must not hand its host to a broader
// listener's tenants meanwhile.

// listenerHost is a listener's hostname ("" for none).
func listenerHost(l gatewayv1.Listener) string {
	if l.Hostname == nil {
		return ""
	}
	return string(*l.Hostname)
}

// listenerHostValid reports whether listener hostname h ("" for none) is
// one the routes model takes as a route's host; a listener with another is
// not accepted (listeners) and claims no host.
func listenerHostValid(h string) bool {
	return h == "" || dnsLabels(h) && routes.HostName(h)
}

// hostSpecificity orders listener hostnames as the Gateway API's listener
// precedence does, greater for more specific: no hostname, then wildcards
// by length, then exact names. It is the edge router's host order too.
func hostSpecificity(h string) int {
	switch {
	case h == "":
		return 0
	case strings.HasPrefix(h, "*."):
		return 1 + len(h)
	}
	return 1 << 30
}

// hostMatches reports whether listener hostname l matches every request
// host that hostname h (a name or a wildcard) matches.
func hostMatches(l, h string) bool {
	return l == "" || l == h || hostCovers(l, h)
}

// isolationListeners are the listeners that claim hosts, by protocol.
func (t *translator) isolationListeners(proto gatewayv1.ProtocolType) []*listenerState {
	if t.claims == nil {
		t.claims = map[gatewayv1.ProtocolType][]*listenerState{}
		for _, gs := range t.gwOrder {
			for _, ls := range gs.listeners {
				if !listenerHostValid(listenerHost(ls.spec)) {
					continue // never a host the edge serves (listeners)
				}
				t.claims[ls.spec.Protocol] = append(t.claims[ls.spec.Protocol], ls)
			}
		}
	}
	return t.claims[proto]
}

// tlsClaimed reports whether an HTTPS listener matches every host that
// hostname h (a name, a wildcard, "" for any) matches: over TLS, those
// requests are an HTTPS listener's, and routes only HTTP listeners serve
// for h are kept to plain connections.
func (t *translator) tlsClaimed(h string) bool {
	for _, o := range t.isolationListeners(gatewayv1.HTTPSProtocolType) {
		if hostMatches(listenerHost(o.spec), h) {
			return true
		}
	}
	return false
}

// isolated reports whether a route attached through ls must not be served
// for hostname h: another listener of ls's protocol, more specific than
// ls, matches every host h does, so those requests are that listener's.
func (t *translator) isolated(ls *listenerState, h string) bool {
	own := hostSpecificity(listenerHost(ls.spec))
	for _, o := range t.isolationListeners(ls.spec.Protocol) {
		oh := listenerHost(o.spec)
		if o != ls && oh != "" && hostSpecificity(oh) > own && hostMatches(oh, h) {
			return true
		}
	}
	return false
}

// fenced reports whether requests for hostname h (a name or a wildcard)
// may meet an isolation route (isolationRoutes) before any route without a
// host: one on h itself or on a wildcard covering it. A route served for
// every host must then also be served for h by name where it is h's.
func (t *translator) fenced(h string) bool {
	if t.fences == nil {
		t.fences = map[string]bool{}
		for _, r := range t.isolationMatches() {
			t.fences[r.Host] = true
		}
	}
	if t.fences[h] {
		return true
	}
	for c := range t.fences {
		if hostCovers(c, h) {
			return true
		}
	}
	return false
}

// isolationRoutes adds, for every listener hostname that a broader
// listener also matches, a route for that host that answers 404 in the
// edge's error format. It has no path and no other condition, so every
// route of that host outranks it. Plain requests reach only the HTTP
// listeners' routes, TLS requests the HTTPS listeners' and those of HTTP
// listeners for hosts no HTTPS listener claims (tlsClaimed), so:
//   - an HTTP listener's host with a broader HTTP listener gets one for
//     plain connections when an HTTPS listener claims the host (over TLS
//     the host's HTTP routes are plain-only then, and the request is the
//     most specific HTTPS listener's, broader or not: it falls back to
//     that listener's routes), else one for any connection (the host's
//     HTTP routes are served over TLS, and so are the broader HTTP
//     listener's: it keeps the host from both);
//   - an HTTPS listener's host with a broader listener of either
//     protocol gets one for TLS only, so plain requests for the host
//     still reach the HTTP listeners' routes;
//   - an HTTP listener's host under only broader HTTPS listeners gets
//     none: over TLS the broader HTTPS listener is the most specific one
//     of its protocol, and its routes rightly answer what the host's own
//     do not.
func (t *translator) isolationRoutes() {
	if !t.ours {
		return
	}
	ms := t.isolationMatches()
	if len(ms) == 0 {
		return
	}
	pname := name("Isolation", "notfound")
	raw, err := rawConfig(pname, respond.Config{Status: 404, Error: "no route matches this request"})
	if err != nil {
		return
	}
	t.putPlugin(pname, routes.PluginInst{Use: "respond", Config: raw})
	t.putUpstream(unresolvedUpstream, routes.Upstream{}, false)
	for _, m := range ms {
		suffix := "any"
		switch {
		case m.TLS:
			suffix = "tls"
		case m.Plain:
			suffix = "plain"
		}
		t.res.Fragment.Routes = append(t.res.Fragment.Routes, routes.Route{
			Name: name("Isolation", hostLabel(m.Host), suffix), Match: m, Plugins: []string{pname}, Upstream: unresolvedUpstream,
		})
	}
}

// isolationMatches are the isolation routes' matches, in listener order.
func (t *translator) isolationMatches() []routes.Match {
	plainLs, tlsLs := t.isolationListeners(gatewayv1.HTTPProtocolType), t.isolationListeners(gatewayv1.HTTPSProtocolType)
	var out []routes.Match
	for _, ls := range [][]*listenerState{plainLs, tlsLs} {
		for _, narrow := range ls {
			h := listenerHost(narrow.spec)
			if h == "" {
				continue
			}
			var m routes.Match
			switch broaderPlain := broaderListener(plainLs, h); {
			case narrow.spec.Protocol == gatewayv1.HTTPProtocolType && broaderPlain:
				m = routes.Match{Host: h, Plain: t.tlsClaimed(h)}
			case narrow.spec.Protocol == gatewayv1.HTTPSProtocolType && (broaderPlain || broaderListener(tlsLs, h)):
				m = routes.Match{Host: h, TLS: true}
			default:
				continue
			}
			if !slices.ContainsFunc(out, func(o routes.Match) bool { return o.Host == m.Host && o.TLS == m.TLS && o.Plain == m.Plain }) {
				out = append(out, m)
			}
		}
	}
	return out
}

// broaderListener reports whether one of ls is less specific than
// hostname h and matches it.
func broaderListener(ls []*listenerState, h string) bool {
	for _, o := range ls {
		oh := listenerHost(o.spec)
		if hostSpecificity(oh) < hostSpecificity(h) && hostMatches(oh, h) {
			return true
		}
	}
	return false
}
