package kubernetes

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/utils/clock"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/causewayhq/causeway/routes"
)

// Defaults for Options.
const (
	// DefaultQuiet and DefaultMaxDelay are the debounce's timing: a burst
	// of changes becomes one snapshot 100 ms after the last of them, and a
	// steady trickle still yields one at least every second.
	DefaultQuiet    = 100 * time.Millisecond
	DefaultMaxDelay = time.Second

	// The Lease timings are client-go's usual ones: a leader that stops
	// renewing is replaced within DefaultLeaseDuration.
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second

	// DefaultQPS and DefaultBurst limit the requests to the API server
	// (client-go's own defaults are 5 and 10).
	DefaultQPS   = 50
	DefaultBurst = 100

	// fieldManager names the edge in the objects' managedFields.
	fieldManager = "causeway"
)

// Options tune a Watcher. Zero values take the defaults.
type Options struct {
	// RESTConfig, when set, is used instead of the provider's Kubeconfig
	// or the in-cluster service account (tests, or a caller that already
	// has one).
	RESTConfig *rest.Config
	// Clock times the debounce and the status retries (default the real
	// clock). The Lease's timing is client-go's own and uses real time.
	Clock clock.Clock
	// Logger receives the watcher's warnings (default slog.Default()).
	Logger *slog.Logger
	// Quiet and MaxDelay are the debounce's timing (DefaultQuiet,
	// DefaultMaxDelay).
	Quiet, MaxDelay time.Duration
	// LeaderElection chooses the one replica that writes status.
	LeaderElection LeaderElection
	// HTTPS: the edge has an https listener, where HTTPS listeners'
	// certificates are served (TranslateOptions.HTTPS).
	HTTPS bool
	// Check judges what each CausewayPolicy adds (TranslateOptions.Check).
	Check CheckPolicy
	// MeshTrustDomain is the edge's mesh.trust_domain
	// (TranslateOptions.MeshTrustDomain). Set, the Watcher also watches
	// Pods, whose ServiceAccounts name mesh backends' identities; empty,
	// it needs no access to Pods.
	MeshTrustDomain string
	// Translated, when set, sees every OutboundResult an OutboundSource
	// makes, applied or not (the sidecar's metrics).
	Translated func(OutboundResult)
	// Leading, when set, is told each time this replica starts (true) or
	// stops (false) holding the status Lease (named NAMESPACE/NAME), and
	// false once more when the Watcher stops: the edge's
	// causeway_kubernetes_status_leader. It is called from the election's
	// goroutines and must not block.
	Leading func(lease string, leading bool)
	// StatusWritten, when set, is told of each object whose status a pass
	// wrote (nil) or failed to write (the error): the edge's
	// causeway_kubernetes_status_writes_total. An object already right is
	// not written and not told.
	StatusWritten func(error)
}

// LeaderElection configures the coordination.k8s.io Lease that makes one
// replica the status writer. Every replica watches and serves; only the
// holder of the Lease writes, so replicas never fight over an object's
// status.
type LeaderElection struct {
	// LeaseName is the Lease's name (default "causeway-" + the
	// GatewayClass + "-status", so edges of different classes elect
	// separately; with providers.kubernetes.gateways, "causeway-" + the
	// class + "-" + a hash of the sorted Gateways + "-status", so edges
	// serving different Gateways elect separately too).
	LeaseName string
	// Namespace is the Lease's namespace (default $POD_NAMESPACE, else the
	// service account's namespace, else "default").
	Namespace string
	// Identity names this replica in the Lease (default $POD_NAME, else
	// the host name with a random suffix). Replicas must have different
	// identities: two that share one both believe they hold the Lease.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are the Lease timings
	// (DefaultLeaseDuration, DefaultRenewDeadline, DefaultRetryPeriod).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// Watcher watches the objects a Snapshot holds and hands the caller one
// consistent Snapshot after every settled burst of changes; it also writes
// the objects' status from the Result the caller derives (SetResult), when
// this replica holds the Lease. Run drives it.
type Watcher struct {
	cfg        routes.KubernetesProvider
	onSnapshot func(*Snapshot)
	watchPods  bool
	clock      clock.Clock
	log        *slog.Logger
	quiet, max time.Duration
	election   LeaderElection

	httpClient *http.Client
	conns      *connTracker
	core       kubernetes.Interface
	gw         gwclient.Interface
	dyn        dynamic.Interface

	// cluster holds the GatewayClass informer, which is cluster-scoped
	// whatever the namespaces; scopes hold one set of informers per
	// watched namespace (one scope for all namespaces when none is set).
	cluster gwinformers.SharedInformerFactory
	// namespaces holds the Namespace informer (cluster-scoped too):
	// listeners that admit routes by namespace label read the labels.
	namespaces informers.SharedInformerFactory
	scopes     []*scope
	synced     []cache.InformerSynced

	// changed is poked by every relevant event; one pending poke is
	// enough, as a snapshot always reads the caches whole.
	changed chan struct{}
	running atomic.Bool

	// Status: the latest Result to write, and whether this replica leads.
	mu         sync.Mutex
	result     *Result
	leaderCtx  context.Context // nil when not leading
	resultPoke chan struct{}
	leaderPoke chan struct{}
	// leadingHook and writtenHook are Options.Leading and
	// Options.StatusWritten (nil: not told).
	leadingHook func(lease string, leading bool)
	writtenHook func(error)
	hookMu      sync.Mutex // orders leadingHook's calls
	// written is statusLoop's own: the statuses it wrote last pass (see
	// writeOne).
	written map[string]writtenStatus
	// considered is the Result of the latest status pass made as the
	// leader, written or not (tests wait on it).
	considered atomic.Pointer[Result]
}

// scope is the informers of one namespace ("" for all).
type scope struct {
	namespace string
	gw        gwinformers.SharedInformerFactory
	core      informers.SharedInformerFactory
	// secrets is a factory of its own because its list is narrowed by a
	// field selector that the core factory's other kinds cannot take.
	secrets informers.SharedInformerFactory
	// opaque lists the Opaque Secrets policies name, and policies the
	// CausewayPolicies (nil both when policies are off).
	opaque   informers.SharedInformerFactory
	policies dynamicinformer.DynamicSharedInformerFactory
	// pods lists live Pods, slimmed to what names their identity, for
	// mesh backends (nil when the edge has no mesh section).
	pods informers.SharedInformerFactory
	// configMaps lists ConfigMaps slimmed to their ca.crt, for
	// BackendTLSPolicies' CA bundles.
	configMaps informers.SharedInformerFactory
}

// New builds a Watcher for cfg that calls onSnapshot with each new
// Snapshot. onSnapshot runs on Run's goroutine, one call at a time; while
// it runs, changes accumulate into the next snapshot. It must not keep
// Run waiting for long, and must treat the Snapshot as read-only: its
// objects are the informers' cached ones, shared, not copies.
func New(cfg routes.KubernetesProvider, onSnapshot func(*Snapshot), opts Options) (*Watcher, error) {
	if onSnapshot == nil {
		return nil, errors.New("kubernetes provider: no snapshot callback")
	}
	if cfg.GatewayClass == "" {
		cfg.GatewayClass = routes.DefaultGatewayClass
	}
	restCfg, httpClient, conns, err := apiClient(cfg.Kubeconfig, opts.RESTConfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes provider: %w", err)
	}
	core, err := kubernetes.NewForConfigAndClient(restCfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kubernetes provider: %w", err)
	}
	gw, err := gwclient.NewForConfigAndClient(restCfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kubernetes provider: %w", err)
	}
	dyn, err := dynamic.NewForConfigAndClient(restCfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kubernetes provider: %w", err)
	}
	election, err := electionDefaults(cfg, opts.LeaderElection)
	if err != nil {
		return nil, fmt.Errorf("kubernetes provider: %w", err)
	}
	w := &Watcher{
		cfg:         cfg,
		onSnapshot:  onSnapshot,
		watchPods:   opts.MeshTrustDomain != "",
		clock:       opts.Clock,
		log:         opts.Logger,
		quiet:       cmp.Or(opts.Quiet, DefaultQuiet),
		max:         cmp.Or(opts.MaxDelay, DefaultMaxDelay),
		election:    election,
		leadingHook: opts.Leading,
		writtenHook: opts.StatusWritten,
		httpClient:  httpClient,
		conns:       conns,
		core:        core,
		gw:          gw,
		dyn:         dyn,
		changed:     make(chan struct{}, 1),
		resultPoke:  make(chan struct{}, 1),
		leaderPoke:  make(chan struct{}, 1),
	}
	if w.clock == nil {
		w.clock = clock.RealClock{}
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	w.buildInformers()
	return w, nil
}

// apiClient is the REST config and HTTP client a watcher talks to the API
// server with: given, else the kubeconfig file, else the in-cluster
// service account. Its connections are the tracker's, to close when the
// watcher stops.
func apiClient(kubeconfig string, given *rest.Config) (*rest.Config, *http.Client, *connTracker, error) {
	restCfg, err := restConfig(kubeconfig, given)
	if err != nil {
		return nil, nil, nil, err
	}
	// A Proxy function makes client-go build this watcher a transport of
	// its own instead of sharing a process-wide cached one, and the
	// watcher dials every connection itself, so Run can close them all
	// when it returns and leave nothing behind (closing idle connections
	// is not enough: a watch just cancelled may still hold its stream).
	if restCfg.Proxy == nil {
		restCfg.Proxy = http.ProxyFromEnvironment
	}
	conns := &connTracker{dial: restCfg.Dial}
	restCfg.Dial = conns.dialContext
	restCfg.UserAgent = cmp.Or(restCfg.UserAgent, "causeway")
	// client-go's default of 5 requests a second would take minutes to
	// write the status of a few thousand routes after a leader change.
	if restCfg.RateLimiter == nil && restCfg.QPS == 0 {
		restCfg.QPS, restCfg.Burst = DefaultQPS, DefaultBurst
	}
	httpClient, err := rest.HTTPClientFor(restCfg)
	if err != nil {
		return nil, nil, nil, err
	}
	return restCfg, httpClient, conns, nil
}

func restConfig(kubeconfig string, given *rest.Config) (*rest.Config, error) {
	if given != nil {
		return rest.CopyConfig(given), nil
	}
	if kubeconfig != "" {
		c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
		return c, nil
	}
	c, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("in-cluster config (set kubeconfig outside a cluster): %w", err)
	}
	return c, nil
}

// serviceAccountNamespace is where a pod finds its own namespace.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// PodNamespace is the namespace this process's pod runs in:
// $POD_NAMESPACE (the downward API), else the service account's
// namespace file; "" outside a pod.
func PodNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile(serviceAccountNamespace); err == nil {
		return strings.TrimSpace(string(b))
	}
	return ""
}

// leaseName is the default Lease: one per GatewayClass and set of
// Gateways served, so the edges of one Gateway elect their own status
// writer and never wait on (or write for) another Gateway's edges. The
// set is named by a hash of its sorted names, which keeps the name short
// and the same whatever order the routes file lists them in.
func leaseName(cfg routes.KubernetesProvider) string {
	if len(cfg.Gateways) == 0 {
		return "causeway-" + cfg.GatewayClass + "-status"
	}
	sum := sha256.Sum256([]byte(strings.Join(slices.Sorted(slices.Values(cfg.Gateways)), "\n")))
	return "causeway-" + cfg.GatewayClass + "-" + hex.EncodeToString(sum[:5]) + "-status"
}

func electionDefaults(cfg routes.KubernetesProvider, le LeaderElection) (LeaderElection, error) {
	le.LeaseName = cmp.Or(le.LeaseName, leaseName(cfg))
	le.Namespace = cmp.Or(le.Namespace, PodNamespace(), "default")
	if le.Identity == "" {
		le.Identity = os.Getenv("POD_NAME")
	}
	if le.Identity == "" {
		// Outside a pod the host name alone is not unique: two edges on
		// one machine (or in one process) would share it, and a Lease
		// record naming it makes both the leader. The suffix, as
		// kube-controller-manager adds one, keeps the host readable in the
		// record.
		h, err := os.Hostname()
		if err != nil {
			return le, fmt.Errorf("lease identity: %w", err)
		}
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return le, fmt.Errorf("lease identity: %w", err)
		}
		le.Identity = h + "_" + hex.EncodeToString(b[:])
	}
	le.LeaseDuration = cmp.Or(le.LeaseDuration, DefaultLeaseDuration)
	le.RenewDeadline = cmp.Or(le.RenewDeadline, DefaultRenewDeadline)
	le.RetryPeriod = cmp.Or(le.RetryPeriod, DefaultRetryPeriod)
	// client-go's own rule (it jitters the retry period by up to 1.2×);
	// checked here so that bad timings fail New, not the election later.
	if le.LeaseDuration <= le.RenewDeadline || float64(le.RenewDeadline) <= leaderelection.JitterFactor*float64(le.RetryPeriod) {
		return le, fmt.Errorf("lease timings: need lease duration %s > renew deadline %s > %.1f × retry period %s",
			le.LeaseDuration, le.RenewDeadline, leaderelection.JitterFactor, le.RetryPeriod)
	}
	return le, nil
}

// tlsSecrets narrows the Secret informers to TLS certificates, the only
// Secrets a Gateway may name: the cache then holds no other Secret's data,
// and a cluster's many unrelated Secrets cost no memory here.
func tlsSecrets(o *metav1.ListOptions) {
	o.FieldSelector = fields.OneTermEqualSelector("type", "kubernetes.io/tls").String()
}

// opaqueSecrets narrows the policies' Secret informers to Opaque ones,
// the only type a policy may name.
func opaqueSecrets(o *metav1.ListOptions) {
	o.FieldSelector = fields.OneTermEqualSelector("type", string(corev1.SecretTypeOpaque)).String()
}

func (w *Watcher) buildInformers() {
	// No periodic resync: a resync re-delivers every cached object as an
	// update, which would only rebuild an identical snapshot.
	const resync = 0
	strip := cache.TransformFunc(stripManagedFields)
	w.cluster = gwinformers.NewSharedInformerFactoryWithOptions(w.gw, resync, gwinformers.WithTransform(strip))
	w.namespaces = informers.NewSharedInformerFactoryWithOptions(w.core, resync, informers.WithTransform(strip))
	namespaces := w.cfg.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	for _, ns := range namespaces {
		sc := &scope{
			namespace: ns,
			gw: gwinformers.NewSharedInformerFactoryWithOptions(w.gw, resync,
				gwinformers.WithNamespace(ns), gwinformers.WithTransform(strip)),
			core: informers.NewSharedInformerFactoryWithOptions(w.core, resync,
				informers.WithNamespace(ns), informers.WithTransform(strip)),
			secrets: informers.NewSharedInformerFactoryWithOptions(w.core, resync,
				informers.WithNamespace(ns), informers.WithTransform(strip), informers.WithTweakListOptions(tlsSecrets)),
			configMaps: informers.NewSharedInformerFactoryWithOptions(w.core, resync,
				informers.WithNamespace(ns), informers.WithTransform(slimConfigMap)),
		}
		if w.cfg.PoliciesOn() {
			sc.opaque = informers.NewSharedInformerFactoryWithOptions(w.core, resync,
				informers.WithNamespace(ns), informers.WithTransform(strip), informers.WithTweakListOptions(opaqueSecrets))
			sc.policies = dynamicinformer.NewFilteredDynamicSharedInformerFactory(w.dyn, resync, ns, nil)
		}
		if w.watchPods {
			// Narrowed as the sidecar's are: live Pods only, each cached
			// as the few fields meshEndpoints reads.
			sc.pods = informers.NewSharedInformerFactoryWithOptions(w.core, resync,
				informers.WithNamespace(ns), informers.WithTransform(slimPod), informers.WithTweakListOptions(livePods))
		}
		w.scopes = append(w.scopes, sc)
	}

	// Asking a factory for an informer registers it; Start runs those.
	addWith := func(inf cache.SharedIndexInformer, same func(old, cur any) bool) {
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { w.poke() },
			UpdateFunc: func(old, cur any) {
				if same(old, cur) {
					return
				}
				w.poke()
			},
			DeleteFunc: func(any) { w.poke() },
		})
		w.synced = append(w.synced, inf.HasSynced)
	}
	add := func(inf cache.SharedIndexInformer, statusKind bool) {
		addWith(inf, func(old, cur any) bool { return statusKind && onlyStatusChanged(old, cur) })
	}
	add(w.cluster.Gateway().V1().GatewayClasses().Informer(), true)
	add(w.namespaces.Core().V1().Namespaces().Informer(), true)
	for _, s := range w.scopes {
		add(s.gw.Gateway().V1().Gateways().Informer(), true)
		add(s.gw.Gateway().V1().HTTPRoutes().Informer(), true)
		add(s.gw.Gateway().V1().GRPCRoutes().Informer(), true)
		add(s.gw.Gateway().V1beta1().ReferenceGrants().Informer(), false)
		add(s.core.Core().V1().Services().Informer(), false)
		add(s.core.Discovery().V1().EndpointSlices().Informer(), false)
		add(s.secrets.Core().V1().Secrets().Informer(), false)
		add(s.gw.Gateway().V1().BackendTLSPolicies().Informer(), true)
		addWith(s.configMaps.Core().V1().ConfigMaps().Informer(), sameCABundle)
		if s.policies != nil {
			add(s.opaque.Core().V1().Secrets().Informer(), false)
			inf := s.policies.ForResource(PolicyGVR).Informer()
			_ = inf.SetTransform(strip)
			add(inf, true)
		}
		if s.pods != nil {
			// A Pod's status changes often (conditions, container states)
			// without changing what names its identity.
			addWith(s.pods.Core().V1().Pods().Informer(), samePodIdentity)
		}
	}
}

// onlyStatusChanged reports whether an update of a Gateway API object
// changed nothing but its status (or other bookkeeping): the spec bumps
// the generation, and labels, annotations and deletion are compared.
// Translate reads specs, so such an update, most often this edge's own
// status write, needs no new snapshot; rebuilding for it would make every
// status write cost one more swap.
func onlyStatusChanged(old, cur any) bool {
	o, ok1 := old.(metav1.Object)
	c, ok2 := cur.(metav1.Object)
	if !ok1 || !ok2 {
		return false
	}
	return o.GetGeneration() == c.GetGeneration() &&
		maps.Equal(o.GetLabels(), c.GetLabels()) &&
		maps.Equal(o.GetAnnotations(), c.GetAnnotations()) &&
		equality.Semantic.DeepEqual(o.GetDeletionTimestamp(), c.GetDeletionTimestamp())
}

// stripManagedFields drops managedFields before an object is cached: they
// are often as large as the object and nothing here reads them.
func stripManagedFields(obj any) (any, error) {
	if o, err := meta.Accessor(obj); err == nil {
		o.SetManagedFields(nil)
	}
	return obj, nil
}

func (w *Watcher) poke() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *Watcher) factories() []interface {
	Start(<-chan struct{})
	Shutdown()
} {
	fs := []interface {
		Start(<-chan struct{})
		Shutdown()
	}{w.cluster, w.namespaces}
	for _, s := range w.scopes {
		fs = append(fs, s.gw, s.core, s.secrets, s.configMaps)
		if s.policies != nil {
			fs = append(fs, s.opaque, s.policies)
		}
		if s.pods != nil {
			fs = append(fs, s.pods)
		}
	}
	return fs
}

// Run watches until ctx ends, then stops every goroutine it started and
// returns ctx's error. Nothing is delivered until every informer has
// listed its objects, so the first Snapshot is complete, never partial.
// When the API server goes away the caches keep their contents and no
// Snapshot is delivered, so the caller keeps serving the last one; when it
// returns the informers list again and the changes arrive as usual. A
// Watcher runs once.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("kubernetes provider: Run called twice")
	}
	// Close the connections last, when nothing uses them any more.
	defer func() {
		utilnet.CloseIdleConnectionsFor(w.httpClient.Transport)
		w.conns.closeAll()
	}()

	stop := make(chan struct{})
	fs := w.factories()
	for _, f := range fs {
		f.Start(stop)
	}
	defer func() {
		close(stop)
		// Shutdown waits for the informers' goroutines to end.
		for _, f := range fs {
			f.Shutdown()
		}
	}()
	if w.cfg.PoliciesOn() {
		// Without the CRD the policy informer never syncs, so nothing is
		// served from the cluster: say why in words, once, rather than
		// leave it to client-go's retries.
		if _, err := w.core.Discovery().ServerResourcesForGroupVersion(PolicyGVR.GroupVersion().String()); apierrors.IsNotFound(err) {
			w.log.Error("kubernetes provider: the CausewayPolicy CRD is not installed; nothing from the cluster is served until it is (kubectl apply -f examples/kubernetes/gateway-api/crd/), or set providers.kubernetes.policies: false")
		}
	}
	if !cache.WaitForCacheSync(ctx.Done(), w.synced...) {
		return ctx.Err()
	}

	// Status writing and the Lease. The election outlives the status
	// loop: the Lease is released only after the last write has returned,
	// so two replicas never write at once.
	var wg sync.WaitGroup
	electCtx, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	var electWG sync.WaitGroup
	w.told(false) // a follower says so until it leads
	electWG.Go(func() { w.elect(electCtx) })
	wg.Go(func() { w.statusLoop(ctx) })
	defer func() {
		wg.Wait()
		stopElection()
		electWG.Wait()
		w.told(false)
	}()

	w.loop(ctx)
	return ctx.Err()
}

// loop delivers the first snapshot at once, then one per settled burst.
func (w *Watcher) loop(ctx context.Context) {
	debounced(ctx, w.clock, debounce{quiet: w.quiet, max: w.max}, w.changed, func() { w.onSnapshot(w.snapshot()) })
}

// debounced calls flush at once, then once per settled burst of pokes on
// changed, until ctx ends.
func debounced(ctx context.Context, clk clock.Clock, d debounce, changed chan struct{}, flush func()) {
	// Events seen while the caches filled are in the first snapshot.
	select {
	case <-changed:
	default:
	}
	flush()

	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var fire <-chan time.Time
		if timer != nil {
			fire = timer.C()
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
			d.changed(clk.Now())
		case <-fire:
			timer = nil
		}
		due, wait := d.due(clk.Now())
		if timer != nil {
			timer.Stop()
			timer = nil
		}
		switch {
		case due:
			flush()
		case wait > 0:
			timer = clk.NewTimer(wait)
		}
	}
}

// snapshot reads every cache. Each list is copied, so later events do not
// change a Snapshot already delivered; the objects themselves are the
// caches' own, which informers never modify in place (an update replaces
// the object), so sharing them is safe and saves a deep copy of every
// EndpointSlice per snapshot. Lists are sorted by namespace and name so
// that equal states give equal snapshots.
func (w *Watcher) snapshot() *Snapshot {
	s := &Snapshot{}
	all := labels.Everything()
	s.GatewayClasses, _ = w.cluster.Gateway().V1().GatewayClasses().Lister().List(all)
	s.Namespaces, _ = w.namespaces.Core().V1().Namespaces().Lister().List(all)
	for _, sc := range w.scopes {
		gws, _ := sc.gw.Gateway().V1().Gateways().Lister().List(all)
		s.Gateways = append(s.Gateways, gws...)
		hrs, _ := sc.gw.Gateway().V1().HTTPRoutes().Lister().List(all)
		s.HTTPRoutes = append(s.HTTPRoutes, hrs...)
		grs, _ := sc.gw.Gateway().V1().GRPCRoutes().Lister().List(all)
		s.GRPCRoutes = append(s.GRPCRoutes, grs...)
		rgs, _ := sc.gw.Gateway().V1beta1().ReferenceGrants().Lister().List(all)
		s.ReferenceGrants = append(s.ReferenceGrants, rgs...)
		svcs, _ := sc.core.Core().V1().Services().Lister().List(all)
		s.Services = append(s.Services, svcs...)
		eps, _ := sc.core.Discovery().V1().EndpointSlices().Lister().List(all)
		s.EndpointSlices = append(s.EndpointSlices, eps...)
		secs, _ := sc.secrets.Core().V1().Secrets().Lister().List(all)
		s.Secrets = append(s.Secrets, secs...)
		btls, _ := sc.gw.Gateway().V1().BackendTLSPolicies().Lister().List(all)
		s.BackendTLSPolicies = append(s.BackendTLSPolicies, btls...)
		cms, _ := sc.configMaps.Core().V1().ConfigMaps().Lister().List(all)
		s.ConfigMaps = append(s.ConfigMaps, cms...)
		if sc.policies != nil {
			opaque, _ := sc.opaque.Core().V1().Secrets().Lister().List(all)
			s.Secrets = append(s.Secrets, opaque...)
			objs, _ := sc.policies.ForResource(PolicyGVR).Lister().List(all)
			for _, o := range objs {
				p, err := policyFrom(o)
				if err != nil {
					// The CRD's schema makes this unlikely; one bad object
					// must not hide the others.
					w.log.Error("CausewayPolicy unreadable; left out", "error", err.Error())
					continue
				}
				s.Policies = append(s.Policies, p)
			}
		}
		if sc.pods != nil {
			pods, _ := sc.pods.Core().V1().Pods().Lister().List(all)
			s.Pods = append(s.Pods, pods...)
		}
	}
	sortObjects(s.GatewayClasses)
	sortObjects(s.Namespaces)
	sortObjects(s.Gateways)
	sortObjects(s.HTTPRoutes)
	sortObjects(s.GRPCRoutes)
	sortObjects(s.ReferenceGrants)
	sortObjects(s.Services)
	sortObjects(s.EndpointSlices)
	sortObjects(s.Secrets)
	sortObjects(s.Policies)
	sortObjects(s.Pods)
	sortObjects(s.BackendTLSPolicies)
	sortObjects(s.ConfigMaps)
	return s
}

func sortObjects[T metav1.Object](list []T) {
	slices.SortFunc(list, func(a, b T) int {
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})
}

// connTracker dials the Watcher's connections to the API server and
// closes those still open when Run ends.
type connTracker struct {
	dial  func(ctx context.Context, network, addr string) (net.Conn, error)
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

func (t *connTracker) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	dial := t.dial
	if dial == nil {
		// client-go's own dialer settings.
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	c, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: t}
	t.mu.Lock()
	if t.conns == nil {
		t.conns = map[*trackedConn]struct{}{}
	}
	t.conns[tc] = struct{}{}
	t.mu.Unlock()
	return tc, nil
}

func (t *connTracker) closeAll() {
	t.mu.Lock()
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

type trackedConn struct {
	net.Conn
	t *connTracker
}

func (c *trackedConn) Close() error {
	c.t.mu.Lock()
	delete(c.t.conns, c)
	c.t.mu.Unlock()
	return c.Conn.Close()
}

// policyFrom reads a CausewayPolicy out of the dynamic informer's object.
func policyFrom(o runtime.Object) (*CausewayPolicy, error) {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected %T", o)
	}
	b, err := json.Marshal(u.Object)
	if err != nil {
		return nil, fmt.Errorf("CausewayPolicy %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	p := &CausewayPolicy{}
	if err := json.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("CausewayPolicy %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return p, nil
}
