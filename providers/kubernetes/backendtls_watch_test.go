package kubernetes

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
)

// With only the documented RBAC, the watcher lists BackendTLSPolicies and
// ConfigMaps, keeps of each ConfigMap only its ca.crt, rebuilds for a
// changed ca.crt but not for another key, and the leader writes the
// policy's ancestor status with its observedGeneration.
func TestBackendTLSPolicyWatchAndStatus(t *testing.T) {
	noLeaks(t)
	c := adminClients(t)
	ctx := context.Background()
	ns := namespace(t, c)
	o := createAll(t, c, ns)
	pem := string(testutil.NewCA(t).PEM())
	cms := c.core.CoreV1().ConfigMaps(ns)
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ca"},
		Data: map[string]string{caCertKey: pem, "app.yaml": "password: not-for-the-edge"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"},
		Data: map[string]string{"app.yaml": "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := btlsPolicy(ns, "web-tls", 0, o.service, "", "web.internal", "ca")
	p.CreationTimestamp = metav1.Time{}
	if _, err := c.gw.GatewayV1().BackendTLSPolicies(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	user := "causeway-" + ns
	grantDocumented(t, c, user, ns, func(r rbacv1.PolicyRule) rbacv1.PolicyRule { return r })
	restCfg := adminConfig()
	restCfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	cfg := routes.KubernetesProvider{Namespaces: []string{ns}, GatewayClass: o.class}
	r := startWatcher(t, cfg, Options{RESTConfig: restCfg, LeaderElection: shortLease(ns, "a")})
	s := r.rec.waitFor(t, 60*time.Second, "the policy and its ConfigMap", func(s *Snapshot) bool {
		return len(s.BackendTLSPolicies) == 1 && len(s.ConfigMaps) >= 2
	})
	for _, cm := range s.ConfigMaps {
		switch cm.Name {
		case "ca":
			if len(cm.Data) != 1 || cm.Data[caCertKey] != pem {
				t.Fatalf("ConfigMap ca cached as %v, want its ca.crt only", cm.Data)
			}
		case "app":
			if cm.Data != nil {
				t.Fatalf("ConfigMap app cached with %v, want nothing of its data", cm.Data)
			}
		}
	}

	res := Translate(cfg, s)
	setResult(t, r.w, &res)
	got, err := c.gw.GatewayV1().BackendTLSPolicies(ns).Get(ctx, "web-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Status.Ancestors) != 1 || got.Status.Ancestors[0].AncestorRef.Name != gatewayv1.ObjectName(o.gateway) {
		t.Fatalf("ancestors %+v, want Gateway %s", got.Status.Ancestors, o.gateway)
	}
	for _, typ := range []string{"Accepted", "ResolvedRefs"} {
		cond := condOf(got.Status.Ancestors[0].Conditions, typ)
		if cond == nil || cond.Status != metav1.ConditionTrue || cond.ObservedGeneration != got.Generation {
			t.Fatalf("%s = %+v, want True at generation %d", typ, cond, got.Generation)
		}
	}

	// Another key of the ConfigMap changes: no snapshot. Its ca.crt: one.
	n := r.rec.count()
	update := func(k, v string) {
		cm, err := cms.Get(ctx, "ca", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data[k] = v
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	update("app.yaml", "password: changed")
	time.Sleep(1500 * time.Millisecond) // longer than the debounce's bound
	if m := r.rec.count(); m != n {
		t.Fatalf("%d snapshots for a change to a key the edge does not read", m-n)
	}
	update(caCertKey, "garbage")
	s = r.rec.waitFor(t, 30*time.Second, "the changed ca.crt", func(s *Snapshot) bool {
		for _, cm := range s.ConfigMaps {
			if cm.Name == "ca" && cm.Data[caCertKey] == "garbage" {
				return true
			}
		}
		return false
	})
	res2 := Translate(cfg, s)
	setResult(t, r.w, &res2)
	got, err = c.gw.GatewayV1().BackendTLSPolicies(ns).Get(ctx, "web-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cond := condOf(got.Status.Ancestors[0].Conditions, "Accepted"); cond == nil || cond.Reason != "NoValidCACertificate" {
		t.Fatalf("Accepted = %+v, want NoValidCACertificate", cond)
	}
	if cond := condOf(got.Status.Ancestors[0].Conditions, "ResolvedRefs"); cond == nil || cond.Reason != "InvalidCACertificateRef" ||
		!strings.Contains(cond.Message, "ca.crt is not a CA bundle") {
		t.Fatalf("ResolvedRefs = %+v, want InvalidCACertificateRef naming ca.crt", cond)
	}
}
