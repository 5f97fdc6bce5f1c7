package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/mesh/meshtest"
)

// BenchmarkCallerTokens measures client -> edge -mTLS-> sidecar -> service
// without caller tokens, with them cached (the default: one signature and
// one verification per user and upstream every 30 s), and minted for every
// request (what a receiver's replay check needs). Compare within one run:
// the difference is what the edge's minting and the sidecar's verifying
// add to a hop (go test -run '^$' -bench CallerTokens ./gateway).
func BenchmarkCallerTokens(b *testing.B) {
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 64))
	}))
	defer svc.Close()
	for _, mode := range []struct{ name, edge, sidecar string }{
		{"off", "", ""},
		{"cached", "  caller_token: {}\n", "  callers: {issuers: [\"" + edgeID + "\"]}\n"},
		{"per-request", "  caller_token: {cache: 0s}\n", "  callers: {issuers: [\"" + edgeID + "\"]}\n"},
	} {
		b.Run(mode.name, func(b *testing.B) {
			ca := meshtest.NewCA(b, "example.org")
			ordersFiles := ca.IssueFiles(b.TempDir(), ordersID)
			edgeFiles := ca.IssueFiles(b.TempDir(), edgeID)
			sc := startSidecar(b, sidecarConfig(ordersFiles, hostPort(svc), []string{edgeID}, nil)+mode.sidecar)
			te := startEdge(b, listenHeader+fmt.Sprintf(`mesh:
  trust_domain: example.org
  cert_file: %q
  key_file: %q
  bundle_file: %q
%supstreams:
  orders: {endpoints: [%q], mesh_identity: %q}
routes:
  - {name: orders, match: {path_prefix: /}, upstream: orders}
`, edgeFiles.Cert, edgeFiles.Key, edgeFiles.Bundle, mode.edge, sc.Addr("inbound"), ordersID))
			benchGet(b, te.url+"/", "")
		})
	}
}
