package kubernetes_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/providers/kubernetes"
	"github.com/causewayhq/causeway/routes"
)

// recordingPod is a backend that counts what reaches it and keeps the
// headers the edge sent, so a test checks what the upstream received.
type recordingPod struct {
	hits atomic.Int64
	mu   sync.Mutex
	seen []http.Header
}

func startRecordingPod(t *testing.T, ip string) *recordingPod {
	t.Helper()
	p := &recordingPod{}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "8080"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		p.mu.Lock()
		p.seen = append(p.seen, r.Header.Clone())
		p.mu.Unlock()
		_, _ = io.WriteString(w, "ok "+r.Header.Get("X-Client"))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return p
}

func (p *recordingPod) headers() []http.Header {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]http.Header(nil), p.seen...)
}

// sendWith makes one request with the given headers.
func sendWith(t *testing.T, addr, host, path string, h map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	req.Host = host
	for k, v := range h {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// getPolicy and putPolicy read and write a CausewayPolicy, for updateFresh.
func getPolicy(ctx context.Context, api dynamic.ResourceInterface, name string) func() (*unstructured.Unstructured, error) {
	return func() (*unstructured.Unstructured, error) { return api.Get(ctx, name, metav1.GetOptions{}) }
}

func putPolicy(ctx context.Context, api dynamic.ResourceInterface) func(*unstructured.Unstructured) (*unstructured.Unstructured, error) {
	return func(u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
		return api.Update(ctx, u, metav1.UpdateOptions{})
	}
}

// policyJSON makes a CausewayPolicy from its spec's JSON.
func policyJSON(t *testing.T, ns, name, spec string) *unstructured.Unstructured {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		t.Fatalf("spec %s: %v", spec, err)
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": kubernetes.PolicyGVR.GroupVersion().String(), "kind": kubernetes.PolicyKind,
		"metadata": map[string]any{"namespace": ns, "name": name}, "spec": s,
	}}
}

// policyAccepted is the Accepted condition this edge wrote on a policy
// for the given ancestor kind, at the policy's generation.
func policyAccepted(t *testing.T, c cluster, ns, name string) *metav1.Condition {
	t.Helper()
	u, err := c.dyn.Resource(kubernetes.PolicyGVR).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(u.Object)
	var p kubernetes.CausewayPolicy
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	for _, a := range p.Status.Ancestors {
		if a.ControllerName != routes.KubernetesControllerName {
			continue
		}
		for i := range a.Conditions {
			if a.Conditions[i].Type == "Accepted" && a.Conditions[i].ObservedGeneration == p.Generation {
				return &a.Conditions[i]
			}
		}
	}
	return nil
}

// Policies through a real edge: a rule's own policy with API keys from a
// Secret, the Gateway's policy (an authenticator of the edge's file) on
// the other rule; what the upstream receives is checked, not only what the
// client gets. A hostile mix of bad and good keys under concurrency
// reaches the upstream exactly as often as the good ones; a rotated Secret
// takes effect; a policy made invalid fails closed (500) and never
// forwards; the API server's schema refuses malformed policies.
func TestCausewayPolicyThroughTheEdge(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	backend := startRecordingPod(t, testnetns.Addr(256+50))

	// The edge's own authenticator, which the Gateway's policy names.
	dir := t.TempDir()
	corpKey := "corp-key-0123456789abcdef"
	sum := sha256.Sum256([]byte(corpKey))
	must0(t, os.WriteFile(filepath.Join(dir, "corp.keys"), []byte("ops:"+hex.EncodeToString(sum[:])+"\n"), 0o600))
	file := filepath.Join(dir, "causeway.yaml")
	must0(t, os.WriteFile(file, []byte(fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
authenticators:
  corp: {api_key: {header: X-Corp-Key, keys_file: corp.keys, forward_name: X-Client}}
providers:
  kubernetes: {kubeconfig: %q, namespaces: [guarded]}
`, kubeconfig)), 0o600))
	e := serveEdge(t, file)
	addr := e.Addr("http")

	const ns = "guarded"
	plainGateway(t, c, ns, pod{"guarded-1", testnetns.Addr(256 + 50)})
	aliceKey := "alice-key-fedcba9876543210"
	must(c.core.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "keys"}, Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"alice": []byte(aliceKey)}}, metav1.CreateOptions{}))(t)

	policies := c.dyn.Resource(kubernetes.PolicyGVR).Namespace(ns)
	must(policies.Create(ctx, policyJSON(t, ns, "gateway-wide", `{
		"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
		"authenticators": [{"ref": "corp"}]}`), metav1.CreateOptions{}))(t)
	must(policies.Create(ctx, policyJSON(t, ns, "private-keys", `{
		"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api", "sectionName": "private"}],
		"authenticators": [{"config": {"api_key": {"header": "X-Key", "forward_name": "X-Client"}}, "secrets": {"apiKeys": {"name": "keys"}}}]}`), metav1.CreateOptions{}))(t)

	const host = "guarded.example"
	// The policies exist before their route: from the route's first
	// moment on the edge, it is served with them. A prober without
	// credentials runs from before the route is created until it serves;
	// nothing it sends may reach the upstream.
	for _, name := range []string{"gateway-wide", "private-keys"} {
		eventually(t, name+" TargetNotFound or Accepted", func() bool { return policyAccepted(t, c, ns, name) != nil })
	}
	stopProbe := make(chan struct{})
	var probeWG sync.WaitGroup
	var probes atomic.Int64
	for _, path := range []string{"/private/p", "/public/p"} {
		probeWG.Go(func() {
			for {
				select {
				case <-stopProbe:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
				req.Host = "guarded.example"
				if res, err := http.DefaultClient.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					probes.Add(1)
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	private, public := prefixRule("/private", "web", ""), prefixRule("/public", "web", "")
	private.Name, public.Name = ptr(gatewayv1.SectionName("private")), ptr(gatewayv1.SectionName("public"))
	r := httpRoute(ns, "api", private, public)
	r.Spec.Hostnames = []gatewayv1.Hostname{"guarded.example"}
	must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, r, metav1.CreateOptions{}))(t)
	eventually(t, "the rule's policy is served", func() bool {
		code, body := sendWith(t, addr, host, "/private/x", map[string]string{"X-Key": aliceKey})
		return code == 200 && body == "ok alice"
	})
	time.Sleep(300 * time.Millisecond) // the prober goes on a while with the route served
	close(stopProbe)
	probeWG.Wait()
	if backend.hits.Load() != 1 || probes.Load() < 10 {
		t.Fatalf("the upstream was reached %d times (once expected, by the keyed request); %d probes", backend.hits.Load(), probes.Load())
	}
	for _, name := range []string{"gateway-wide", "private-keys"} {
		eventually(t, name+" Accepted", func() bool {
			a := policyAccepted(t, c, ns, name)
			return a != nil && a.Status == metav1.ConditionTrue && a.Reason == "Accepted"
		})
	}

	// What is refused, and what the upstream saw of what was not.
	cases := []struct {
		path string
		h    map[string]string
		want int
	}{
		{"/private/x", nil, 401},
		{"/private/x", map[string]string{"X-Key": "guess"}, 401},
		{"/private/x", map[string]string{"X-Corp-Key": corpKey}, 401}, // the rule's policy replaces the Gateway's
		{"/private/x", map[string]string{"X-Key": aliceKey, "X-Client": "mallory"}, 200},
		{"/public/x", nil, 401},
		{"/public/x", map[string]string{"X-Key": aliceKey}, 401},
		{"/public/x", map[string]string{"X-Corp-Key": corpKey}, 200},
	}
	for _, tc := range cases {
		if code, body := sendWith(t, addr, host, tc.path, tc.h); code != tc.want {
			t.Fatalf("%s %v: %d %s, want %d", tc.path, tc.h, code, body, tc.want)
		} else if code == 401 && !strings.Contains(body, `"status":401`) {
			t.Fatalf("%s: a refusal not in the edge's error format: %s", tc.path, body)
		}
	}
	for _, h := range backend.headers() {
		if h.Get("X-Key") != "" || h.Get("X-Corp-Key") != "" {
			t.Fatalf("a credential reached the upstream: %v", h)
		}
		if c := h.Values("X-Client"); len(c) != 1 || (c[0] != "alice" && c[0] != "ops") {
			t.Fatalf("the upstream saw X-Client %q: a client's own value got through", c)
		}
	}

	// A hostile mix under concurrency: only the good keys get through.
	before := backend.hits.Load()
	var good atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			for i := 0; i < 150; i++ {
				h := map[string]string{"X-Key": fmt.Sprintf("%s%d", aliceKey[:len(aliceKey)-1], i%10)}
				if (w+i)%5 == 0 {
					h["X-Key"] = aliceKey
				}
				req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/private/y", nil)
				req.Host = host
				for k, v := range h {
					req.Header.Set(k, v)
				}
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				want := 401
				if h["X-Key"] == aliceKey {
					want = 200
					good.Add(1)
				}
				if res.StatusCode != want {
					t.Errorf("key %q: %d, want %d", h["X-Key"], res.StatusCode, want)
				}
			}
		})
	}
	wg.Wait()
	if got := backend.hits.Load() - before; got != good.Load() {
		t.Fatalf("the upstream was reached %d times for %d good requests", got, good.Load())
	}

	// Rotating the Secret: the old key stops, the new one works.
	sec := must(c.core.CoreV1().Secrets(ns).Get(ctx, "keys", metav1.GetOptions{}))(t)
	newKey := "alice-rotated-key-00112233"
	sec.Data = map[string][]byte{"alice": []byte(newKey)}
	must(c.core.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{}))(t)
	eventually(t, "the rotated key works", func() bool {
		code, _ := sendWith(t, addr, host, "/private/x", map[string]string{"X-Key": newKey})
		return code == 200
	})
	if code, _ := sendWith(t, addr, host, "/private/x", map[string]string{"X-Key": aliceKey}); code != 401 {
		t.Fatalf("the old key after rotation: %d", code)
	}

	// A policy that would read the edge's own files: Invalid, and its
	// rule fails closed, never forwarding; the other rule serves on.
	spec := policyJSON(t, ns, "private-keys", `{
		"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api", "sectionName": "private"}],
		"authenticators": [{"config": {"api_key": {"header": "X-Key", "keys_file": "/etc/causeway/corp.keys"}}}]}`)
	updateFresh(t, getPolicy(ctx, policies, "private-keys"), func(cur *unstructured.Unstructured) { cur.Object["spec"] = spec.Object["spec"] }, putPolicy(ctx, policies))
	eventually(t, "the invalid policy fails closed", func() bool {
		code, body := sendWith(t, addr, host, "/private/x", map[string]string{"X-Key": newKey})
		return code == 500 && strings.Contains(body, "CausewayPolicy")
	})
	eventually(t, "Invalid in the policy's status", func() bool {
		a := policyAccepted(t, c, ns, "private-keys")
		return a != nil && a.Status == metav1.ConditionFalse && a.Reason == "Invalid" && strings.Contains(a.Message, "keys_file")
	})
	hits := backend.hits.Load()
	for i := 0; i < 50; i++ {
		if code, _ := sendWith(t, addr, host, "/private/x", map[string]string{"X-Key": newKey}); code != 500 {
			t.Fatalf("the invalid policy's rule answered %d", code)
		}
	}
	if got := backend.hits.Load(); got != hits {
		t.Fatalf("a rule whose policy is invalid reached the upstream %d times", got-hits)
	}
	if code, _ := sendWith(t, addr, host, "/public/x", map[string]string{"X-Corp-Key": corpKey}); code != 200 {
		t.Fatalf("the other rule after an invalid policy: %d", code)
	}

	// Deleting the policy hands the rule back to the Gateway's.
	must0(t, policies.Delete(ctx, "private-keys", metav1.DeleteOptions{}))
	eventually(t, "the Gateway's policy covers the rule again", func() bool {
		code, body := sendWith(t, addr, host, "/private/x", map[string]string{"X-Corp-Key": corpKey})
		return code == 200 && body == "ok ops"
	})

	// The schema refuses what the edge should never see.
	for _, bad := range []struct{ name, spec string }{
		{"no-targets", `{"targetRefs": [], "authenticators": [{"ref": "corp"}]}`},
		{"a-service", `{"targetRefs": [{"group": "", "kind": "Service", "name": "web"}], "authenticators": [{"ref": "corp"}]}`},
		{"both", `{"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api"}], "authenticators": [{"ref": "corp", "config": {"api_key": {}}}]}`},
		{"nothing", `{"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api"}]}`},
		{"gateway-section", `{"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw", "sectionName": "http"}], "authenticators": [{"ref": "corp"}]}`},
		{"twice", `{"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}, {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}], "authenticators": [{"ref": "corp"}]}`},
		{"secrets-with-ref", `{"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}], "authenticators": [{"ref": "corp", "secrets": {"apiKeys": {"name": "keys"}}}]}`},
	} {
		if _, err := policies.Create(ctx, policyJSON(t, ns, bad.name, bad.spec), metav1.CreateOptions{}); err == nil {
			t.Errorf("the API server accepted the policy %s: %s", bad.name, bad.spec)
		}
	}
}

// A policy's forwarded headers are removed from every client request on
// every route of the edge (an upstream shared with an authenticated route
// must never see a spoofed identity), so a policy of one namespace that
// forwarded into Authorization, Cookie or Content-Type would strip them
// from the routes of every other namespace and of the edge's own file.
// Such a policy is Invalid, and a route of another namespace reaches its
// upstream with what the client sent, byte for byte.
func TestCausewayPolicyForwardedHeadersStayInTheirNamespace(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	backend := startRecordingPod(t, testnetns.Addr(256+61))

	const nsA, nsB, host = "fwd-tenant-a", "fwd-tenant-b", "fwd.example"
	for _, ns := range []string{nsA, nsB} {
		plainGateway(t, c, ns, pod{ns, testnetns.Addr(256 + 61)})
	}
	must(c.core.CoreV1().Secrets(nsA).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "keys"}, Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"alice": []byte("fwd-alice-key-0123456789")}}, metav1.CreateOptions{}))(t)
	// Tenant A's route, one rule per hostile policy; tenant B's route has
	// no policy at all.
	var rules []gatewayv1.HTTPRouteRule
	hostile := []struct{ name, config, field string }{
		{"authorization", `{"api_key": {"header": "X-Key", "forward_name": "Authorization"}}`, "forward_name"},
		{"cookie", `{"api_key": {"header": "X-Key", "forward_name": "cookie"}}`, "forward_name"},
		{"content-type", `{"ext_authz": {"http_url": "http://127.0.0.1:9/authz", "upstream_headers": ["Content-Type"]}}`, "upstream_headers"},
		{"request-id", `{"ext_authz": {"http_url": "http://127.0.0.1:9/authz", "forward_claims": {"sub": "X-Request-Id"}}}`, "forward_claims"},
	}
	policies := c.dyn.Resource(kubernetes.PolicyGVR).Namespace(nsA)
	for _, h := range hostile {
		r := prefixRule("/"+h.name, "web", "")
		r.Name = ptr(gatewayv1.SectionName(h.name))
		rules = append(rules, r)
		secrets := ""
		if strings.Contains(h.config, "api_key") {
			secrets = `, "secrets": {"apiKeys": {"name": "keys"}}`
		}
		must(policies.Create(ctx, policyJSON(t, nsA, h.name, `{
			"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api", "sectionName": "`+h.name+`"}],
			"authenticators": [{"config": `+h.config+secrets+`}]}`), metav1.CreateOptions{}))(t)
	}
	ra := httpRoute(nsA, "api", rules...)
	ra.Spec.Hostnames = []gatewayv1.Hostname{"a." + host}
	must(c.gw.GatewayV1().HTTPRoutes(nsA).Create(ctx, ra, metav1.CreateOptions{}))(t)
	rb := httpRoute(nsB, "open", prefixRule("/", "web", ""))
	rb.Spec.Hostnames = []gatewayv1.Hostname{"b." + host}
	must(c.gw.GatewayV1().HTTPRoutes(nsB).Create(ctx, rb, metav1.CreateOptions{}))(t)

	e := serveEdge(t, edgeFile(t, kubeconfig, false, nsA, nsB))
	addr := e.Addr("http")
	// Every policy judged, one way or the other, before tenant B's
	// request: the snapshot that carries them also carries B's route.
	for _, h := range hostile {
		eventually(t, h.name+" judged", func() bool { return policyAccepted(t, c, nsA, h.name) != nil })
	}
	eventually(t, "tenant B's route is served", func() bool {
		code, _ := sendWith(t, addr, "b."+host, "/x", nil)
		return code == 200
	})
	sent := map[string]string{
		"Authorization": "Basic dXNlcjpwYXNz",
		"Cookie":        "session=tenant-b",
		"Content-Type":  "application/x-tenant-b",
		"X-Request-Id":  "tenant-b-request",
	}
	before := len(backend.headers())
	if code, body := sendWith(t, addr, "b."+host, "/x", sent); code != 200 {
		t.Fatalf("tenant B's route: %d %s", code, body)
	}
	seen := backend.headers()
	if len(seen) != before+1 {
		t.Fatalf("the upstream saw %d requests, want 1", len(seen)-before)
	}
	for k, v := range sent {
		if got := seen[len(seen)-1].Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("tenant B's upstream saw %s %q, want %q as the client sent it", k, got, v)
		}
	}
	for _, h := range hostile {
		a := policyAccepted(t, c, nsA, h.name)
		if a.Status != metav1.ConditionFalse || a.Reason != "Invalid" || !strings.Contains(a.Message, h.field) {
			t.Errorf("policy %s: %s %s, want Invalid naming %s", h.name, a.Reason, a.Message, h.field)
		}
	}
	// Tenant A's rules fail closed, never forwarding.
	for _, h := range hostile {
		if code, _ := sendWith(t, addr, "a."+host, "/"+h.name, map[string]string{"X-Key": "fwd-alice-key-0123456789"}); code != 500 {
			t.Errorf("tenant A's rule %s under an invalid policy: %d, want 500", h.name, code)
		}
	}
	if got := len(backend.headers()); got != before+1 {
		t.Fatalf("tenant A's invalid rules reached the upstream %d times", got-before-1)
	}
}
