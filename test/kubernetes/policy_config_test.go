package kubernetes_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/providers/kubernetes"
)

// The docs promise that a policy's Secret values are never in the admin
// /config. One policy per kind of secret (API keys, an HMAC secret,
// htpasswd, an OIDC client secret and session keys), all Accepted and
// served: /config shows the policies' authenticators, and none of the
// values, nor the SHA-256 of an API key the edge keeps, nor a bcrypt
// hash, in any encoding a reader might try.
func TestCausewayPolicySecretsNotInAdminConfig(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	startRecordingPod(t, testnetns.Addr(256+66))

	const ns, host = "config-secrets", "config-secrets.example"
	plainGateway(t, c, ns, pod{"config-1", testnetns.Addr(256 + 66)})

	apiKey := "config-api-key-0123456789abcdef"
	hmacSecret := "config-hmac-secret-of-32-bytes-and-more"
	clientSecret := "config-oidc-client-secret-0123456789"
	sessionKey := base64.StdEncoding.EncodeToString([]byte("config-session-key-32-bytes-long"))
	hash := must(bcrypt.GenerateFromPassword([]byte("config-password"), bcrypt.MinCost))(t)
	apiSum := sha256.Sum256([]byte(apiKey))
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "s"}, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{
		"hmac": []byte(hmacSecret), "htpasswd": append([]byte("carol:"), hash...), "client": []byte(clientSecret), "session": []byte(sessionKey)}}
	must(c.core.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}))(t)
	must(c.core.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "keys"}, Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"alice": []byte(apiKey)}}, metav1.CreateOptions{}))(t)

	kinds := []struct{ name, auth string }{
		{"apikey", `{"config": {"api_key": {"header": "X-Key"}}, "secrets": {"apiKeys": {"name": "keys"}}}`},
		{"hmac", `{"config": {"jwt": {"algorithms": ["HS256"]}}, "secrets": {"hmacSecret": {"name": "s", "key": "hmac"}}}`},
		{"basic", `{"config": {"basic": {}}, "secrets": {"htpasswd": {"name": "s", "key": "htpasswd"}}}`},
		{"oidc", `{"config": {"oidc": {"issuer": "https://id.example", "client_id": "causeway", "redirect_path": "/oidc/callback"}}, "secrets": {"clientSecret": {"name": "s", "key": "client"}, "sessionKeys": {"name": "s", "key": "session"}}}`},
	}
	policies := c.dyn.Resource(kubernetes.PolicyGVR).Namespace(ns)
	var rules []gatewayv1.HTTPRouteRule
	for _, k := range kinds {
		must(policies.Create(ctx, policyJSON(t, ns, k.name, `{
			"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api", "sectionName": "`+k.name+`"}],
			"authenticators": [`+k.auth+`]}`), metav1.CreateOptions{}))(t)
		r := prefixRule("/"+k.name, "web", "")
		r.Name = ptr(gatewayv1.SectionName(k.name))
		rules = append(rules, r)
	}
	rt := httpRoute(ns, "api", rules...)
	rt.Spec.Hostnames = []gatewayv1.Hostname{host}
	must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, rt, metav1.CreateOptions{}))(t)

	e := serveEdge(t, edgeFile(t, kubeconfig, true, ns))
	for _, k := range kinds {
		eventually(t, k.name+" Accepted", func() bool {
			a := policyAccepted(t, c, ns, k.name)
			if a != nil && a.Reason != "Accepted" {
				t.Fatalf("%s: %s %q", k.name, a.Reason, a.Message)
			}
			return a != nil
		})
	}
	eventually(t, "the API key is served", func() bool {
		code, _ := sendWith(t, e.Addr("http"), host, "/apikey", map[string]string{"X-Key": apiKey})
		return code == 200
	})
	res := must(http.Get("http://" + e.Addr("admin") + "/config"))(t)
	body := string(must(io.ReadAll(res.Body))(t))
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "k8s."+ns+".policy.oidc.auth.0") {
		t.Fatalf("/config: %d, without the policies' authenticators:\n%.2000s", res.StatusCode, body)
	}
	for what, v := range map[string]string{
		"API key": apiKey, "API key's SHA-256": hex.EncodeToString(apiSum[:]), "HMAC secret": hmacSecret,
		"bcrypt hash": string(hash), "OIDC client secret": clientSecret, "session key": sessionKey,
	} {
		for _, enc := range []string{v, base64.StdEncoding.EncodeToString([]byte(v)), base64.RawStdEncoding.EncodeToString([]byte(v)), strings.ReplaceAll(v, "/", `\/`)} {
			if strings.Contains(body, enc) || strings.Contains(body, enc[:len(enc)/2]) {
				t.Errorf("/config shows the %s", what)
			}
		}
	}
}
