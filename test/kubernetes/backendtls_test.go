package kubernetes_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
)

// tlsPod is a backend that only speaks TLS: each connection's first byte
// must open a TLS handshake, or the connection is counted as plaintext
// and closed. It answers with its name and the SNI it was asked for.
type tlsPod struct {
	plaintext atomic.Int64
	mu        sync.Mutex
	snis      []string
}

func (p *tlsPod) lastSNI() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.snis) == 0 {
		return ""
	}
	return p.snis[len(p.snis)-1]
}

func startTLSPod(t *testing.T, name, ip string, cert tls.Certificate) *tlsPod {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "8443"))
	if err != nil {
		t.Fatal(err)
	}
	p := &tlsPod{}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			p.mu.Lock()
			p.snis = append(p.snis, h.ServerName)
			p.mu.Unlock()
			return nil, nil
		}}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"pod": name, "tls": r.TLS != nil, "sni": r.TLS.ServerName})
	})}
	go func() { _ = srv.Serve(&tlsOnlyListener{Listener: ln, cfg: cfg, pod: p}) }()
	t.Cleanup(func() { _ = srv.Close() })
	return p
}

// tlsOnlyListener hands out TLS server connections; a connection whose
// first byte is not a TLS handshake record is counted and dropped.
type tlsOnlyListener struct {
	net.Listener
	cfg *tls.Config
	pod *tlsPod
}

func (l *tlsOnlyListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		br := bufio.NewReader(c)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		first, err := br.Peek(1)
		_ = c.SetReadDeadline(time.Time{})
		if err != nil || first[0] != 0x16 {
			if err == nil {
				l.pod.plaintext.Add(1)
			}
			_ = c.Close()
			continue
		}
		return tls.Server(&peekedConn{Conn: c, r: br}, l.cfg), nil
	}
}

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func btlsCondition(t *testing.T, c cluster, ns, name, typ string) *metav1.Condition {
	t.Helper()
	p, err := c.gw.GatewayV1().BackendTLSPolicies(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range p.Status.Ancestors {
		if a.ControllerName != routes.KubernetesControllerName {
			continue
		}
		for i := range a.Conditions {
			if a.Conditions[i].Type == typ && a.Conditions[i].ObservedGeneration == p.Generation {
				return &a.Conditions[i]
			}
		}
	}
	return nil
}

// BackendTLSPolicy through a real edge, API server and TLS backend: the
// edge calls the backend over TLS with the policy's SNI and verifies it
// against the CA from the ConfigMap; a wrong name or CA is refused (502),
// a ConfigMap that holds no usable CA makes the backend answer 503 and the
// policy say why, and nothing ever reaches the backend in plaintext,
// while the policy and the ConfigMap change under a steady load.
func TestBackendTLSPolicyThroughTheEdge(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	const ns = "btls"
	ip := testnetns.Addr(256 + 90)

	ca, other := testutil.NewCA(t), testutil.NewCA(t)
	crt, key := ca.LeafSANs(t, 7, []string{"secure.internal"}, "spiffe://example.org/ns/btls/sa/web")
	pair := must(tls.X509KeyPair(crt, key))(t)
	backend := startTLSPod(t, "tls-1", ip, pair)

	e := serveEdge(t, edgeFile(t, kubeconfig, false, ns))
	addr := e.Addr("http")

	must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	err := c.createClass(ctx) // may exist already
	if err == nil {
		// The package's API server outlives this test, and later tests
		// create the class of their own: what this test made, it takes away.
		t.Cleanup(func() {
			_ = c.gw.GatewayV1().GatewayClasses().Delete(context.Background(), "causeway", metav1.DeleteOptions{})
		})
	}
	must(c.gw.GatewayV1().Gateways(ns).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}}}}, metav1.CreateOptions{}))(t)
	// Without a namespace controller, nothing else would ever remove the
	// Gateway: later tests' edges (watching every namespace) would serve
	// its routes.
	t.Cleanup(func() { _ = c.gw.GatewayV1().Gateways(ns).Delete(context.Background(), "gw", metav1.DeleteOptions{}) })
	must(c.core.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "https", Port: 443}}}}, metav1.CreateOptions{}))(t)
	must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "web-a", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("https"), Port: ptr(int32(8443))}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
	}, metav1.CreateOptions{}))(t)
	webRule := prefixRule("/", "web", "")
	webRule.BackendRefs[0].Port = ptr(gatewayv1.PortNumber(443))
	goneRule := prefixRule("/gone", "missing", "")
	must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, httpRoute(ns, "site", webRule, goneRule), metav1.CreateOptions{}))(t)

	cms := c.core.CoreV1().ConfigMaps(ns)
	must(cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ca"}, Data: map[string]string{"ca.crt": string(ca.PEM())}}, metav1.CreateOptions{}))(t)
	policies := c.gw.GatewayV1().BackendTLSPolicies(ns)
	policy := func(name, svc, host string) *gatewayv1.BackendTLSPolicy {
		return &gatewayv1.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: gatewayv1.BackendTLSPolicySpec{
			TargetRefs: []gatewayv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Kind: "Service", Name: gatewayv1.ObjectName(svc)}}},
			Validation: gatewayv1.BackendTLSPolicyValidation{Hostname: gatewayv1.PreciseHostname(host),
				CACertificateRefs: []gatewayv1.LocalObjectReference{{Kind: "ConfigMap", Name: "ca"}}},
		}}
	}

	// Before any policy the edge calls the backend in plaintext, which
	// the backend refuses: 502, and the plaintext attempt is counted.
	eventually(t, "the route is served (plaintext, refused by the backend)", func() bool { code, _, _ := send(t, addr, "shop.example", "/x"); return code == 502 })
	if backend.plaintext.Load() == 0 {
		t.Fatal("the backend saw no plaintext attempt before the policy: the check below would prove nothing")
	}

	must(policies.Create(ctx, policy("web-tls", "web", "secure.internal"), metav1.CreateOptions{}))(t)
	eventually(t, "the backend is called over TLS", func() bool { code, _, _ := send(t, addr, "shop.example", "/x"); return code == 200 })
	plainBefore := backend.plaintext.Load()
	code, _, body := send(t, addr, "shop.example", "/x")
	var got struct {
		Pod string `json:"pod"`
		TLS bool   `json:"tls"`
		SNI string `json:"sni"`
	}
	must0(t, json.Unmarshal([]byte(body), &got))
	if code != 200 || !got.TLS || got.SNI != "secure.internal" || got.Pod != "tls-1" {
		t.Fatalf("%d %s: want the TLS backend asked for secure.internal", code, body)
	}
	eventually(t, "the policy is Accepted and ResolvedRefs", func() bool {
		a, r := btlsCondition(t, c, ns, "web-tls", "Accepted"), btlsCondition(t, c, ns, "web-tls", "ResolvedRefs")
		return a != nil && a.Status == metav1.ConditionTrue && r != nil && r.Status == metav1.ConditionTrue
	})

	// Load while the policy and its ConfigMap change: every answer is
	// 200, 502 (a refused handshake) or 503 (no usable CA), never
	// anything else, and nothing reaches the backend in plaintext.
	stop := make(chan struct{})
	var loadErr atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/load", nil)
			req.Host = "shop.example"
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				loadErr.Store(err)
				return
			}
			_ = res.Body.Close()
			if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusBadGateway && res.StatusCode != http.StatusServiceUnavailable {
				loadErr.Store(errors.New("unexpected status " + res.Status))
				return
			}
		}
	}()

	setHost := func(host string) {
		updateFresh(t, func() (*gatewayv1.BackendTLSPolicy, error) { return policies.Get(ctx, "web-tls", metav1.GetOptions{}) },
			func(p *gatewayv1.BackendTLSPolicy) { p.Spec.Validation.Hostname = gatewayv1.PreciseHostname(host) },
			func(p *gatewayv1.BackendTLSPolicy) (*gatewayv1.BackendTLSPolicy, error) {
				return policies.Update(ctx, p, metav1.UpdateOptions{})
			})
	}
	setCA := func(data map[string]string) {
		updateFresh(t, func() (*corev1.ConfigMap, error) { return cms.Get(ctx, "ca", metav1.GetOptions{}) },
			func(cm *corev1.ConfigMap) { cm.Data = data },
			func(cm *corev1.ConfigMap) (*corev1.ConfigMap, error) {
				return cms.Update(ctx, cm, metav1.UpdateOptions{})
			})
	}
	good := map[string]string{"ca.crt": string(ca.PEM())}
	for _, step := range []struct {
		desc     string
		change   func()
		want     int
		sni      string // the SNI the backend must have seen last ("" : not checked)
		accepted string // the Accepted reason, and ResolvedRefs' below
		resolved string
	}{
		{"another hostname: refused", func() { setHost("other.internal") }, 502, "other.internal", "Accepted", "ResolvedRefs"},
		{"the right hostname again", func() { setHost("secure.internal") }, 200, "secure.internal", "Accepted", "ResolvedRefs"},
		{"another CA: refused", func() { setCA(map[string]string{"ca.crt": string(other.PEM())}) }, 502, "secure.internal", "Accepted", "ResolvedRefs"},
		{"garbage PEM: no usable CA", func() {
			setCA(map[string]string{"ca.crt": "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n"})
		}, 503, "", "NoValidCACertificate", "InvalidCACertificateRef"},
		{"the right CA again", func() { setCA(good) }, 200, "secure.internal", "Accepted", "ResolvedRefs"},
		{"the key missing", func() { setCA(map[string]string{"tls.crt": string(ca.PEM())}) }, 503, "", "NoValidCACertificate", "InvalidCACertificateRef"},
		{"the ConfigMap deleted", func() { setCA(good); must0(t, cms.Delete(ctx, "ca", metav1.DeleteOptions{})) }, 503, "", "NoValidCACertificate", "InvalidCACertificateRef"},
		{"the ConfigMap back", func() {
			must(cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ca"}, Data: good}, metav1.CreateOptions{}))(t)
		}, 200, "secure.internal", "Accepted", "ResolvedRefs"},
		{"a URI SAN the certificate holds", func() {
			updateFresh(t, func() (*gatewayv1.BackendTLSPolicy, error) { return policies.Get(ctx, "web-tls", metav1.GetOptions{}) },
				func(p *gatewayv1.BackendTLSPolicy) {
					p.Spec.Validation.Hostname = "sni-only.internal"
					p.Spec.Validation.SubjectAltNames = []gatewayv1.SubjectAltName{{Type: gatewayv1.URISubjectAltNameType, URI: "spiffe://example.org/ns/btls/sa/web"}}
				},
				func(p *gatewayv1.BackendTLSPolicy) (*gatewayv1.BackendTLSPolicy, error) {
					return policies.Update(ctx, p, metav1.UpdateOptions{})
				})
		}, 200, "sni-only.internal", "Accepted", "ResolvedRefs"},
		{"a URI SAN it does not hold", func() {
			updateFresh(t, func() (*gatewayv1.BackendTLSPolicy, error) { return policies.Get(ctx, "web-tls", metav1.GetOptions{}) },
				func(p *gatewayv1.BackendTLSPolicy) {
					p.Spec.Validation.SubjectAltNames = []gatewayv1.SubjectAltName{{Type: gatewayv1.URISubjectAltNameType, URI: "spiffe://example.org/ns/btls/sa/admin"}}
				},
				func(p *gatewayv1.BackendTLSPolicy) (*gatewayv1.BackendTLSPolicy, error) {
					return policies.Update(ctx, p, metav1.UpdateOptions{})
				})
		}, 502, "sni-only.internal", "Accepted", "ResolvedRefs"},
	} {
		t.Run(step.desc, func(t *testing.T) {
			step.change()
			// A new connection pool for the new settings: its handshakes
			// carry the new SNI.
			eventually(t, "the edge answers "+http.StatusText(step.want)+" after a handshake for "+step.sni, func() bool {
				code, _, _ := send(t, addr, "shop.example", "/x")
				return code == step.want && (step.sni == "" || backend.lastSNI() == step.sni)
			})
			eventually(t, "the policy's status says "+step.accepted+"/"+step.resolved, func() bool {
				a, r := btlsCondition(t, c, ns, "web-tls", "Accepted"), btlsCondition(t, c, ns, "web-tls", "ResolvedRefs")
				return a != nil && a.Reason == step.accepted && r != nil && r.Reason == step.resolved
			})
		})
	}
	close(stop)
	wg.Wait()
	if err := loadErr.Load(); err != nil {
		t.Fatalf("under load: %v", err)
	}
	if n := backend.plaintext.Load(); n != plainBefore {
		t.Fatalf("%d plaintext connections reached the TLS backend while a policy held it", n-plainBefore)
	}

	// A second, newer policy on the same Service is Conflicted and
	// changes nothing; one on a Service that does not exist (which the
	// route names) says TargetNotFound.
	must(policies.Create(ctx, policy("web-tls-2", "web", "other.internal"), metav1.CreateOptions{}))(t)
	must(policies.Create(ctx, policy("missing-tls", "missing", "missing.internal"), metav1.CreateOptions{}))(t)
	eventually(t, "the newer policy is Conflicted", func() bool {
		a := btlsCondition(t, c, ns, "web-tls-2", "Accepted")
		return a != nil && a.Status == metav1.ConditionFalse && a.Reason == "Conflicted"
	})
	eventually(t, "the missing Service's policy is TargetNotFound", func() bool {
		a := btlsCondition(t, c, ns, "missing-tls", "Accepted")
		return a != nil && a.Status == metav1.ConditionFalse && a.Reason == "TargetNotFound"
	})
	if a := btlsCondition(t, c, ns, "web-tls", "Accepted"); a == nil || a.Status != metav1.ConditionTrue {
		t.Fatalf("the older policy: %+v", a)
	}
	if code, _, body := send(t, addr, "shop.example", "/x"); code != 502 {
		t.Fatalf("the older policy (a URI SAN the backend lacks) still holds: got %d %s", code, body)
	}
	// Deleting the older one hands the Service to the newer.
	must0(t, policies.Delete(ctx, "web-tls", metav1.DeleteOptions{}))
	eventually(t, "the newer policy is Accepted", func() bool {
		a := btlsCondition(t, c, ns, "web-tls-2", "Accepted")
		return a != nil && a.Status == metav1.ConditionTrue
	})
	eventually(t, "the newer policy's hostname is used (refused)", func() bool {
		code, _, _ := send(t, addr, "shop.example", "/x")
		return code == 502 && backend.lastSNI() == "other.internal"
	})
	if n := backend.plaintext.Load(); n != plainBefore {
		t.Fatalf("%d plaintext connections reached the TLS backend while a policy held it", n-plainBefore)
	}
}
