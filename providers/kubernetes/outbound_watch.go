package kubernetes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/causewayhq/causeway/routes"
)

// OutboundWatcher watches what a sidecar's outbound services are made of
// (OutboundSnapshot) and hands the caller one consistent snapshot after
// every settled burst of changes. It caches as little as the API allows:
// only the Services labelled routes.MeshLabel, only EndpointSlices that
// belong to a Service, only the fields of a Pod that name its identity
// (the sidecar needs nothing else, and a node's worth of Pods is most of
// what a cluster holds), BackendTLSPolicies, and of each ConfigMap only
// its ca.crt (what a policy's CA reference reads, as on the edge). Run
// drives it.
type OutboundWatcher struct {
	cfg        routes.OutboundKubernetes
	onSnapshot func(*OutboundSnapshot)
	clock      clock.Clock
	quiet, max time.Duration

	httpClient *http.Client
	conns      *connTracker
	scopes     []*outboundScope
	synced     []cache.InformerSynced
	changed    chan struct{}
	running    atomic.Bool
}

// outboundScope is the informers of one namespace ("" for all). Each kind
// has a factory of its own: a factory's list options apply to every kind
// it makes, and each kind is narrowed differently.
type outboundScope struct {
	services, slices, pods, configMaps informers.SharedInformerFactory
	// gw watches BackendTLSPolicies, which narrow the identities a mesh
	// Service is called with, as on the edge.
	gw gwinformers.SharedInformerFactory
}

// NewOutbound builds an OutboundWatcher for cfg that calls onSnapshot with
// each new snapshot, on Run's goroutine, one call at a time. The snapshot
// is read-only: its objects are the informers' cached ones.
func NewOutbound(cfg routes.OutboundKubernetes, onSnapshot func(*OutboundSnapshot), opts Options) (*OutboundWatcher, error) {
	if onSnapshot == nil {
		return nil, errors.New("kubernetes outbound: no snapshot callback")
	}
	restCfg, httpClient, conns, err := apiClient(cfg.Kubeconfig, opts.RESTConfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes outbound: %w", err)
	}
	core, err := kubernetes.NewForConfigAndClient(restCfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kubernetes outbound: %w", err)
	}
	gw, err := gwclient.NewForConfigAndClient(restCfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kubernetes outbound: %w", err)
	}
	w := &OutboundWatcher{
		cfg:        cfg,
		onSnapshot: onSnapshot,
		clock:      opts.Clock,
		quiet:      cmp.Or(opts.Quiet, DefaultQuiet),
		max:        cmp.Or(opts.MaxDelay, DefaultMaxDelay),
		httpClient: httpClient,
		conns:      conns,
		changed:    make(chan struct{}, 1),
	}
	if w.clock == nil {
		w.clock = clock.RealClock{}
	}
	w.buildInformers(core, gw)
	return w, nil
}

// meshServices narrows the Service informers to the mesh's Services.
func meshServices(o *metav1.ListOptions) {
	o.LabelSelector = labels.SelectorFromSet(labels.Set{routes.MeshLabel: "true"}).String()
}

// serviceSlices narrows the EndpointSlice informers to those of a
// Service (a controller's own slices carry no Service name).
func serviceSlices(o *metav1.ListOptions) {
	req, _ := labels.NewRequirement(serviceNameKey, selection.Exists, nil)
	o.LabelSelector = labels.NewSelector().Add(*req).String()
}

// livePods leaves out Pods that have ended: their addresses are reused.
func livePods(o *metav1.ListOptions) {
	o.FieldSelector = fields.AndSelectors(
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodSucceeded)),
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodFailed)),
	).String()
}

// slimPod keeps of a Pod what endpointPod reads: its name, UID, inbound
// port annotation, ServiceAccount and addresses.
func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone: its object was slimmed when cached
	}
	slim := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
		},
		Spec:   corev1.PodSpec{ServiceAccountName: p.Spec.ServiceAccountName},
		Status: corev1.PodStatus{PodIPs: p.Status.PodIPs},
	}
	if v, ok := p.Annotations[routes.InboundPortAnnotation]; ok {
		slim.Annotations = map[string]string{routes.InboundPortAnnotation: v}
	}
	return slim, nil
}

// samePodIdentity reports whether two slimmed Pods resolve alike: a Pod's
// status changes often (conditions, container states) without changing
// anything the sidecar reads.
func samePodIdentity(old, cur any) bool {
	o, ok1 := old.(*corev1.Pod)
	c, ok2 := cur.(*corev1.Pod)
	if !ok1 || !ok2 {
		return false
	}
	o2, c2 := *o, *c
	o2.ResourceVersion, c2.ResourceVersion = "", ""
	return equality.Semantic.DeepEqual(&o2, &c2)
}

func (w *OutboundWatcher) buildInformers(core kubernetes.Interface, gw gwclient.Interface) {
	const resync = 0 // as for the edge's informers: a resync only repeats
	strip := informers.WithTransform(stripManagedFields)
	namespaces := w.cfg.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	for _, ns := range namespaces {
		in := informers.WithNamespace(ns)
		w.scopes = append(w.scopes, &outboundScope{
			services: informers.NewSharedInformerFactoryWithOptions(core, resync, in, strip, informers.WithTweakListOptions(meshServices)),
			slices:   informers.NewSharedInformerFactoryWithOptions(core, resync, in, strip, informers.WithTweakListOptions(serviceSlices)),
			pods:     informers.NewSharedInformerFactoryWithOptions(core, resync, in, informers.WithTransform(slimPod), informers.WithTweakListOptions(livePods)),
			// Slimmed to ca.crt, as the edge caches them.
			configMaps: informers.NewSharedInformerFactoryWithOptions(core, resync, in, informers.WithTransform(slimConfigMap)),
			gw:         gwinformers.NewSharedInformerFactoryWithOptions(gw, resync, gwinformers.WithNamespace(ns), gwinformers.WithTransform(stripManagedFields)),
		})
	}
	add := func(inf cache.SharedIndexInformer, same func(old, cur any) bool) {
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { w.poke() },
			UpdateFunc: func(old, cur any) {
				if same != nil && same(old, cur) {
					return
				}
				w.poke()
			},
			DeleteFunc: func(any) { w.poke() },
		})
		w.synced = append(w.synced, inf.HasSynced)
	}
	for _, s := range w.scopes {
		add(s.services.Core().V1().Services().Informer(), nil)
		add(s.slices.Discovery().V1().EndpointSlices().Informer(), nil)
		add(s.pods.Core().V1().Pods().Informer(), samePodIdentity)
		// The edge writes these policies' status: that makes no snapshot.
		add(s.gw.Gateway().V1().BackendTLSPolicies().Informer(), onlyStatusChanged)
		add(s.configMaps.Core().V1().ConfigMaps().Informer(), sameCABundle)
	}
}

func (w *OutboundWatcher) poke() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// Run watches until ctx ends, then stops every goroutine it started and
// returns ctx's error. Nothing is delivered until every informer has
// listed its objects, so the first snapshot is complete. While the API
// server is away the caches keep their contents and nothing is
// delivered, so the sidecar keeps the services it has; when it returns,
// the informers list again and the changes arrive as usual. An
// OutboundWatcher runs once.
func (w *OutboundWatcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("kubernetes outbound: Run called twice")
	}
	defer func() {
		utilnet.CloseIdleConnectionsFor(w.httpClient.Transport)
		w.conns.closeAll()
	}()
	stop := make(chan struct{})
	var fs []interface {
		Start(<-chan struct{})
		Shutdown()
	}
	for _, s := range w.scopes {
		fs = append(fs, s.services, s.slices, s.pods, s.configMaps, s.gw)
	}
	for _, f := range fs {
		f.Start(stop)
	}
	defer func() {
		close(stop)
		for _, f := range fs {
			f.Shutdown() // waits for the informers' goroutines
		}
	}()
	if !cache.WaitForCacheSync(ctx.Done(), w.synced...) {
		return ctx.Err()
	}
	debounced(ctx, w.clock, debounce{quiet: w.quiet, max: w.max}, w.changed, func() { w.onSnapshot(w.snapshot()) })
	return ctx.Err()
}

// snapshot reads every cache, each list copied and sorted (see
// Watcher.snapshot).
func (w *OutboundWatcher) snapshot() *OutboundSnapshot {
	s := &OutboundSnapshot{}
	all := labels.Everything()
	for _, sc := range w.scopes {
		svcs, _ := sc.services.Core().V1().Services().Lister().List(all)
		s.Services = append(s.Services, svcs...)
		eps, _ := sc.slices.Discovery().V1().EndpointSlices().Lister().List(all)
		s.EndpointSlices = append(s.EndpointSlices, eps...)
		pods, _ := sc.pods.Core().V1().Pods().Lister().List(all)
		s.Pods = append(s.Pods, pods...)
		btls, _ := sc.gw.Gateway().V1().BackendTLSPolicies().Lister().List(all)
		s.BackendTLSPolicies = append(s.BackendTLSPolicies, btls...)
		cms, _ := sc.configMaps.Core().V1().ConfigMaps().Lister().List(all)
		s.ConfigMaps = append(s.ConfigMaps, cms...)
	}
	sortObjects(s.Services)
	sortObjects(s.EndpointSlices)
	sortObjects(s.Pods)
	sortObjects(s.BackendTLSPolicies)
	sortObjects(s.ConfigMaps)
	return s
}

// OutboundSource is the outbound watcher as a sidecar runs it: each
// snapshot translated, and a fragment that differs from the last one
// applied handed to apply, which swaps it in as one generation.
type OutboundSource struct {
	cfg  routes.OutboundKubernetes
	out  OutboundOptions
	opts Options
}

// NewOutboundSource checks cfg (the kubeconfig is read here, so a bad one
// refuses the sidecar file that names it) and returns a source that runs
// on Run.
func NewOutboundSource(cfg routes.OutboundKubernetes, out OutboundOptions, opts Options) (*OutboundSource, error) {
	if _, err := restConfig(cfg.Kubeconfig, opts.RESTConfig); err != nil {
		return nil, fmt.Errorf("kubernetes outbound: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &OutboundSource{cfg: cfg, out: out, opts: opts}, nil
}

// Run watches until ctx ends. An unchanged fragment (a Pod's status, a
// Service outside the mesh's reach) is not applied again. What is left
// out is logged when it changes, so a steady cluster logs it once.
func (s *OutboundSource) Run(ctx context.Context, apply func(routes.Fragment) error) error {
	var (
		applied *routes.Fragment
		logged  []LeftOut
	)
	w, err := NewOutbound(s.cfg, func(snap *OutboundSnapshot) {
		res := TranslateOutbound(s.cfg, snap, s.out)
		if s.opts.Translated != nil {
			s.opts.Translated(res)
		}
		if !slices.Equal(res.LeftOut, logged) {
			for _, l := range res.LeftOut {
				s.opts.Logger.Warn("kubernetes outbound: left out", "what", l.String())
			}
			logged = res.LeftOut
		}
		if applied != nil && reflect.DeepEqual(*applied, res.Fragment) {
			return
		}
		if err := apply(res.Fragment); err != nil {
			return // the sidecar logged the refusal and keeps what it had
		}
		frag := res.Fragment
		applied = &frag
		s.opts.Logger.Info("kubernetes outbound: services loaded", "services", res.Services, "endpoints", res.Endpoints, "left_out", len(res.LeftOut))
	}, s.opts)
	if err != nil {
		return err
	}
	return w.Run(ctx)
}
