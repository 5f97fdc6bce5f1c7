package testk8s

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
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

	// InstallCRDs creates the CRDs of a directory, skipping other kinds,
	// and returns once they are served.
	t.Run("install CRDs", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "widgets.yaml"), []byte(widgetCRD), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := cp.InstallCRDs(dir); err != nil {
			t.Fatal(err)
		}
		code, body := get("/apis/example.com/v1/namespaces/default/widgets", cp.Token)
		if code != 200 || !strings.Contains(body, `"WidgetList"`) {
			t.Fatalf("widgets: %d %.300s", code, body)
		}
		// Installing again is not an error.
		if err := cp.InstallCRDs(dir); err != nil {
			t.Fatal(err)
		}
		if err := cp.InstallCRDs(t.TempDir()); err == nil {
			t.Fatal("a directory without CRDs: no error")
		}
	})

	// The API server restarts on the same address with the same
	// certificate, and keeps what etcd holds.
	t.Run("restart", func(t *testing.T) {
		code, _, err := cp.do(http.MethodPost, "/api/v1/namespaces", []byte(`{"metadata":{"name":"kept"}}`))
		if err != nil || code != http.StatusCreated {
			t.Fatalf("create namespace: %d %v", code, err)
		}
		cp.StopAPIServer()
		if err := cp.ping(); err == nil {
			t.Fatal("the API server answers after StopAPIServer")
		}
		if err := cp.StartAPIServer(); err != nil {
			t.Fatal(err)
		}
		if err := cp.StartAPIServer(); err == nil {
			t.Fatal("a second StartAPIServer: no error")
		}
		if code, body := get("/api/v1/namespaces/kept", cp.Token); code != 200 {
			t.Fatalf("after the restart: %d %.300s", code, body)
		}
	})
}

const widgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, listKind: WidgetList, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: not-a-crd
spec: {}
`
