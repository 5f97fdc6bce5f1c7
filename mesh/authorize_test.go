package mesh_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

func TestAuthorizers(t *testing.T) {
	gw, orders, other := mustID(t, gatewayID), mustID(t, ordersID), mustID(t, "spiffe://other.org/ns/edge/sa/gateway")
	tests := []struct {
		name  string
		authz mesh.Authorizer
		peer  mesh.ID
		ok    bool
	}{
		{"AuthorizeOnly: a listed ID", mesh.AuthorizeOnly(gw, orders), gw, true},
		{"AuthorizeOnly: an unlisted ID", mesh.AuthorizeOnly(orders), gw, false},
		{"AuthorizeOnly: the same path in another trust domain", mesh.AuthorizeOnly(gw), other, false},
		{"AuthorizeOnly: an empty list allows nobody", mesh.AuthorizeOnly(), gw, false},
		{"AuthorizeOnly: the zero ID is never allowed", mesh.AuthorizeOnly(mesh.ID{}), mesh.ID{}, false},
		{"AuthorizeID: the ID", mesh.AuthorizeID(orders), orders, true},
		{"AuthorizeID: another ID", mesh.AuthorizeID(orders), gw, false},
		{"AuthorizeID: a zero expectation allows nobody", mesh.AuthorizeID(mesh.ID{}), mesh.ID{}, false},
		{"AuthorizeMemberOf: a member", mesh.AuthorizeMemberOf("example.org"), gw, true},
		{"AuthorizeMemberOf: written as an ID", mesh.AuthorizeMemberOf("spiffe://example.org"), gw, true},
		{"AuthorizeMemberOf: another domain", mesh.AuthorizeMemberOf("example.org"), other, false},
		{"AuthorizeMemberOf: a suffix is not membership", mesh.AuthorizeMemberOf("org"), gw, false},
		{"AuthorizeMemberOf: an invalid domain allows nobody", mesh.AuthorizeMemberOf("Example Org"), gw, false},
		{"AuthorizeOneOf: one of them allows", mesh.AuthorizeOneOf(mesh.AuthorizeID(orders), mesh.AuthorizeMemberOf("other.org")), other, true},
		{"AuthorizeOneOf: none allows", mesh.AuthorizeOneOf(mesh.AuthorizeID(orders)), gw, false},
		{"AuthorizeOneOf: empty allows nobody", mesh.AuthorizeOneOf(), gw, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.authz(tc.peer)
			if (err == nil) != tc.ok {
				t.Fatalf("authorize(%v) = %v, want ok=%v", tc.peer, err, tc.ok)
			}
			if err != nil && !errors.Is(err, mesh.ErrUnauthorized) {
				t.Fatalf("error %v does not wrap ErrUnauthorized", err)
			}
		})
	}
}

func TestAuthorizerRequest(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	gw := ca.Issue(gatewayID)
	authz := mesh.AuthorizeOnly(mustID(t, gatewayID))
	tests := []struct {
		name  string
		state *tls.ConnectionState
		ok    bool
	}{
		{"plain HTTP carries no peer", nil, false},
		{"TLS without a client certificate", &tls.ConnectionState{HandshakeComplete: true}, false},
		{"an unfinished handshake", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{gw.Leaf}}, false},
		{"a verified listed peer", &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{gw.Leaf}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.TLS = tc.state
			id, err := authz.Request(r)
			if (err == nil) != tc.ok {
				t.Fatalf("Request = %v, %v; want ok=%v", id, err, tc.ok)
			}
		})
	}
}
