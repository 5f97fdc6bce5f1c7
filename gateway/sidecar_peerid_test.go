package gateway

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh/meshtest"
)

// The sidecar reads the caller's ID from its certificate once per
// connection (mesh.PeerIDs). Many callers, more than that cache has slots,
// each on its own keep-alive connection, take turns: allowed ones with a
// forged X-Causeway-Peer-Id naming another caller, unlisted ones (valid
// certificates of IDs not in the allow-list), and several certificates of
// one ID. Every request must be judged on its own connection's
// certificate: an allowed caller's service sees exactly its own ID, an
// unlisted caller gets 403 and never reaches the service, whoever was
// served before it.
func TestSidecarPeerIDPerConnection(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
	svc := echoUpstream(t, "orders")
	sc := startSidecar(t, sidecarConfig(ordersFiles, hostPort(svc), []string{edgeID, paymentsID}, nil))
	url := "https://" + sc.Addr("inbound") + "/"

	tests := []struct {
		desc    string
		callers []string // a certificate and a connection each
		rounds  int
	}{
		{desc: "two allowed callers, each forging the other", callers: []string{edgeID, paymentsID}, rounds: 10},
		{desc: "an unlisted caller between allowed ones", callers: []string{edgeID, "spiffe://example.org/ns/shop/sa/intruder", paymentsID}, rounds: 10},
		{desc: "more callers than cached slots, a third of them unlisted", callers: manyCallers(150), rounds: 3},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			clients := make([]*http.Client, len(tc.callers))
			for i, id := range tc.callers {
				clients[i] = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
					MaxConnsPerHost: 1, // one keep-alive connection per caller
					TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), InsecureSkipVerify: true, Certificates: []tls.Certificate{ca.Issue(id).TLS}},
				}}
				defer clients[i].CloseIdleConnections()
			}
			for r := range tc.rounds {
				for i, id := range tc.callers {
					req, _ := http.NewRequest(http.MethodGet, url, nil)
					// Another caller's ID, as the header the service trusts.
					req.Header.Set(PeerIDHeader, tc.callers[(i+1)%len(tc.callers)])
					resp, err := clients[i].Do(req)
					if err != nil {
						t.Fatalf("round %d, caller %d (%s): %v", r, i, id, err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if id != edgeID && id != paymentsID {
						if resp.StatusCode != http.StatusForbidden {
							t.Fatalf("round %d: unlisted caller %s got %d: %s", r, id, resp.StatusCode, body)
						}
						continue
					}
					if resp.StatusCode != http.StatusOK {
						t.Fatalf("round %d: caller %s got %d: %s", r, id, resp.StatusCode, body)
					}
					if got := decodeEcho(t, body).Header.Values(PeerIDHeader); len(got) != 1 || got[0] != id {
						t.Fatalf("round %d: caller %s: the service saw %q", r, id, got)
					}
				}
			}
		})
	}
}

// manyCallers is n callers: the two allowed IDs (each with a certificate of
// its own per caller) and unlisted IDs, interleaved.
func manyCallers(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		switch i % 3 {
		case 0:
			ids[i] = edgeID
		case 1:
			ids[i] = fmt.Sprintf("spiffe://example.org/ns/shop/sa/intruder-%d", i)
		default:
			ids[i] = paymentsID
		}
	}
	return ids
}
