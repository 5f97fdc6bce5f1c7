package kubernetes_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/causewayhq/causeway/gateway"
	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/internal/testutil"
)

// The refused-and-hostile-change tests' pods take 10.244.4.x.
func hostileAddr(n int) string { return testnetns.Addr(1024 + n) }

// serveEdgeLogs is serveEdge that also hands back what the edge logs.
func serveEdgeLogs(t *testing.T, path string) (*gateway.Edge, *testutil.Buffer) {
	t.Helper()
	logs := &testutil.Buffer{}
	e := must(gateway.NewEdge(context.Background(), gateway.EdgeOptions{ConfigPath: path, Logger: slog.New(slog.NewJSONHandler(logs, nil))}))(t)
	serveUntilEnd(t, "edge", e, logs)
	return e, logs
}

// handshakeSerial completes a TLS handshake with the edge for sni (""
// sends none) without verifying, and returns the served certificate's
// serial: the certificate itself is what is checked.
func handshakeSerial(addr, sni string) (int64, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: sni, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // the served certificate is what the test reads
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

// Refused and hostile changes with a real API server: a tenant's
// Gateway, the oldest, hopes to be the certificate clients without SNI
// get; a listener's Secret goes bad in each way a Secret can, and is
// deleted; a cross-namespace Secret's ReferenceGrant is deleted while in
// use; a tenant creates routes the edge cannot serve as written. Each
// time the offending object's status says why, the other tenant's
// hostname keeps its certificate and its route, and no key appears in
// status, events, the edge's log, /config or /routes.
func TestRefusedAndHostileChanges(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	ca := testutil.NewCA(t)
	podA := startRecordingPod(t, hostileAddr(1))
	podB := startRecordingPod(t, hostileAddr(2))
	const infra, certs, ta, tb = "hz-infra", "hz-certs", "hz-a", "hz-b"
	for _, ns := range []string{infra, certs, ta, tb} {
		must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	}
	_ = c.createClass(ctx) // may exist already
	var keys [][]byte      // every private key the test hands the cluster
	leaf := func(host string, serial int64) ([]byte, []byte) {
		crt, key := ca.Leaf(t, host, serial)
		keys = append(keys, key)
		return crt, key
	}
	secrets := c.core.CoreV1().Secrets
	httpsListener := func(name, host, secretNS, secret string) gatewayv1.Listener {
		all := gatewayv1.NamespacesFromAll
		ref := gatewayv1.SecretObjectReference{Name: gatewayv1.ObjectName(secret)}
		if secretNS != "" {
			ref.Namespace = ptr(gatewayv1.Namespace(secretNS))
		}
		l := gatewayv1.Listener{Name: gatewayv1.SectionName(name), Port: 443, Protocol: gatewayv1.HTTPSProtocolType,
			TLS:           &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{ref}},
			AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}}
		if host != "" {
			l.Hostname = ptr(gatewayv1.Hostname(host))
		}
		return l
	}

	// The tenant's own Gateway, with a listener without a hostname, is
	// the oldest (first by namespace when made in the same second).
	malCrt, malKey := leaf("mallory.hz.example", 3001)
	must(secrets(tb).Create(ctx, tlsSecret(tb, "mal-tls", malCrt, malKey), metav1.CreateOptions{}))(t)
	must(c.gw.GatewayV1().Gateways(tb).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: tb, Name: "own"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{httpsListener("any", "", "", "mal-tls")}}}, metav1.CreateOptions{}))(t)

	aCrt, aKey := leaf("a.hz.example", 3002)
	must(secrets(infra).Create(ctx, tlsSecret(infra, "a-tls", aCrt, aKey), metav1.CreateOptions{}))(t)
	bCrt, bKey := leaf("b.hz.example", 3003)
	must(secrets(certs).Create(ctx, tlsSecret(certs, "b-tls", bCrt, bKey), metav1.CreateOptions{}))(t)
	grant := &gatewayv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: certs, Name: "infra-gateways"},
		Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "Gateway", Namespace: infra}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Group: "", Kind: "Secret", Name: ptr(gatewayv1.ObjectName("b-tls"))}},
		}}
	grants := c.gw.GatewayV1beta1().ReferenceGrants(certs)
	must(grants.Create(ctx, grant, metav1.CreateOptions{}))(t)
	all := gatewayv1.NamespacesFromAll
	must(c.gw.GatewayV1().Gateways(infra).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: infra, Name: "shared"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{
			{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}},
			httpsListener("a", "a.hz.example", "", "a-tls"),
			httpsListener("b", "b.hz.example", certs, "b-tls"),
		}}}, metav1.CreateOptions{}))(t)
	for ns, ip := range map[string]string{ta: hostileAddr(1), tb: hostileAddr(2)} {
		must(c.core.CoreV1().Services(ns).Create(ctx, service(ns, "web"), metav1.CreateOptions{}))(t)
		must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "web", "web-a", pod{ns, ip}), metav1.CreateOptions{}))(t)
	}
	onShared := func(ns, name, host string, rules ...gatewayv1.HTTPRouteRule) *gatewayv1.HTTPRoute {
		r := httpRoute(ns, name, rules...)
		r.Spec.ParentRefs = []gatewayv1.ParentReference{{Name: "shared", Namespace: ptr(gatewayv1.Namespace(infra))}}
		r.Spec.Hostnames = []gatewayv1.Hostname{gatewayv1.Hostname(host)}
		return r
	}
	must(c.gw.GatewayV1().HTTPRoutes(ta).Create(ctx, onShared(ta, "site", "a.hz.example", prefixRule("/", "web", "")), metav1.CreateOptions{}))(t)
	must(c.gw.GatewayV1().HTTPRoutes(tb).Create(ctx, onShared(tb, "site", "b.hz.example", prefixRule("/", "web", "")), metav1.CreateOptions{}))(t)

	file := filepath.Join(t.TempDir(), "causeway.yaml")
	must0(t, os.WriteFile(file, []byte(fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
tls: {redirect_http: false}
providers:
  kubernetes: {kubeconfig: %q, namespaces: [%s, %s, %s, %s], gateways: [%s/shared, %s/own]}
`, kubeconfig, infra, certs, ta, tb, infra, tb)), 0o600))
	e, logs := serveEdgeLogs(t, file)
	httpsAddr, httpAddr, adminAddr := e.Addr("https"), e.Addr("http"), e.Addr("admin")

	serves := func(host string, want int64) func() bool {
		return func() bool {
			serial, code, _, err := getTLS(httpsAddr, host, "/", ca.Pool)
			return err == nil && serial == want && code == http.StatusOK
		}
	}
	eventually(t, "a.hz.example served with its Secret", serves("a.hz.example", 3002))
	eventually(t, "b.hz.example served with the granted Secret", serves("b.hz.example", 3003))
	eventually(t, "the tenant's Gateway served by its certificate's name", func() bool {
		serial, err := handshakeSerial(httpsAddr, "mallory.hz.example")
		return err == nil && serial == 3001
	})
	// The tenant's Gateway is the oldest the edge serves, and its
	// listener has no hostname: still, a client without SNI, or with a
	// name no certificate is for, is not shown its certificate.
	for _, sni := range []string{"", "unknown.hz.example"} {
		if serial, err := handshakeSerial(httpsAddr, sni); err == nil || !strings.Contains(err.Error(), "unrecognized name") {
			t.Errorf("sni %q: served certificate %d (error %v), want an unrecognized_name alert", sni, serial, err)
		}
	}

	// noKeyShown checks every place an operator or a tenant can read for
	// any private key the test made, as PEM, raw or base64.
	noKeyShown := func(t *testing.T) {
		t.Helper()
		var places []struct {
			what string
			b    []byte
		}
		add := func(what string, b []byte) {
			places = append(places, struct {
				what string
				b    []byte
			}{what, b})
		}
		for _, p := range []string{"/config", "/routes"} {
			res := must(http.Get("http://" + adminAddr + p))(t)
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			add("admin "+p, b)
		}
		add("the edge's log", []byte(logs.String()))
		for _, ns := range []string{infra, certs, ta, tb} {
			evs := must(c.core.CoreV1().Events(ns).List(ctx, metav1.ListOptions{}))(t)
			for _, ev := range evs.Items {
				add("event "+ns+"/"+ev.Name, []byte(ev.Message))
			}
			gws := must(c.gw.GatewayV1().Gateways(ns).List(ctx, metav1.ListOptions{}))(t)
			for _, g := range gws.Items {
				add("status of Gateway "+ns+"/"+g.Name, []byte(fmt.Sprint(g.Status)))
			}
			rs := must(c.gw.GatewayV1().HTTPRoutes(ns).List(ctx, metav1.ListOptions{}))(t)
			for _, r := range rs.Items {
				add("status of HTTPRoute "+ns+"/"+r.Name, []byte(fmt.Sprint(r.Status)))
			}
		}
		for _, p := range places {
			if bytes.Contains(p.b, []byte("PRIVATE KEY")) {
				t.Errorf("%s shows a private key", p.what)
			}
			for _, k := range keys {
				if bytes.Contains(p.b, k[40:100]) || bytes.Contains(p.b, []byte(base64.StdEncoding.EncodeToString(k)[40:100])) {
					t.Errorf("%s shows a private key's bytes", p.what)
				}
			}
		}
	}

	// otherTenantServes: b's hostname keeps its certificate and route,
	// and both routes still answer on plain HTTP.
	otherTenantServes := func(t *testing.T) {
		t.Helper()
		if serial, code, _, err := getTLS(httpsAddr, "b.hz.example", "/", ca.Pool); err != nil || serial != 3003 || code != http.StatusOK {
			t.Errorf("b.hz.example over TLS: certificate %d, %d, %v; want 3003 and 200", serial, code, err)
		}
		for _, host := range []string{"a.hz.example", "b.hz.example"} {
			if code, _ := sendWith(t, httpAddr, host, "/", nil); code != http.StatusOK {
				t.Errorf("%s over plain HTTP: %d, want 200", host, code)
			}
		}
	}

	t.Run("listener Secret", func(t *testing.T) {
		secretAPI := c.core.CoreV1().Secrets(infra)
		setSecret := func(data map[string][]byte) {
			if data == nil {
				must0(t, secretAPI.Delete(ctx, "a-tls", metav1.DeleteOptions{}))
				return
			}
			cur, err := secretAPI.Get(ctx, "a-tls", metav1.GetOptions{})
			if err != nil {
				must(secretAPI.Create(ctx, tlsSecret(infra, "a-tls", data[corev1.TLSCertKey], data[corev1.TLSPrivateKeyKey]), metav1.CreateOptions{}))(t)
				return
			}
			cur.Data = data
			must(secretAPI.Update(ctx, cur, metav1.UpdateOptions{}))(t)
		}
		pair := func(crt, key []byte) map[string][]byte {
			return map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}
		}
		_, otherKey := leaf("other.hz.example", 3010)
		expCrt, expKey := ca.LeafExpired(t, "a.hz.example", 3011)
		keys = append(keys, expKey)
		elsewhereCrt, elsewhereKey := leaf("elsewhere.hz.example", 3012)
		tests := []struct {
			name   string
			data   map[string][]byte // nil: the Secret is deleted
			reason string            // of ResolvedRefs; "" ResolvedRefs=True
			// serial is the certificate a.hz.example is then served with;
			// 0: none, the handshake is refused.
			serial int64
			msg    string // in the condition's message
		}{
			{name: "a key of another certificate", data: pair(aCrt, otherKey), reason: "InvalidCertificateRef", msg: "private key does not match"},
			{name: "a certificate that is not PEM", data: pair([]byte("not a certificate"), aKey), reason: "InvalidCertificateRef", msg: "Secret hz-infra/a-tls"},
			{name: "a key that is missing", data: map[string][]byte{corev1.TLSCertKey: aCrt, corev1.TLSPrivateKeyKey: {}}, reason: "InvalidCertificateRef", msg: "tls.key"},
			// Served as it is: clients refuse it, the expiry metric shows it,
			// and a listener taken out for it would answer nothing at all.
			{name: "an expired certificate", data: pair(expCrt, expKey), serial: 3011},
			// Served for the listener's hostname, whatever names it carries
			// (clients refuse it); never for those names.
			{name: "a certificate for another hostname", data: pair(elsewhereCrt, elsewhereKey), serial: 3012},
			{name: "the Secret deleted while in use", reason: "InvalidCertificateRef", msg: "does not exist"},
		}
		next := int64(3020)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				// Each case starts from a good, served Secret.
				next++
				good, goodKey := leaf("a.hz.example", next)
				setSecret(pair(good, goodKey))
				eventually(t, "a.hz.example served with the good Secret", serves("a.hz.example", next))

				setSecret(tt.data)
				want := "ResolvedRefs"
				if tt.reason != "" {
					want = tt.reason
				}
				var rr *metav1.Condition
				eventually(t, "listener a's ResolvedRefs says "+want, func() bool {
					rr = listenerCondition(t, c, infra, "shared", "a", "ResolvedRefs")
					return rr != nil && rr.Reason == want && (rr.Status == metav1.ConditionTrue) == (tt.reason == "")
				})
				if !strings.Contains(rr.Message, tt.msg) {
					t.Errorf("ResolvedRefs message %q, want it to say %q", rr.Message, tt.msg)
				}
				eventually(t, fmt.Sprintf("a.hz.example served with certificate %d", tt.serial), func() bool {
					serial, err := handshakeSerial(httpsAddr, "a.hz.example")
					if tt.serial == 0 {
						// Neither the last good certificate nor the tenant's:
						// the listener is out and there is no default.
						return err != nil && strings.Contains(err.Error(), "unrecognized name")
					}
					return err == nil && serial == tt.serial
				})
				if tt.serial == 3012 {
					if serial, err := handshakeSerial(httpsAddr, "elsewhere.hz.example"); err == nil {
						t.Errorf("the certificate's own name got certificate %d, want none", serial)
					}
				}
				p := listenerCondition(t, c, infra, "shared", "a", "Programmed")
				if p == nil || (p.Status == metav1.ConditionTrue) != (tt.serial != 0) {
					t.Errorf("listener a Programmed = %+v, want %v", p, tt.serial != 0)
				}
				otherTenantServes(t)
				noKeyShown(t)
			})
		}
		next++
		good, goodKey := leaf("a.hz.example", next)
		setSecret(pair(good, goodKey))
		eventually(t, "a.hz.example served again", serves("a.hz.example", next))
	})

	t.Run("ReferenceGrant deleted while in use", func(t *testing.T) {
		must0(t, grants.Delete(ctx, grant.Name, metav1.DeleteOptions{}))
		eventually(t, "listener b says RefNotPermitted", func() bool {
			rr := listenerCondition(t, c, infra, "shared", "b", "ResolvedRefs")
			return rr != nil && rr.Status == metav1.ConditionFalse && rr.Reason == "RefNotPermitted"
		})
		eventually(t, "b's certificate is no longer served", func() bool {
			_, err := handshakeSerial(httpsAddr, "b.hz.example")
			return err != nil && strings.Contains(err.Error(), "unrecognized name")
		})
		if serial, code, _, err := getTLS(httpsAddr, "a.hz.example", "/", ca.Pool); err != nil || code != http.StatusOK {
			t.Errorf("a.hz.example over TLS: certificate %d, %d, %v", serial, code, err)
		}
		if code, _ := sendWith(t, httpAddr, "b.hz.example", "/", nil); code != http.StatusOK {
			t.Errorf("b.hz.example over plain HTTP: %d, want 200 (its HTTP listener is not the one refused)", code)
		}
		noKeyShown(t)
		grant.ResourceVersion = ""
		must(grants.Create(ctx, grant, metav1.CreateOptions{}))(t)
		eventually(t, "b's certificate served again with the grant back", serves("b.hz.example", 3003))
	})

	t.Run("routes the edge cannot serve as written", func(t *testing.T) {
		// A Service with no ready endpoint.
		must(c.core.CoreV1().Services(tb).Create(ctx, service(tb, "empty"), metav1.CreateOptions{}))(t)
		notReady := slice(tb, "empty", "empty-a", pod{"gone", hostileAddr(3)})
		notReady.Endpoints[0].Conditions.Ready = ptr(false)
		must(c.core.DiscoveryV1().EndpointSlices(tb).Create(ctx, notReady, metav1.CreateOptions{}))(t)

		withBackend := func(change func(*gatewayv1.HTTPBackendRef)) gatewayv1.HTTPRouteRule {
			r := prefixRule("/", "web", "")
			change(&r.BackendRefs[0])
			return r
		}
		zeroWeights := prefixRule("/", "web", "")
		zeroWeights.BackendRefs = append(zeroWeights.BackendRefs, zeroWeights.BackendRefs[0])
		zeroWeights.BackendRefs[0].Weight, zeroWeights.BackendRefs[1].Weight = ptr(int32(0)), ptr(int32(0))
		badRegex := prefixRule("/", "web", "")
		badRegex.Matches[0].Path = &gatewayv1.HTTPPathMatch{Type: ptr(gatewayv1.PathMatchRegularExpression), Value: ptr("/(unclosed")}
		// An authorizing filter of a kind the edge does not have, on
		// /admin, beside a rule for everything else.
		badFilter := prefixRule("/admin", "web", "")
		badFilter.Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterExtensionRef,
			ExtensionRef: &gatewayv1.LocalObjectReference{Group: "example.com", Kind: "Nothing", Name: "x"}}}
		tests := []struct {
			name, host string
			rule       gatewayv1.HTTPRouteRule
			cond       string // the condition that says why
			reason     string
			code       int // what the data plane answers for /admin/x
		}{
			{"an unknown backend kind", "kind.hz.example", withBackend(func(b *gatewayv1.HTTPBackendRef) {
				b.Group, b.Kind = ptr(gatewayv1.Group("example.com")), ptr(gatewayv1.Kind("Bucket"))
			}), "ResolvedRefs", "InvalidKind", 500},
			{"a backend Service that does not exist", "missing.hz.example", withBackend(func(b *gatewayv1.HTTPBackendRef) { b.Name = "nope" }),
				"ResolvedRefs", "BackendNotFound", 500},
			{"a backend Service without ready endpoints", "empty.hz.example", withBackend(func(b *gatewayv1.HTTPBackendRef) { b.Name = "empty" }),
				"ResolvedRefs", "ResolvedRefs", 503},
			{"weights summing to 0", "zero.hz.example", zeroWeights, "ResolvedRefs", "ResolvedRefs", 500},
			{"an invalid regular expression path", "regex.hz.example", badRegex, "Accepted", "UnsupportedValue", 404},
			// Not to the rule for /: the filter is not skipped.
			{"a filter of an unknown extension kind", "filter.hz.example", badFilter, "PartiallyInvalid", "UnsupportedValue", 500},
		}
		routesAPI := c.gw.GatewayV1().HTTPRoutes(tb)
		for i, tt := range tests {
			r := onShared(tb, fmt.Sprintf("bad-%d", i), tt.host, tt.rule)
			if tt.cond == "PartiallyInvalid" {
				r.Spec.Rules = append(r.Spec.Rules, prefixRule("/", "web", ""))
			}
			must(routesAPI.Create(ctx, r, metav1.CreateOptions{}))(t)
		}
		hits := podB.hits.Load()
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var cond *metav1.Condition
				eventually(t, "the route's status is written", func() bool {
					cond = routeCondition(t, c, tb, fmt.Sprintf("bad-%d", i), tt.cond)
					return cond != nil
				})
				if cond.Reason != tt.reason {
					t.Errorf("%s: %s/%s %q, want reason %s", tt.cond, cond.Status, cond.Reason, cond.Message, tt.reason)
				}
				eventually(t, fmt.Sprintf("%s answers %d", tt.host, tt.code), func() bool {
					code, _ := sendWith(t, httpAddr, tt.host, "/admin/x", nil)
					return code == tt.code
				})
			})
		}
		if n := podB.hits.Load() - hits; n != 0 {
			t.Errorf("the tenant's pod received %d requests through routes that name no valid backend", n)
		}
		otherTenantServes(t)
		noKeyShown(t)

		// A route of 10,000 rules never reaches the edge: the API server
		// takes at most 16.
		many := onShared(tb, "many", "many.hz.example")
		for i := range 10000 {
			many.Spec.Rules = append(many.Spec.Rules, prefixRule(fmt.Sprintf("/r%d", i), "web", ""))
		}
		if _, err := routesAPI.Create(ctx, many, metav1.CreateOptions{}); err == nil {
			t.Error("the API server took a route of 10,000 rules")
		}
	})

	t.Run("conflicting routes across namespaces", func(t *testing.T) {
		// The older route is tenant b's; tenant a's, a second later, is
		// first by namespace: only age makes b's the winner, on this edge
		// and on one that starts now (a restart: its first snapshot lists
		// the routes by namespace and name).
		must(c.gw.GatewayV1().HTTPRoutes(tb).Create(ctx, onShared(tb, "claim", "c.hz.example", prefixRule("/", "web", "")), metav1.CreateOptions{}))(t)
		time.Sleep(1100 * time.Millisecond) // creation times are whole seconds
		must(c.gw.GatewayV1().HTTPRoutes(ta).Create(ctx, onShared(ta, "claim", "c.hz.example", prefixRule("/", "web", "")), metav1.CreateOptions{}))(t)
		restarted, _ := serveEdgeLogs(t, file)
		for _, addr := range []string{httpAddr, restarted.Addr("http")} {
			eventually(t, "both routes translated", func() bool {
				return routeCondition(t, c, ta, "claim", "Accepted") != nil && routeCondition(t, c, tb, "claim", "Accepted") != nil
			})
			a, b := podA.hits.Load(), podB.hits.Load()
			eventually(t, "c.hz.example answered", func() bool {
				code, _ := sendWith(t, addr, "c.hz.example", "/", nil)
				return code == http.StatusOK
			})
			for range 20 {
				if code, _ := sendWith(t, addr, "c.hz.example", "/", nil); code != http.StatusOK {
					t.Fatalf("c.hz.example: %d", code)
				}
			}
			if da, db := podA.hits.Load()-a, podB.hits.Load()-b; da != 0 || db == 0 {
				t.Errorf("edge %s: the newer route's pod got %d requests, the older's %d; want only the older's", addr, da, db)
			}
		}
	})
}
