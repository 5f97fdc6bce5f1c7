package kubernetes_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testutil"
)

// A shared Gateway with a broad listener that admits every namespace's
// routes (no hostname), a wildcard one that does too (*.iso.example), and
// a narrow one (ops.iso.example) that admits only the Gateway's own
// namespace. A request goes to the most specific listener that matches
// its host, and only that listener's routes may answer it: a tenant's
// route on the broad listeners naming ops.iso.example, or naming no host
// at all, must never be served for ops.iso.example, not even for a path
// the owner's routes do not match. Checked by what each backend received.
func TestListenerIsolation(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	ownerPod := startRecordingPod(t, tenantAddr(11))
	tenantPod := startRecordingPod(t, tenantAddr(12))
	const infra, tenant = "iso-infra", "iso-tenant"
	for _, ns := range []string{infra, tenant} {
		must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	}
	_ = c.createClass(ctx) // may exist already
	all, same := gatewayv1.NamespacesFromAll, gatewayv1.NamespacesFromSame
	must(c.gw.GatewayV1().Gateways(infra).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: infra, Name: "shared"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{
			{Name: "public", Port: 80, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}},
			{Name: "wild", Port: 80, Protocol: gatewayv1.HTTPProtocolType, Hostname: ptr(gatewayv1.Hostname("*.iso.example")),
				AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}},
			{Name: "ops", Port: 80, Protocol: gatewayv1.HTTPProtocolType, Hostname: ptr(gatewayv1.Hostname("ops.iso.example")),
				AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &same}}},
		}}}, metav1.CreateOptions{}))(t)
	// The tenant's any-host route would answer every host for the later
	// tests' edges, which serve every namespace: without its Gateway it is
	// attached to nothing.
	t.Cleanup(func() {
		_ = c.gw.GatewayV1().Gateways(infra).Delete(context.Background(), "shared", metav1.DeleteOptions{})
	})
	for ns, p := range map[string]string{infra: tenantAddr(11), tenant: tenantAddr(12)} {
		must(c.core.CoreV1().Services(ns).Create(ctx, service(ns, "web"), metav1.CreateOptions{}))(t)
		must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "web", "web-a", pod{ns, p}), metav1.CreateOptions{}))(t)
	}
	on := func(ns, name, section string, hosts []string, path string) *gatewayv1.HTTPRoute {
		r := sharedRoute(ns, name, hosts, prefixRule(path, "web", ""))
		r.Spec.ParentRefs[0].Namespace = ptr(gatewayv1.Namespace(infra))
		if section != "" {
			r.Spec.ParentRefs[0].SectionName = ptr(gatewayv1.SectionName(section))
		}
		return r
	}
	// The owner's route: only /ops on its host.
	must(c.gw.GatewayV1().HTTPRoutes(infra).Create(ctx, on(infra, "ops", "ops", nil, "/ops"), metav1.CreateOptions{}))(t)
	tr := c.gw.GatewayV1().HTTPRoutes(tenant)
	// The tenant's: the owner's host by name on the broad listener, every
	// host on it, and every host of the wildcard listener.
	must(tr.Create(ctx, on(tenant, "named", "public", []string{"ops.iso.example"}, "/"), metav1.CreateOptions{}))(t)
	must(tr.Create(ctx, on(tenant, "any", "public", nil, "/"), metav1.CreateOptions{}))(t)
	must(tr.Create(ctx, on(tenant, "wild", "wild", nil, "/"), metav1.CreateOptions{}))(t)

	e := serveEdge(t, edgeFile(t, kubeconfig, false, infra, tenant))
	addr := e.Addr("http")
	eventually(t, "the routes are served and their status written", func() bool {
		code, _ := sendWith(t, addr, "ops.iso.example", "/ops", nil)
		if code != 200 {
			return false
		}
		for _, r := range []string{"named", "any", "wild"} {
			if routeCondition(t, c, tenant, r, "Accepted") == nil {
				return false
			}
		}
		return true
	})

	// Each request a few times: a route chosen by chance would show.
	for _, tc := range []struct {
		host, path string
		code       int
		owner      bool // which backend must have it; neither for a 404
	}{
		{"ops.iso.example", "/ops", 200, true},
		{"ops.iso.example", "/ops/deeper", 200, true},
		{"ops.iso.example", "/", 404, false},
		{"ops.iso.example", "/x", 404, false},
		{"OPS.iso.example", "/x", 404, false},
		{"ops.iso.example:80", "/x", 404, false},
		{"a.iso.example", "/", 200, false},
		{"elsewhere.example", "/x", 200, false},
	} {
		o, m := ownerPod.hits.Load(), tenantPod.hits.Load()
		const n = 20
		for range n {
			code, body := sendWith(t, addr, tc.host, tc.path, nil)
			if code != tc.code {
				t.Fatalf("%s%s: %d %s, want %d", tc.host, tc.path, code, body, tc.code)
			}
			if code == 404 {
				var eb struct {
					Error  string `json:"error"`
					Status int    `json:"status"`
				}
				if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Status != 404 || eb.Error == "" {
					t.Fatalf("%s%s: 404 body %q is not the edge's error format", tc.host, tc.path, body)
				}
			}
		}
		gotOwner, gotTenant := ownerPod.hits.Load()-o, tenantPod.hits.Load()-m
		switch {
		case tc.code == 404 && (gotOwner != 0 || gotTenant != 0):
			t.Errorf("%s%s: the owner received %d, the tenant %d; want neither", tc.host, tc.path, gotOwner, gotTenant)
		case tc.code == 200 && tc.owner && (gotOwner != n || gotTenant != 0):
			t.Errorf("%s%s: the owner received %d of %d, the tenant %d", tc.host, tc.path, gotOwner, n, gotTenant)
		case tc.code == 200 && !tc.owner && (gotTenant != n || gotOwner != 0):
			t.Errorf("%s%s: the tenant received %d of %d, the owner %d", tc.host, tc.path, gotTenant, n, gotOwner)
		}
	}

	// Status is the spec's: a route is accepted on a listener its
	// hostnames intersect, whichever listener then takes the requests.
	for _, r := range []string{"named", "any", "wild"} {
		if rc := routeCondition(t, c, tenant, r, "Accepted"); rc == nil || rc.Status != metav1.ConditionTrue {
			t.Errorf("%s: Accepted %+v, want True", r, rc)
		}
	}
	if rc := routeCondition(t, c, infra, "ops", "Accepted"); rc == nil || rc.Status != metav1.ConditionTrue {
		t.Errorf("ops: Accepted %+v, want True", rc)
	}
	gwObj := must(c.gw.GatewayV1().Gateways(infra).Get(ctx, "shared", metav1.GetOptions{}))(t)
	attached := map[string]int32{}
	for _, l := range gwObj.Status.Listeners {
		attached[string(l.Name)] = l.AttachedRoutes
	}
	if want := map[string]int32{"public": 2, "wild": 1, "ops": 1}; !maps.Equal(attached, want) {
		t.Errorf("attachedRoutes %v, want %v", attached, want)
	}

	// A tenant route on the narrow listener is still refused there.
	r := on(tenant, "direct", "ops", nil, "/")
	must(tr.Create(ctx, r, metav1.CreateOptions{}))(t)
	eventually(t, "the direct route's status", func() bool {
		rc := routeCondition(t, c, tenant, "direct", "Accepted")
		return rc != nil && rc.Reason == string(gatewayv1.RouteReasonNotAllowedByListeners)
	})
	if code, body := sendWith(t, addr, "ops.iso.example", "/", nil); code != 404 || !strings.Contains(body, `"status"`) {
		t.Errorf("ops.iso.example/ after a direct attempt: %d %s", code, body)
	}
}

// sendTLS makes one request to the edge's https listener with SNI and
// Host host, trusting only pool.
func sendTLS(t *testing.T, addr, host, path string, pool *x509.CertPool) (int, string) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: host, RootCAs: pool, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+path, nil)
	req.Host = host
	res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// Listener isolation over TLS. A shared Gateway with an HTTP listener
// without hostname that admits every namespace, and an HTTPS listener for
// ops.tls.example that admits only the Gateway's own. Over TLS a request
// for ops.tls.example is the HTTPS listener's, and only its routes may
// answer; over plain HTTP it is the HTTP listener's. A tenant's route on
// the HTTP listener naming ops.tls.example was served over TLS too, where
// it answered every path the owner's routes do not match: it is now
// served for plain connections only (match.plain). Checked by what each
// backend received.
func TestListenerIsolationOverTLS(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	ownerPod := startRecordingPod(t, tenantAddr(13))
	tenantPod := startRecordingPod(t, tenantAddr(14))
	ca := testutil.NewCA(t)
	const infra, tenant, host = "isotls-infra", "isotls-tenant", "ops.tls.example"
	for _, ns := range []string{infra, tenant} {
		must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	}
	_ = c.createClass(ctx) // may exist already
	crt, key := ca.Leaf(t, host, 2001)
	must(c.core.CoreV1().Secrets(infra).Create(ctx, tlsSecret(infra, "ops-tls", crt, key), metav1.CreateOptions{}))(t)
	all, same := gatewayv1.NamespacesFromAll, gatewayv1.NamespacesFromSame
	must(c.gw.GatewayV1().Gateways(infra).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: infra, Name: "shared"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{
			{Name: "public", Port: 80, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}},
			{Name: "ops", Port: 443, Protocol: gatewayv1.HTTPSProtocolType, Hostname: ptr(gatewayv1.Hostname(host)),
				TLS:           &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "ops-tls"}}},
				AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &same}}},
		}}}, metav1.CreateOptions{}))(t)
	// Later tests' edges serve every namespace: without its Gateway the
	// tenant's route is attached to nothing.
	t.Cleanup(func() {
		_ = c.gw.GatewayV1().Gateways(infra).Delete(context.Background(), "shared", metav1.DeleteOptions{})
	})
	for ns, p := range map[string]string{infra: tenantAddr(13), tenant: tenantAddr(14)} {
		must(c.core.CoreV1().Services(ns).Create(ctx, service(ns, "web"), metav1.CreateOptions{}))(t)
		must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "web", "web-a", pod{ns, p}), metav1.CreateOptions{}))(t)
	}
	on := func(ns, name, section string, hosts []string, path string) *gatewayv1.HTTPRoute {
		r := sharedRoute(ns, name, hosts, prefixRule(path, "web", ""))
		r.Spec.ParentRefs[0].Namespace = ptr(gatewayv1.Namespace(infra))
		r.Spec.ParentRefs[0].SectionName = ptr(gatewayv1.SectionName(section))
		return r
	}
	// The owner's route: only /ops, on its HTTPS listener. The tenant's:
	// every path of the owner's host, on the HTTP listener.
	must(c.gw.GatewayV1().HTTPRoutes(infra).Create(ctx, on(infra, "ops", "ops", nil, "/ops"), metav1.CreateOptions{}))(t)
	must(c.gw.GatewayV1().HTTPRoutes(tenant).Create(ctx, on(tenant, "named", "public", []string{host}, "/"), metav1.CreateOptions{}))(t)

	file := filepath.Join(t.TempDir(), "causeway.yaml")
	must0(t, os.WriteFile(file, []byte(fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0"}
access_log: {output: "off"}
tls: {redirect_http: false}
providers:
  kubernetes: {kubeconfig: %q, namespaces: [%s, %s]}
`, kubeconfig, infra, tenant)), 0o600))
	e := serveEdge(t, file)
	httpAddr, httpsAddr := e.Addr("http"), e.Addr("https")
	eventually(t, "both routes served", func() bool {
		code, _ := sendWith(t, httpAddr, host, "/x", nil)
		if code != 200 {
			return false
		}
		_, code, _, err := getTLS(httpsAddr, host, "/ops", ca.Pool)
		return err == nil && code == 200
	})

	for _, tc := range []struct {
		tls   bool
		path  string
		code  int
		owner bool // which backend must have it; neither for a 404
	}{
		{true, "/ops", 200, true},
		{true, "/ops/deeper", 200, true},
		{true, "/x", 404, false}, // the leak: the tenant's route answered it
		{true, "/", 404, false},
		{false, "/x", 200, false}, // plain: the HTTP listener's, so the tenant's
		{false, "/ops", 200, false},
	} {
		o, m := ownerPod.hits.Load(), tenantPod.hits.Load()
		const n = 10
		for range n {
			var code int
			var body string
			if tc.tls {
				code, body = sendTLS(t, httpsAddr, host, tc.path, ca.Pool)
			} else {
				code, body = sendWith(t, httpAddr, host, tc.path, nil)
			}
			if code != tc.code {
				t.Fatalf("%s%s (TLS %t): %d %s, want %d", host, tc.path, tc.tls, code, body, tc.code)
			}
			if code == 404 {
				var eb struct {
					Error  string `json:"error"`
					Status int    `json:"status"`
				}
				if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Status != 404 || eb.Error == "" {
					t.Fatalf("%s%s: 404 body %q is not the edge's error format", host, tc.path, body)
				}
			}
		}
		gotOwner, gotTenant := ownerPod.hits.Load()-o, tenantPod.hits.Load()-m
		switch {
		case tc.code == 404 && (gotOwner != 0 || gotTenant != 0):
			t.Errorf("%s%s (TLS %t): the owner received %d, the tenant %d; want neither", host, tc.path, tc.tls, gotOwner, gotTenant)
		case tc.code == 200 && tc.owner && (gotOwner != n || gotTenant != 0):
			t.Errorf("%s%s (TLS %t): the owner received %d of %d, the tenant %d", host, tc.path, tc.tls, gotOwner, n, gotTenant)
		case tc.code == 200 && !tc.owner && (gotTenant != n || gotOwner != 0):
			t.Errorf("%s%s (TLS %t): the tenant received %d of %d, the owner %d", host, tc.path, tc.tls, gotTenant, n, gotOwner)
		}
	}
	// Status is the spec's: accepted on the listener its hostnames
	// intersect, whichever connections it is then served on.
	if rc := routeCondition(t, c, tenant, "named", "Accepted"); rc == nil || rc.Status != metav1.ConditionTrue {
		t.Errorf("named: Accepted %+v, want True", rc)
	}
}
