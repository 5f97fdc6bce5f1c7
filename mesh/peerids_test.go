package mesh_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
	// What the sidecar does per request: the remembered ID, and the
	// remembered verification checked against the bundle and the clock.
	b.Run("verified", func(b *testing.B) {
		src, _ := ca.Source(ordersID)
		p := mesh.NewPeerIDs()
		b.ReportAllocs()
		for b.Loop() {
			if _, ok, err := p.Verified(cs, src); !ok || err != nil {
				b.Fatal("not verified", err)
			}
		}
	})
}

// Verified answers per request whether the connection's chain still
// verifies now: within every certificate's validity (the source's clock),
// against the source's current bundle. A verification is remembered for the
// certificate only while both hold, so a clock moved past the chain or a
// bundle reload that drops its root is seen by the next request. It fails
// when the remembered verification is trusted beyond either.
func TestPeerIDsVerified(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	other := meshtest.NewCA(t, "example.org")
	start := time.Now()
	leaf := other.Issue(gatewayID, meshtest.Validity(start.Add(-time.Minute), start.Add(time.Hour))).Leaf
	tests := []struct {
		desc string
		// steps run in order on one connection: each moves the clock
		// (from start) and optionally reloads the bundle, then asks.
		steps []verifyStep
	}{
		{desc: "valid, asked again", steps: []verifyStep{{at: 0, want: gatewayID}, {at: time.Minute, want: gatewayID}}},
		{desc: "expired after it was remembered", steps: []verifyStep{{at: 0, want: gatewayID}, {at: 2 * time.Hour, wantErr: true}}},
		{desc: "not valid yet, then valid", steps: []verifyStep{{at: -2 * time.Minute, wantErr: true}, {at: 0, want: gatewayID}}},
		{desc: "root removed after it was remembered", steps: []verifyStep{{at: 0, want: gatewayID}, {at: time.Second, bundle: "own", wantErr: true}}},
		{desc: "root back", steps: []verifyStep{{at: 0, bundle: "own", wantErr: true}, {at: time.Second, bundle: "both", want: gatewayID}}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			var offset atomic.Int64
			clock := func() time.Time { return start.Add(time.Duration(offset.Load())) }
			src, files := ca.SourceWithOptions(mesh.SourceOptions{Now: clock, Logger: slog.New(slog.DiscardHandler)}, ordersID)
			writeBundle := func(pem []byte) {
				if err := mesh.WriteFileAtomic(files.Bundle, pem, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := src.Reload(); err != nil {
					t.Fatal(err)
				}
			}
			writeBundle(append(ca.BundlePEM(), other.BundlePEM()...))
			p := mesh.NewPeerIDs()
			cs := peerState(leaf)
			// A client configuration's VerifyConnection, asked again with
			// the state of a connection it accepted before a pool reuses
			// it, answers as Verified does: it remembers too.
			client := mesh.ClientConfig(src, mustID(t, gatewayID))
			for i, s := range tc.steps {
				offset.Store(int64(s.at))
				switch s.bundle {
				case "own":
					writeBundle(ca.BundlePEM())
				case "both":
					writeBundle(append(ca.BundlePEM(), other.BundlePEM()...))
				}
				id, ok, err := p.Verified(cs, src)
				if !ok || (err != nil) != s.wantErr || (err == nil && id.String() != s.want) {
					t.Fatalf("step %d: %q, %v, %v; want %q, error %v", i, id, ok, err, s.want, s.wantErr)
				}
				if err := client.VerifyConnection(*cs); (err != nil) != s.wantErr {
					t.Fatalf("step %d: the client configuration's check again: %v; want error %v", i, err, s.wantErr)
				}
			}
			// What is remembered is the chain's verification, never the
			// decision on the ID: another ID wanted is refused.
			if err := mesh.ClientConfig(src, mustID(t, ordersID)).VerifyConnection(*cs); err == nil {
				t.Fatal("a client configuration wanting another ID accepted the server")
			}
			if _, ok, _ := p.Verified(&tls.ConnectionState{HandshakeComplete: true}, src); ok {
				t.Fatal("a connection without a certificate counted as one")
			}
		})
	}
}

type verifyStep struct {
	at      time.Duration
	bundle  string // "own": the other CA's root removed; "both": back
	want    string
	wantErr bool
}
