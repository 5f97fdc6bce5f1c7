package caller

import (
	"net/http/httptest"
	"testing"

	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/routes"
)

func TestPolicy(t *testing.T) {
	t.Parallel()
	one := 1
	rules := []routes.InboundRule{
		{Match: routes.InboundMatch{PathPrefix: "/admin", Methods: []string{"POST"}},
			Workloads: []string{edgeID},
			Callers:   &routes.RuleCallers{RequireClaims: map[string]string{"role": "admin"}}},
		{Match: routes.InboundMatch{PathPrefix: "/reports"},
			Callers: &routes.RuleCallers{Authenticators: []string{"users"}, MaxHops: &one, Through: []string{aID}}},
		{Match: routes.InboundMatch{Path: "/public"}, Callers: &routes.RuleCallers{Anonymous: true}},
		{Match: routes.InboundMatch{PathPrefix: "/internal"}, Workloads: []string{aID}},
	}
	p, err := NewPolicy(rules)
	if err != nil {
		t.Fatal(err)
	}
	admin := &Verified{Principal: Principal{Subject: "alice", Authenticator: "users", Claims: map[string]any{"role": "admin"}}, Chain: []mesh.ID{mustID(edgeID)}}
	user := &Verified{Principal: Principal{Subject: "bob", Authenticator: "users", Claims: map[string]any{"role": "viewer"}}, Chain: []mesh.ID{mustID(edgeID)}}
	viaA := &Verified{Principal: user.Principal, Chain: []mesh.ID{mustID(edgeID), mustID(aID)}}
	viaAB := &Verified{Principal: user.Principal, Chain: []mesh.ID{mustID(edgeID), mustID(aID), mustID(bID)}}
	partner := &Verified{Principal: Principal{Subject: "acme", Authenticator: "partners"}, Chain: []mesh.ID{mustID(edgeID), mustID(aID)}}
	anon := &Verified{Principal: Principal{Anonymous: true}, Chain: []mesh.ID{mustID(edgeID)}}

	cases := []struct {
		name, method, path, peer string
		v                        *Verified
		want                     int // 0: allowed
	}{
		{"admin posts to /admin", "POST", "/admin/users", edgeID, admin, 0},
		{"viewer posts to /admin", "POST", "/admin/users", edgeID, user, 403},
		{"admin from the wrong workload", "POST", "/admin", aID, admin, 403},
		{"no token on /admin", "POST", "/admin", edgeID, nil, 401},
		{"anonymous on /admin", "POST", "/admin", edgeID, anon, 403},
		{"GET /admin matches no rule", "GET", "/admin", edgeID, nil, 0},
		{"/administrator is not under /admin", "POST", "/administrator", edgeID, nil, 0},
		{"report through A", "GET", "/reports/1", aID, viaA, 0},
		{"report not through A", "GET", "/reports/1", edgeID, user, 403},
		{"report with too many hops", "GET", "/reports/1", bID, viaAB, 403},
		{"report by the wrong authenticator", "GET", "/reports/1", aID, partner, 403},
		{"anonymous allowed on /public", "GET", "/public", edgeID, anon, 0},
		{"a user on /public too", "GET", "/public", edgeID, user, 0},
		{"/public needs a token all the same", "GET", "/public", edgeID, nil, 401},
		{"/internal from A", "GET", "/internal/x", aID, nil, 0},
		{"/internal from B", "GET", "/internal/x", bID, nil, 403},
		{"unmatched path", "GET", "/", bID, nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, nil)
			d := p.Decide(r, mustID(tc.peer), tc.v)
			got := 0
			if d != nil {
				got = d.Status
			}
			if got != tc.want {
				t.Fatalf("status %d (%+v), want %d", got, d, tc.want)
			}
		})
	}
}
