package kubernetes_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/providers/kubernetes"
)

// tenantAddr is the pod address n of the tenant tests.
func tenantAddr(n int) string { return testnetns.Addr(256 + 100 + n) }

// sharedRoute is an HTTPRoute of ns on the shared Gateway infra/shared.
func sharedRoute(ns, name string, hosts []string, rules ...gatewayv1.HTTPRouteRule) *gatewayv1.HTTPRoute {
	r := httpRoute(ns, name, rules...)
	r.Spec.ParentRefs = []gatewayv1.ParentReference{{Name: "shared", Namespace: ptr(gatewayv1.Namespace("infra"))}}
	r.Spec.Hostnames = nil
	for _, h := range hosts {
		r.Spec.Hostnames = append(r.Spec.Hostnames, gatewayv1.Hostname(h))
	}
	return r
}

// loopbackSecret is a server only the edge's own host can reach (as the
// edge's admin listener, a node agent or a cloud metadata service are):
// it counts the requests that reach it.
func loopbackSecret(t *testing.T) (port int, hits func() int) {
	t.Helper()
	ln := must(net.Listen("tcp", "127.0.0.1:0"))(t)
	got := make(chan struct{}, 1000)
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- struct{}{}
		_, _ = io.WriteString(w, "the edge's host's secret")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port, func() int { return len(got) }
}

// A tenant (namespace mallory, which may write routes, Services,
// EndpointSlices, ReferenceGrants and policies of its own) on a Gateway
// whose public listener admits every namespace's routes, next to another
// tenant (victim). What mallory tries, what the API server and the edge
// make of it (status), and what each backend actually received.
func TestTenantCannotReachBeyondItsNamespace(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	victimPod := startRecordingPod(t, tenantAddr(1))
	malloryPod := startRecordingPod(t, tenantAddr(2))
	secretPort, secretHits := loopbackSecret(t)

	for _, ns := range []string{"infra", "victim", "mallory"} {
		must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	}
	_ = c.createClass(ctx) // may exist already
	all, same, selector := gatewayv1.NamespacesFromAll, gatewayv1.NamespacesFromSame, gatewayv1.NamespacesFromSelector
	must(c.gw.GatewayV1().Gateways("infra").Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "shared"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{
			{Name: "public", Port: 80, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}},
			{Name: "ops", Port: 80, Protocol: gatewayv1.HTTPProtocolType, Hostname: ptr(gatewayv1.Hostname("ops.example")),
				AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &same}}},
			{Name: "trusted", Port: 80, Protocol: gatewayv1.HTTPProtocolType, Hostname: ptr(gatewayv1.Hostname("trusted.example")),
				AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &selector,
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "trusted"}}}}},
		}}}, metav1.CreateOptions{}))(t)
	for ns, p := range map[string]string{"victim": tenantAddr(1), "mallory": tenantAddr(2)} {
		must(c.core.CoreV1().Services(ns).Create(ctx, service(ns, "web"), metav1.CreateOptions{}))(t)
		must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "web", "web-a", pod{ns, p}), metav1.CreateOptions{}))(t)
	}
	// The victim's shop, older than anything mallory makes.
	must(c.gw.GatewayV1().HTTPRoutes("victim").Create(ctx, sharedRoute("victim", "shop", []string{"victim.example"}, prefixRule("/", "web", "")), metav1.CreateOptions{}))(t)

	e := serveEdge(t, edgeFile(t, kubeconfig, false))
	addr := e.Addr("http")
	eventually(t, "the victim's route is served", func() bool {
		code, body := sendWith(t, addr, "victim.example", "/", nil)
		return code == 200 && strings.HasPrefix(body, "ok")
	})
	// The API server's timestamps have one-second resolution: mallory's
	// objects must be younger for the tie-break below to be by age.
	time.Sleep(1100 * time.Millisecond)

	mr := c.gw.GatewayV1().HTTPRoutes("mallory")
	headerRule := func(path string, set ...string) gatewayv1.HTTPRouteRule {
		r := prefixRule(path, "web", "")
		h := &gatewayv1.HTTPHeaderFilter{}
		for _, n := range set {
			h.Set = append(h.Set, gatewayv1.HTTPHeader{Name: gatewayv1.HTTPHeaderName(n), Value: "forged"})
		}
		r.Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: h}}
		return r
	}
	// 1. Identity headers through a filter: one rule per header the edge
	// owns, and one setting a header of the tenant's own.
	owned := []string{"X-Causeway-Peer-Id", "X-Causeway-Caller-Subject", "X-Forwarded-For", "X-Forwarded-Host", "Forwarded",
		"X-Real-Ip", "X-Client-Cert-Subject", "X-Request-Id", "True-Client-Ip", "Causeway-Caller"}
	var spoofRules []gatewayv1.HTTPRouteRule
	for i, h := range owned {
		spoofRules = append(spoofRules, headerRule("/h"+strconv.Itoa(i), h))
	}
	spoofRules = append(spoofRules, headerRule("/own", "X-Tenant"))
	must(mr.Create(ctx, sharedRoute("mallory", "spoof", []string{"mallory.example"}, spoofRules...), metav1.CreateOptions{}))(t)
	// The same through a policy's headers plugin.
	must(mr.Create(ctx, sharedRoute("mallory", "spoof-policy", []string{"policy.mallory.example"}, prefixRule("/", "web", "")), metav1.CreateOptions{}))(t)
	must(c.dyn.Resource(kubernetes.PolicyGVR).Namespace("mallory").Create(ctx, policyJSON(t, "mallory", "forge", `{
		"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "spoof-policy"}],
		"plugins": [{"use": "headers", "config": {"request": {"set": {"X-Causeway-Peer-Id": "spiffe://cluster.local/ns/victim/sa/admin"}}}}]}`), metav1.CreateOptions{}))(t)

	// 2. Reaching what is not the tenant's: the edge's own host through an
	// ExternalName (by name and by address), a mirror and a backend in the
	// victim's namespace without a grant there (mallory's own grant
	// does not count), a port the Service does not have, an FQDN slice.
	for name, ext := range map[string]string{"host-by-name": "localhost", "host-by-ip": "127.0.0.1"} {
		must(c.core.CoreV1().Services("mallory").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "mallory", Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: ext, Ports: []corev1.ServicePort{{Name: "http", Port: int32(secretPort)}}}}, metav1.CreateOptions{}))(t)
	}
	must(c.gw.GatewayV1beta1().ReferenceGrants("mallory").Create(ctx, &gatewayv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "mallory", Name: "self-grant"},
		Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Namespace: "mallory"}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
		}}, metav1.CreateOptions{}))(t)
	must(c.core.CoreV1().Services("mallory").Create(ctx, service("mallory", "fqdn"), metav1.CreateOptions{}))(t)
	fq := slice("mallory", "fqdn", "fqdn-a")
	fq.AddressType = discoveryv1.AddressTypeFQDN
	fq.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"metadata.google.internal"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}}
	must(c.core.DiscoveryV1().EndpointSlices("mallory").Create(ctx, fq, metav1.CreateOptions{}))(t)
	rule := func(path, svc, ns string, port int32) gatewayv1.HTTPRouteRule {
		r := prefixRule(path, svc, ns)
		r.BackendRefs[0].Port = ptr(port)
		return r
	}
	mirror := prefixRule("/mirror", "web", "")
	mirror.Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestMirror, RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{
		BackendRef: gatewayv1.BackendObjectReference{Name: "web", Namespace: ptr(gatewayv1.Namespace("victim")), Port: ptr(gatewayv1.PortNumber(80))}}}}
	reach := map[string]gatewayv1.HTTPRouteRule{
		"host-by-name": rule("/", "host-by-name", "", int32(secretPort)),
		"host-by-ip":   rule("/", "host-by-ip", "", int32(secretPort)),
		"cross-ns":     prefixRule("/", "web", "victim"),
		"mirror":       mirror,
		"no-port":      rule("/", "web", "", 81),
		"fqdn":         prefixRule("/", "fqdn", ""),
	}
	for name, r := range reach {
		must(mr.Create(ctx, sharedRoute("mallory", name, []string{name + ".mallory.example"}, r), metav1.CreateOptions{}))(t)
	}

	// 3. Hijack: the victim's host and path exactly (younger: loses), and
	// listeners that do not admit mallory's namespace.
	must(mr.Create(ctx, sharedRoute("mallory", "same-match", []string{"victim.example"}, prefixRule("/", "web", "")), metav1.CreateOptions{}))(t)
	for _, l := range []string{"ops", "trusted"} {
		r := sharedRoute("mallory", "listener-"+l, []string{l + ".example"}, prefixRule("/", "web", ""))
		r.Spec.ParentRefs[0].SectionName = ptr(gatewayv1.SectionName(l))
		must(mr.Create(ctx, r, metav1.CreateOptions{}))(t)
	}

	// 4. One route whose every rule is refused takes nothing else out.
	bad := prefixRule("/", "web", "")
	bad.Matches = []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptr(gatewayv1.PathMatchRegularExpression), Value: ptr("/(unclosed")}}}
	must(mr.Create(ctx, sharedRoute("mallory", "bad-regex", []string{"victim.example"}, bad), metav1.CreateOptions{}))(t)

	// 5. Model names join their parts with dots, and object names and
	// hostnames have dots: one route's wildcard beside the name its label
	// once read as, and two routes whose names and hostnames joined
	// alike, each made one model route name twice, which refused the
	// model as a whole (every tenant's changes with it).
	collide := map[string][]string{
		"names":  {"*.wild.mallory.example", "w.wild.mallory.example"},
		"dots":   {"0.dots.mallory.example"},
		"dots.0": {"dots.mallory.example"},
	}
	for name, hosts := range collide {
		must(mr.Create(ctx, sharedRoute("mallory", name, hosts, prefixRule("/", "web", "")), metav1.CreateOptions{}))(t)
	}
	// A hostname label over 63 characters: the API server takes it (the
	// schema bounds only the whole name), the routes model does not.
	must(mr.Create(ctx, sharedRoute("mallory", "long-label", []string{strings.Repeat("a", 64) + ".mallory.example"}, prefixRule("/", "web", "")), metav1.CreateOptions{}))(t)
	// 6. A header value that spells a second header match ("1|H:b=2"):
	// the victim's later route matching a: 1 and b: 2 once read as the
	// same match, and was left out as its duplicate (see the end).
	withHeaders := func(path string, kv ...string) gatewayv1.HTTPRouteRule {
		r := prefixRule(path, "web", "")
		for i := 0; i < len(kv); i += 2 {
			r.Matches[0].Headers = append(r.Matches[0].Headers, gatewayv1.HTTPHeaderMatch{Name: gatewayv1.HTTPHeaderName(kv[i]), Value: kv[i+1]})
		}
		return r
	}
	must(mr.Create(ctx, sharedRoute("mallory", "early", []string{"victim.example"}, withHeaders("/canary", "a", "1|H:b=2")), metav1.CreateOptions{}))(t)

	eventually(t, "mallory's own header route is served", func() bool {
		code, body := sendWith(t, addr, "mallory.example", "/own", nil)
		return code == 200 && strings.HasPrefix(body, "ok")
	})
	eventually(t, "the status of mallory's routes is written", func() bool {
		for _, r := range []string{"spoof", "spoof-policy", "host-by-name", "host-by-ip", "cross-ns", "mirror", "no-port", "fqdn",
			"same-match", "listener-ops", "listener-trusted", "bad-regex", "long-label"} {
			if routeCondition(t, c, "mallory", r, "Accepted") == nil {
				return false
			}
		}
		return policyAccepted(t, c, "mallory", "forge") != nil
	})

	t.Run("identity headers", func(t *testing.T) {
		if c := routeCondition(t, c, "mallory", "spoof", "PartiallyInvalid"); c == nil || c.Reason != "UnsupportedValue" {
			r, _ := mr.Get(ctx, "spoof", metav1.GetOptions{})
			t.Errorf("spoof: PartiallyInvalid %+v, want UnsupportedValue; status %+v", c, r.Status)
		}
		for i, h := range owned {
			n := len(malloryPod.headers())
			code, _ := sendWith(t, addr, "mallory.example", "/h"+strconv.Itoa(i), nil)
			for _, got := range malloryPod.headers()[n:] {
				for _, v := range got.Values(h) {
					if strings.Contains(v, "forged") {
						t.Errorf("%s: the upstream received %s: %q (answer %d)", h, h, v, code)
					}
				}
			}
		}
		n := len(malloryPod.headers())
		if code, _ := sendWith(t, addr, "mallory.example", "/own", nil); code != 200 || malloryPod.headers()[n].Get("X-Tenant") != "forged" {
			t.Errorf("/own: %d; a header of the tenant's own is the tenant's to set", code)
		}
		if c := policyAccepted(t, c, "mallory", "forge"); c.Status != metav1.ConditionFalse {
			t.Errorf("the forging policy: Accepted %s %s", c.Status, c.Message)
		}
		n = len(malloryPod.headers())
		if code, _ := sendWith(t, addr, "policy.mallory.example", "/", nil); code != http.StatusInternalServerError || len(malloryPod.headers()) != n {
			t.Errorf("the forging policy's route answered %d and reached the upstream %d times; want 500 and none", code, len(malloryPod.headers())-n)
		}
	})

	t.Run("reach", func(t *testing.T) {
		for _, tc := range []struct {
			route, resolvedReason string
			code                  int
		}{
			{"host-by-name", "RefNotPermitted", 500},
			{"host-by-ip", "RefNotPermitted", 500},
			{"cross-ns", "RefNotPermitted", 500},
			{"no-port", "BackendNotFound", 500},
			{"fqdn", "ResolvedRefs", 503},
		} {
			rc := routeCondition(t, c, "mallory", tc.route, "ResolvedRefs")
			if rc == nil || rc.Reason != tc.resolvedReason {
				t.Errorf("%s: ResolvedRefs %+v, want %s", tc.route, rc, tc.resolvedReason)
			}
			v, s := victimPod.hits.Load(), secretHits()
			if code, body := sendWith(t, addr, tc.route+".mallory.example", "/", nil); code != tc.code {
				t.Errorf("%s: %d %s, want %d", tc.route, code, body, tc.code)
			}
			if victimPod.hits.Load() != v || secretHits() != s {
				t.Errorf("%s: reached the victim (%d) or the edge's host (%d)", tc.route, victimPod.hits.Load()-v, secretHits()-s)
			}
		}
		// The mirror: its rule is refused, so the route is not Accepted.
		if rc := routeCondition(t, c, "mallory", "mirror", "Accepted"); rc == nil || rc.Status != metav1.ConditionFalse || rc.Reason != "RefNotPermitted" {
			t.Errorf("mirror: Accepted %+v, want False RefNotPermitted", rc)
		}
		v := victimPod.hits.Load()
		_, _ = sendWith(t, addr, "mirror.mallory.example", "/mirror", nil)
		time.Sleep(100 * time.Millisecond) // a mirror is sent after the answer
		if victimPod.hits.Load() != v {
			t.Error("mirror: a copy reached the victim's backend")
		}
	})

	t.Run("hijack", func(t *testing.T) {
		v, m := victimPod.hits.Load(), malloryPod.hits.Load()
		for range 20 {
			if code, _ := sendWith(t, addr, "victim.example", "/", nil); code != 200 {
				t.Fatalf("victim.example answered %d", code)
			}
		}
		if victimPod.hits.Load()-v != 20 || malloryPod.hits.Load() != m {
			t.Errorf("victim.example /: the victim served %d of 20, mallory %d", victimPod.hits.Load()-v, malloryPod.hits.Load()-m)
		}
		for _, l := range []string{"ops", "trusted"} {
			if rc := routeCondition(t, c, "mallory", "listener-"+l, "Accepted"); rc == nil || rc.Reason != "NotAllowedByListeners" {
				t.Errorf("listener %s: Accepted %+v, want NotAllowedByListeners", l, rc)
			}
			if code, _ := sendWith(t, addr, l+".example", "/", nil); code != 404 {
				t.Errorf("%s.example answered %d, want 404", l, code)
			}
		}
		if rc := routeCondition(t, c, "mallory", "bad-regex", "Accepted"); rc == nil || rc.Status != metav1.ConditionFalse || rc.Reason != "UnsupportedValue" {
			t.Errorf("bad-regex: Accepted %+v", rc)
		}
	})

	t.Run("names", func(t *testing.T) {
		if rc := routeCondition(t, c, "mallory", "long-label", "Accepted"); rc == nil || rc.Status != metav1.ConditionFalse || rc.Reason != "UnsupportedValue" {
			t.Errorf("long-label: Accepted %+v, want False UnsupportedValue", rc)
		}
		for _, host := range []string{"a.wild.mallory.example", "w.wild.mallory.example", "0.dots.mallory.example", "dots.mallory.example"} {
			m := malloryPod.hits.Load()
			if code, body := sendWith(t, addr, host, "/", nil); code != 200 || malloryPod.hits.Load() != m+1 {
				t.Errorf("%s: %d %.80s, reached mallory's pod %d times; want 200 from it", host, code, body, malloryPod.hits.Load()-m)
			}
		}
	})

	// After all of that, a change of the victim's is still served: the
	// model was never refused as a whole.
	vr := c.gw.GatewayV1().HTTPRoutes("victim")
	updateFresh(t, func() (*gatewayv1.HTTPRoute, error) { return vr.Get(ctx, "shop", metav1.GetOptions{}) },
		func(r *gatewayv1.HTTPRoute) { r.Spec.Hostnames = append(r.Spec.Hostnames, "new.victim.example") },
		func(r *gatewayv1.HTTPRoute) (*gatewayv1.HTTPRoute, error) {
			return vr.Update(ctx, r, metav1.UpdateOptions{})
		})
	eventually(t, "the victim's change is served", func() bool {
		code, _ := sendWith(t, addr, "new.victim.example", "/", nil)
		return code == 200
	})

	// A route of the victim's, younger than mallory's "early", matching
	// other requests than it: served, to the victim's pod (which its shop
	// route would reach too: the canary's own header tells them apart).
	canary := withHeaders("/canary", "a", "1", "b", "2")
	canary.Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier,
		RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "X-Route", Value: "canary"}}}}}
	must(vr.Create(ctx, sharedRoute("victim", "canary", []string{"victim.example"}, canary), metav1.CreateOptions{}))(t)
	eventually(t, "the victim's canary route is served", func() bool {
		n := len(victimPod.headers())
		code, _ := sendWith(t, addr, "victim.example", "/canary", map[string]string{"a": "1", "b": "2"})
		got := victimPod.headers()
		return code == 200 && len(got) == n+1 && got[n].Get("X-Route") == "canary"
	})
}

// An EndpointSlice is the tenant's to write, and the API server only
// refuses loopback and link-local addresses in it: a slice naming the
// edge's own pod address reaches whatever the edge serves there. With
// the admin listener on the pod address (as a probe port needs), that is
// the admin API, unless it asks for a token.
func TestTenantEndpointSliceToTheEdgesAdmin(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	edgeIP := tenantAddr(9)
	plainGateway(t, c, "mallory2", pod{"unused", tenantAddr(8)})
	for _, token := range []string{"", "s3cret-admin-token"} {
		t.Run(fmt.Sprintf("token=%v", token != ""), func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "causeway.yaml")
			access := ""
			if token != "" {
				t.Setenv("CW_ADMIN_TOKEN", token)
				access = "admin: {token_env: CW_ADMIN_TOKEN}\n"
			}
			if err := os.WriteFile(file, []byte(fmt.Sprintf("version: 1\nlisten: {http: \"127.0.0.1:0\", admin: %q}\n%saccess_log: {output: \"off\"}\nproviders:\n  kubernetes: {kubeconfig: %q, namespaces: [mallory2]}\n", net.JoinHostPort(edgeIP, "0"), access, kubeconfig)), 0o600); err != nil {
				t.Fatal(err)
			}
			e := serveEdge(t, file)
			_, port, _ := net.SplitHostPort(e.Addr("admin"))
			name := "admin-" + strconv.FormatBool(token != "")
			svc := service("mallory2", name)
			svc.Spec.Ports[0].Port = 80
			must(c.core.CoreV1().Services("mallory2").Create(ctx, svc, metav1.CreateOptions{}))(t)
			es := slice("mallory2", name, name+"-a", pod{"edge", edgeIP})
			es.Ports[0].Port = ptr(int32(must(strconv.Atoi(port))(t)))
			must(c.core.DiscoveryV1().EndpointSlices("mallory2").Create(ctx, es, metav1.CreateOptions{}))(t)
			rt := httpRoute("mallory2", name, prefixRule("/", name, ""))
			rt.Spec.Hostnames = nil // any host: the client picks the Host the admin guard sees
			must(c.gw.GatewayV1().HTTPRoutes("mallory2").Create(ctx, rt, metav1.CreateOptions{}))(t)
			// The next case's route matches the same requests: this one,
			// older, would win them.
			t.Cleanup(func() { _ = c.gw.GatewayV1().HTTPRoutes("mallory2").Delete(ctx, name, metav1.DeleteOptions{}) })
			var code int
			var body string
			eventually(t, "the route is served", func() bool {
				code, body = sendWith(t, e.Addr("http"), edgeIP, "/config", nil)
				return code != 404 && code != 502
			})
			t.Logf("GET /config through the tenant's route: %d %.80s", code, body)
			if token == "" && (code != 200 || !strings.Contains(body, "config")) {
				t.Errorf("without a token: %d, want the admin API's 200 (this test records that the admin listener must not be on a pod address without a token)", code)
			}
			if token != "" && code != http.StatusUnauthorized {
				t.Errorf("with a token: %d %.200s, want 401", code, body)
			}
		})
	}
}
