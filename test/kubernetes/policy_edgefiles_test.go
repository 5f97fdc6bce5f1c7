package kubernetes_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/providers/kubernetes"
)

// A namespace's author writes policies; the edge's own files (its
// ServiceAccount token, its keys files) and its environment are not
// theirs to read. A plugin defined in a policy that would read a file of
// the edge (respond's body_file) is Invalid and its rule fails closed,
// without the file's content anywhere; an environment reference in a
// policy plugin's config is sent as written, never expanded.
func TestCausewayPolicyPluginsCannotReadTheEdgesFiles(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	backend := startRecordingPod(t, testnetns.Addr(256+64))

	// What the edge holds: a token file beside its routes file, and a
	// variable in its environment.
	const token = "edge-service-account-token-must-stay-private"
	tokenFile := filepath.Join(t.TempDir(), "token")
	must0(t, os.WriteFile(tokenFile, []byte(token), 0o600))
	t.Setenv("CAUSEWAY_TEST_EDGE_SECRET", token)

	const ns, host = "edge-files", "edge-files.example"
	plainGateway(t, c, ns, pod{"edge-files-1", testnetns.Addr(256 + 64)})

	cases := []struct {
		name, plugin string
		// invalid is a piece of the Invalid message; "" for Accepted.
		invalid string
	}{
		{"absolute", fmt.Sprintf(`{"use": "respond", "config": {"status": 200, "body_file": %q}}`, tokenFile), "body_file"},
		{"relative", `{"use": "respond", "config": {"status": 200, "body_file": "token"}}`, "body_file"},
		{"service-account", `{"use": "respond", "config": {"status": 200, "body_file": "/var/run/secrets/kubernetes.io/serviceaccount/token"}}`, "body_file"},
		{"env", `{"use": "headers", "config": {"response": {"set": {"X-Leak": "${CAUSEWAY_TEST_EDGE_SECRET}"}}}}`, ""},
	}
	policies := c.dyn.Resource(kubernetes.PolicyGVR).Namespace(ns)
	var rules []gatewayv1.HTTPRouteRule
	for _, tc := range cases {
		must(policies.Create(ctx, policyJSON(t, ns, tc.name, `{
			"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api", "sectionName": "`+tc.name+`"}],
			"plugins": [`+tc.plugin+`]}`), metav1.CreateOptions{}))(t)
		r := prefixRule("/"+tc.name, "web", "")
		r.Name = ptr(gatewayv1.SectionName(tc.name))
		rules = append(rules, r)
	}
	rt := httpRoute(ns, "api", rules...)
	rt.Spec.Hostnames = []gatewayv1.Hostname{host}
	must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, rt, metav1.CreateOptions{}))(t)

	// The routes file sits beside the token: a relative body_file would
	// be read from there.
	file := filepath.Join(filepath.Dir(tokenFile), "causeway.yaml")
	must0(t, os.WriteFile(file, fmt.Appendf(nil, "version: 1\nlisten: {http: \"127.0.0.1:0\"}\naccess_log: {output: \"off\"}\nproviders:\n  kubernetes: {kubeconfig: %q, namespaces: [%s]}\n", kubeconfig, ns), 0o600))
	e := serveEdge(t, file)
	addr := e.Addr("http")
	for _, tc := range cases {
		eventually(t, tc.name+" judged", func() bool { return policyAccepted(t, c, ns, tc.name) != nil })
	}
	eventually(t, "the route is served", func() bool {
		code, _ := sendWith(t, addr, host, "/env", nil)
		return code == 200
	})
	before := backend.hits.Load()
	for _, tc := range cases {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/"+tc.name, nil)
		req.Host = host
		res := must(http.DefaultClient.Do(req))(t)
		var b strings.Builder
		_, _ = fmt.Fprint(&b, res.Header)
		buf := make([]byte, 4096)
		n, _ := res.Body.Read(buf)
		res.Body.Close()
		b.Write(buf[:n])
		if strings.Contains(b.String(), token) {
			t.Errorf("%s: the answer shows the edge's secret: %d %s", tc.name, res.StatusCode, b.String())
		}
		a := policyAccepted(t, c, ns, tc.name)
		if strings.Contains(a.Message, token) {
			t.Errorf("%s: the status shows the edge's secret: %q", tc.name, a.Message)
		}
		switch {
		case tc.invalid != "" && (a.Reason != "Invalid" || !strings.Contains(a.Message, tc.invalid)):
			t.Errorf("%s: %s %q, want Invalid naming %s", tc.name, a.Reason, a.Message, tc.invalid)
		case tc.invalid != "" && res.StatusCode != http.StatusInternalServerError:
			t.Errorf("%s: %d, want 500 while the policy is invalid", tc.name, res.StatusCode)
		case tc.invalid == "" && (a.Reason != "Accepted" || res.StatusCode != http.StatusOK || res.Header.Get("X-Leak") != "${CAUSEWAY_TEST_EDGE_SECRET}"):
			t.Errorf("%s: %s %q, %d X-Leak %q, want Accepted and the reference as written", tc.name, a.Reason, a.Message, res.StatusCode, res.Header.Get("X-Leak"))
		}
	}
	if got := backend.hits.Load() - before; got != 1 {
		t.Errorf("the upstream was reached %d times, want once (the env rule's)", got)
	}
}
