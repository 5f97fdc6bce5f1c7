package kubernetes

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

const ours = gatewayv1.GatewayController(routes.KubernetesControllerName)

var (
	t0 = metav1.NewTime(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 = metav1.NewTime(time.Date(2030, 1, 1, 1, 0, 0, 0, time.UTC))
)

func cond(typ string, status metav1.ConditionStatus, reason string, gen int64, at metav1.Time) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: reason, ObservedGeneration: gen, LastTransitionTime: at}
}

func TestConditions(t *testing.T) {
	tests := []struct {
		name                string
		stored, want, merge []metav1.Condition
	}{
		{"new condition is stamped now", nil,
			[]metav1.Condition{cond("Accepted", "True", "Accepted", 1, metav1.Time{})},
			[]metav1.Condition{cond("Accepted", "True", "Accepted", 1, t1)}},
		{"same status keeps its transition time", []metav1.Condition{cond("Accepted", "True", "Accepted", 1, t0)},
			[]metav1.Condition{cond("Accepted", "True", "Accepted", 2, t1)},
			[]metav1.Condition{cond("Accepted", "True", "Accepted", 2, t0)}},
		{"changed status moves it", []metav1.Condition{cond("Accepted", "True", "Accepted", 1, t0)},
			[]metav1.Condition{cond("Accepted", "False", "NotAllowedByListeners", 1, metav1.Time{})},
			[]metav1.Condition{cond("Accepted", "False", "NotAllowedByListeners", 1, t1)}},
		{"conditions not wanted any more go", []metav1.Condition{cond("Accepted", "True", "Accepted", 1, t0), cond("Old", "True", "Old", 1, t0)},
			[]metav1.Condition{cond("Accepted", "True", "Accepted", 1, metav1.Time{})},
			[]metav1.Condition{cond("Accepted", "True", "Accepted", 1, t0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := conditions(tt.stored, tt.want, t1)
			if !equality.Semantic.DeepEqual(got, tt.merge) {
				t.Fatalf("conditions = %+v, want %+v", got, tt.merge)
			}
		})
	}
}

func TestRouteStatusKeepsOtherControllers(t *testing.T) {
	group, kind := gatewayv1.Group(gatewayv1.GroupName), gatewayv1.Kind("Gateway")
	ref := func(name string) gatewayv1.ParentReference {
		return gatewayv1.ParentReference{Group: &group, Kind: &kind, Name: gatewayv1.ObjectName(name)}
	}
	bare := func(name string) gatewayv1.ParentReference {
		return gatewayv1.ParentReference{Name: gatewayv1.ObjectName(name)}
	}
	other := gatewayv1.RouteParentStatus{ParentRef: ref("theirs"), ControllerName: "example.com/other",
		Conditions: []metav1.Condition{cond("Accepted", "True", "Accepted", 1, t0)}}
	accepted := func(name string, gen int64, at metav1.Time) gatewayv1.RouteParentStatus {
		return gatewayv1.RouteParentStatus{ParentRef: ref(name), ControllerName: ours, Conditions: []metav1.Condition{cond("Accepted", "True", "Accepted", gen, at)}}
	}
	tests := []struct {
		name string
		// gateways is the edge's providers.kubernetes.gateways (the
		// route is in namespace "apps").
		gateways           []string
		stored, want, next []gatewayv1.RouteParentStatus
	}{
		{"ours is added after theirs", nil,
			[]gatewayv1.RouteParentStatus{other},
			[]gatewayv1.RouteParentStatus{{ParentRef: bare("gw"), ControllerName: ours, Conditions: []metav1.Condition{cond("Accepted", "True", "Accepted", 1, metav1.Time{})}}},
			[]gatewayv1.RouteParentStatus{other, accepted("gw", 1, t1)}},
		{"ours is replaced in place, its transition time kept", nil,
			[]gatewayv1.RouteParentStatus{accepted("gw", 1, t0), other},
			[]gatewayv1.RouteParentStatus{{ParentRef: bare("gw"), ControllerName: ours, Conditions: []metav1.Condition{cond("Accepted", "True", "Accepted", 2, metav1.Time{})}}},
			[]gatewayv1.RouteParentStatus{accepted("gw", 2, t0), other}},
		{"ours no longer wanted is removed, theirs stays", nil,
			[]gatewayv1.RouteParentStatus{{ParentRef: ref("gw"), ControllerName: ours}, other},
			nil,
			[]gatewayv1.RouteParentStatus{other}},
		{"an entry in another controller's name is never written", nil,
			nil,
			[]gatewayv1.RouteParentStatus{{ParentRef: bare("x"), ControllerName: "example.com/other"}},
			[]gatewayv1.RouteParentStatus{}},
		{"an edge serving the class owns every entry of the controller", nil,
			[]gatewayv1.RouteParentStatus{accepted("a", 1, t0), accepted("b", 1, t0)},
			[]gatewayv1.RouteParentStatus{accepted("a", 1, t0)},
			[]gatewayv1.RouteParentStatus{accepted("a", 1, t0)}},
		{"another edge's entry is kept in its place", []string{"apps/b"},
			[]gatewayv1.RouteParentStatus{accepted("a", 1, t0), other},
			[]gatewayv1.RouteParentStatus{accepted("b", 1, metav1.Time{})},
			[]gatewayv1.RouteParentStatus{accepted("a", 1, t0), other, accepted("b", 1, t1)}},
		{"the order two edges leave is the order each keeps", []string{"apps/a"},
			[]gatewayv1.RouteParentStatus{accepted("a", 1, t0), accepted("b", 1, t0)},
			[]gatewayv1.RouteParentStatus{accepted("a", 1, metav1.Time{})},
			[]gatewayv1.RouteParentStatus{accepted("a", 1, t0), accepted("b", 1, t0)}},
		{"an edge's own entry no longer wanted goes, the other edge's stays", []string{"apps/a"},
			[]gatewayv1.RouteParentStatus{accepted("b", 1, t0), accepted("a", 1, t0)},
			nil,
			[]gatewayv1.RouteParentStatus{accepted("b", 1, t0)}},
		{"a parentRef's namespace decides whose it is", []string{"infra/b"},
			[]gatewayv1.RouteParentStatus{accepted("b", 1, t0)},
			nil,
			[]gatewayv1.RouteParentStatus{accepted("b", 1, t0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := routes.KubernetesProvider{Gateways: tt.gateways}
			mine := func(ref gatewayv1.ParentReference) bool { return ownsRef(cfg, "apps", ref) }
			got := routeStatus(gatewayv1.RouteStatus{Parents: tt.stored}, gatewayv1.RouteStatus{Parents: tt.want}, t1, mine)
			if !equality.Semantic.DeepEqual(got.Parents, tt.next) {
				t.Fatalf("parents = %+v\nwant %+v", got.Parents, tt.next)
			}
		})
	}
}

// allRefs is the ownership of an edge that serves every Gateway of its class.
func allRefs(gatewayv1.ParentReference) bool { return true }

// resultFor is a Result for the objects createAll made in ns, with each
// condition's observedGeneration the object's current generation. It
// leaves out what the API server defaults (parentRef group and kind,
// address type, supported kinds' group), as Translate may.
func resultFor(t *testing.T, c clients, ns string, o objects, reason string) *Result {
	t.Helper()
	ctx := context.Background()
	gc, err := c.gw.GatewayV1().GatewayClasses().Get(ctx, o.class, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := c.gw.GatewayV1().Gateways(ns).Get(ctx, o.gateway, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hr, err := c.gw.GatewayV1().HTTPRoutes(ns).Get(ctx, o.httpRoute, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gr, err := c.gw.GatewayV1().GRPCRoutes(ns).Get(ctx, o.grpcRoute, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	accepted := func(gen int64) []metav1.Condition {
		return []metav1.Condition{{Type: "Accepted", Status: "True", Reason: reason, Message: reason, ObservedGeneration: gen}}
	}
	parents := func(gen int64) gatewayv1.RouteStatus {
		return gatewayv1.RouteStatus{Parents: []gatewayv1.RouteParentStatus{
			{ParentRef: gatewayv1.ParentReference{Name: gatewayv1.ObjectName(o.gateway)}, ControllerName: ours, Conditions: accepted(gen)},
		}}
	}
	return &Result{
		GatewayClasses: map[string]gatewayv1.GatewayClassStatus{o.class: {Conditions: accepted(gc.Generation)}},
		Gateways: map[types.NamespacedName]gatewayv1.GatewayStatus{{Namespace: ns, Name: o.gateway}: {
			Addresses:  []gatewayv1.GatewayStatusAddress{{Value: "10.244.0.1"}},
			Conditions: accepted(gw.Generation),
			Listeners: []gatewayv1.ListenerStatus{{Name: "http", AttachedRoutes: 1, Conditions: accepted(gw.Generation),
				SupportedKinds: []gatewayv1.RouteGroupKind{{Kind: "HTTPRoute"}}}},
		}},
		HTTPRoutes: map[types.NamespacedName]gatewayv1.HTTPRouteStatus{
			{Namespace: ns, Name: o.httpRoute}: {RouteStatus: parents(hr.Generation)},
			// Deleted since: skipped, not an error.
			{Namespace: ns, Name: "gone"}: {RouteStatus: parents(1)},
		},
		GRPCRoutes: map[types.NamespacedName]gatewayv1.GRPCRouteStatus{{Namespace: ns, Name: o.grpcRoute}: {RouteStatus: parents(gr.Generation)}},
		Origins: map[ObjectKey]Origin{
			{Kind: originGatewayClass, Name: o.class}:                 originOf(gc),
			{Kind: originGateway, Namespace: ns, Name: o.gateway}:     originOf(gw),
			{Kind: originHTTPRoute, Namespace: ns, Name: o.httpRoute}: originOf(hr),
			{Kind: originGRPCRoute, Namespace: ns, Name: o.grpcRoute}: originOf(gr),
		},
	}
}

// setResult hands w res and waits until a status pass has considered it.
func setResult(t *testing.T, w *Watcher, res *Result) {
	t.Helper()
	w.SetResult(res)
	waitConsidered(t, w, res)
}

func waitConsidered(t *testing.T, w *Watcher, res *Result) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for w.considered.Load() != res {
		if time.Now().After(deadline) {
			t.Fatal("the Result was not considered within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func shortLease(ns, identity string) LeaderElection {
	return LeaderElection{Namespace: ns, Identity: identity, LeaseName: "causeway-status",
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond}
}

// Statuses land with their observedGeneration; a Result that did not
// change writes nothing; a changed one writes only the object that
// changed; another controller's parents entry survives every write.
func TestStatusWrites(t *testing.T) {
	noLeaks(t)
	c := adminClients(t)
	ctx := context.Background()
	ns, elsewhere := namespace(t, c), namespace(t, c)
	o := createAll(t, c, ns)
	oElsewhere := createAll(t, c, elsewhere)

	// Another controller already reports on the route.
	hr, err := c.gw.GatewayV1().HTTPRoutes(ns).Get(ctx, o.httpRoute, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	theirs := gatewayv1.RouteParentStatus{
		ParentRef:      gatewayv1.ParentReference{Name: "their-gateway"},
		ControllerName: "example.com/other",
		Conditions:     []metav1.Condition{cond("Accepted", "True", "Accepted", 1, t0)},
	}
	hr.Status.Parents = []gatewayv1.RouteParentStatus{theirs}
	if _, err := c.gw.GatewayV1().HTTPRoutes(ns).UpdateStatus(ctx, hr, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	var puts atomic.Int64
	clk := clocktesting.NewFakeClock(t0.Time)
	r := startWatcher(t, routes.KubernetesProvider{Namespaces: []string{ns}},
		Options{RESTConfig: countingConfig(&puts), Clock: clk, LeaderElection: shortLease(ns, "a")})
	r.rec.waitFor(t, 60*time.Second, "the first snapshot", func(*Snapshot) bool { return true })

	res := resultFor(t, c, ns, o, "Accepted")
	// A route outside the watched namespaces is not this watcher's to write.
	res.HTTPRoutes[types.NamespacedName{Namespace: elsewhere, Name: oElsewhere.httpRoute}] = res.HTTPRoutes[types.NamespacedName{Namespace: ns, Name: o.httpRoute}]
	setResult(t, r.w, res)
	if n := puts.Load(); n != 4 {
		t.Fatalf("first pass: %d status writes, want 4 (class, gateway, two routes)", n)
	}

	hr, err = c.gw.GatewayV1().HTTPRoutes(ns).Get(ctx, o.httpRoute, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := hr.Status.Parents; len(got) != 2 || !equality.Semantic.DeepEqual(got[0].Conditions, theirs.Conditions) ||
		got[0].ControllerName != theirs.ControllerName || got[1].ControllerName != ours {
		t.Fatalf("route parents = %+v, want theirs kept and ours added", got)
	}
	if c := got1(hr.Status.Parents[1].Conditions); c.ObservedGeneration != hr.Generation || c.Reason != "Accepted" || !c.LastTransitionTime.Equal(&t0) {
		t.Fatalf("our route condition = %+v, want observedGeneration %d, time %v", c, hr.Generation, t0)
	}
	gw, err := c.gw.GatewayV1().Gateways(ns).Get(ctx, o.gateway, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := got1(gw.Status.Conditions); c.ObservedGeneration != gw.Generation || len(gw.Status.Listeners) != 1 || gw.Status.Listeners[0].AttachedRoutes != 1 {
		t.Fatalf("gateway status = %+v", gw.Status)
	}
	gc, err := c.gw.GatewayV1().GatewayClasses().Get(ctx, o.class, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := got1(gc.Status.Conditions); c.Status != "True" || c.ObservedGeneration != gc.Generation {
		t.Fatalf("class status = %+v", gc.Status)
	}
	other, err := c.gw.GatewayV1().HTTPRoutes(elsewhere).Get(ctx, oElsewhere.httpRoute, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(other.Status.Parents) != 0 {
		t.Fatalf("a route outside the scope was written: %+v", other.Status)
	}

	// The same Result again, twice, as every snapshot's Translate would
	// give it: nothing is written.
	for range 2 {
		setResult(t, r.w, resultFor(t, c, ns, o, "Accepted"))
	}
	if n := puts.Load(); n != 4 {
		t.Fatalf("an unchanged Result wrote: %d status writes in all, want 4", n)
	}

	// The route's spec changes: the new Result differs only in its
	// observedGeneration, which is written, keeping the condition's
	// transition time (its status did not change).
	hr.Spec.Hostnames = []gatewayv1.Hostname{"example.com"}
	if _, err = c.gw.GatewayV1().HTTPRoutes(ns).Update(ctx, hr, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	clk.SetTime(t1.Time)
	setResult(t, r.w, resultFor(t, c, ns, o, "Accepted"))
	if n := puts.Load(); n != 5 {
		t.Fatalf("a new generation: %d status writes in all, want 5", n)
	}
	hr, err = c.gw.GatewayV1().HTTPRoutes(ns).Get(ctx, o.httpRoute, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := got1(hr.Status.Parents[1].Conditions); c.ObservedGeneration != 2 || !c.LastTransitionTime.Equal(&t0) {
		t.Fatalf("after the spec change: %+v, want observedGeneration 2 and the time unchanged", c)
	}

	// A changed reason with the same status: written everywhere, times kept.
	setResult(t, r.w, resultFor(t, c, ns, o, "Programmed"))
	if n := puts.Load(); n != 9 {
		t.Fatalf("a new reason: %d status writes in all, want 9", n)
	}
	gc, err = c.gw.GatewayV1().GatewayClasses().Get(ctx, o.class, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := got1(gc.Status.Conditions); c.Reason != "Programmed" || !c.LastTransitionTime.Equal(&t0) {
		t.Fatalf("class condition = %+v, want the new reason and the first transition time", c)
	}
}

func got1(cs []metav1.Condition) metav1.Condition {
	for _, c := range cs {
		if c.Type == "Accepted" {
			return c
		}
	}
	return metav1.Condition{}
}

// A write that conflicts (the cache was behind) reads the object again
// and writes once, or not at all when the status is already right. It
// runs with the documented RBAC, which must allow that second read.
func TestStatusConflictRereads(t *testing.T) {
	c := adminClients(t)
	ctx := context.Background()
	ns := namespace(t, c)
	o := createAll(t, c, ns)
	user := "causeway-" + ns
	grantDocumented(t, c, user, ns, func(r rbacv1.PolicyRule) rbacv1.PolicyRule { return r })
	restCfg := adminConfig()
	restCfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	api := clientsFor(t, restCfg).gw.GatewayV1().HTTPRoutes(ns)
	want := resultFor(t, c, ns, o, "Accepted").HTTPRoutes[types.NamespacedName{Namespace: ns, Name: o.httpRoute}]

	tests := []struct {
		name string
		// already makes the stored status the wanted one before the write.
		already bool
		wrote   bool
	}{
		{"stale cache, status to write", false, true},
		{"stale cache, status already right", true, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Start from an empty status.
			cur, err := c.gw.GatewayV1().HTTPRoutes(ns).Get(ctx, o.httpRoute, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cur.Status.Parents = []gatewayv1.RouteParentStatus{}
			if _, err = c.gw.GatewayV1().HTTPRoutes(ns).UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			stale, err := api.Get(ctx, o.httpRoute, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			// Someone else moves the object on.
			cur = stale.DeepCopy()
			cur.Labels = map[string]string{"moved": fmt.Sprint(i)}
			if cur, err = c.gw.GatewayV1().HTTPRoutes(ns).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			if tt.already {
				cur.Status.RouteStatus = routeStatus(cur.Status.RouteStatus, want.RouteStatus, t0, allRefs)
				if _, err = c.gw.GatewayV1().HTTPRoutes(ns).UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			var updates int
			wrote, err := writeOne(ctx, nil, "test", originOf(stale),
				func() (*gatewayv1.HTTPRoute, error) { return stale, nil },
				func(ctx context.Context) (*gatewayv1.HTTPRoute, error) {
					return api.Get(ctx, o.httpRoute, metav1.GetOptions{})
				},
				func(cur *gatewayv1.HTTPRoute) (*gatewayv1.HTTPRoute, bool) {
					next := routeStatus(cur.Status.RouteStatus, want.RouteStatus, t0, allRefs)
					if equality.Semantic.DeepEqual(cur.Status.RouteStatus, next) {
						return nil, false
					}
					o := cur.DeepCopy()
					o.Status.RouteStatus = next
					return o, true
				},
				func(ctx context.Context, o *gatewayv1.HTTPRoute) (*gatewayv1.HTTPRoute, error) {
					updates++
					return api.UpdateStatus(ctx, o, metav1.UpdateOptions{})
				})
			if err != nil {
				t.Fatal(err)
			}
			// The first attempt, on the stale object, always conflicts.
			if wantUpdates := map[bool]int{true: 2, false: 1}[tt.wrote]; wrote != tt.wrote || updates != wantUpdates {
				t.Fatalf("wrote %v after %d updates, want %v after %d", wrote, updates, tt.wrote, wantUpdates)
			}
			final, err := api.Get(ctx, o.httpRoute, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if ps := final.Status.Parents; len(ps) != 1 || ps[0].ControllerName != ours {
				t.Fatalf("stored parents = %+v", ps)
			}
		})
	}
}

func leaseHolder(t *testing.T, c clients, ns string) string {
	t.Helper()
	l, err := c.core.CoordinationV1().Leases(ns).Get(context.Background(), "causeway-status", metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return holder(l)
}

func holder(l *coordinationv1.Lease) string {
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// Two replicas watch and serve; exactly one, the Lease holder, writes.
// When the leader stops, the other takes the Lease within the Lease
// duration and writes from then on, without rewriting what is already
// right.
func TestLeaderElection(t *testing.T) {
	noLeaks(t)
	c := adminClients(t)
	ns := namespace(t, c)
	o := createAll(t, c, ns)
	cfg := routes.KubernetesProvider{Namespaces: []string{ns}}
	var putsA, putsB atomic.Int64
	// What each replica tells its metrics: whether it leads (the last
	// call) and how many objects it wrote.
	told := map[string]*toldHooks{"a": {}, "b": {}}
	start := func(id string, puts *atomic.Int64) *running {
		h := told[id]
		return startWatcher(t, cfg, Options{RESTConfig: countingConfig(puts), LeaderElection: shortLease(ns, id),
			Leading: h.leading, StatusWritten: h.written})
	}
	replicas := map[string]*running{"a": start("a", &putsA), "b": start("b", &putsB)}
	puts := map[string]*atomic.Int64{"a": &putsA, "b": &putsB}
	for _, r := range replicas {
		r.rec.waitFor(t, 60*time.Second, "the first snapshot", func(s *Snapshot) bool { return len(s.HTTPRoutes) == 1 })
	}

	var leader string
	deadline := time.Now().Add(30 * time.Second)
	for leader = leaseHolder(t, c, ns); leader == ""; leader = leaseHolder(t, c, ns) {
		if time.Now().After(deadline) {
			t.Fatal("no replica took the Lease within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	follower := map[string]string{"a": "b", "b": "a"}[leader]

	// Every replica computes the same Results; three rounds of them.
	var res *Result
	for _, reason := range []string{"Accepted", "Programmed", "Accepted"} {
		res = resultFor(t, c, ns, o, reason)
		replicas[follower].w.SetResult(res)
		setResult(t, replicas[leader].w, res)
	}
	if n := puts[leader].Load(); n != 12 {
		t.Fatalf("leader %s wrote %d statuses, want 12 (4 objects, 3 changes)", leader, n)
	}
	if n := puts[follower].Load(); n != 0 || replicas[follower].w.considered.Load() != nil {
		t.Fatalf("follower %s wrote %d statuses", follower, n)
	}
	// The metrics say the same: the leader leads and counted its writes,
	// the follower neither.
	told[leader].want(t, leader, true, 12, ns+"/causeway-status")
	told[follower].want(t, follower, false, 0, "")

	stopped := time.Now()
	replicas[leader].stop()
	for leaseHolder(t, c, ns) != follower {
		if time.Since(stopped) > 3*time.Second {
			t.Fatalf("%s did not take the Lease within its duration (3 s) of %s stopping", follower, leader)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%s took over %s after %s stopped", follower, time.Since(stopped).Round(time.Millisecond), leader)
	// The new leader considers its latest Result at once; it is already
	// stored, so it writes nothing.
	fw := replicas[follower].w
	waitConsidered(t, fw, res)
	if n := puts[follower].Load(); n != 0 {
		t.Fatalf("the new leader rewrote %d statuses that were already right", n)
	}
	setResult(t, fw, resultFor(t, c, ns, o, "Programmed"))
	if n := puts[follower].Load(); n != 4 {
		t.Fatalf("the new leader wrote %d statuses, want 4", n)
	}
	// The stopped replica said it no longer leads; the new leader leads.
	told[leader].want(t, leader, false, 12, ns+"/causeway-status")
	told[follower].want(t, follower, true, 4, ns+"/causeway-status")
	gc, err := c.gw.GatewayV1().GatewayClasses().Get(context.Background(), o.class, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := got1(gc.Status.Conditions); got.Reason != "Programmed" {
		t.Fatalf("class condition after the handover = %+v", got)
	}
}

// A leader that dies without giving the Lease up (its record still says it
// holds it) is replaced once the Lease has run out, not before: a replica
// never writes while another may still think it leads.
func TestLeaderCrashTakeover(t *testing.T) {
	noLeaks(t)
	c := adminClients(t)
	ctx := context.Background()
	ns := namespace(t, c)
	lease := shortLease(ns, "b")
	dead, secs, now := "dead-replica", int32(lease.LeaseDuration/time.Second), metav1.NewMicroTime(time.Now())
	if _, err := c.core.CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: lease.LeaseName},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &dead, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	startWatcher(t, routes.KubernetesProvider{Namespaces: []string{ns}}, Options{RESTConfig: adminConfig(), LeaderElection: lease})
	for {
		h := leaseHolder(t, c, ns)
		elapsed := time.Since(started)
		if h == "b" {
			// client-go times the Lease from when it first saw the record.
			if elapsed < lease.LeaseDuration-lease.RetryPeriod {
				t.Fatalf("took a live Lease after %s (duration %s)", elapsed, lease.LeaseDuration)
			}
			t.Logf("took the dead replica's Lease after %s", elapsed.Round(time.Millisecond))
			return
		}
		if elapsed > lease.LeaseDuration+3*lease.RetryPeriod {
			t.Fatalf("the Lease is still %q after %s (duration %s)", h, elapsed, lease.LeaseDuration)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// toldHooks records what a Watcher tells Options.Leading and
// Options.StatusWritten.
type toldHooks struct {
	mu     sync.Mutex
	lease  string
	calls  int
	leads  bool
	writes atomic.Int64
	failed atomic.Int64
}

func (h *toldHooks) leading(lease string, leading bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lease, h.leads = lease, leading
	h.calls++
}

func (h *toldHooks) written(err error) {
	if err != nil {
		h.failed.Add(1)
		return
	}
	h.writes.Add(1)
}

// want checks the last leadership told (lease "" when it was never told
// it leads) and the writes counted, none failed.
func (h *toldHooks) want(t *testing.T, id string, leads bool, written int64, lease string) {
	t.Helper()
	// A stop or start is told from the election's goroutine, shortly
	// after the Lease record changes.
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		got, gotLease := h.leads, h.lease
		h.mu.Unlock()
		if got == leads && (lease == "" || gotLease == lease) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s told leading=%v (lease %q), want %v (%q)", id, got, gotLease, leads, lease)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n, f := h.writes.Load(), h.failed.Load(); n != written || f != 0 {
		t.Fatalf("replica %s counted %d written and %d failed, want %d and 0", id, n, f, written)
	}
}

// failingPuts answers every status write with 500 while fail is set,
// without passing it on.
type failingPuts struct {
	rt   http.RoundTripper
	fail *atomic.Bool
}

func (f failingPuts) RoundTrip(r *http.Request) (*http.Response, error) {
	if f.fail.Load() && r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/status") && !strings.Contains(r.URL.Path, "/leases/") {
		return &http.Response{StatusCode: http.StatusInternalServerError, Status: "500 Internal Server Error", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"text/plain"}}, Body: io.NopCloser(strings.NewReader("refused by the test")), Request: r}, nil
	}
	return f.rt.RoundTrip(r)
}

func (f failingPuts) WrappedRoundTripper() http.RoundTripper { return f.rt }

// The failure path of the status metrics: while the API server refuses
// status writes, each object's failed write is told as a failure and
// none as written; once it accepts them again, the retry writes each
// object once and is told so.
func TestStatusWriteFailuresTold(t *testing.T) {
	noLeaks(t)
	c := adminClients(t)
	ns := namespace(t, c)
	o := createAll(t, c, ns)
	var fail atomic.Bool
	fail.Store(true)
	cfg := adminConfig()
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return failingPuts{rt, &fail} }
	h := &toldHooks{}
	r := startWatcher(t, routes.KubernetesProvider{Namespaces: []string{ns}},
		Options{RESTConfig: cfg, LeaderElection: shortLease(ns, "a"), Leading: h.leading, StatusWritten: h.written})
	r.rec.waitFor(t, 60*time.Second, "the first snapshot", func(*Snapshot) bool { return true })
	deadline := time.Now().Add(30 * time.Second)
	for leaseHolder(t, c, ns) != "a" {
		if time.Now().After(deadline) {
			t.Fatal("the replica did not take the Lease")
		}
		time.Sleep(50 * time.Millisecond)
	}
	setResult(t, r.w, resultFor(t, c, ns, o, "Programmed"))
	// At least one failed pass; a retry may have failed again meanwhile.
	if n, f := h.writes.Load(), h.failed.Load(); n != 0 || f < 4 {
		t.Fatalf("while refused: %d written, %d failed; want 0 and at least 4 (4 objects)", n, f)
	}
	fail.Store(false)
	// The pass is retried after statusRetryMin.
	deadline = time.Now().Add(30 * time.Second)
	for h.writes.Load() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("after the refusals: %d written, want 4", h.writes.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := h.writes.Load(); n != 4 {
		t.Fatalf("after the refusals: %d written, want 4 (each object once)", n)
	}
	if f := h.failed.Load(); f < 4 {
		t.Fatalf("%d failures told, want at least 4", f)
	}
}
