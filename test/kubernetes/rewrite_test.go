package kubernetes_test

import (
	"context"
	"encoding/json"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
)

// URLRewrite through a real edge: the backend receives the rewritten Host
// and path; a hostname alone leaves the path as sent; headers matched by
// regular expression pick the rule.
func TestURLRewriteThroughTheEdge(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	startPod(t, "rewrite-1", testnetns.Addr(256+80))
	e := serveEdge(t, edgeFile(t, kubeconfig, false, "rewrite"))
	addr := e.Addr("http")

	const ns = "rewrite"
	plainGateway(t, c, ns, pod{"rewrite-1", testnetns.Addr(256 + 80)})

	both := prefixRule("/old", "web", "")
	both.Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{
		Hostname: ptr(gatewayv1.PreciseHostname("internal.example")),
		Path:     &gatewayv1.HTTPPathModifier{Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr("/new")},
	}}}
	hostOnly := prefixRule("/keep", "web", "")
	hostOnly.Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{
		Hostname: ptr(gatewayv1.PreciseHostname("other.internal")),
	}}}
	versioned := prefixRule("/v", "web", "")
	versioned.Matches[0].Headers = []gatewayv1.HTTPHeaderMatch{{Type: ptr(gatewayv1.HeaderMatchRegularExpression), Name: "X-Version", Value: "v[0-9]+"}}
	versioned.Filters = hostOnly.Filters
	must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, httpRoute(ns, "rw", both, hostOnly, versioned, prefixRule("/v", "web", "")), metav1.CreateOptions{}))(t)

	eventually(t, "the rewrite is served", func() bool { code, _, _ := send(t, addr, "shop.example", "/old/a"); return code == 200 })
	for _, tc := range []struct {
		path, version, host, wantPath string
	}{
		{"/old/a/b", "", "internal.example", "/new/a/b"},
		{"/old", "", "internal.example", "/new"},
		{"/keep/x", "", "other.internal", "/keep/x"},
		{"/v/x", "v12", "other.internal", "/v/x"},
		{"/v/x", "v12-beta", "shop.example", "/v/x"}, // the whole value must match
		{"/v/x", "", "shop.example", "/v/x"},
	} {
		h := map[string]string{}
		if tc.version != "" {
			h["X-Version"] = tc.version
		}
		code, body := sendWith(t, addr, "shop.example", tc.path, h)
		if code != 200 {
			t.Fatalf("%s: %d %s", tc.path, code, body)
		}
		var s seen
		must0(t, jsonUnmarshal(body, &s))
		if s.Host != tc.host || s.Path != tc.wantPath {
			t.Fatalf("%s (X-Version %q): the backend got Host %q path %q, want %q %q", tc.path, tc.version, s.Host, s.Path, tc.host, tc.wantPath)
		}
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
