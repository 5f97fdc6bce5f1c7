package auth

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// edgeOwnedNames are headers the edge states for the upstream and drops
// from every client as a request enters (internal/edgeheader), in the
// spellings an authorization server could use: a server's copy, set
// after that, would be the only one the upstream sees.
var edgeOwnedNames = []string{
	"X-Causeway-Peer-Id", "X-Causeway-Caller-Subject", "X-Causeway-Mirror", "Causeway-Caller",
	"X-Original-Url", "X-Envoy-Original-Path", "True-Client-Ip", "Cf-Connecting-Ip", "X-Client-Cert-Subject",
	"X_Forwarded_For", "x_real_ip", "X_Causeway_Peer_Id",
}

// TestExtAuthzEdgeOwnedHeaders: an allowing server, gRPC or a real OPA,
// cannot set a header the edge states (a client address, a URL override,
// a mesh peer or caller identity, in any spelling a CGI-style upstream
// folds to one), while the headers it may set still arrive; and such a
// name in upstream_headers is refused when the file loads.
func TestExtAuthzEdgeOwnedHeaders(t *testing.T) {
	var grpcHeaders []*corev3.HeaderValueOption
	var regoHeaders []string
	for _, n := range append([]string{"X-User-Id"}, edgeOwnedNames...) {
		grpcHeaders = append(grpcHeaders, hv(n, "forged-"+n))
		regoHeaders = append(regoHeaders, fmt.Sprintf("%q: %q", strings.ToLower(n), "forged-"+n))
	}
	srv := newAuthzServer(t, func(*authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return okResponse(grpcHeaders, nil, nil), nil
	})
	opa := startOPA(t, "package envoy.authz\n\nresult := {\"allowed\": true, \"headers\": {"+strings.Join(regoHeaders, ", ")+"}}\n")
	for _, target := range []struct{ name, yaml string }{
		{"grpc", grpcTarget(srv)},
		{"opa", "opa_url: " + opa + "/v1/data/envoy/authz/result"},
	} {
		t.Run(target.name, func(t *testing.T) {
			f := parse(t, extAuthzYAML(target.yaml, ""), `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
			h, up := handler(t, testSet(t, f, Options{}), f, 0)
			if w := do(h, "/", nil); w.Code != http.StatusNoContent {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			if got := up.header.Get("X-User-Id"); got != "forged-X-User-Id" {
				t.Errorf("the allowed header X-User-Id = %q", got)
			}
			for k, vs := range up.header {
				for _, v := range vs {
					if strings.HasPrefix(v, "forged-") && k != "X-User-Id" {
						t.Errorf("the upstream got the server's %s: %q", k, v)
					}
				}
			}
		})
	}
	for _, n := range edgeOwnedNames {
		t.Run("upstream_headers "+n, func(t *testing.T) {
			// Refused when the file loads, with its place in the file
			// (routes.EdgeStatedHeader); NewSet refuses the same names
			// for a model that did not come through the file's checks.
			_, err := parseErr("  authz:\n    ext_authz:\n      http_url: http://127.0.0.1:9/verify\n      upstream_headers: ["+n+"]",
				`{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
			if err == nil || !strings.Contains(err.Error(), "set by the edge itself") || !strings.Contains(err.Error(), "upstream_headers[0]") {
				t.Errorf("loading the file: %v, want the header refused at its place", err)
			}
		})
	}
}
