package kubernetes_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/internal/testutil"
)

func tlsSecret(ns, name string, crt, key []byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}}
}

// getTLS asks the edge's https listener for path with SNI host, trusting
// only pool; it returns the served certificate's serial with the answer.
func getTLS(addr, host, path string, pool *x509.CertPool) (serial int64, code int, s seen, err error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: host, RootCAs: pool, MinVersion: tls.VersionTLS12},
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+path, nil)
	req.Host = host
	res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, 0, seen{}, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	_ = json.Unmarshal(b, &s)
	return res.TLS.PeerCertificates[0].SerialNumber.Int64(), res.StatusCode, s, nil
}

func listenerCondition(t *testing.T, c cluster, ns, gw, listener, typ string) *metav1.Condition {
	t.Helper()
	g := must(c.gw.GatewayV1().Gateways(ns).Get(context.Background(), gw, metav1.GetOptions{}))(t)
	for _, l := range g.Status.Listeners {
		if string(l.Name) != listener {
			continue
		}
		for i := range l.Conditions {
			if l.Conditions[i].Type == typ && l.Conditions[i].ObservedGeneration == g.Generation {
				return &l.Conditions[i]
			}
		}
	}
	return nil
}

// A Gateway HTTPS listener is served on the edge's https listener with the
// certificate of its Secret: a real TLS handshake by SNI, verified against
// the Secret's CA, then the proxied answer. Rotating the Secret swaps the
// certificate with no restart; a Secret made invalid takes its listener
// out (InvalidCertificateRef) while plain HTTP serves on; a valid one
// brings it back.
func TestGatewayHTTPSListenerFromSecret(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	startPod(t, "secure-1", testnetns.Addr(256+30))
	ca := testutil.NewCA(t)

	file := filepath.Join(t.TempDir(), "causeway.yaml")
	must0(t, os.WriteFile(file, []byte(fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
tls: {redirect_http: false}
providers:
  kubernetes: {kubeconfig: %q}
`, kubeconfig)), 0o600))
	e := serveEdge(t, file)
	httpsAddr, httpAddr := e.Addr("https"), e.Addr("http")

	const ns = "secure"
	must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	_ = c.createClass(ctx) // may exist already
	crt, key := ca.Leaf(t, "secure.example", 1001)
	must(c.core.CoreV1().Secrets(ns).Create(ctx, tlsSecret(ns, "web-tls", crt, key), metav1.CreateOptions{}))(t)
	host := gatewayv1.Hostname("secure.example")
	must(c.gw.GatewayV1().Gateways(ns).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{
			{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType},
			{Name: "https", Port: 443, Protocol: gatewayv1.HTTPSProtocolType, Hostname: &host,
				TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "web-tls"}}}},
		}}}, metav1.CreateOptions{}))(t)
	must(c.core.CoreV1().Services(ns).Create(ctx, service(ns, "web"), metav1.CreateOptions{}))(t)
	must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "web", "web-a", pod{"secure-1", testnetns.Addr(256 + 30)}), metav1.CreateOptions{}))(t)
	r := httpRoute(ns, "site", prefixRule("/x", "web", ""))
	r.Spec.Hostnames = []gatewayv1.Hostname{"secure.example"}
	must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, r, metav1.CreateOptions{}))(t)

	served := func(want int64) func() bool {
		return func() bool {
			serial, code, s, err := getTLS(httpsAddr, "secure.example", "/x", ca.Pool)
			return err == nil && serial == want && code == http.StatusOK && s.Pod == "secure-1"
		}
	}
	eventually(t, "served over TLS with the Secret's certificate", served(1001))
	eventually(t, "the HTTPS listener programmed", func() bool {
		p := listenerCondition(t, c, ns, "gw", "https", "Programmed")
		return p != nil && p.Status == metav1.ConditionTrue
	})

	// The admin view of the served model shows no private key, in PEM
	// or in the base64 of a JSON []byte.
	res := must(http.Get("http://" + e.Addr("admin") + "/config"))(t)
	cfg, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !bytes.Contains(cfg, []byte("secure.example")) {
		t.Fatalf("admin /config: %d %.300s", res.StatusCode, cfg)
	}
	for _, k := range [][]byte{[]byte("PRIVATE KEY"), key, []byte(base64.StdEncoding.EncodeToString(key)[:40])} {
		if bytes.Contains(cfg, k) {
			t.Fatalf("admin /config shows the Secret's private key")
		}
	}

	// A route attached to the HTTPS listener alone is never served on
	// plain HTTP, whatever the request line claims.
	vault := httpRoute(ns, "vault", prefixRule("/vault", "web", ""))
	vault.Spec.Hostnames = []gatewayv1.Hostname{"secure.example"}
	vault.Spec.ParentRefs[0].SectionName = ptr(gatewayv1.SectionName("https"))
	must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, vault, metav1.CreateOptions{}))(t)
	eventually(t, "the HTTPS-only route served over TLS", func() bool {
		_, code, s, err := getTLS(httpsAddr, "secure.example", "/vault/x", ca.Pool)
		return err == nil && code == http.StatusOK && s.Path == "/vault/x"
	})
	if code, _, body := send(t, httpAddr, "secure.example", "/vault/x"); code != http.StatusNotFound {
		t.Fatalf("the HTTPS-only route over plain HTTP: %d %s, want 404", code, body)
	}
	conn := must(net.Dial("tcp", httpAddr))(t)
	_, _ = io.WriteString(conn, "GET https://secure.example/vault/x HTTP/1.1\r\nHost: secure.example\r\nConnection: close\r\n\r\n")
	raw, _ := io.ReadAll(conn)
	conn.Close()
	if !bytes.HasPrefix(raw, []byte("HTTP/1.1 404")) && !bytes.HasPrefix(raw, []byte("HTTP/1.1 400")) {
		t.Fatalf("an absolute https:// request line on plain HTTP: %q", raw[:min(len(raw), 200)])
	}

	// Rotation: the next handshake gets the new certificate.
	crt2, key2 := ca.Leaf(t, "secure.example", 1002)
	sec := must(c.core.CoreV1().Secrets(ns).Get(ctx, "web-tls", metav1.GetOptions{}))(t)
	sec.Data = map[string][]byte{corev1.TLSCertKey: crt2, corev1.TLSPrivateKeyKey: key2}
	must(c.core.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{}))(t)
	eventually(t, "the rotated certificate is served", served(1002))

	// A Secret made invalid (a key of another certificate): the listener
	// is out, its certificate with it; nothing else is refused.
	_, otherKey := ca.Leaf(t, "other.example", 1003)
	sec = must(c.core.CoreV1().Secrets(ns).Get(ctx, "web-tls", metav1.GetOptions{}))(t)
	sec.Data[corev1.TLSPrivateKeyKey] = otherKey
	must(c.core.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{}))(t)
	eventually(t, "InvalidCertificateRef", func() bool {
		rr := listenerCondition(t, c, ns, "gw", "https", "ResolvedRefs")
		return rr != nil && rr.Status == metav1.ConditionFalse && rr.Reason == string(gatewayv1.ListenerReasonInvalidCertificateRef)
	})
	eventually(t, "the invalid pair is not served", func() bool {
		_, _, _, err := getTLS(httpsAddr, "secure.example", "/x", ca.Pool)
		return err != nil
	})
	if code, s, body := send(t, httpAddr, "secure.example", "/x"); code != http.StatusOK || s.Pod != "secure-1" {
		t.Fatalf("plain HTTP with the HTTPS listener out: %d %s", code, body)
	}

	// A valid Secret again: served again.
	crt4, key4 := ca.Leaf(t, "secure.example", 1004)
	sec = must(c.core.CoreV1().Secrets(ns).Get(ctx, "web-tls", metav1.GetOptions{}))(t)
	sec.Data = map[string][]byte{corev1.TLSCertKey: crt4, corev1.TLSPrivateKeyKey: key4}
	must(c.core.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{}))(t)
	eventually(t, "served again after the fix", served(1004))

	// A hostile Secret near the API server's size limit: a pair after
	// 900 KiB of PEM blocks that are not certificates, with a key of
	// another certificate. The listener goes out, the edge stays up.
	junk := bytes.Repeat([]byte("-----BEGIN JUNK-----\nAAAA\n-----END JUNK-----\n"), 900<<10/40)
	sec = must(c.core.CoreV1().Secrets(ns).Get(ctx, "web-tls", metav1.GetOptions{}))(t)
	sec.Data = map[string][]byte{corev1.TLSCertKey: append(junk, crt4...), corev1.TLSPrivateKeyKey: otherKey}
	must(c.core.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{}))(t)
	invalidRef := func(what string) {
		t.Helper()
		eventually(t, what+": InvalidCertificateRef", func() bool {
			rr := listenerCondition(t, c, ns, "gw", "https", "ResolvedRefs")
			return rr != nil && rr.Status == metav1.ConditionFalse && rr.Reason == string(gatewayv1.ListenerReasonInvalidCertificateRef) &&
				len(rr.Message) < 1024 && !strings.Contains(rr.Message, "PRIVATE KEY")
		})
		eventually(t, what+": no certificate served", func() bool {
			_, _, _, err := getTLS(httpsAddr, "secure.example", "/x", ca.Pool)
			return err != nil
		})
		if code, s, body := send(t, httpAddr, "secure.example", "/x"); code != http.StatusOK || s.Pod != "secure-1" {
			t.Fatalf("%s: plain HTTP with the HTTPS listener out: %d %s", what, code, body)
		}
	}
	invalidRef("a huge Secret")

	// The Secret deleted: the listener stays out, with nothing stale served.
	must0(t, c.core.CoreV1().Secrets(ns).Delete(ctx, "web-tls", metav1.DeleteOptions{}))
	invalidRef("the Secret deleted")
	eventually(t, "the status names the missing Secret", func() bool {
		rr := listenerCondition(t, c, ns, "gw", "https", "ResolvedRefs")
		return rr != nil && strings.Contains(rr.Message, "does not exist")
	})
}

func must0(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A Gateway's Secret is served only for its listener's hostname: an older
// Gateway whose Secret also names a newer Gateway's listener hostname does
// not win that hostname's handshakes (real TLS handshakes by SNI against
// the edge), and its own hostname keeps its certificate.
func TestGatewayCertificateOnlyForListenerHostname(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	ca := testutil.NewCA(t)

	file := filepath.Join(t.TempDir(), "causeway.yaml")
	must0(t, os.WriteFile(file, []byte(fmt.Sprintf(`version: 1
listen: {http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {output: "off"}
tls: {redirect_http: false}
providers:
  kubernetes: {kubeconfig: %q}
`, kubeconfig)), 0o600))
	e := serveEdge(t, file)
	httpsAddr := e.Addr("https")
	_ = c.createClass(ctx) // may exist already

	// Gateway a comes first (older, or first by namespace in the same
	// second): its Secret names its own host and b's.
	gateway := func(ns, host, secret string, crt, key []byte) {
		must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
		must(c.core.CoreV1().Secrets(ns).Create(ctx, tlsSecret(ns, secret, crt, key), metav1.CreateOptions{}))(t)
		h := gatewayv1.Hostname(host)
		must(c.gw.GatewayV1().Gateways(ns).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{
				{Name: "https", Port: 443, Protocol: gatewayv1.HTTPSProtocolType, Hostname: &h,
					TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: gatewayv1.ObjectName(secret)}}}},
			}}}, metav1.CreateOptions{}))(t)
		// Later tests' edges serve every namespace: they need not judge
		// these Gateways.
		t.Cleanup(func() {
			_ = c.gw.GatewayV1().Gateways(ns).Delete(context.Background(), "gw", metav1.DeleteOptions{})
		})
	}
	grabCrt, grabKey := ca.LeafSANs(t, 2001, []string{"a.scoped.example", "b.scoped.example"})
	gateway("scoped-a", "a.scoped.example", "grab", grabCrt, grabKey)
	bCrt, bKey := ca.Leaf(t, "b.scoped.example", 2002)
	gateway("scoped-b", "b.scoped.example", "own", bCrt, bKey)

	serial := func(host string) int64 {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", httpsAddr,
			&tls.Config{ServerName: host, RootCAs: ca.Pool, MinVersion: tls.VersionTLS12})
		if err != nil {
			return 0
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	for _, tt := range []struct {
		host string
		want int64
	}{
		{"b.scoped.example", 2002},
		{"a.scoped.example", 2001},
	} {
		var got int64
		eventually(t, fmt.Sprintf("%s served with certificate %d", tt.host, tt.want), func() bool {
			got = serial(tt.host)
			return got == tt.want
		})
	}
	// Both listeners are programmed: the edge took both Secrets, and the
	// older one still does not answer for b's hostname.
	for _, ns := range []string{"scoped-a", "scoped-b"} {
		eventually(t, ns+" programmed", func() bool {
			p := listenerCondition(t, c, ns, "gw", "https", "Programmed")
			return p != nil && p.Status == metav1.ConditionTrue
		})
	}
	if got := serial("b.scoped.example"); got != 2002 {
		t.Fatalf("b.scoped.example served with certificate %d, want 2002 (b's own)", got)
	}
}
