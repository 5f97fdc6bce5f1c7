package gateway

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/mesh/meshtest"
)

// A client's own caller token is removed on every route, also spelled
// with '_' (Causeway_Caller), which server.allow_underscore_headers lets
// in and a CGI-style service (CGI, WSGI, PHP) reads as the same variable
// as Causeway-Caller: an upstream outside the mesh, and a mesh upstream's
// sidecar, must get no copy the edge did not mint. The edge's token header
// may be renamed (mesh.caller_token.header).
func TestEdgeRemovesCallerTokenTwins(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	edgeFiles := ca.IssueFiles(t.TempDir(), edgeID)
	plainSeen := &seen{}
	plain := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		plainSeen.add(r)
		_, _ = io.WriteString(w, "ok\n")
	})
	for _, header := range []string{"Causeway-Caller", "X-Caller-Token"} {
		t.Run(header, func(t *testing.T) {
			te := startEdge(t, listenHeader+`server: {allow_underscore_headers: true}
mesh: {trust_domain: example.org, cert_file: "`+edgeFiles.Cert+`", key_file: "`+edgeFiles.Key+`", bundle_file: "`+edgeFiles.Bundle+`", caller_token: {header: `+header+`}}
upstreams:
  plain: {endpoints: ["`+plain+`"]}
routes:
  - {name: plain, match: {path_prefix: /}, upstream: plain}
`)
			twin := strings.ReplaceAll(header, "-", "_")
			for _, name := range []string{header, twin, strings.ToLower(twin), "X_" + twin} {
				req, _ := http.NewRequest(http.MethodGet, te.url+"/", nil)
				req.Header[name] = []string{"forged"}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				h := plainSeen.last(t)
				for k, v := range h {
					if foldName(k) == foldName(header) {
						t.Errorf("sent %s: the upstream outside the mesh received %s: %q", name, k, v)
					}
				}
				if name == "X_"+twin && h.Get("X_"+twin) == "" {
					t.Errorf("another header (%s) was removed too", name)
				}
			}
		})
	}
}
