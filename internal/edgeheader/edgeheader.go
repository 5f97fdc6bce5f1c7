// Package edgeheader names the request headers the edge states for a
// service, by what the edge does with a client's copy: the client-address
// and forwarded headers (believed only from a trusted proxy), the
// URL-override headers (dropped from everyone) and the headers only
// Causeway sets (dropped from everyone). It is one table for the two
// places that need it: the edge, sanitising a request as it enters, and the
// Kubernetes provider, refusing a route's filter that would state one of
// these after the edge dropped the client's copy.
package edgeheader

// Class is what the edge does with a client's header by its name.
type Class uint8

const (
	Plain Class = iota
	// Forwarded: X-Forwarded-*, Forwarded and the client-address
	// headers. Believed only from a trusted proxy; from anyone else dropped,
	// and the edge sets its own.
	Forwarded
	// URLOverride: headers that make IIS URL Rewrite, Symfony,
	// Laminas or Envoy serve a path other than the one the edge routed and
	// authorised. Dropped from every client.
	URLOverride
	// Owned: headers only Causeway itself sets for the service
	// (X-Causeway-Peer-Id, X-Causeway-Caller-*, and the edge's
	// X-Client-Cert-Subject), and X-Forwarded-Client-Cert, the caller
	// identity other meshes state, which Causeway never sets: a sidecar sets them after
	// it verified the caller, and a service may believe them. Dropped from
	// every client, so that neither a client of the edge nor a mesh peer
	// can hand them to a service on their own, whether or not the service
	// sits behind a sidecar.
	Owned
)

// namedHeaders classifies header names after folding case and "_" to "-",
// the way CGI-style servers fold them: X_Real_IP is X-Real-IP to them.
var namedHeaders = map[string]Class{
	"forwarded":                Forwarded,
	"x-real-ip":                Forwarded,
	"true-client-ip":           Forwarded,
	"x-client-ip":              Forwarded,
	"client-ip":                Forwarded,
	"x-cluster-client-ip":      Forwarded,
	"cf-connecting-ip":         Forwarded,
	"x-original-forwarded-for": Forwarded,
	// More names services and frameworks take the client's address from:
	// the draft's "X-Forwarded" (for=...), Fastly's, and Exchange and PHP
	// conventions.
	"x-forwarded":           Forwarded,
	"fastly-client-ip":      Forwarded,
	"x-originating-ip":      Forwarded,
	"x-remote-ip":           Forwarded,
	"x-remote-addr":         Forwarded,
	"x-original-url":        URLOverride,
	"x-rewrite-url":         URLOverride,
	"x-override-url":        URLOverride,
	"x-original-uri":        URLOverride,
	"x-envoy-original-path": URLOverride,
	"http2-settings":        URLOverride, // hop-by-hop h2c: never forwarded
	"x-causeway-peer-id":    Owned,
	// The subject of the client certificate the edge verified
	// (tls.client_auth): the edge states it, or removes it, for every
	// request (pipeline.SetForwardedOn), so a client's copy never counts.
	// Classified here so that X_Client_Cert_Subject, which a CGI-style
	// upstream reads as the same variable, goes too under
	// server.allow_underscore_headers.
	"x-client-cert-subject": Owned,
	// Envoy's and Istio's statement of the caller's certificate
	// (By=...;URI=spiffe://...;Hash=...), which services in a mesh read
	// the caller's SPIFFE ID from. Causeway never sets it; as a forwarded
	// header it passed from every verified mesh peer to a sidecar's
	// service (a sidecar believes its peers' forwarded headers), so any
	// caller could name another workload in it. Envoy itself removes it
	// from every request unless told to forward it
	// (forward_client_cert_details: SANITIZE). Looked up before the
	// x-forwarded- prefix decides.
	"x-forwarded-client-cert": Owned,
	// The mark of a mirrored copy (MirrorHeader): a shadow service tells
	// mirrored traffic by it, so a client must not be able to set it on a
	// real request; a trusted proxy (a sidecar's mesh peer) may.
	"x-causeway-mirror": Forwarded,
}

// envoyHeaderPrefix starts the headers an Envoy hop states for the next
// one: X-Envoy-External-Address (the client's address, which services
// behind Envoy read as such), X-Envoy-Internal, retry and timeout
// overrides. Envoy removes them from requests that come from outside its
// trusted hops; the edge believes them only from a trusted proxy, so a
// service (or an Envoy) behind the edge never takes a client's copy for
// a hop's statement. X-Envoy-Original-Path stays a URL override, dropped
// from everyone.
const envoyHeaderPrefix = "x-envoy-"

// callerHeaderPrefix starts the headers a sidecar sets from a verified
// caller token (X-Causeway-Caller-Subject, ...).
const callerHeaderPrefix = "x-causeway-caller-"

// Of folds name into a stack buffer (no allocation: the map
// lookup with string(buf) does not copy) and looks it up.
func Of(name string) Class {
	const prefix = "x-forwarded-"
	var buf [32]byte
	if name == "" {
		return Plain
	}
	if len(name) > len(buf) {
		switch {
		case len(name) > len(prefix) && foldEqual(name[:len(prefix)], prefix):
			return Forwarded
		case foldEqual(name[:len(callerHeaderPrefix)], callerHeaderPrefix):
			return Owned
		case foldEqual(name[:len(envoyHeaderPrefix)], envoyHeaderPrefix):
			return Forwarded
		}
		return Plain
	}
	switch FoldByte(name[0]) {
	case 'x', 'f', 't', 'c', 'h':
	default:
		return Plain // no classified name starts otherwise: skip the fold
	}
	b := buf[:len(name)]
	for i := 0; i < len(name); i++ {
		b[i] = FoldByte(name[i])
	}
	if c, ok := namedHeaders[string(b)]; ok {
		return c
	}
	if len(b) > len(prefix) && string(b[:len(prefix)]) == prefix {
		return Forwarded
	}
	if len(b) > len(callerHeaderPrefix) && string(b[:len(callerHeaderPrefix)]) == callerHeaderPrefix {
		return Owned
	}
	if len(b) > len(envoyHeaderPrefix) && string(b[:len(envoyHeaderPrefix)]) == envoyHeaderPrefix {
		return Forwarded
	}
	return Plain
}

// FoldByte is how a name is compared here, one byte at a time: lower
// case, and '_' read as '-' (the way a CGI-style server or a client
// library may fold a name, so Content_Length reaches them as
// Content-Length).
func FoldByte(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_':
		return '-'
	}
	return c
}

func foldEqual(s, lower string) bool {
	for i := 0; i < len(s); i++ {
		if FoldByte(s[i]) != lower[i] {
			return false
		}
	}
	return true
}
