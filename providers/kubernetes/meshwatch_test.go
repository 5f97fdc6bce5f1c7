package kubernetes

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/causewayhq/causeway/routes"
)

// With a mesh trust domain the edge's watcher also caches Pods, with only
// the documented permissions, slimmed to what names their identity; a
// Pod's churn that changes none of that makes no snapshot. Without one,
// no Pod is cached.
func TestWatcherMeshPods(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	c := adminClients(t)
	ns := namespace(t, c)
	createAll(t, c, ns)
	pod := meshPod(ns, "pay-1", "payments")
	pod.UID = ""
	pod.Labels = map[string]string{"app": "pay"}
	pod.Spec.Containers = []corev1.Container{{Name: "app", Image: "app", Env: []corev1.EnvVar{{Name: "BIG", Value: "not cached"}}}}
	pod, err := c.core.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	user := "causeway-" + ns
	grantDocumented(t, c, user, ns, func(r rbacv1.PolicyRule) rbacv1.PolicyRule { return r })
	restCfg := adminConfig()
	restCfg.Impersonate = rest.ImpersonationConfig{UserName: user}

	plain := startWatcher(t, routes.KubernetesProvider{Namespaces: []string{ns}},
		Options{RESTConfig: restCfg, LeaderElection: LeaderElection{Namespace: ns, Identity: "plain"}})
	if s := plain.rec.waitFor(t, 60*time.Second, "the first snapshot", func(*Snapshot) bool { return true }); len(s.Pods) != 0 {
		t.Fatalf("an edge without a mesh section cached %d Pods", len(s.Pods))
	}
	plain.stop()

	r := startWatcher(t, routes.KubernetesProvider{Namespaces: []string{ns}},
		Options{RESTConfig: restCfg, MeshTrustDomain: testTD, Quiet: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond,
			LeaderElection: LeaderElection{Namespace: ns, Identity: "mesh"}})
	s := r.rec.waitFor(t, 60*time.Second, "the pod", func(s *Snapshot) bool { return len(s.Pods) == 1 })
	if p := s.Pods[0]; len(p.Spec.Containers) != 0 || len(p.Labels) != 0 || p.Spec.ServiceAccountName != "payments" || p.UID != pod.UID {
		t.Fatalf("the cached pod is not slimmed to its identity: %+v", p)
	}

	// A status condition and a label change nothing that is read.
	time.Sleep(300 * time.Millisecond) // the status writer's own writes settle
	n := r.rec.count()
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}
	if pod, err = c.core.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod.Labels["version"] = "2"
	if pod, err = c.core.CoreV1().Pods(ns).Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if m := r.rec.count(); m != n {
		t.Fatalf("a pod's status condition and label gave %d snapshots", m-n)
	}
	// Its inbound port is read.
	pod.Annotations = map[string]string{routes.InboundPortAnnotation: "16000"}
	if _, err = c.core.CoreV1().Pods(ns).Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.rec.waitFor(t, 30*time.Second, "the pod's port", func(s *Snapshot) bool {
		return len(s.Pods) == 1 && s.Pods[0].Annotations[routes.InboundPortAnnotation] == "16000"
	})
}
