package kubernetes

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/retry"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// Status retries after a failed pass (the API server away, say) back off
// from statusRetryMin to statusRetryMax; a successful pass resets them.
const (
	statusRetryMin = 500 * time.Millisecond
	statusRetryMax = 30 * time.Second
)

// SetResult hands the Watcher the statuses the objects should have, as
// Translate derived them from the latest Snapshot. The replica that holds
// the Lease writes them; the others keep the latest one, so a replica that
// takes over writes at once. Only the newest Result is kept: an older one
// not yet written is superseded, never written after a newer one.
func (w *Watcher) SetResult(res *Result) {
	w.mu.Lock()
	w.result = res
	w.mu.Unlock()
	notify(w.resultPoke)
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// elect takes part in the Lease election until ctx ends. Losing the Lease
// (renewals failing while the API server is away) ends one round; the
// next round campaigns again.
func (w *Watcher) elect(ctx context.Context) {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: w.election.Namespace, Name: w.election.LeaseName},
		Client:     w.core.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: w.election.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:          lock,
			LeaseDuration: w.election.LeaseDuration,
			RenewDeadline: w.election.RenewDeadline,
			RetryPeriod:   w.election.RetryPeriod,
			// Released when Run ends, after the status loop has stopped,
			// so the next replica takes over at once rather than after
			// the Lease expires.
			ReleaseOnCancel: true,
			Name:            w.election.LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				// client-go calls this on a goroutine of its own, after
				// which Run may already have returned; it only records
				// the context (if still live) and pokes, never blocks.
				OnStartedLeading: func(lctx context.Context) {
					w.mu.Lock()
					leading := lctx.Err() == nil
					if leading {
						w.leaderCtx = lctx
					}
					w.mu.Unlock()
					if leading {
						w.told(true)
					}
					notify(w.leaderPoke)
				},
				OnStoppedLeading: func() {
					w.mu.Lock()
					w.leaderCtx = nil
					w.mu.Unlock()
					w.told(false)
				},
			},
		})
		if err != nil {
			// The configuration was checked in New; this is a bug.
			w.log.Error("kubernetes provider: leader election", "err", err)
			return
		}
		le.Run(ctx)
		if ctx.Err() == nil {
			w.log.Warn("kubernetes provider: lost the status lease; campaigning again", "lease", w.election.Namespace+"/"+w.election.LeaseName)
		}
	}
}

// told passes a change of leadership to Options.Leading. OnStartedLeading
// runs on a goroutine of its own and may land after OnStoppedLeading;
// the mutex keeps the hook's calls in order, and a start told after the
// stop (the leadership already over) is corrected at once.
func (w *Watcher) told(leading bool) {
	if w.leadingHook == nil {
		return
	}
	w.hookMu.Lock()
	defer w.hookMu.Unlock()
	if leading && w.leading() == nil {
		leading = false
	}
	w.leadingHook(w.election.Namespace+"/"+w.election.LeaseName, leading)
}

// leading returns the context of the current leadership, or nil.
func (w *Watcher) leading() context.Context {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.leaderCtx != nil && w.leaderCtx.Err() != nil {
		w.leaderCtx = nil
	}
	return w.leaderCtx
}

// statusLoop writes the latest Result whenever there is a new one or this
// replica has just become the leader, and retries a failed pass.
func (w *Watcher) statusLoop(ctx context.Context) {
	backoff := statusRetryMin
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.resultPoke:
		case <-w.leaderPoke:
		case <-retry:
		}
		retry = nil
		lctx := w.leading()
		w.mu.Lock()
		res := w.result
		w.mu.Unlock()
		if lctx == nil || res == nil {
			continue
		}
		// A write stops when the leadership ends or Run does, whichever
		// comes first.
		wctx, cancel := context.WithCancel(lctx)
		stop := context.AfterFunc(ctx, cancel)
		_, err := w.writeStatus(wctx, res)
		stop()
		cancel()
		w.considered.Store(res)
		if err == nil || ctx.Err() != nil {
			backoff = statusRetryMin
			continue
		}
		w.log.Warn("kubernetes provider: writing status", "err", err, "retry_in", backoff)
		retry = w.clock.After(backoff)
		backoff = min(2*backoff, statusRetryMax)
	}
}

// writeStatus (called from statusLoop only) brings every object's status named in res to what res says,
// writing only those whose stored status differs, so a Result that did
// not change writes nothing and a write (which comes back as a watch
// event) cannot start a loop. It returns how many objects it wrote.
func (w *Watcher) writeStatus(ctx context.Context, res *Result) (int, error) {
	now := metav1.NewTime(w.clock.Now()).Rfc3339Copy()
	var errs []error
	memo := &statusMemo{prev: w.written, next: map[string]writtenStatus{}}
	n := 0
	count := func(wrote bool, err error) {
		if wrote {
			n++
		}
		if err != nil {
			errs = append(errs, err)
		}
		// A write cut short because the leadership ended is no failure.
		if w.writtenHook != nil && (wrote || (err != nil && ctx.Err() == nil)) {
			w.writtenHook(err)
		}
	}

	classes := w.gw.GatewayV1().GatewayClasses()
	classLister := w.cluster.Gateway().V1().GatewayClasses().Lister()
	for _, name := range slices.Sorted(maps.Keys(res.GatewayClasses)) {
		want := res.GatewayClasses[name]
		count(writeOne(ctx, memo, "GatewayClass "+name, res.Origins[ObjectKey{Kind: originGatewayClass, Name: name}],
			func() (*gatewayv1.GatewayClass, error) { return classLister.Get(name) },
			func(ctx context.Context) (*gatewayv1.GatewayClass, error) {
				return classes.Get(ctx, name, metav1.GetOptions{})
			},
			func(cur *gatewayv1.GatewayClass) (*gatewayv1.GatewayClass, bool) {
				next := gatewayClassStatus(cur.Status, want, now)
				if equality.Semantic.DeepEqual(cur.Status, next) {
					return nil, false
				}
				o := cur.DeepCopy()
				o.Status = next
				return o, true
			},
			func(ctx context.Context, o *gatewayv1.GatewayClass) (*gatewayv1.GatewayClass, error) {
				return classes.UpdateStatus(ctx, o, metav1.UpdateOptions{FieldManager: fieldManager})
			}))
	}

	for _, key := range sortedNames(res.Gateways) {
		want := res.Gateways[key]
		sc := w.scopeOf(key.Namespace)
		if sc == nil {
			continue // outside the watched namespaces: not ours to write
		}
		api := w.gw.GatewayV1().Gateways(key.Namespace)
		lister := sc.gw.Gateway().V1().Gateways().Lister().Gateways(key.Namespace)
		count(writeOne(ctx, memo, "Gateway "+key.String(), res.Origins[ObjectKey{Kind: originGateway, Namespace: key.Namespace, Name: key.Name}],
			func() (*gatewayv1.Gateway, error) { return lister.Get(key.Name) },
			func(ctx context.Context) (*gatewayv1.Gateway, error) {
				return api.Get(ctx, key.Name, metav1.GetOptions{})
			},
			func(cur *gatewayv1.Gateway) (*gatewayv1.Gateway, bool) {
				next := gatewayStatus(cur.Status, want, now)
				if equality.Semantic.DeepEqual(cur.Status, next) {
					return nil, false
				}
				o := cur.DeepCopy()
				o.Status = next
				return o, true
			},
			func(ctx context.Context, o *gatewayv1.Gateway) (*gatewayv1.Gateway, error) {
				return api.UpdateStatus(ctx, o, metav1.UpdateOptions{FieldManager: fieldManager})
			}))
	}

	// Policies before routes: a cluster has few of them and many routes,
	// and at 50 writes a second the status of 10,000 routes takes minutes,
	// which a policy's author should not wait behind.
	for _, key := range sortedNames(res.Policies) {
		want := res.Policies[key]
		sc := w.scopeOf(key.Namespace)
		if sc == nil || sc.policies == nil {
			continue
		}
		api := w.dyn.Resource(PolicyGVR).Namespace(key.Namespace)
		lister := sc.policies.ForResource(PolicyGVR).Lister().ByNamespace(key.Namespace)
		count(writeOne(ctx, memo, "CausewayPolicy "+key.String(), res.Origins[ObjectKey{Kind: originPolicy, Namespace: key.Namespace, Name: key.Name}],
			func() (*unstructured.Unstructured, error) {
				o, err := lister.Get(key.Name)
				if err != nil {
					return nil, err
				}
				u, ok := o.(*unstructured.Unstructured)
				if !ok {
					return nil, fmt.Errorf("unexpected %T", o)
				}
				return u, nil
			},
			func(ctx context.Context) (*unstructured.Unstructured, error) {
				return api.Get(ctx, key.Name, metav1.GetOptions{})
			},
			func(cur *unstructured.Unstructured) (*unstructured.Unstructured, bool) {
				var stored gatewayv1.PolicyStatus
				if raw, ok := cur.Object["status"]; ok {
					if b, err := json.Marshal(raw); err == nil {
						_ = json.Unmarshal(b, &stored)
					}
				}
				next := policyStatus(stored, want, now, w.owns(key.Namespace))
				if equality.Semantic.DeepEqual(stored, next) {
					return nil, false
				}
				b, err := json.Marshal(next)
				if err != nil {
					return nil, false
				}
				var m map[string]any
				if err := json.Unmarshal(b, &m); err != nil {
					return nil, false
				}
				o := cur.DeepCopy()
				o.Object["status"] = m
				return o, true
			},
			func(ctx context.Context, o *unstructured.Unstructured) (*unstructured.Unstructured, error) {
				return api.UpdateStatus(ctx, o, metav1.UpdateOptions{FieldManager: fieldManager})
			}))
	}

	w.writeBackendTLSStatus(ctx, res, memo, now, count)

	for _, key := range sortedNames(res.HTTPRoutes) {
		want := res.HTTPRoutes[key]
		sc := w.scopeOf(key.Namespace)
		if sc == nil {
			continue
		}
		api := w.gw.GatewayV1().HTTPRoutes(key.Namespace)
		lister := sc.gw.Gateway().V1().HTTPRoutes().Lister().HTTPRoutes(key.Namespace)
		count(writeOne(ctx, memo, "HTTPRoute "+key.String(), res.Origins[ObjectKey{Kind: originHTTPRoute, Namespace: key.Namespace, Name: key.Name}],
			func() (*gatewayv1.HTTPRoute, error) { return lister.Get(key.Name) },
			func(ctx context.Context) (*gatewayv1.HTTPRoute, error) {
				return api.Get(ctx, key.Name, metav1.GetOptions{})
			},
			func(cur *gatewayv1.HTTPRoute) (*gatewayv1.HTTPRoute, bool) {
				next := routeStatus(cur.Status.RouteStatus, want.RouteStatus, now, w.owns(key.Namespace))
				if equality.Semantic.DeepEqual(cur.Status.RouteStatus, next) {
					return nil, false
				}
				o := cur.DeepCopy()
				o.Status.RouteStatus = next
				return o, true
			},
			func(ctx context.Context, o *gatewayv1.HTTPRoute) (*gatewayv1.HTTPRoute, error) {
				return api.UpdateStatus(ctx, o, metav1.UpdateOptions{FieldManager: fieldManager})
			}))
	}

	for _, key := range sortedNames(res.GRPCRoutes) {
		want := res.GRPCRoutes[key]
		sc := w.scopeOf(key.Namespace)
		if sc == nil {
			continue
		}
		api := w.gw.GatewayV1().GRPCRoutes(key.Namespace)
		lister := sc.gw.Gateway().V1().GRPCRoutes().Lister().GRPCRoutes(key.Namespace)
		count(writeOne(ctx, memo, "GRPCRoute "+key.String(), res.Origins[ObjectKey{Kind: originGRPCRoute, Namespace: key.Namespace, Name: key.Name}],
			func() (*gatewayv1.GRPCRoute, error) { return lister.Get(key.Name) },
			func(ctx context.Context) (*gatewayv1.GRPCRoute, error) {
				return api.Get(ctx, key.Name, metav1.GetOptions{})
			},
			func(cur *gatewayv1.GRPCRoute) (*gatewayv1.GRPCRoute, bool) {
				next := routeStatus(cur.Status.RouteStatus, want.RouteStatus, now, w.owns(key.Namespace))
				if equality.Semantic.DeepEqual(cur.Status.RouteStatus, next) {
					return nil, false
				}
				o := cur.DeepCopy()
				o.Status.RouteStatus = next
				return o, true
			},
			func(ctx context.Context, o *gatewayv1.GRPCRoute) (*gatewayv1.GRPCRoute, error) {
				return api.UpdateStatus(ctx, o, metav1.UpdateOptions{FieldManager: fieldManager})
			}))
	}
	// Writes the cache has caught up with, or whose objects are no longer
	// in the Result, are forgotten.
	w.written = memo.next
	return n, errors.Join(errs...)
}

// writeOne updates one object's status. The first attempt compares with
// the cached object, which costs no request when nothing changed; after a
// conflict (the cache was behind, or another writer got there first) it
// reads the object from the API server and compares again, so a status
// already right is not written twice. An object that no longer exists
// has no status to write, and neither has one other than from, the
// object the status was derived from. next reports false when nothing is
// to be written.
//
// memo remembers, per object, what the last write returned and the cached
// version it replaced: while the cache still holds that version (the
// write's watch event has not arrived yet), the write's result is compared
// instead, so a pass right after a write neither writes again nor sends a
// request doomed to conflict. It may be nil.
func writeOne[O metav1.Object](ctx context.Context, memo *statusMemo, what string, from Origin,
	cached func() (O, error),
	get func(context.Context) (O, error),
	next func(O) (O, bool),
	update func(context.Context, O) (O, error),
) (wrote bool, err error) {
	fresh := false
	cachedVersion := ""
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var cur O
		var err error
		if fresh {
			cur, err = get(ctx)
		} else {
			cur, err = cached()
			if err == nil {
				cachedVersion = cur.GetResourceVersion()
				if memo != nil {
					if w, ok := memo.prev[what]; ok && w.replaced == cachedVersion {
						cur = w.result.(O)
						memo.next[what] = w // still needed until the cache catches up
					}
				}
			}
		}
		fresh = true
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		// The object by this name is not the one the status was derived
		// from: created again since (another UID) or changed since
		// (another generation), or the status has no origin at all. Its
		// conditions would describe another object; the next Result,
		// translated from this object, writes it.
		if cur.GetUID() != from.UID || from.UID == "" || cur.GetGeneration() != from.Generation {
			return nil
		}
		o, changed := next(cur)
		if !changed {
			return nil
		}
		out, err := update(ctx, o)
		if err != nil {
			return err
		}
		wrote = true
		if memo != nil && cachedVersion != "" {
			memo.next[what] = writtenStatus{replaced: cachedVersion, result: out}
		}
		return nil
	})
	if err != nil {
		return wrote, fmt.Errorf("%s: %w", what, err)
	}
	return wrote, nil
}

// statusMemo is the writes of the previous pass and those of this one.
type statusMemo struct {
	prev, next map[string]writtenStatus
}

// writtenStatus is an object as a status write returned it, and the
// cached resourceVersion it replaced.
type writtenStatus struct {
	replaced string
	result   metav1.Object
}

// owns is ownsRef for an object of namespace ns.
func (w *Watcher) owns(ns string) func(gatewayv1.ParentReference) bool {
	return func(ref gatewayv1.ParentReference) bool { return ownsRef(w.cfg, ns, ref) }
}

// scopeOf is the scope that watches namespace ns, or nil.
func (w *Watcher) scopeOf(ns string) *scope {
	for _, s := range w.scopes {
		if s.namespace == "" || s.namespace == ns {
			return s
		}
	}
	return nil
}

func sortedNames[V any](m map[types.NamespacedName]V) []types.NamespacedName {
	keys := make([]types.NamespacedName, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b types.NamespacedName) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return keys
}

// conditions returns want with each condition's LastTransitionTime taken
// from the stored condition of the same type when its status is the same
// (the time says when the status last changed, not when it was last
// computed), or now when it changed and want has no time of its own.
// Without this, every pass would write a fresh time and never be equal to
// what is stored.
func conditions(stored, want []metav1.Condition, now metav1.Time) []metav1.Condition {
	if want == nil {
		return nil
	}
	out := make([]metav1.Condition, len(want))
	for i, c := range want {
		if old := meta.FindStatusCondition(stored, c.Type); old != nil && old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		} else if c.LastTransitionTime.IsZero() {
			c.LastTransitionTime = now
		}
		out[i] = c
	}
	return out
}

func gatewayClassStatus(stored, want gatewayv1.GatewayClassStatus, now metav1.Time) gatewayv1.GatewayClassStatus {
	want.Conditions = conditions(stored.Conditions, want.Conditions, now)
	return want
}

// The API server fills these defaults in (the CRDs' schemas say so); the
// wanted status gets them too, or it would never compare equal to what is
// stored and every pass would write it again.
var (
	defaultGroup       = gatewayv1.Group(gatewayv1.GroupName)
	defaultKind        = gatewayv1.Kind("Gateway")
	defaultAddressType = gatewayv1.IPAddressType
)

func gatewayStatus(stored, want gatewayv1.GatewayStatus, now metav1.Time) gatewayv1.GatewayStatus {
	want.Conditions = conditions(stored.Conditions, want.Conditions, now)
	if want.Addresses != nil {
		addrs := make([]gatewayv1.GatewayStatusAddress, len(want.Addresses))
		for i, a := range want.Addresses {
			if a.Type == nil {
				a.Type = &defaultAddressType
			}
			addrs[i] = a
		}
		want.Addresses = addrs
	}
	if want.Listeners != nil {
		ls := make([]gatewayv1.ListenerStatus, len(want.Listeners))
		for i, l := range want.Listeners {
			var old []metav1.Condition
			for _, s := range stored.Listeners {
				if s.Name == l.Name {
					old = s.Conditions
				}
			}
			l.Conditions = conditions(old, l.Conditions, now)
			if l.SupportedKinds != nil {
				kinds := make([]gatewayv1.RouteGroupKind, len(l.SupportedKinds))
				for j, k := range l.SupportedKinds {
					if k.Group == nil {
						k.Group = &defaultGroup
					}
					kinds[j] = k
				}
				l.SupportedKinds = kinds
			}
			ls[i] = l
		}
		want.Listeners = ls
	}
	return want
}

// ownsRef reports whether an entry of our controller that names ref (in
// a route's parents or a policy's ancestors; ns is the object's own
// namespace, which a ref without one means) is this edge's to write.
// An edge that serves every Gateway of its class owns every entry; one
// limited to some Gateways (providers.kubernetes.gateways) owns those
// naming its Gateways, and those naming something other than a Gateway
// (a policy's missing target), which every edge judges alike. Entries
// naming another edge's Gateway are that edge's, and are kept.
func ownsRef(cfg routes.KubernetesProvider, ns string, ref gatewayv1.ParentReference) bool {
	if len(cfg.Gateways) == 0 {
		return true
	}
	if ref.Group != nil && string(*ref.Group) != groupName || ref.Kind != nil && string(*ref.Kind) != kindGateway {
		return true
	}
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	return cfg.ServesGateway(ns, string(ref.Name))
}

// routeStatus brings the parents entries this edge owns (ownsRef) to
// want's and keeps every other entry as it is: another controller's (several
// may serve one route through different Gateways) and another edge's of
// this controller, serving other Gateways. Stored entries keep their
// place and new ones go last, so two edges writing one route each leave
// the other's entries where they are, and a pass whose own entries are
// already right writes nothing (moving the other edge's entries ahead of
// its own would be a write on every pass of either edge). Entries in
// want that name another controller are ignored: this edge never writes
// in another's name.
func routeStatus(stored, want gatewayv1.RouteStatus, now metav1.Time, mine func(gatewayv1.ParentReference) bool) gatewayv1.RouteStatus {
	const ours = gatewayv1.GatewayController(routes.KubernetesControllerName)
	var wanted []gatewayv1.RouteParentStatus
	for _, p := range want.Parents {
		if p.ControllerName != ours {
			continue
		}
		if p.ParentRef.Group == nil {
			p.ParentRef.Group = &defaultGroup
		}
		if p.ParentRef.Kind == nil {
			p.ParentRef.Kind = &defaultKind
		}
		var old []metav1.Condition
		for _, s := range stored.Parents {
			if s.ControllerName == ours && equality.Semantic.DeepEqual(s.ParentRef, p.ParentRef) {
				old = s.Conditions
			}
		}
		p.Conditions = conditions(old, p.Conditions, now)
		wanted = append(wanted, p)
	}
	placed := make([]bool, len(wanted))
	parents := []gatewayv1.RouteParentStatus{}
	for _, s := range stored.Parents {
		if s.ControllerName != ours || !mine(s.ParentRef) {
			parents = append(parents, s)
			continue
		}
		for i, p := range wanted {
			if !placed[i] && equality.Semantic.DeepEqual(s.ParentRef, p.ParentRef) {
				parents = append(parents, p)
				placed[i] = true
				break
			}
		}
	}
	for i, p := range wanted {
		if !placed[i] {
			parents = append(parents, p)
		}
	}
	return gatewayv1.RouteStatus{Parents: parents}
}

// policyStatus brings the ancestors entries this edge owns to want's and
// keeps every other, in place, as routeStatus does.
func policyStatus(stored, want gatewayv1.PolicyStatus, now metav1.Time, mine func(gatewayv1.ParentReference) bool) gatewayv1.PolicyStatus {
	const ours = gatewayv1.GatewayController(routes.KubernetesControllerName)
	var wanted []gatewayv1.PolicyAncestorStatus
	for _, a := range want.Ancestors {
		if a.ControllerName != ours {
			continue
		}
		var old []metav1.Condition
		for _, s := range stored.Ancestors {
			if s.ControllerName == ours && parentRefEqual(s.AncestorRef, a.AncestorRef) {
				old = s.Conditions
			}
		}
		a.Conditions = conditions(old, a.Conditions, now)
		wanted = append(wanted, a)
	}
	placed := make([]bool, len(wanted))
	out := gatewayv1.PolicyStatus{Ancestors: []gatewayv1.PolicyAncestorStatus{}}
	for _, s := range stored.Ancestors {
		if s.ControllerName != ours || !mine(s.AncestorRef) {
			out.Ancestors = append(out.Ancestors, s)
			continue
		}
		for i, a := range wanted {
			if !placed[i] && parentRefEqual(s.AncestorRef, a.AncestorRef) {
				out.Ancestors = append(out.Ancestors, a)
				placed[i] = true
				break
			}
		}
	}
	for i, a := range wanted {
		// The Gateway API's PolicyStatus holds at most 16 ancestors.
		if !placed[i] && len(out.Ancestors) < 16 {
			out.Ancestors = append(out.Ancestors, a)
		}
	}
	return out
}
