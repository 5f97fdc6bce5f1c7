package mesh_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
	"testing"

	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// peerState is the connection state a server sees on a connection whose
// client presented leaf (after verification).
func peerState(leaf *x509.Certificate) *tls.ConnectionState {
	return &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{leaf}}
}

// PeerIDs answers exactly what PeerID answers, for every state, however
// often a certificate has been seen before.
func TestPeerIDsAsPeerID(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	gw := ca.Issue(gatewayID).Leaf
	noID := ca.Issue("spiffe://example.org/x", meshtest.URIs()).Leaf
	twoIDs := ca.Issue("spiffe://example.org/x", meshtest.URIs(gatewayID, ordersID)).Leaf
	upperScheme := ca.Issue("spiffe://example.org/x", meshtest.RawURIs("SPIFFE://example.org/ns/edge/sa/gateway")).Leaf
	tests := []struct {
		desc   string
		states []*tls.ConnectionState // asked in this order, each twice
		want   []string               // "" is no ID
	}{
		{desc: "no connection state", states: []*tls.ConnectionState{nil}, want: []string{""}},
		{desc: "no certificate", states: []*tls.ConnectionState{{HandshakeComplete: true}}, want: []string{""}},
		{
			// A certificate already remembered does not stand in for a
			// handshake that did not complete.
			desc:   "handshake incomplete after the certificate was remembered",
			states: []*tls.ConnectionState{peerState(gw), {HandshakeComplete: false, PeerCertificates: []*x509.Certificate{gw}}},
			want:   []string{gatewayID, ""},
		},
		{desc: "certificate without a SPIFFE ID", states: []*tls.ConnectionState{peerState(noID)}, want: []string{""}},
		{desc: "certificate with two URIs", states: []*tls.ConnectionState{peerState(twoIDs)}, want: []string{""}},
		// crypto/x509 reads it as spiffe://...: not the ID written.
		{desc: "certificate with an upper-case scheme", states: []*tls.ConnectionState{peerState(upperScheme)}, want: []string{""}},
		{desc: "a verified leaf", states: []*tls.ConnectionState{peerState(gw)}, want: []string{gatewayID}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			p := mesh.NewPeerIDs()
			for round := range 2 {
				for i, cs := range tc.states {
					id, ok := p.PeerID(cs)
					refID, refOK := mesh.PeerID(cs)
					if got := idOrEmpty(id, ok); got != tc.want[i] || id != refID || ok != refOK {
						t.Fatalf("round %d, state %d: PeerIDs %q (%v), PeerID %q (%v); want %q", round, i, got, ok, refID, refOK, tc.want[i])
					}
				}
			}
		})
	}
}

func idOrEmpty(id mesh.ID, ok bool) string {
	if !ok {
		return ""
	}
	return id.String()
}

// Many peers, more than the cache has slots, asked in turn and from many
// goroutines at once: each certificate only ever yields its own ID, never
// the ID of a certificate that shared its slot before, nor one of another
// certificate with the same serial-free contents (the cache is keyed by the
// certificate, not by anything a peer chooses).
func TestPeerIDsNeverAcrossPeers(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	other := meshtest.NewCA(t, "example.org")
	tests := []struct {
		desc    string
		peers   int
		workers int
		rounds  int
	}{
		{desc: "a few peers in turn", peers: 4, workers: 1, rounds: 50},
		{desc: "more peers than slots, in turn", peers: 200, workers: 1, rounds: 5},
		{desc: "more peers than slots, concurrently", peers: 200, workers: 8, rounds: 5},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			type peer struct {
				cs   *tls.ConnectionState
				want string
			}
			peers := make([]peer, tc.peers)
			for i := range peers {
				id := fmt.Sprintf("spiffe://example.org/ns/shop/sa/caller-%d", i)
				issuer := ca
				if i%2 == 1 {
					issuer = other // a second CA: equal subjects, other keys
				}
				peers[i] = peer{cs: peerState(issuer.Issue(id).Leaf), want: id}
			}
			p := mesh.NewPeerIDs()
			var wg sync.WaitGroup
			errs := make(chan string, tc.workers)
			for w := range tc.workers {
				wg.Go(func() {
					for r := range tc.rounds {
						for i := range peers {
							pe := peers[(i*7+w*13+r)%len(peers)]
							id, ok := p.PeerID(pe.cs)
							if !ok || id.String() != pe.want {
								errs <- fmt.Sprintf("worker %d round %d: got %q (%v), want %q", w, r, id, ok, pe.want)
								return
							}
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for e := range errs {
				t.Error(e)
			}
		})
	}
}

// BenchmarkPeerIDs: reading the caller's ID on a request of a keep-alive
// connection, parsed from the certificate each time (PeerID) or remembered
// for the certificate (PeerIDs).
func BenchmarkPeerIDs(b *testing.B) {
	ca := meshtest.NewCA(b, "example.org")
	cs := peerState(ca.Issue(gatewayID).Leaf)
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := mesh.PeerID(cs); !ok {
				b.Fatal("no ID")
			}
		}
	})
	b.Run("remembered", func(b *testing.B) {
		p := mesh.NewPeerIDs()
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := p.PeerID(cs); !ok {
				b.Fatal("no ID")
			}
		}
	})
}
