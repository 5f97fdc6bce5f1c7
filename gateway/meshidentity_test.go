package gateway

import (
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh/meshtest"
)

// TestSidecarPeerCannotStateItsIdentity: a mesh peer with a SPIFFE ID of
// its own, allowed to call, sends the headers a service may read the
// caller's identity from: Causeway's (X-Causeway-Peer-Id, the caller
// headers, the token header, X-Client-Cert-Subject) and Envoy's and
// Istio's X-Forwarded-Client-Cert, whose URI= names the caller's SPIFFE
// ID, each naming the edge, over HTTP/1.1 and HTTP/2, also nominated by
// Connection. The service must see the peer's verified ID once and none
// of the claims. Before, X-Forwarded-Client-Cert passed: the inbound
// listener believes every verified peer's forwarded headers, and the
// name was read as one (a service ported from Istio took the caller for
// the edge). Envoy removes it from every request unless told to forward
// it (forward_client_cert_details defaults to SANITIZE).
func TestSidecarPeerCannotStateItsIdentity(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
	svc := echoUpstream(t, "orders")
	const cart = "spiffe://example.org/ns/shop/sa/cart"
	sc := startSidecar(t, sidecarConfig(ordersFiles, hostPort(svc), []string{edgeID, cart}, nil))
	claims := [][2]string{
		{"X-Causeway-Peer-Id", edgeID},
		{"x-causeway-caller-subject", "root"},
		{"Causeway-Caller", "forged"},
		{"X-Client-Cert-Subject", "CN=gateway"},
		{"X-Forwarded-Client-Cert", "By=" + ordersID + ";URI=" + edgeID},
		{"x-forwarded-client-cert", "URI=" + edgeID},
	}
	for _, proto := range []string{"HTTP/1.1", "HTTP/2"} {
		for _, nominate := range []bool{false, true} {
			name := proto
			if nominate {
				name += "/nominated by Connection"
			}
			t.Run(name, func(t *testing.T) {
				cfg := &tls.Config{RootCAs: ca.Pool(), InsecureSkipVerify: true, Certificates: []tls.Certificate{ca.Issue(cart).TLS}} // SPIFFE: no host names
				tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: proto == "HTTP/2"}
				t.Cleanup(tr.CloseIdleConnections)
				req, _ := http.NewRequest(http.MethodGet, "https://"+sc.Addr("inbound")+"/", nil)
				for _, kv := range claims {
					req.Header[kv[0]] = append(req.Header[kv[0]], kv[1])
				}
				if nominate && proto == "HTTP/1.1" { // HTTP/2 has no Connection header
					req.Header.Set("Connection", "keep-alive, X-Forwarded-Client-Cert, X-Causeway-Peer-Id")
				}
				resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if wantMajor := map[string]int{"HTTP/1.1": 1, "HTTP/2": 2}[proto]; resp.StatusCode != http.StatusOK || resp.ProtoMajor != wantMajor {
					t.Fatalf("status %d over %s", resp.StatusCode, resp.Proto)
				}
				seen := decodeEcho(t, body).Header
				if got := seen.Values(PeerIDHeader); len(got) != 1 || got[0] != cart {
					t.Errorf("the service saw caller %q, want %q", got, cart)
				}
				for _, name := range []string{"X-Causeway-Caller-Subject", "Causeway-Caller", "X-Client-Cert-Subject", "X-Forwarded-Client-Cert"} {
					if v := seen.Values(name); len(v) > 0 {
						t.Errorf("the service received %s: %q", name, v)
					}
				}
			})
		}
	}
}
