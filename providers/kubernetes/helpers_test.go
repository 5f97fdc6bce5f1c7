package kubernetes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/causewayhq/causeway/internal/testk8s"
	"github.com/causewayhq/causeway/routes"
)

// cp is the package's one control plane, with the Gateway API CRDs.
var cp *testk8s.ControlPlane

func TestMain(m *testing.M) {
	os.Exit(testk8s.StartMain(m, &cp, func(c *testk8s.ControlPlane) error {
		return c.InstallGatewayAPI()
	}))
}

// adminConfig is a REST config for the control plane's admin. Its Proxy
// keeps client-go from sharing one cached transport between clients, so
// each client's connections can be closed when its test ends (the leak
// check would otherwise see them).
func adminConfig() *rest.Config {
	return &rest.Config{
		Host:            cp.Host,
		BearerToken:     cp.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.CAData, ServerName: "127.0.0.1"},
		Proxy:           http.ProxyFromEnvironment,
		// Bursts of test writes are not to wait on client-go's 5 a second.
		QPS: 1000, Burst: 1000,
	}
}

type clients struct {
	core kubernetes.Interface
	gw   gwclient.Interface
	dyn  dynamic.Interface
}

// adminClients are the admin's clients, their connections closed when
// the test ends.
func adminClients(t *testing.T) clients {
	t.Helper()
	return clientsFor(t, adminConfig())
}

func clientsFor(t *testing.T, cfg *rest.Config) clients {
	t.Helper()
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { utilnet.CloseIdleConnectionsFor(hc.Transport) })
	core, err := kubernetes.NewForConfigAndClient(cfg, hc)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gwclient.NewForConfigAndClient(cfg, hc)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfigAndClient(cfg, hc)
	if err != nil {
		t.Fatal(err)
	}
	return clients{core, gw, dyn}
}

// noLeaks checks, when the test ends, that every goroutine the test
// started has stopped. Register it first, so it runs after the other
// cleanups (which stop the watchers).
func noLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

func uniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// namespace creates a namespace of the test's own. There is no namespace
// controller to empty it on deletion, so it is left; names are unique.
func namespace(t *testing.T, c clients) string {
	t.Helper()
	ns := uniqueName("t")
	if _, err := c.core.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// recorder keeps every Snapshot a Watcher delivers.
type recorder struct {
	mu    sync.Mutex
	snaps []*Snapshot
	poke  chan struct{}
}

func newRecorder() *recorder { return &recorder{poke: make(chan struct{}, 1)} }

func (r *recorder) add(s *Snapshot) {
	r.mu.Lock()
	r.snaps = append(r.snaps, s)
	r.mu.Unlock()
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.snaps)
}

func (r *recorder) last() *Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.snaps) == 0 {
		return nil
	}
	return r.snaps[len(r.snaps)-1]
}

// waitFor waits until the latest snapshot satisfies ok.
func (r *recorder) waitFor(t *testing.T, timeout time.Duration, what string, ok func(*Snapshot) bool) *Snapshot {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if s := r.last(); s != nil && ok(s) {
			return s
		}
		select {
		case <-r.poke:
		case <-deadline:
			t.Fatalf("no snapshot with %s within %s (%d snapshots)", what, timeout, r.count())
		}
	}
}

// statusPuts counts the status writes a client sends.
type statusPuts struct {
	rt http.RoundTripper
	n  *atomic.Int64
}

func (s statusPuts) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/status") && !strings.Contains(r.URL.Path, "/leases/") {
		s.n.Add(1)
	}
	return s.rt.RoundTrip(r)
}

// WrappedRoundTripper lets the Watcher close the connections beneath.
func (s statusPuts) WrappedRoundTripper() http.RoundTripper { return s.rt }

// countingConfig is the admin's config with its status writes counted.
func countingConfig(n *atomic.Int64) *rest.Config {
	c := adminConfig()
	c.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return statusPuts{rt, n} }
	return c
}

// running is a Watcher whose Run is under way; stop ends it and waits.
type running struct {
	w    *Watcher
	rec  *recorder
	stop func()
}

func startWatcher(t *testing.T, cfg routes.KubernetesProvider, opts Options) *running {
	t.Helper()
	rec := newRecorder()
	w, err := New(cfg, rec.add, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run returned %v, want context.Canceled", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("Run did not return within 30 s of its context ending")
			}
		})
	}
	t.Cleanup(stop)
	return &running{w: w, rec: rec, stop: stop}
}

// Objects, the minimum each CRD's validation accepts.

func gatewayClass(name string) *gatewayv1.GatewayClass {
	return &gatewayv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       gatewayv1.GatewayClassSpec{ControllerName: routes.KubernetesControllerName},
	}
}

func gateway(ns, name, class string) *gatewayv1.Gateway {
	return &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: gatewayv1.ObjectName(class),
			Listeners:        []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}},
		},
	}
}

func httpRoute(ns, name, gw string) *gatewayv1.HTTPRoute {
	port := gatewayv1.PortNumber(8080)
	return &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: gatewayv1.ObjectName(gw)}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
				BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: &port},
			}}}}},
		},
	}
}

func grpcRoute(ns, name, gw string) *gatewayv1.GRPCRoute {
	return &gatewayv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gatewayv1.GRPCRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: gatewayv1.ObjectName(gw)}}},
		},
	}
}

func referenceGrant(ns, name, from string) *gatewayv1beta1.ReferenceGrant {
	return &gatewayv1beta1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Namespace: gatewayv1.Namespace(from)}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
		},
	}
}

func service(ns, name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}},
	}
}

// endpointSlice's address is in 10.244.0.0/16: the API server refuses
// loopback and link-local ones, and nothing here connects to it.
func endpointSlice(ns, name, svc, ip string) *discoveryv1.EndpointSlice {
	port, portName := int32(8080), "http"
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
	}
}

func secret(ns, name string, typ corev1.SecretType) *corev1.Secret {
	data := map[string][]byte{"key": []byte("value")}
	if typ == corev1.SecretTypeTLS {
		// The API server checks that both keys exist, not what they hold.
		data = map[string][]byte{corev1.TLSCertKey: []byte("cert"), corev1.TLSPrivateKeyKey: []byte("key")}
	}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: typ, Data: data}
}

// objects is one set of every kind a Snapshot holds, in namespace ns.
type objects struct {
	class, gateway, httpRoute, grpcRoute, grant, service, slice, tlsSecret, otherSecret, policy string
}

// createAll creates one object of each kind in ns (and a GatewayClass
// named after ns), and a Secret neither TLS nor Opaque, which must not be
// seen.
func createAll(t *testing.T, c clients, ns string) objects {
	t.Helper()
	ctx := context.Background()
	o := objects{class: "class-" + ns, gateway: "gw", httpRoute: "web", grpcRoute: "rpc", grant: "grant",
		service: "web", slice: "web-1", tlsSecret: "cert", otherSecret: "other", policy: "policy"}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.gw.GatewayV1().GatewayClasses().Create(ctx, gatewayClass(o.class), metav1.CreateOptions{}))
	must(c.gw.GatewayV1().Gateways(ns).Create(ctx, gateway(ns, o.gateway, o.class), metav1.CreateOptions{}))
	must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, httpRoute(ns, o.httpRoute, o.gateway), metav1.CreateOptions{}))
	must(c.gw.GatewayV1().GRPCRoutes(ns).Create(ctx, grpcRoute(ns, o.grpcRoute, o.gateway), metav1.CreateOptions{}))
	must(c.gw.GatewayV1beta1().ReferenceGrants(ns).Create(ctx, referenceGrant(ns, o.grant, "elsewhere"), metav1.CreateOptions{}))
	must(c.core.CoreV1().Services(ns).Create(ctx, service(ns, o.service), metav1.CreateOptions{}))
	must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, endpointSlice(ns, o.slice, o.service, "10.244.1.10"), metav1.CreateOptions{}))
	must(c.core.CoreV1().Secrets(ns).Create(ctx, secret(ns, o.tlsSecret, corev1.SecretTypeTLS), metav1.CreateOptions{}))
	must(c.core.CoreV1().Secrets(ns).Create(ctx, secret(ns, o.otherSecret, "causeway.test/other"), metav1.CreateOptions{}))
	must(c.dyn.Resource(PolicyGVR).Namespace(ns).Create(ctx, policyObject(ns, o.policy, o.httpRoute), metav1.CreateOptions{}))
	return o
}

// names lists "namespace/name" of each object, the way tests compare
// snapshots.
func names[T metav1.Object](list []T) []string {
	out := make([]string, len(list))
	for i, o := range list {
		out[i] = o.GetNamespace() + "/" + o.GetName()
	}
	return out
}

// inNamespace keeps the names in ns (cluster-scoped names have none).
func inNamespace(all []string, ns string) []string {
	var out []string
	for _, n := range all {
		if strings.HasPrefix(n, ns+"/") {
			out = append(out, n)
		}
	}
	return out
}

// policyObject is a CausewayPolicy on an HTTPRoute, as the dynamic client
// sends it.
func policyObject(ns, name, route string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": PolicyGVR.GroupVersion().String(),
		"kind":       PolicyKind,
		"metadata":   map[string]any{"namespace": ns, "name": name},
		"spec": map[string]any{
			"targetRefs":     []any{map[string]any{"group": groupName, "kind": kindHTTPRoute, "name": route}},
			"authenticators": []any{map[string]any{"ref": "corp"}},
		},
	}}
}
