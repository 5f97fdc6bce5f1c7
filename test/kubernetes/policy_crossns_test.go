package kubernetes_test

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/providers/kubernetes"
)

// A policy of namespace A reaches nothing of namespace B, however it
// names it: a targetRef with a namespace (the schema has none; the API
// server drops it, and the policy targets A's own route of that name), a
// Secret named "B/keys", B's Gateway by name. B's route stays as B made
// it (open), B's keys never open A's route, and A's policies say why
// they do not apply.
func TestCausewayPolicyStaysInItsNamespace(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	backend := startRecordingPod(t, testnetns.Addr(256+65))

	const nsA, nsB = "xns-a", "xns-b"
	_ = c.createClass(ctx) // may exist already
	for _, ns := range []string{nsA, nsB} {
		must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
		must(c.gw.GatewayV1().Gateways(ns).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw-" + ns},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}}}}, metav1.CreateOptions{}))(t)
		must(c.core.CoreV1().Services(ns).Create(ctx, service(ns, "web"), metav1.CreateOptions{}))(t)
		must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "web", "web-a", pod{ns, testnetns.Addr(256 + 65)}), metav1.CreateOptions{}))(t)
		r := httpRoute(ns, "api", prefixRule("/", "web", ""))
		r.Spec.ParentRefs = []gatewayv1.ParentReference{{Name: gatewayv1.ObjectName("gw-" + ns)}}
		r.Spec.Hostnames = []gatewayv1.Hostname{gatewayv1.Hostname(ns + ".example")}
		must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, r, metav1.CreateOptions{}))(t)
	}
	const bobKey = "xns-bob-key-0123456789abcdef"
	must(c.core.CoreV1().Secrets(nsB).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: nsB, Name: "keys"}, Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"bob": []byte(bobKey)}}, metav1.CreateOptions{}))(t)

	policies := c.dyn.Resource(kubernetes.PolicyGVR).Namespace(nsA)
	cases := []struct {
		name, spec string
		reason     string // the Accepted condition's reason on A's policy
		msg        string
	}{
		{"reach-b-route", `{"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api", "namespace": "` + nsB + `"}],
			"authenticators": [{"config": {"api_key": {"header": "X-Key"}}, "secrets": {"apiKeys": {"name": "keys"}}}]}`,
			"Invalid", "Secret " + nsA + "/keys not found"},
		{"reach-b-secret", `{"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw-` + nsA + `"}],
			"authenticators": [{"config": {"api_key": {"header": "X-Key"}}, "secrets": {"apiKeys": {"name": "` + nsB + `/keys"}}}]}`,
			"Invalid", "not found"},
		{"reach-b-gateway", `{"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw-` + nsB + `"}],
			"authenticators": [{"config": {"api_key": {"header": "X-Key"}}, "secrets": {"apiKeys": {"name": "keys"}}}]}`,
			"TargetNotFound", "Gateway " + nsA + "/gw-" + nsB},
	}
	for _, tc := range cases {
		if _, err := policies.Create(ctx, policyJSON(t, nsA, tc.name, tc.spec), metav1.CreateOptions{}); err != nil {
			// Refused by the API server is as good as never applied.
			t.Logf("%s: refused by the API server: %v", tc.name, err)
			continue
		}
	}
	// The API server stores no namespace in a target: the schema has none.
	stored := must(policies.Get(ctx, "reach-b-route", metav1.GetOptions{}))(t)
	refs, _, _ := unstructured.NestedSlice(stored.Object, "spec", "targetRefs")
	if len(refs) != 1 || refs[0].(map[string]any)["namespace"] != nil {
		t.Fatalf("the stored targets: %v", refs)
	}

	e := serveEdge(t, edgeFile(t, kubeconfig, false, nsA, nsB))
	addr := e.Addr("http")
	for _, tc := range cases {
		eventually(t, tc.name+" judged", func() bool {
			a := policyAccepted(t, c, nsA, tc.name)
			return a != nil && a.Reason == tc.reason && strings.Contains(a.Message, tc.msg)
		})
	}
	eventually(t, "B's route is served", func() bool {
		code, _ := sendWith(t, addr, nsB+".example", "/", nil)
		return code == 200
	})
	before := backend.hits.Load()
	// B's route, as B made it: open, whatever key is sent.
	for _, h := range []map[string]string{nil, {"X-Key": "guess"}, {"X-Key": bobKey}} {
		if code, body := sendWith(t, addr, nsB+".example", "/", h); code != 200 {
			t.Errorf("B's route with %v: %d %s, want 200 (no policy of B's applies)", h, code, body)
		}
	}
	// A's route, under A's invalid policy: closed, B's key included.
	for _, h := range []map[string]string{nil, {"X-Key": bobKey}} {
		if code, body := sendWith(t, addr, nsA+".example", "/", h); code != 500 {
			t.Errorf("A's route with %v: %d %s, want 500", h, code, body)
		}
	}
	if got := backend.hits.Load() - before; got != 3 {
		t.Fatalf("the upstream was reached %d times, want 3 (B's requests)", got)
	}
}

// A policy the model refuses only with the routes it applies to (an oidc
// sign-in whose callback none of them matches) must not hold back the
// rest of the cluster: it is Invalid, its route fails closed, and a
// route another namespace creates afterwards is served.
func TestCausewayPolicyRefusedWithItsRoutesHoldsNothingBack(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	backend := startRecordingPod(t, testnetns.Addr(256+67))

	const nsA, nsB = "oidc-a", "oidc-b"
	for _, ns := range []string{nsA, nsB} {
		plainGateway(t, c, ns, pod{ns, testnetns.Addr(256 + 67)})
	}
	must(c.core.CoreV1().Secrets(nsA).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "oidc"}, Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"session": []byte("c2Vzc2lvbi1rZXktb2YtMzItYnl0ZXMtZXhhY3RseSE=")}}, metav1.CreateOptions{}))(t)
	must(c.dyn.Resource(kubernetes.PolicyGVR).Namespace(nsA).Create(ctx, policyJSON(t, nsA, "sso", `{
		"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "app"}],
		"authenticators": [{"config": {"oidc": {"issuer": "https://id.example", "client_id": "c"}}, "secrets": {"sessionKeys": {"name": "oidc", "key": "session"}}}]}`), metav1.CreateOptions{}))(t)
	ra := httpRoute(nsA, "app", prefixRule("/app", "web", ""))
	ra.Spec.Hostnames = []gatewayv1.Hostname{nsA + ".example"}
	must(c.gw.GatewayV1().HTTPRoutes(nsA).Create(ctx, ra, metav1.CreateOptions{}))(t)

	e := serveEdge(t, edgeFile(t, kubeconfig, false, nsA, nsB))
	addr := e.Addr("http")
	eventually(t, "the policy is Invalid, naming the callback", func() bool {
		a := policyAccepted(t, c, nsA, "sso")
		return a != nil && a.Reason == "Invalid" && strings.Contains(a.Message, "redirect_path")
	})
	eventually(t, "A's route fails closed", func() bool {
		code, _ := sendWith(t, addr, nsA+".example", "/app/x", nil)
		return code == 500
	})
	// Another namespace's change goes through.
	rb := httpRoute(nsB, "open", prefixRule("/", "web", ""))
	rb.Spec.Hostnames = []gatewayv1.Hostname{nsB + ".example"}
	must(c.gw.GatewayV1().HTTPRoutes(nsB).Create(ctx, rb, metav1.CreateOptions{}))(t)
	eventually(t, "B's new route is served", func() bool {
		code, _ := sendWith(t, addr, nsB+".example", "/", nil)
		return code == 200
	})
	before := backend.hits.Load()
	for range 20 {
		if code, _ := sendWith(t, addr, nsA+".example", "/app/x", nil); code != 500 {
			t.Fatalf("A's route under its invalid policy: %d", code)
		}
	}
	if got := backend.hits.Load() - before; got != 0 {
		t.Fatalf("A's route reached the upstream %d times", got)
	}
}
