package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// scopedEdge is a Source limited to one Gateway, run until the test ends;
// it records every fragment it applies.
type scopedEdge struct {
	mu    sync.Mutex
	frags []routes.Fragment
}

func (e *scopedEdge) applied() []routes.Fragment {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]routes.Fragment(nil), e.frags...)
}

func runScopedEdge(t *testing.T, cfg routes.KubernetesProvider, opts Options) *scopedEdge {
	t.Helper()
	src, err := NewSource(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	e := &scopedEdge{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- src.Run(ctx, func(f routes.Fragment) error {
			e.mu.Lock()
			e.frags = append(e.frags, f)
			e.mu.Unlock()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	return e
}

// ourParents are the route's parents entries of our controller, by
// Gateway name.
func ourParents(st gatewayv1.RouteStatus) map[string]gatewayv1.RouteParentStatus {
	out := map[string]gatewayv1.RouteParentStatus{}
	for _, p := range st.Parents {
		if p.ControllerName == ours {
			out[string(p.ParentRef.Name)] = p
		}
	}
	return out
}

// Two edges of one class, each limited to its own Gateway, share a route
// attached to both: while the route changes as fast as the test can
// change it (every change makes both edges write its status at once),
// neither edge's write undoes the other's, and once it settles the route
// has both parents' entries, each of the current generation, and nobody
// writes any more. Each edge writes its own Gateway's status with its own
// address, and a route attached only to the other Gateway is never in an
// edge's model.
func TestTwoScopedEdgesShareARoute(t *testing.T) {
	noLeaks(t)
	c := adminClients(t)
	ctx := context.Background()
	ns := namespace(t, c)
	class := "class-" + ns
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.gw.GatewayV1().GatewayClasses().Create(ctx, gatewayClass(class), metav1.CreateOptions{}))
	for _, g := range []string{"a", "b"} {
		must(c.gw.GatewayV1().Gateways(ns).Create(ctx, gateway(ns, g, class), metav1.CreateOptions{}))
	}
	must(c.core.CoreV1().Services(ns).Create(ctx, service(ns, "web"), metav1.CreateOptions{}))
	must(c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, endpointSlice(ns, "web-1", "web", "10.244.1.10"), metav1.CreateOptions{}))
	both := httpRoute(ns, "both", "a")
	both.Spec.ParentRefs = append(both.Spec.ParentRefs, gatewayv1.ParentReference{Name: "b"})
	must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, both, metav1.CreateOptions{}))
	must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, httpRoute(ns, "only-b", "b"), metav1.CreateOptions{}))

	off := false
	var puts atomic.Int64
	edges := map[string]*scopedEdge{}
	addr := map[string]string{"a": "10.244.0.11", "b": "10.244.0.12"}
	for _, g := range []string{"a", "b"} {
		lease := shortLease(ns, "edge-"+g)
		lease.LeaseName = "" // the default: one Lease per set of Gateways
		edges[g] = runScopedEdge(t, routes.KubernetesProvider{
			GatewayClass: class, Namespaces: []string{ns}, Gateways: []string{ns + "/" + g}, Policies: &off,
			StatusAddress: &routes.StatusAddress{IP: addr[g]},
		}, Options{RESTConfig: countingConfig(&puts), LeaderElection: lease})
	}

	// The race: each change moves the route's generation on, and both
	// edges write their entry for it.
	const changes = 60
	hr := c.gw.GatewayV1().HTTPRoutes(ns)
	for i := range changes {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			r, err := hr.Get(ctx, "both", metav1.GetOptions{})
			if err != nil {
				return err
			}
			r.Spec.Hostnames = []gatewayv1.Hostname{gatewayv1.Hostname(fmt.Sprintf("v%d.example.com", i))}
			_, err = hr.Update(ctx, r, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	settled := func() string {
		r, err := hr.Get(ctx, "both", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		got := ourParents(r.Status.RouteStatus)
		if len(got) != 2 {
			return fmt.Sprintf("route both: parents %+v", r.Status.Parents)
		}
		for _, g := range []string{"a", "b"} {
			p, ok := got[g]
			if !ok {
				return fmt.Sprintf("route both: no entry for Gateway %s: %+v", g, r.Status.Parents)
			}
			for _, c := range p.Conditions {
				if c.ObservedGeneration != r.Generation {
					return fmt.Sprintf("route both, Gateway %s: %s of generation %d, route at %d", g, c.Type, c.ObservedGeneration, r.Generation)
				}
			}
			if c := condOf(p.Conditions, "Accepted"); c == nil || c.Status != metav1.ConditionTrue {
				return fmt.Sprintf("route both, Gateway %s: Accepted %+v", g, c)
			}
		}
		ob, err := hr.Get(ctx, "only-b", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		if got := ourParents(ob.Status.RouteStatus); len(got) != 1 || got["b"].ParentRef.Name != "b" {
			return fmt.Sprintf("route only-b: parents %+v", ob.Status.Parents)
		}
		for _, g := range []string{"a", "b"} {
			gw, err := c.gw.GatewayV1().Gateways(ns).Get(ctx, g, metav1.GetOptions{})
			if err != nil {
				return err.Error()
			}
			if len(gw.Status.Addresses) != 1 || gw.Status.Addresses[0].Value != addr[g] {
				return fmt.Sprintf("Gateway %s: addresses %+v, want %s", g, gw.Status.Addresses, addr[g])
			}
			if len(gw.Status.Listeners) != 1 || gw.Status.Listeners[0].AttachedRoutes != map[string]int32{"a": 1, "b": 2}[g] {
				return fmt.Sprintf("Gateway %s: listeners %+v", g, gw.Status.Listeners)
			}
		}
		return ""
	}
	deadline := time.Now().Add(90 * time.Second)
	for why := settled(); why != ""; why = settled() {
		if time.Now().After(deadline) {
			t.Fatalf("not settled within 90 s: %s", why)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Settled means settled: once both entries are right, neither edge
	// writes again.
	before := puts.Load()
	time.Sleep(3 * time.Second)
	if n := puts.Load() - before; n != 0 {
		t.Errorf("%d status writes after the statuses settled", n)
	}
	if why := settled(); why != "" {
		t.Errorf("after 3 s more: %s", why)
	}

	for _, f := range edges["a"].applied() {
		for _, r := range f.Routes {
			if strings.Contains(r.Name, ".only-b.") {
				t.Fatalf("the edge of Gateway a served route %s, attached only to b", r.Name)
			}
		}
	}
	sawOnlyB := false
	for _, f := range edges["b"].applied() {
		for _, r := range f.Routes {
			sawOnlyB = sawOnlyB || strings.Contains(r.Name, ".only-b.")
		}
	}
	if !sawOnlyB {
		t.Error("the edge of Gateway b never served route only-b")
	}
}

// Two writers of one route's status, each owning its Gateway's entry,
// write as fast as they can with optimistic concurrency (writeOne, as the
// status loop does): every write either lands on the latest object or
// conflicts and is redone, so no write ever removes the other's entry,
// and each writer's last entry is what stays.
func TestConcurrentParentWrites(t *testing.T) {
	noLeaks(t)
	c := adminClients(t)
	ctx := context.Background()
	ns := namespace(t, c)
	created, err := c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, httpRoute(ns, "shared", "a"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	from := originOf(created)
	api := c.gw.GatewayV1().HTTPRoutes(ns)
	const writes = 300
	var wrote [2]atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for w, gw := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := routes.KubernetesProvider{Gateways: []string{ns + "/" + gw}}
			mine := func(ref gatewayv1.ParentReference) bool { return ownsRef(cfg, ns, ref) }
			other := 1 - w
			for i := range writes {
				want := gatewayv1.RouteStatus{Parents: []gatewayv1.RouteParentStatus{{
					ParentRef: gatewayv1.ParentReference{Name: gatewayv1.ObjectName(gw)}, ControllerName: ours,
					Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", Message: fmt.Sprint(i)}},
				}}}
				otherWrote := wrote[other].Load()
				for {
					var out *gatewayv1.HTTPRoute
					_, err := writeOne(ctx, nil, "HTTPRoute shared", from,
						func() (*gatewayv1.HTTPRoute, error) { return api.Get(ctx, "shared", metav1.GetOptions{}) },
						func(ctx context.Context) (*gatewayv1.HTTPRoute, error) {
							return api.Get(ctx, "shared", metav1.GetOptions{})
						},
						func(cur *gatewayv1.HTTPRoute) (*gatewayv1.HTTPRoute, bool) {
							o := cur.DeepCopy()
							o.Status.RouteStatus = routeStatus(cur.Status.RouteStatus, want, t0, mine)
							return o, true
						},
						func(ctx context.Context, o *gatewayv1.HTTPRoute) (*gatewayv1.HTTPRoute, error) {
							var err error
							out, err = api.UpdateStatus(ctx, o, metav1.UpdateOptions{})
							return out, err
						})
					if apierrors.IsConflict(errors.Unwrap(err)) {
						continue // five conflicts in a row: the status loop tries again, and so does this
					}
					if err != nil {
						errs <- err
						return
					}
					got := ourParents(out.Status.RouteStatus)
					if _, ok := got[[]string{"a", "b"}[other]]; otherWrote && !ok {
						errs <- fmt.Errorf("write %d of %s removed the other writer's entry: %+v", i, gw, out.Status.Parents)
						return
					}
					break
				}
				wrote[w].Store(true)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r, err := api.Get(ctx, "shared", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := ourParents(r.Status.RouteStatus)
	last := fmt.Sprint(writes - 1)
	if len(r.Status.Parents) != 2 || got["a"].Conditions[0].Message != last || got["b"].Conditions[0].Message != last {
		t.Fatalf("parents %+v, want a's and b's entries of write %s", r.Status.Parents, last)
	}
}
