package kubernetes

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"

	"github.com/causewayhq/causeway/routes"
)

// outboundRecorder keeps every snapshot an OutboundWatcher delivers.
type outboundRecorder struct {
	mu    sync.Mutex
	snaps []*OutboundSnapshot
}

func (r *outboundRecorder) add(s *OutboundSnapshot) {
	r.mu.Lock()
	r.snaps = append(r.snaps, s)
	r.mu.Unlock()
}

func (r *outboundRecorder) last() (*OutboundSnapshot, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.snaps) == 0 {
		return nil, 0
	}
	return r.snaps[len(r.snaps)-1], len(r.snaps)
}

func (r *outboundRecorder) waitFor(t *testing.T, what string, ok func(*OutboundSnapshot) bool) *OutboundSnapshot {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if s, _ := r.last(); s != nil && ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot with %s within 60s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The outbound watcher, with the documented RBAC, caches only what the sidecar reads, delivers
// nothing for a Pod's status churn, follows what matters, and stops every
// goroutine it started.
func TestOutboundWatcher(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	c := adminClients(t)
	ns := namespace(t, c)
	mesh := meshSvc(ns, "pay")
	mesh.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80}}
	plain := mesh.DeepCopy()
	plain.Name, plain.Labels = "plain", nil
	for _, s := range []*corev1.Service{mesh, plain} {
		if _, err := c.core.CoreV1().Services(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod := meshPod(ns, "pay-1", "payments")
	pod.UID = ""
	pod.Labels = map[string]string{"app": "pay"}
	pod.Spec.Containers = []corev1.Container{{Name: "app", Image: "app", Env: []corev1.EnvVar{{Name: "BIG", Value: "not cached"}}}}
	pod, err := c.core.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	es := meshSlice(ns, "pay", "pay-a", meshEP{ip: "10.1.0.1", pod: "pay-1"})
	es.Endpoints[0].TargetRef.UID = pod.UID
	owned := meshSlice(ns, "", "no-service", meshEP{ip: "10.1.0.2", pod: "pay-1"})
	delete(owned.Labels, discoveryv1.LabelServiceName)
	for _, s := range []*discoveryv1.EndpointSlice{es, owned} {
		if _, err := c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// The watcher runs with the documented role only, bound in its one
	// namespace.
	var role rbacv1.ClusterRole
	if err := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(docYAML(t, "sidecar-rbac")), 4096).Decode(&role); err != nil {
		t.Fatal(err)
	}
	user := "sidecar-" + ns
	role.Name = user
	if _, err := c.core.RbacV1().ClusterRoles().Create(ctx, &role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.core.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: user},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	restCfg := adminConfig()
	restCfg.Impersonate = rest.ImpersonationConfig{UserName: user}

	rec := &outboundRecorder{}
	w, err := NewOutbound(routes.OutboundKubernetes{Namespaces: []string{ns}}, rec.add, Options{RESTConfig: restCfg, Quiet: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
	})

	first := rec.waitFor(t, "the mesh Service, its slice and its pod", func(s *OutboundSnapshot) bool {
		return len(s.Services) == 1 && len(s.EndpointSlices) == 1 && len(s.Pods) == 1
	})
	if first.Services[0].Name != "pay" || first.EndpointSlices[0].Name != "pay-a" {
		t.Fatalf("cached %s and %s, want only the mesh's", first.Services[0].Name, first.EndpointSlices[0].Name)
	}
	p := first.Pods[0]
	if len(p.Spec.Containers) != 0 || len(p.Labels) != 0 || p.Spec.ServiceAccountName != "payments" || p.UID != pod.UID {
		t.Fatalf("the cached pod is not slimmed to its identity: %+v", p)
	}
	res := TranslateOutbound(routes.OutboundKubernetes{}, first, OutboundOptions{TrustDomain: testTD})
	if res.Endpoints != 1 {
		t.Fatalf("translated %+v", res)
	}

	// A status change that leaves the identity alone wakes nothing.
	_, n := rec.last()
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}
	if pod, err = c.core.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if _, m := rec.last(); m != n {
		t.Fatalf("a pod's status condition gave %d snapshots", m-n)
	}
	// Its inbound port does.
	pod.Annotations = map[string]string{routes.InboundPortAnnotation: "16000"}
	if _, err = c.core.CoreV1().Pods(ns).Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "the pod's new port", func(s *OutboundSnapshot) bool {
		return len(s.Pods) == 1 && s.Pods[0].Annotations[routes.InboundPortAnnotation] == "16000"
	})
	// Leaving the mesh takes the Service out of the cache.
	svc, err := c.core.CoreV1().Services(ns).Get(ctx, "pay", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Labels = nil
	if _, err := c.core.CoreV1().Services(ns).Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "no mesh Service", func(s *OutboundSnapshot) bool { return len(s.Services) == 0 })
}
