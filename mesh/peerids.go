package mesh

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"
	"sync/atomic"
	"time"
)

// peerIDSlots bounds PeerIDs: enough for the connections a busy sidecar
// keeps open to a handful of callers, few enough that the certificates it
// holds on to (a few KiB each) do not matter.
const peerIDSlots = 64

// PeerIDs is PeerID for a server that reads its caller's ID on every
// request: it remembers the ID read from each verified leaf certificate, so
// the certificate's URI SAN is turned into a string and parsed once per
// connection instead of once per request (an allocation and a SPIFFE ID
// parse on each request of a keep-alive connection, BenchmarkPeerIDs).
//
// An entry is keyed by the certificate object itself, the one crypto/tls
// keeps for the connection after the handshake verified it and puts into
// every request's ConnectionState; not by the certificate's bytes, its
// serial or its ID. So a request only ever finds the ID read from its own
// connection's certificate: no peer can be handed another's. Each entry
// holds its certificate, so the object cannot be freed and its address
// reused for another while the entry can still be found. A newcomer
// replaces whoever held its slot; a miss only costs the parse again.
//
// The zero value is not usable; NewPeerIDs makes one. It is safe for
// concurrent use.
type PeerIDs struct {
	seed  maphash.Seed
	slots [peerIDSlots]atomic.Pointer[peerIDEntry]
}

type peerIDEntry struct {
	cert *x509.Certificate
	id   ID
	// m is the source's material the certificate's chain was verified
	// against by Verified, and [from, until) the time in which that
	// verification holds (every certificate of the chain valid); nil m:
	// read by PeerID, never verified here.
	m           *material
	from, until time.Time
}

// NewPeerIDs returns an empty cache.
func NewPeerIDs() *PeerIDs { return &PeerIDs{seed: maphash.MakeSeed()} }

// PeerID is the package's PeerID, remembered per leaf certificate. The
// conditions PeerID checks on the connection state (a complete handshake,
// a certificate) are checked on every call.
func (p *PeerIDs) PeerID(cs *tls.ConnectionState) (ID, bool) {
	if cs == nil || !cs.HandshakeComplete || len(cs.PeerCertificates) == 0 {
		return ID{}, false
	}
	leaf := cs.PeerCertificates[0]
	slot := &p.slots[maphash.Comparable(p.seed, leaf)%peerIDSlots]
	if e := slot.Load(); e != nil && e.cert == leaf {
		return e.id, true
	}
	id, err := IDFromCert(leaf)
	if err != nil {
		// Not remembered: such a certificate never passes ServerConfig's
		// verification, so it is not worth a slot.
		return ID{}, false
	}
	slot.Store(&peerIDEntry{cert: leaf, id: id})
	return id, true
}

// FromRequest is PeerID of the connection r arrived on.
func (p *PeerIDs) FromRequest(r *http.Request) (ID, bool) { return p.PeerID(r.TLS) }

// Verified is PeerID for a connection served with ServerConfig(s), with
// the peer's chain (as presented in the handshake) verified again for this
// request, against s's bundle and clock now. The handshake verified it
// once; the connection can then be kept open, and used, for as long as the
// peer likes. Without this a connection made before the peer's
// certificate expired, or before its root was removed from the bundle,
// would go on being served: a short lifetime is what bounds a stolen key
// (there is no revocation), and removing a root is how a compromised CA is
// cut off.
//
// The verification is remembered with the connection's certificate: it is
// repeated only when s's material changed (a bundle or certificate
// reload) or the clock left the chain's validity, so a request otherwise
// costs a clock read more than PeerID (BenchmarkPeerIDs).
//
// ok is false when the connection carries no certificate at all (not
// mTLS); err is set when its certificate no longer verifies.
func (p *PeerIDs) Verified(cs *tls.ConnectionState, s *Source) (id ID, ok bool, err error) {
	if cs == nil || !cs.HandshakeComplete || len(cs.PeerCertificates) == 0 {
		return ID{}, false, nil
	}
	id, err = p.verifyChain(cs.PeerCertificates, s)
	if err != nil {
		return ID{}, true, fmt.Errorf("mesh: peer certificate no longer verifies: %w", err)
	}
	return id, true, nil
}

// verifyChain is s.Verify(chain), remembered with the chain's leaf (the
// certificate object of one connection) while s's material and the clock
// stay where the last verification of that leaf holds.
func (p *PeerIDs) verifyChain(chain []*x509.Certificate, s *Source) (ID, error) {
	if len(chain) == 0 {
		return ID{}, errors.New("mesh: peer presented no certificate")
	}
	m := s.cur.Load()
	if m == nil {
		return ID{}, s.Ready()
	}
	now := s.now()
	leaf := chain[0]
	slot := &p.slots[maphash.Comparable(p.seed, leaf)%peerIDSlots]
	if e := slot.Load(); e != nil && e.cert == leaf && e.m == m && !now.Before(e.from) && now.Before(e.until) {
		return e.id, nil
	}
	id, from, until, err := verifyChain(chain, m.bundles, now)
	if err != nil {
		return ID{}, err
	}
	slot.Store(&peerIDEntry{cert: leaf, id: id, m: m, from: from, until: until})
	return id, nil
}
