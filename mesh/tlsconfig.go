package mesh

import (
	"crypto/tls"
	"fmt"
	"net/http"
)

// nextProtos offers HTTP/2 first: one mTLS connection then carries many
// concurrent requests, so the handshake cost is paid rarely.
var nextProtos = []string{"h2", "http/1.1"}

// ServerConfig is an mTLS server configuration: a client must present a
// certificate that verifies against the source's current bundle (see
// Source.Verify), or the handshake fails. Which verified IDs may go on is the
// caller's decision (an Authorizer), so it can answer 403 rather than drop
// the connection. Serve it with http.Server.ServeTLS(ln, "", "") so that
// HTTP/2 is set up.
func ServerConfig(s *Source) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: append([]string(nil), nextProtos...),
		// Go's own verification would check the chain against a fixed pool;
		// the bundle rotates, so VerifyConnection checks against the
		// current one instead.
		ClientAuth: tls.RequireAnyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.Certificate()
		},
		// VerifyConnection, unlike VerifyPeerCertificate, also runs on
		// resumed sessions: a ticket issued before the peer's certificate
		// expired or its root left the bundle is not a way around either.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if _, err := s.Verify(cs.PeerCertificates); err != nil {
				return fmt.Errorf("refusing client: %w", err)
			}
			return nil
		},
	}
}

// ClientConfig is an mTLS client configuration that presents the source's
// certificate and accepts only a server whose verified ID is want (a zero
// want accepts no server). Use it
// with an http.Transport that sets ForceAttemptHTTP2 to get HTTP/2.
func ClientConfig(s *Source, want ID) *tls.Config {
	return ClientConfigAuthorized(s, AuthorizeID(want))
}

// ClientConfigAuthorized is ClientConfig with any authorizer deciding which
// server IDs are acceptable.
//
// Its VerifyConnection may be called again, with the state of a connection
// it accepted, before that connection is used once more (a pool's reuse):
// the chain is checked against the bundle and the clock of that moment and
// the ID authorized again, so a connection made before the server's root
// left the bundle, or before its certificate expired, is refused then as a
// new one would be. The chain's verification is remembered per connection
// while neither the source's material nor the chain's validity changed, so
// a repeated call costs a few comparisons.
func ClientConfigAuthorized(s *Source, authorize Authorizer) *tls.Config {
	peers := NewPeerIDs()
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: append([]string(nil), nextProtos...),
		// SPIFFE identities are not host names: the server is checked by
		// VerifyConnection (chain to the current bundle, then its ID), so
		// Go's host name verification is turned off, not verification.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.Certificate()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := peers.verifyChain(cs.PeerCertificates, s)
			if err != nil {
				return fmt.Errorf("refusing server: mesh: verifying peer certificate: %w", err)
			}
			if err := authorize(id); err != nil {
				return fmt.Errorf("refusing server: %w", err)
			}
			return nil
		},
	}
}

// PeerID returns the peer's SPIFFE ID from the state of a connection made
// with ServerConfig or ClientConfig. Those refuse any peer whose chain does
// not verify, so on such a connection the ID is a verified one; on a
// connection configured otherwise it is merely what the peer claimed.
func PeerID(cs *tls.ConnectionState) (ID, bool) {
	if cs == nil || !cs.HandshakeComplete || len(cs.PeerCertificates) == 0 {
		return ID{}, false
	}
	id, err := IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return ID{}, false
	}
	return id, true
}

// PeerIDFromRequest is PeerID of the connection r arrived on.
func PeerIDFromRequest(r *http.Request) (ID, bool) { return PeerID(r.TLS) }
