package gateway

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/causewayhq/causeway/mesh/meshtest"
)

// A reload that changes the mesh section in a way that builds a new source
// but keeps the certificate files (here: a federated bundle added) must
// send new connections through the new source. Before, the upstream
// connection pools were keyed by the file names only: the reload kept the
// old pool, whose TLS configuration read the replaced source, closed and
// no longer following rotations, so a certificate rotated afterwards was
// never presented.
func TestMeshReloadNewSourceFollowsRotation(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	partner := meshtest.NewCA(t, "partner.example")
	dir := t.TempDir()
	a, b := "spiffe://example.org/ns/edge/sa/a", "spiffe://example.org/ns/edge/sa/b"
	files := ca.IssueFiles(dir, a)
	partnerBundle := partner.WriteBundle(t.TempDir())
	svc := echoUpstream(t, "orders")
	sidecar := startSidecar(t, sidecarConfig(ca.IssueFiles(t.TempDir(), ordersID), hostPort(svc), []string{a, b}, nil))
	config := func(extra string) string {
		return listenHeader + fmt.Sprintf("mesh: {trust_domain: example.org, cert_file: %q, key_file: %q, bundle_file: %q%s}\n", files.Cert, files.Key, files.Bundle, extra) +
			fmt.Sprintf("upstreams:\n  orders: {endpoints: [%q], mesh_identity: %q}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: orders}\n", sidecar.Addr("inbound"), ordersID)
	}
	var edge *testEdge
	seen := func() string {
		resp, body := get(t, edge.url+"/x")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("through the mesh: %d %s", resp.StatusCode, body)
		}
		return decodeEcho(t, body).Header.Get(PeerIDHeader)
	}
	edge = startEdge(t, config(""))
	if got := seen(); got != a {
		t.Fatalf("at start the sidecar saw %s, want %s", got, a)
	}
	writeFile(t, edge.path, config(fmt.Sprintf(", federated_bundles: {partner.example: %q}", partnerBundle)))
	if err := edge.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Rotate the edge's certificate in place, to another ID.
	if got := ca.IssueFiles(dir, b); got.Cert != files.Cert || filepath.Dir(got.Key) != filepath.Dir(files.Key) {
		t.Fatalf("test setup: reissued to %+v, not over %+v", got, files)
	}
	// Once the live source has loaded it (its expiry is published), the
	// next connection presents it. No request went out since the reload,
	// so no connection made with the old certificate is waiting idle.
	waitMetric(t, edge.admin+"/metrics", `causeway_certificate_expiry_timestamp_seconds{name="`+b+`"}`)
	if got := seen(); got != b {
		t.Fatalf("after the rotation the sidecar sees %s, want %s", got, b)
	}
}
