package mesh

import (
	"errors"
	"fmt"
	"net/http"
)

// ErrUnauthorized is wrapped by every refusal of an Authorizer, so a caller
// can tell "wrong peer" (403) from other failures.
var ErrUnauthorized = errors.New("peer not authorized")

// Authorizer decides whether a verified peer ID may go on: nil means yes.
type Authorizer func(peer ID) error

// AuthorizeOnly allows the listed IDs and no others. With no IDs it allows
// nobody: an empty allow-list is a closed door, never an open one.
func AuthorizeOnly(ids ...ID) Authorizer {
	allowed := make(map[ID]struct{}, len(ids))
	for _, id := range ids {
		if !id.IsZero() {
			allowed[id] = struct{}{}
		}
	}
	return func(peer ID) error {
		if _, ok := allowed[peer]; ok {
			return nil
		}
		return fmt.Errorf("%w: %s is not in the allow-list", ErrUnauthorized, idString(peer))
	}
}

// AuthorizeID allows exactly one ID; a zero want allows nobody.
func AuthorizeID(want ID) Authorizer {
	return func(peer ID) error {
		if !want.IsZero() && peer == want {
			return nil
		}
		return fmt.Errorf("%w: %s is not the expected %s", ErrUnauthorized, idString(peer), idString(want))
	}
}

// AuthorizeMemberOf allows every ID of trust domain td ("example.org" or
// "spiffe://example.org"). An invalid td allows nobody.
func AuthorizeMemberOf(td string) Authorizer {
	domain, err := ParseTrustDomain(td)
	if err != nil {
		return func(ID) error { return fmt.Errorf("%w: %w", ErrUnauthorized, err) }
	}
	return func(peer ID) error {
		if !peer.IsZero() && peer.MemberOf(domain) {
			return nil
		}
		return fmt.Errorf("%w: %s is not in trust domain %s", ErrUnauthorized, idString(peer), domain)
	}
}

// AuthorizeOneOf allows a peer that at least one of authorizers allows;
// with none it allows nobody.
func AuthorizeOneOf(authorizers ...Authorizer) Authorizer {
	return func(peer ID) error {
		for _, a := range authorizers {
			if a(peer) == nil {
				return nil
			}
		}
		return fmt.Errorf("%w: %s is not allowed", ErrUnauthorized, idString(peer))
	}
}

// Request authorizes the peer of an mTLS request served with ServerConfig.
// It returns the peer's ID when allowed; a request that carries no verified
// peer ID is refused.
func (a Authorizer) Request(r *http.Request) (ID, error) {
	id, ok := PeerIDFromRequest(r)
	if !ok {
		return ID{}, fmt.Errorf("%w: the request carries no peer SPIFFE ID", ErrUnauthorized)
	}
	if err := a(id); err != nil {
		return id, err
	}
	return id, nil
}

func idString(id ID) string {
	if id.IsZero() {
		return "(no ID)"
	}
	return id.String()
}
