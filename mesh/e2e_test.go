package mesh_test

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh"
)

// TestOperatorFlow is the documented flow end to end on disk: a root, an
// intermediate, two workloads issued from the intermediate, mTLS between
// them, then `ca issue` run again over the server's files as a rotation.
func TestOperatorFlow(t *testing.T) {
	dir := t.TempDir()
	root, inter := filepath.Join(dir, "ca"), filepath.Join(dir, "ca", "int")
	must(t, mesh.InitCA(root, "example.org"))
	must(t, mesh.IssueIntermediate(root, inter))
	ordersOut, gatewayOut := filepath.Join(dir, "mesh", "orders"), filepath.Join(dir, "mesh", "gateway")
	must(t, mesh.IssueLeaf(inter, mustID(t, ordersID), 0, ordersOut))
	must(t, mesh.IssueLeaf(inter, mustID(t, gatewayID), 0, gatewayOut))
	bundle := filepath.Join(root, "bundle.pem")

	open := func(prefix string) *mesh.Source {
		s, err := mesh.NewSource(context.Background(), prefix+".pem", prefix+"-key.pem", bundle, mesh.SourceOptions{Logger: discardSlog(), TrustDomain: "example.org"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	server, client := open(ordersOut), open(gatewayOut)
	addr := serveMesh(t, server, peerEcho(mesh.AuthorizeOnly(mustID(t, gatewayID))))
	get := func(keepAlive bool) (string, string) {
		t.Helper()
		c := meshClient(t, mesh.ClientConfig(client, mustID(t, ordersID)), true, keepAlive)
		resp, err := c.Get("https://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body), resp.TLS.PeerCertificates[0].SerialNumber.String()
	}
	body, firstSerial := get(false)
	if body != gatewayID+" HTTP/2.0" {
		t.Fatalf("body %q", body)
	}

	must(t, mesh.IssueLeaf(inter, mustID(t, ordersID), time.Hour, ordersOut))
	waitFor(t, "the reissued certificate", func() bool { return serial(server) != firstSerial })
	if _, got := get(false); got != serial(server) {
		t.Fatalf("a new connection got serial %s, the source holds %s", got, serial(server))
	}
}
