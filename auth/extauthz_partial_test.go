package auth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// TestExtAuthzPartialBody: with body.allow_partial, the server is told
// whether the body it got was cut (x-envoy-auth-partial-body, as Envoy
// says it), whatever the client claims in a header of that name, and a
// real OPA gets no parsed_body of a cut body: "1000000" cut to 3 bytes is
// the valid JSON 100, and a policy allowing amounts up to 100 allowed it
// while the upstream got the whole 1000000.
func TestExtAuthzPartialBody(t *testing.T) {
	opa := startOPA(t, `package envoy.authz

default allow := false

allow if input.parsed_body <= 100

seen := sprintf("%v|%v", [object.get(input, "truncated_body", "absent"), object.get(input.attributes.request.http.headers, "x-envoy-auth-partial-body", "absent")])

result := {"allowed": allow, "headers": {"x-seen": seen}}
`)
	srv := newAuthzServer(t, func(*authv3.CheckRequest) (*authv3.CheckResponse, error) { return okResponse(nil, nil, nil), nil })
	tests := []struct {
		name, target, body string
		bodyConf           string
		claim              string // the client's own X-Envoy-Auth-Partial-Body
		status             int
		seen               string // OPA: truncated_body|header; gRPC: the header sent ("" none)
	}{
		{name: "opa, whole", target: "opa", body: "100", bodyConf: "{max_bytes: 3, allow_partial: true}", status: 204, seen: "false|false"},
		{name: "opa, cut to a smaller number", target: "opa", body: "1000000", bodyConf: "{max_bytes: 3, allow_partial: true}", status: 403},
		{name: "opa, cut, the client says whole", target: "opa", body: "1000000", bodyConf: "{max_bytes: 3, allow_partial: true}", claim: "false", status: 403},
		{name: "opa, whole, the client says cut", target: "opa", body: "50", bodyConf: "{max_bytes: 3, allow_partial: true}", claim: "true", status: 204, seen: "false|false"},
		{name: "grpc, cut", target: "grpc", body: "1000000", bodyConf: "{max_bytes: 3, allow_partial: true}", claim: "false", status: 204, seen: "true"},
		{name: "grpc, whole", target: "grpc", body: "100", bodyConf: "{max_bytes: 3, allow_partial: true}", claim: "true", status: 204, seen: "false"},
		{name: "grpc, no body asked, the client's copy dropped", target: "grpc", body: "100", claim: "false", status: 204, seen: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := grpcTarget(srv)
			if tt.target == "opa" {
				target = "opa_url: " + opa + "/v1/data/envoy/authz/result"
			}
			extra := ""
			if tt.bodyConf != "" {
				extra = "\n      body: " + tt.bodyConf
			}
			f := parse(t, extAuthzYAML(target, extra), `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
			h, up := handler(t, testSet(t, f, Options{}), f, 0)
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.body))
			if tt.claim != "" {
				r.Header.Set("X-Envoy-Auth-Partial-Body", tt.claim)
			}
			w := recorder(h, r)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if tt.target == "opa" {
				if tt.status == 204 && up.header.Get("X-Seen") != tt.seen {
					t.Errorf("OPA saw truncated_body|header %q, want %q", up.header.Get("X-Seen"), tt.seen)
				}
				return
			}
			req, _ := srv.lastRequest()
			got, ok := req.GetAttributes().GetRequest().GetHttp().GetHeaders()["x-envoy-auth-partial-body"]
			if got != tt.seen || ok != (tt.seen != "") {
				t.Errorf("the server got x-envoy-auth-partial-body %q (present %v), want %q", got, ok, tt.seen)
			}
		})
	}
}
