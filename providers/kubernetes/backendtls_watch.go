package kubernetes

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// slimConfigMap keeps of a ConfigMap only its name and its ca.crt, the
// one key a BackendTLSPolicy reads: the edge lists every ConfigMap of its
// namespaces (RBAC cannot narrow by name), and their other data (routes
// files, application settings) has no business in its memory.
func slimConfigMap(obj any) (any, error) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return obj, nil // a tombstone: its object was slimmed when cached
	}
	slim := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Name: cm.Name, Namespace: cm.Namespace, UID: cm.UID, ResourceVersion: cm.ResourceVersion,
	}}
	if v, ok := cm.Data[caCertKey]; ok {
		slim.Data = map[string]string{caCertKey: v}
	}
	return slim, nil
}

// sameCABundle reports whether two slimmed ConfigMaps hold the same
// ca.crt: a change to any other key makes no snapshot.
func sameCABundle(old, cur any) bool {
	o, ok1 := old.(*corev1.ConfigMap)
	c, ok2 := cur.(*corev1.ConfigMap)
	if !ok1 || !ok2 {
		return false
	}
	ov, oh := o.Data[caCertKey]
	cv, ch := c.Data[caCertKey]
	return oh == ch && ov == cv
}

// writeBackendTLSStatus writes each BackendTLSPolicy's ancestors as
// writeStatus writes the other kinds' status: compared with the cached
// object first, read again after a conflict, other controllers' entries
// kept.
func (w *Watcher) writeBackendTLSStatus(ctx context.Context, res *Result, memo *statusMemo, now metav1.Time, count func(bool, error)) {
	for _, key := range sortedNames(res.BackendTLSPolicies) {
		want := res.BackendTLSPolicies[key]
		sc := w.scopeOf(key.Namespace)
		if sc == nil {
			continue
		}
		api := w.gw.GatewayV1().BackendTLSPolicies(key.Namespace)
		lister := sc.gw.Gateway().V1().BackendTLSPolicies().Lister().BackendTLSPolicies(key.Namespace)
		count(writeOne(ctx, memo, "BackendTLSPolicy "+key.String(), res.Origins[ObjectKey{Kind: originBackendTLSPolicy, Namespace: key.Namespace, Name: key.Name}],
			func() (*gatewayv1.BackendTLSPolicy, error) { return lister.Get(key.Name) },
			func(ctx context.Context) (*gatewayv1.BackendTLSPolicy, error) {
				return api.Get(ctx, key.Name, metav1.GetOptions{})
			},
			func(cur *gatewayv1.BackendTLSPolicy) (*gatewayv1.BackendTLSPolicy, bool) {
				next := policyStatus(cur.Status, want, now, w.owns(key.Namespace))
				if equality.Semantic.DeepEqual(cur.Status, next) {
					return nil, false
				}
				o := cur.DeepCopy()
				o.Status = next
				return o, true
			},
			func(ctx context.Context, o *gatewayv1.BackendTLSPolicy) (*gatewayv1.BackendTLSPolicy, error) {
				return api.UpdateStatus(ctx, o, metav1.UpdateOptions{FieldManager: fieldManager})
			}))
	}
}
