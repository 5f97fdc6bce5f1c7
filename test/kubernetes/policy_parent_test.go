package kubernetes_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/providers/kubernetes"
)

// A tenant's route served through Gateway "guarded", whose policy asks
// for an API key, with a second parentRef to the older Gateway "open",
// whose listener admits only its own namespace and whose policy only sets
// a header. The route is refused by "open" (NotAllowedByListeners) and
// must take "guarded"'s policy: it once took the oldest Gateway it named,
// attached or not, and answered without a key.
func TestGatewayPolicyOfARefusingParentDoesNotApply(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	backend := startRecordingPod(t, testnetns.Addr(256+75))

	const infra, tenant = "pp-infra", "pp-tenant"
	_ = c.createClass(ctx) // may exist already
	for _, ns := range []string{infra, tenant} {
		must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	}
	gateway := func(name string, from gatewayv1.FromNamespaces) {
		must(c.gw.GatewayV1().Gateways(infra).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: infra, Name: name},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType,
				AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &from}}}}}}, metav1.CreateOptions{}))(t)
	}
	gateway("open", gatewayv1.NamespacesFromSame)
	// The API server's timestamps have one-second resolution: "guarded"
	// must be the younger for the oldest-Gateway rule to be at stake.
	time.Sleep(1100 * time.Millisecond)
	gateway("guarded", gatewayv1.NamespacesFromAll)
	const key = "pp-alice-key-0123456789abcdef"
	must(c.core.CoreV1().Secrets(infra).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: infra, Name: "keys"}, Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"alice": []byte(key)}}, metav1.CreateOptions{}))(t)
	policies := c.dyn.Resource(kubernetes.PolicyGVR).Namespace(infra)
	must(policies.Create(ctx, policyJSON(t, infra, "open-header", `{
		"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "open"}],
		"plugins": [{"use": "headers", "config": {"request": {"set": {"X-Gateway": "open"}}}}]}`), metav1.CreateOptions{}))(t)
	must(policies.Create(ctx, policyJSON(t, infra, "guarded-keys", `{
		"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "guarded"}],
		"authenticators": [{"config": {"api_key": {"header": "X-Key"}}, "secrets": {"apiKeys": {"name": "keys"}}}]}`), metav1.CreateOptions{}))(t)

	must(c.core.CoreV1().Services(tenant).Create(ctx, service(tenant, "web"), metav1.CreateOptions{}))(t)
	must(c.core.DiscoveryV1().EndpointSlices(tenant).Create(ctx, slice(tenant, "web", "web-a", pod{tenant, testnetns.Addr(256 + 75)}), metav1.CreateOptions{}))(t)
	r := httpRoute(tenant, "app", prefixRule("/", "web", ""))
	r.Spec.Hostnames = []gatewayv1.Hostname{"pp.example"}
	r.Spec.ParentRefs = []gatewayv1.ParentReference{
		{Name: "open", Namespace: ptr(gatewayv1.Namespace(infra))},
		{Name: "guarded", Namespace: ptr(gatewayv1.Namespace(infra))},
	}
	must(c.gw.GatewayV1().HTTPRoutes(tenant).Create(ctx, r, metav1.CreateOptions{}))(t)

	e := serveEdge(t, edgeFile(t, kubeconfig, false, infra, tenant))
	addr := e.Addr("http")
	eventually(t, "the route is served with a key", func() bool {
		code, _ := sendWith(t, addr, "pp.example", "/", map[string]string{"X-Key": key})
		return code == 200
	})
	eventually(t, "the policies are judged Accepted", func() bool {
		for _, p := range []string{"open-header", "guarded-keys"} {
			if a := policyAccepted(t, c, infra, p); a == nil || a.Status != metav1.ConditionTrue {
				return false
			}
		}
		return true
	})
	before := backend.hits.Load()
	for _, h := range []map[string]string{nil, {"X-Key": "guess"}} {
		if code, body := sendWith(t, addr, "pp.example", "/", h); code != 401 {
			t.Errorf("with %v: %d %.80s, want 401 (the policy of the Gateway that serves the route)", h, code, body)
		}
	}
	if got := backend.hits.Load() - before; got != 0 {
		t.Fatalf("requests without a valid key reached the upstream %d times", got)
	}
}
