package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh/meshtest"
)

// A WebSocket upgrade through the mesh carries the identity the sidecar
// verified and nothing a client or a service claimed: from a client of the
// edge to a service behind its sidecar, and from a service through its
// sidecar's outbound side to another service's sidecar. The requests carry
// forged X-Causeway-Peer-Id, caller headers (also spelled with '_', under
// server.allow_underscore_headers), a forwarded principal header
// (callers.headers) and a forged caller token, and nominate the peer ID in
// Connection (ReverseProxy, which carries upgrades, would apply that
// nomination after the sidecar set the header). The service's raw view of
// the request head is checked, then the tunnel: bytes sent before the 101
// and after it come back in order.
func TestUpgradeThroughMeshCarriesOnlyVerifiedIdentity(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	edgeFiles := ca.IssueFiles(t.TempDir(), edgeID)
	ordersFiles := ca.IssueFiles(t.TempDir(), ordersID)
	paymentsFiles := ca.IssueFiles(t.TempDir(), paymentsID)
	callers := "  callers: {issuers: [\"" + edgeID + "\"], headers: [X-User-Id]}\nserver: {allow_underscore_headers: true}\n"

	payments := newUpgradeRecorder(t)
	paymentsSidecar := startSidecar(t, sidecarConfig(paymentsFiles, payments.addr(), []string{ordersID}, nil)+callers)
	orders := newUpgradeRecorder(t)
	ordersSidecar := startSidecar(t, strings.Replace(sidecarConfig(ordersFiles, orders.addr(), []string{edgeID},
		map[string][2]string{"payments": {paymentsSidecar.Addr("inbound"), paymentsID}}), "outbound:", callers+"outbound:", 1))
	te := startEdge(t, strings.Replace(meshEdgeConfig(edgeFiles, ordersSidecar.Addr("inbound"), ordersID),
		"bundle_file: ", "caller_token: {cache: 0s}, bundle_file: ", 1)+"server: {allow_underscore_headers: true}\n")

	const forged = "X-Causeway-Peer-Id: spiffe://example.org/ns/shop/sa/intruder\r\n" +
		"X_Causeway_Peer_Id: spiffe://example.org/ns/shop/sa/intruder\r\n" +
		"X-Causeway-Caller-Subject: admin\r\nX_Causeway_Caller_Subject: admin\r\n" +
		"X-User-Id: admin\r\nX_User_Id: admin\r\n"
	tests := []struct {
		desc      string
		addr      string
		host      string
		extra     string // more forged fields
		svc       *upgradeRecorder
		peer      string
		anonymous bool // the edge's token for a route without auth
	}{
		{desc: "client of the edge", addr: strings.TrimPrefix(te.url, "http://"), host: "edge.example", svc: orders,
			extra: "Causeway-Caller: forged\r\nCauseway_Caller: forged\r\n", peer: edgeID, anonymous: true},
		{desc: "service through its sidecar", addr: ordersSidecar.Addr("outbound"), host: "payments", svc: payments,
			extra: "Causeway_Caller: forged\r\n", peer: ordersID},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			c, err := net.Dial("tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "GET /orders/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Causeway-Peer-Id\r\n"+
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s%s\r\nEARLY", tc.host, forged, tc.extra)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("got %d: %s", resp.StatusCode, b)
			}
			_, _ = io.WriteString(c, "HELLO")
			buf := make([]byte, len("EARLYHELLO"))
			if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "EARLYHELLO" {
				t.Fatalf("tunnel echoed %q, %v", buf, err)
			}
			h := tc.svc.last(t)
			if got := h.Values(PeerIDHeader); len(got) != 1 || got[0] != tc.peer {
				t.Errorf("the service saw X-Causeway-Peer-Id %q, want [%s]", got, tc.peer)
			}
			for k, v := range h {
				switch fk := foldName(k); {
				case fk == "x-causeway-peer-id" && k != PeerIDHeader,
					fk == "x-user-id",
					fk == "x-causeway-caller-subject",
					fk == "causeway-caller" && (k != "Causeway-Caller" || !tc.anonymous):
					t.Errorf("the service received %s: %q", k, v)
				}
			}
			if tc.anonymous {
				if h.Get("X-Causeway-Caller-Anonymous") != "true" || h.Get("X-Causeway-Caller-Chain") != edgeID {
					t.Errorf("no verified anonymous caller: %v", h)
				}
				if tok := h.Get("Causeway-Caller"); tok == "" || tok == "forged" {
					t.Errorf("the service got caller token %q, want the edge's", tok)
				}
			} else if v := h.Get("X-Causeway-Caller-Chain"); v != "" {
				t.Errorf("a direct call arrived with a caller chain %q", v)
			}
		})
	}
}

// upgradeRecorder is a service that records each request head, switches
// to the asked protocol and echoes.
type upgradeRecorder struct {
	ln    net.Listener
	mu    sync.Mutex
	heads []http.Header
}

func newUpgradeRecorder(t *testing.T) *upgradeRecorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upgradeRecorder{ln: ln}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				r, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				u.mu.Lock()
				u.heads = append(u.heads, r.Header)
				u.mu.Unlock()
				if _, err := fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", r.Header.Get("Upgrade")); err != nil {
					return
				}
				_, _ = io.Copy(c, br)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return u
}

func (u *upgradeRecorder) addr() string { return u.ln.Addr().String() }

func (u *upgradeRecorder) last(t *testing.T) http.Header {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.heads) == 0 {
		t.Fatal("the service received nothing")
	}
	return u.heads[len(u.heads)-1]
}
