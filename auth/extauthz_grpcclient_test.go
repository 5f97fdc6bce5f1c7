package auth

import (
	"net/http"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// A denial of a gRPC call is a gRPC error (trailers-only: HTTP 200,
// grpc-status mapped from the server's status), as every other refusal of
// the edge is, whatever protocol the authorization server speaks; a browser
// still gets the server's own answer. Before the fix a gRPC client got the
// server's HTTP 403 and its text body, which gRPC clients report as an
// unexpected HTTP status rather than PERMISSION_DENIED.
func TestExtAuthzDenialToGRPCClient(t *testing.T) {
	grpcSrv := newAuthzServer(t, func(*authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return deniedResponse(typev3.StatusCode_Forbidden, "denied by policy"), nil
	})
	forward := forwardAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte("<html>log in</html>"))
	})
	for _, tc := range []struct {
		name, target string
		status       int
		grpcStatus   string
	}{
		{"grpc server", grpcTarget(grpcSrv), http.StatusForbidden, "7"},
		{"forward auth", "http_url: " + forward, http.StatusUnauthorized, "16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := parse(t, extAuthzYAML(tc.target, ""), `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
			h, up := handler(t, testSet(t, f, Options{}), f, 0)
			w := do(h, "/pkg.Svc/Method", http.Header{"Content-Type": {"application/grpc"}})
			if w.Code != http.StatusOK || w.Header().Get("Grpc-Status") != tc.grpcStatus || w.Body.Len() != 0 || up.calls != 0 {
				t.Fatalf("gRPC call: %d grpc-status %q body %q", w.Code, w.Header().Get("Grpc-Status"), w.Body)
			}
			if w := do(h, "/", nil); w.Code != tc.status || w.Body.Len() == 0 {
				t.Fatalf("browser: %d %q", w.Code, w.Body)
			}
		})
	}
}
