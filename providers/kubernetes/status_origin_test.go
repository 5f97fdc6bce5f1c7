package kubernetes

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// A status is written only to the object it was translated from: when
// the route of a snapshot is deleted and created again under its name,
// or its spec changes, before the snapshot's Result is written, the
// route by that name is left alone (its conditions would describe
// another object, or an older generation), and the Result of the next
// snapshot writes it.
func TestStatusOnlyToTranslatedObject(t *testing.T) {
	noLeaks(t)
	tests := []struct {
		name string
		// change is what happens to the route between the snapshot and
		// its status write; nil: nothing.
		change func(t *testing.T, c clients, ns, name string)
		wrote  bool
	}{
		{"the same object is written", nil, true},
		{"a route created again under the name is not", func(t *testing.T, c clients, ns, name string) {
			api := c.gw.GatewayV1().HTTPRoutes(ns)
			ctx := context.Background()
			if err := api.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := api.Create(ctx, httpRoute(ns, name, "gw"), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"a later generation of the route is not", func(t *testing.T, c clients, ns, name string) {
			api := c.gw.GatewayV1().HTTPRoutes(ns)
			ctx := context.Background()
			cur, err := api.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cur.Spec.Hostnames = []gatewayv1.Hostname{"changed.example.com"}
			if _, err := api.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := adminClients(t)
			ctx := context.Background()
			ns := namespace(t, c)
			o := createAll(t, c, ns)
			api := c.gw.GatewayV1().HTTPRoutes(ns)
			cfg := routes.KubernetesProvider{Namespaces: []string{ns}, GatewayClass: o.class}
			r := startWatcher(t, cfg, Options{RESTConfig: adminConfig(), LeaderElection: shortLease(ns, "a")})
			s := r.rec.waitFor(t, 60*time.Second, "the route", func(s *Snapshot) bool { return len(s.HTTPRoutes) == 1 })
			before := s.HTTPRoutes[0]
			res := Translate(cfg, s)
			if len(res.HTTPRoutes[nn(ns, o.httpRoute)].Parents) != 1 {
				t.Fatalf("translated route status %+v, want one parent", res.HTTPRoutes[nn(ns, o.httpRoute)])
			}
			if tt.change != nil {
				tt.change(t, c, ns, o.httpRoute)
				// The watcher's cache (what the writer reads first) has
				// the route as it now is.
				s = r.rec.waitFor(t, 30*time.Second, "the changed route", func(s *Snapshot) bool {
					return len(s.HTTPRoutes) == 1 && (s.HTTPRoutes[0].UID != before.UID || s.HTTPRoutes[0].Generation != before.Generation)
				})
			}
			setResult(t, r.w, &res)
			got, err := api.Get(ctx, o.httpRoute, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if wrote := len(got.Status.Parents) > 0; wrote != tt.wrote {
				t.Fatalf("route %s (generation %d) has parents %+v; written: %v, want %v",
					got.UID, got.Generation, got.Status.Parents, wrote, tt.wrote)
			}
			if tt.wrote {
				return
			}
			// The next snapshot's Result writes the route as it is.
			res2 := Translate(cfg, s)
			setResult(t, r.w, &res2)
			if got, err = api.Get(ctx, o.httpRoute, metav1.GetOptions{}); err != nil {
				t.Fatal(err)
			}
			if ps := got.Status.Parents; len(ps) != 1 || len(ps[0].Conditions) == 0 || ps[0].Conditions[0].ObservedGeneration != got.Generation {
				t.Fatalf("after the next Result, parents %+v, want ours at generation %d", ps, got.Generation)
			}
		})
	}
}
