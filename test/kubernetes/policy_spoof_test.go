package kubernetes_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/providers/kubernetes"
)

// hs256 signs claims (JSON) with secret, as a client holding a token
// from the issuer would send it.
func hs256(secret, claims string) string {
	enc := base64.RawURLEncoding
	unsigned := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(claims))
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(unsigned))
	return unsigned + "." + enc.EncodeToString(m.Sum(nil))
}

// Identity headers a client sends itself never reach an upstream as sent,
// on a route whose policy forwards them, on a route whose policy forwards
// others, and on a route with no policy: the upstream sees the edge's
// X-User (a JWT claim) and X-Client (an API key's name) or nothing. A
// claim that is not a valid header value (a CRLF in sub) is not forwarded
// at all, and the client's copy is still dropped.
func TestCausewayPolicyForwardedHeadersCannotBeSpoofed(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	backend := startRecordingPod(t, testnetns.Addr(256+68))

	const ns, host = "spoof", "spoof.example"
	plainGateway(t, c, ns, pod{"spoof-1", testnetns.Addr(256 + 68)})
	const hmacSecret, apiKey = "spoof-hmac-secret-of-32-bytes-or-more", "spoof-alice-key-0123456789"
	must(c.core.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "s"}, Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"hmac": []byte(hmacSecret)}}, metav1.CreateOptions{}))(t)
	must(c.core.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "keys"}, Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"alice": []byte(apiKey)}}, metav1.CreateOptions{}))(t)
	policies := c.dyn.Resource(kubernetes.PolicyGVR).Namespace(ns)
	for name, auth := range map[string]string{
		"jwt": `{"config": {"jwt": {"algorithms": ["HS256"], "forward_claims": {"sub": "X-User"}}}, "secrets": {"hmacSecret": {"name": "s", "key": "hmac"}}}`,
		"key": `{"config": {"api_key": {"header": "X-Key", "forward_name": "X-Client"}}, "secrets": {"apiKeys": {"name": "keys"}}}`,
	} {
		must(policies.Create(ctx, policyJSON(t, ns, name, `{
			"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api", "sectionName": "`+name+`"}],
			"authenticators": [`+auth+`]}`), metav1.CreateOptions{}))(t)
	}
	var rules []gatewayv1.HTTPRouteRule
	for _, name := range []string{"jwt", "key", "open"} {
		r := prefixRule("/"+name, "web", "")
		r.Name = ptr(gatewayv1.SectionName(name))
		rules = append(rules, r)
	}
	rt := httpRoute(ns, "api", rules...)
	rt.Spec.Hostnames = []gatewayv1.Hostname{host}
	must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, rt, metav1.CreateOptions{}))(t)

	e := serveEdge(t, edgeFile(t, kubeconfig, false, ns))
	addr := e.Addr("http")
	exp := time.Now().Add(time.Hour).Unix()
	token := hs256(hmacSecret, `{"sub":"alice","exp":`+strconv.FormatInt(exp, 10)+`}`)
	crlf := hs256(hmacSecret, `{"sub":"alice\r\nX-Client: root","exp":`+strconv.FormatInt(exp, 10)+`}`)
	eventually(t, "the policies are served", func() bool {
		c1, _ := sendWith(t, addr, host, "/jwt", map[string]string{"Authorization": "Bearer " + token})
		c2, _ := sendWith(t, addr, host, "/key", map[string]string{"X-Key": apiKey})
		return c1 == 200 && c2 == 200
	})
	spoof := map[string]string{"X-User": "admin", "X-Client": "admin"}
	with := func(k, v string) map[string]string {
		h := map[string]string{k: v}
		for sk, sv := range spoof {
			h[sk] = sv
		}
		return h
	}
	cases := []struct {
		path           string
		h              map[string]string
		xUser, xClient string // what the upstream must see ("" for nothing)
	}{
		{"/jwt", with("Authorization", "Bearer "+token), "alice", ""},
		{"/jwt", with("Authorization", "Bearer "+crlf), "", ""},
		{"/key", with("X-Key", apiKey), "", "alice"},
		{"/open", spoof, "", ""},
		{"/open", with("X-Key", apiKey), "", ""},
	}
	for _, tc := range cases {
		n := len(backend.headers())
		if code, body := sendWith(t, addr, host, tc.path, tc.h); code != 200 {
			t.Fatalf("%s: %d %s", tc.path, code, body)
		}
		seen := backend.headers()
		if len(seen) != n+1 {
			t.Fatalf("%s: the upstream saw %d requests, want 1", tc.path, len(seen)-n)
		}
		got := seen[len(seen)-1]
		for k, want := range map[string]string{"X-User": tc.xUser, "X-Client": tc.xClient} {
			v := got.Values(k)
			if want == "" && len(v) != 0 || want != "" && (len(v) != 1 || v[0] != want) {
				t.Errorf("%s %v: the upstream saw %s %q, want %q", tc.path, tc.h, k, v, want)
			}
		}
	}
}
