package kubernetes_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// Every change of the cluster is merged with the edge's file and checked
// as one model, so an object of one tenant that the API server takes but
// the model refuses would refuse every later change of every namespace:
// the edge would keep serving the last good model, with a ReferenceGrant
// the granting namespace has deleted still honoured. Each poison below is
// an object the API server accepts (its schema and CEL rules let it
// through); after it, a grant deleted in another namespace must still stop
// the route that used it, within the usual 30 s, and the poison itself
// must say why it is not served.
func TestTenantObjectCannotFreezeTheCluster(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	sharedPod := startRecordingPod(t, tenantAddr(20))
	malloryPod := startRecordingPod(t, tenantAddr(21))
	const infra, victim, owner, mallory = "frz-infra", "frz-victim", "frz-owner", "frz-mallory"
	for _, ns := range []string{infra, victim, owner, mallory} {
		must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	}
	_ = c.createClass(ctx) // may exist already
	all := gatewayv1.NamespacesFromAll
	must(c.gw.GatewayV1().Gateways(infra).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: infra, Name: "shared"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{
			{Name: "public", Port: 80, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}},
		}}}, metav1.CreateOptions{}))(t)
	for ns, ip := range map[string]string{owner: tenantAddr(20), mallory: tenantAddr(21)} {
		must(c.core.CoreV1().Services(ns).Create(ctx, service(ns, "web"), metav1.CreateOptions{}))(t)
		must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "web", "web-a", pod{ns, ip}), metav1.CreateOptions{}))(t)
	}
	// The victim's route calls the owner's Service, which a grant in the
	// owner's namespace allows; mallory's calls its own.
	vr := sharedRoute(victim, "shop", []string{"shop.frz.example"}, prefixRule("/", "web", owner))
	vr.Spec.ParentRefs[0].Namespace = ptr(gatewayv1.Namespace(infra))
	must(c.gw.GatewayV1().HTTPRoutes(victim).Create(ctx, vr, metav1.CreateOptions{}))(t)
	mr := sharedRoute(mallory, "own", []string{"own.frz.example"}, prefixRule("/", "web", ""))
	mr.Spec.ParentRefs[0].Namespace = ptr(gatewayv1.Namespace(infra))
	must(c.gw.GatewayV1().HTTPRoutes(mallory).Create(ctx, mr, metav1.CreateOptions{}))(t)

	e := serveEdge(t, edgeFile(t, kubeconfig, false, infra, victim, owner, mallory))
	addr := e.Addr("http")

	// badSANPolicy is mallory's BackendTLSPolicy on its own Service,
	// with one URI subjectAltName.
	badSANPolicy := func(uri string) func(t *testing.T) (func() *metav1.Condition, func()) {
		return func(t *testing.T) (func() *metav1.Condition, func()) {
			p := &gatewayv1.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: mallory, Name: "bad-san"}}
			p.Spec.TargetRefs = []gatewayv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Kind: "Service", Name: "web"}}}
			p.Spec.Validation.Hostname = "web.frz.example"
			p.Spec.Validation.WellKnownCACertificates = ptr(gatewayv1.WellKnownCACertificatesSystem)
			p.Spec.Validation.SubjectAltNames = []gatewayv1.SubjectAltName{{Type: gatewayv1.URISubjectAltNameType, URI: gatewayv1.AbsoluteURI(uri)}}
			api := c.gw.GatewayV1().BackendTLSPolicies(mallory)
			must(api.Create(ctx, p, metav1.CreateOptions{}))(t)
			return func() *metav1.Condition { return btlsCondition(t, c, mallory, "bad-san", "Accepted") },
				func() {
					must0(t, api.Delete(ctx, "bad-san", metav1.DeleteOptions{}))
					// The next case makes one of the same name.
					eventually(t, "the policy is gone", func() bool {
						_, err := api.Get(ctx, "bad-san", metav1.GetOptions{})
						return err != nil
					})
				}
		}
	}

	for _, tc := range []struct {
		name string
		// poison creates mallory's object and returns its Accepted
		// condition as the edge wrote it (nil until written), and how to
		// delete it.
		poison     func(t *testing.T) (accepted func() *metav1.Condition, remove func())
		wantReason string
		// wantMallory is what mallory's own route answers meanwhile.
		wantMallory int
	}{
		// The schema's pattern for a URI subjectAltName is not anchored at
		// its end: it takes a scheme and "//" with nothing after it, and
		// escapes that do not decode; the model refuses both.
		{name: "BackendTLSPolicy URI subjectAltName spiffe://", poison: badSANPolicy("spiffe://"),
			wantReason: "Invalid", wantMallory: 503}, // the policy cannot be used: no endpoint, never plaintext
		{name: "BackendTLSPolicy URI subjectAltName with a bad escape", poison: badSANPolicy("https://%zz/web"),
			wantReason: "Invalid", wantMallory: 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			grants := c.gw.GatewayV1beta1().ReferenceGrants(owner)
			must(grants.Create(ctx, &gatewayv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: owner, Name: "victim-shop"},
				Spec: gatewayv1beta1.ReferenceGrantSpec{
					From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Namespace: victim}},
					To:   []gatewayv1beta1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
				}}, metav1.CreateOptions{}))(t)
			eventually(t, "the victim's route reaches the owner's Service through the grant", func() bool {
				code, body := sendWith(t, addr, "shop.frz.example", "/", nil)
				return code == 200 && strings.HasPrefix(body, "ok")
			})
			accepted, remove := tc.poison(t)
			t.Cleanup(remove) // other tests' edges share the API server
			eventually(t, "the poison's status is written", func() bool { return accepted() != nil })
			if a := accepted(); a.Status != metav1.ConditionFalse || a.Reason != tc.wantReason {
				t.Errorf("poison: Accepted %s/%s %q, want False/%s", a.Status, a.Reason, a.Message, tc.wantReason)
			}

			// The owner takes its grant back: the victim's route must stop
			// reaching its Service, whatever mallory made meanwhile.
			deleted := time.Now()
			must0(t, grants.Delete(ctx, "victim-shop", metav1.DeleteOptions{}))
			eventually(t, "the deleted grant stops the victim's route (500)", func() bool {
				code, _ := sendWith(t, addr, "shop.frz.example", "/", nil)
				return code == 500
			})
			t.Logf("the grant's deletion took effect after %v", time.Since(deleted).Round(time.Millisecond))
			eventually(t, "the victim's route says RefNotPermitted", func() bool {
				rc := routeCondition(t, c, victim, "shop", "ResolvedRefs")
				return rc != nil && rc.Status == metav1.ConditionFalse && rc.Reason == "RefNotPermitted"
			})
			hits := sharedPod.hits.Load()
			for range 5 {
				if code, _ := sendWith(t, addr, "shop.frz.example", "/", nil); code != 500 {
					t.Errorf("after the grant's deletion the victim's route answered %d, want 500", code)
				}
			}
			if n := sharedPod.hits.Load() - hits; n != 0 {
				t.Errorf("the owner's pod received %d requests after its grant was deleted", n)
			}
			m := malloryPod.hits.Load()
			if code, _ := sendWith(t, addr, "own.frz.example", "/", nil); code != tc.wantMallory {
				t.Errorf("mallory's own route answered %d, want %d", code, tc.wantMallory)
			}
			if malloryPod.hits.Load() != m && tc.wantMallory != 200 {
				t.Error("mallory's pod was called in spite of its refused object")
			}
			gw := must(c.gw.GatewayV1().Gateways(infra).Get(ctx, "shared", metav1.GetOptions{}))(t)
			for _, cond := range gw.Status.Conditions {
				if cond.Type == "Programmed" && cond.Status != metav1.ConditionTrue {
					t.Errorf("Gateway Programmed %s/%s: %s", cond.Status, cond.Reason, cond.Message)
				}
			}
		})
	}
}
