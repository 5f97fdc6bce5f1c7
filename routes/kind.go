package routes

import (
	"go.yaml.in/yaml/v3"
)

// Kinds of configuration file.
const (
	KindEdge    = "edge"
	KindSidecar = "sidecar"
)

// edgeOnly and sidecarOnly are top-level keys only one kind of file has.
var (
	edgeOnly    = map[string]bool{"routes": true, "upstreams": true, "listen": true, "authenticators": true, "rate_limits": true, "plugins": true, "tls": true, "redis": true, "mesh": true, "trusted_proxies": true}
	sidecarOnly = map[string]bool{"identity": true, "inbound": true, "outbound": true, "admin_access": true}
)

// DetectKind tells a routes file from a sidecar file by their top-level
// keys, so that `causeway validate` checks either and `causeway edge` given
// a sidecar file says so in one line. "" means it cannot tell (not YAML,
// not a mapping, or keys of both or neither kind): the caller then checks
// it as what it expected, and the errors say what is wrong.
func DetectKind(data []byte) string {
	var top map[string]yaml.Node
	if yaml.Unmarshal(data, &top) != nil {
		return ""
	}
	edge, sidecar := false, false
	for k := range top {
		edge = edge || edgeOnly[k]
		sidecar = sidecar || sidecarOnly[k]
	}
	switch {
	case edge && !sidecar:
		return KindEdge
	case sidecar && !edge:
		return KindSidecar
	}
	return ""
}
