package testk8s

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// The control plane answers authenticated requests, enforces RBAC (an
// unknown token is refused), and serves the discovery documents a client
// starts from.
func TestControlPlane(t *testing.T) {
	cp, err := Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	c, err := cp.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, cp.Host+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name, path, token string
		code              int
		contains          string
	}{
		{"admin lists namespaces", "/api/v1/namespaces", cp.Token, 200, `"kube-system"`},
		{"discovery of the groups", "/apis", cp.Token, 200, `"discovery.k8s.io"`},
		{"an unknown token is refused", "/api/v1/namespaces", "not-a-token", 401, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(tc.path, tc.token)
			if code != tc.code || !strings.Contains(body, tc.contains) {
				t.Fatalf("%s: %d %.300s", tc.path, code, body)
			}
		})
	}
	if _, err := cp.Kubeconfig(); err != nil {
		t.Fatal(err)
	}
}
