package conformance

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// podRunner plays the parts of a cluster that a bare API server lacks,
// for the suite's backends only:
//   - the ServiceAccount controller: every namespace gets "default", which
//     Pod admission needs;
//   - the Deployment controller: a Deployment gets its replicas as Pods;
//   - the kubelet: each Pod of the suite's echo image runs the suite's own
//     echo backend (echo-basic) as a process in a network namespace of its
//     own, with the Pod's address, name and namespace, and its Secret and
//     ConfigMap volumes as files; its status says Running and Ready once
//     the process answers;
//   - the EndpointSlice controller: each Service with a selector gets one
//     slice of its ready Pods.
//
// Pods of other images (the suite's CoreDNS, for mesh and DNS features the
// edge does not claim) are marked Ready with nothing behind them, so the
// suite's readiness wait can finish; no test the edge claims sends to them.
type podRunner struct {
	cs   kubernetes.Interface
	echo string // the echo-basic binary
	dir  string // per-Pod volumes
	log  *slog.Logger

	mu     sync.Mutex
	procs  map[types.UID]*pod
	nextIP int
	poke   chan struct{}
}

// podNetwork is where Pod addresses come from: outside the test
// namespace's own 10.244.0.0/16 (all local to it), routed to each Pod's
// veth.
const podNetwork = "10.245"

const managedBy = "conformance.causeway.dev"

// nodeName is the one Node every Pod runs on; its "kubelet" serves their
// logs on nodeAddress:kubeletPort, where the API server asks for them.
const (
	nodeName    = "conformance-node"
	nodeAddress = "10.244.0.1"
	kubeletPort = 10250
)

func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func newPodRunner(cs kubernetes.Interface, echo, dir string, log *slog.Logger) *podRunner {
	return &podRunner{cs: cs, echo: echo, dir: dir, log: log, procs: map[types.UID]*pod{}, poke: make(chan struct{}, 1)}
}

// run reconciles until ctx ends, then stops every Pod's process.
func (r *podRunner) run(ctx context.Context) {
	f := informers.NewSharedInformerFactory(r.cs, 0)
	deps := f.Apps().V1().Deployments()
	pods := f.Core().V1().Pods()
	svcs := f.Core().V1().Services()
	nss := f.Core().V1().Namespaces()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.kick() },
		UpdateFunc: func(any, any) { r.kick() },
		DeleteFunc: func(any) { r.kick() },
	}
	for _, i := range []cache.SharedIndexInformer{deps.Informer(), pods.Informer(), svcs.Informer(), nss.Informer()} {
		_, _ = i.AddEventHandler(h)
	}
	if err := r.node(ctx); err != nil {
		r.log.Error("making the Node", "err", err)
	}
	logs, err := r.serveLogs()
	if err != nil {
		r.log.Error("serving Pod logs", "err", err)
	} else {
		defer logs.Close()
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	f.WaitForCacheSync(ctx.Done())
	defer r.stopAll()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.poke:
		case <-tick.C:
		}
		r.reconcile(ctx, deps.Lister().List, pods.Lister().List, svcs.Lister().List, nss.Lister().List)
	}
}

func (r *podRunner) kick() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

func (r *podRunner) reconcile(ctx context.Context,
	listDeps func(labels.Selector) ([]*appsv1.Deployment, error),
	listPods func(labels.Selector) ([]*corev1.Pod, error),
	listSvcs func(labels.Selector) ([]*corev1.Service, error),
	listNS func(labels.Selector) ([]*corev1.Namespace, error),
) {
	all := labels.Everything()
	nss, _ := listNS(all)
	for _, ns := range nss {
		if ns.Status.Phase == corev1.NamespaceActive {
			r.serviceAccount(ctx, ns.Name)
		}
	}
	deps, _ := listDeps(all)
	pods, _ := listPods(all)
	for _, d := range deps {
		r.deployment(ctx, d, pods)
	}
	// Pods of a Deployment that is gone (no garbage collector runs here).
	for _, p := range pods {
		if owner := metav1.GetControllerOf(p); owner != nil && owner.Kind == "Deployment" && p.DeletionTimestamp == nil {
			if !slices.ContainsFunc(deps, func(d *appsv1.Deployment) bool { return d.UID == owner.UID }) {
				_ = r.cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
			}
		}
	}
	live := map[types.UID]bool{}
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			// Without a kubelet nothing would ever finish the deletion.
			_ = r.cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
			continue
		}
		live[p.UID] = true
		r.kubelet(ctx, p)
	}
	r.mu.Lock()
	for uid, pd := range r.procs {
		if !live[uid] {
			stop(pd.cmd)
			delete(r.procs, uid)
		}
	}
	r.mu.Unlock()
	svcs, _ := listSvcs(all)
	pods, _ = listPods(all)
	for _, s := range svcs {
		r.endpointSlice(ctx, s, pods)
	}
}

func (r *podRunner) serviceAccount(ctx context.Context, ns string) {
	if _, err := r.cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); apierrors.IsNotFound(err) {
		_, _ = r.cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	}
}

func (r *podRunner) deployment(ctx context.Context, d *appsv1.Deployment, pods []*corev1.Pod) {
	var mine []*corev1.Pod
	for _, p := range pods {
		if owner := metav1.GetControllerOf(p); owner != nil && owner.UID == d.UID && p.DeletionTimestamp == nil {
			mine = append(mine, p)
		}
	}
	want := 1
	if d.Spec.Replicas != nil {
		want = int(*d.Spec.Replicas)
	}
	for i := len(mine); i < want; i++ {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				// As a ReplicaSet names them: the suite takes the backend's
				// name from a Pod's by dropping the last two parts.
				Name:            fmt.Sprintf("%s-%s-%s", d.Name, hash(string(d.UID))[:10], strconv.FormatUint(rand.Uint64(), 36)[:5]),
				Namespace:       d.Namespace,
				Labels:          maps.Clone(d.Spec.Template.Labels),
				Annotations:     maps.Clone(d.Spec.Template.Annotations),
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))},
			},
			Spec: *d.Spec.Template.Spec.DeepCopy(),
		}
		p.Spec.NodeName = nodeName
		if _, err := r.cs.CoreV1().Pods(d.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			r.log.Warn("creating a Deployment's Pod", "deployment", d.Namespace+"/"+d.Name, "err", err)
		}
	}
	for _, p := range mine[min(want, len(mine)):] {
		_ = r.cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	}
}

// pod is one Pod this runner started: its address and echo process
// (nil when nothing runs behind it).
type pod struct {
	ip    string
	idx   int // names its veth
	cmd   *exec.Cmd
	port  int
	ready bool
}

// kubelet starts a Pod that has no process yet and, on a later pass,
// reports it Running and Ready once it answers. It never blocks for long:
// one slow Pod must not hold the others back.
func (r *podRunner) kubelet(ctx context.Context, p *corev1.Pod) {
	r.mu.Lock()
	pd := r.procs[p.UID]
	if pd == nil {
		r.nextIP++
		pd = &pod{idx: r.nextIP, ip: fmt.Sprintf("%s.%d.%d", podNetwork, r.nextIP/250, r.nextIP%250+2)}
		r.procs[p.UID] = pd
	}
	r.mu.Unlock()
	echo := len(p.Spec.Containers) > 0 && strings.Contains(p.Spec.Containers[0].Image, "echo-basic")
	switch {
	case pd.ready:
		return
	case echo && pd.cmd == nil:
		cmd, err := r.start(p, pd.ip, pd.idx)
		if err != nil {
			r.log.Warn("starting a Pod", "pod", p.Namespace+"/"+p.Name, "err", err)
			return
		}
		pd.cmd, pd.port = cmd, 3000
		if ports := p.Spec.Containers[0].Ports; len(ports) > 0 {
			pd.port = int(ports[0].ContainerPort)
		}
		return
	case echo:
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(pd.ip, strconv.Itoa(pd.port)), 200*time.Millisecond)
		if err != nil {
			return // a later pass looks again
		}
		conn.Close()
	}
	now := metav1.Now()
	st := p.DeepCopy()
	st.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		PodIP:     pd.ip,
		PodIPs:    []corev1.PodIP{{IP: pd.ip}},
		HostIP:    "10.244.0.1",
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
	}
	for _, c := range p.Spec.Containers {
		st.Status.ContainerStatuses = append(st.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: new(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	if _, err := r.cs.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, st, metav1.UpdateOptions{}); err != nil {
		r.log.Warn("writing a Pod's status", "pod", p.Namespace+"/"+p.Name, "err", err)
		return
	}
	pd.ready = true
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// start runs echo-basic for p in a new network namespace joined to the
// test's by a veth pair.
func (r *podRunner) start(p *corev1.Pod, ip string, n int) (*exec.Cmd, error) {
	c := p.Spec.Containers[0]
	env, err := r.env(p, c)
	if err != nil {
		return nil, err
	}
	// The child waits for its end of the pair, addresses it, and becomes
	// echo-basic; the parent makes the pair once the child's namespace
	// exists.
	script := fmt.Sprintf(`set -e
while ! ip link show eth0 >/dev/null 2>&1; do sleep 0.02; done
ip link set lo up
ip addr add %[1]s/32 dev eth0
ip link set eth0 up
ip route add 10.244.0.1/32 dev eth0
ip route add default via 10.244.0.1 dev eth0 onlink
exec %[2]q`, ip, r.echo)
	cmd := exec.Command("unshare", "--net", "--", "/bin/sh", "-c", script)
	cmd.Env = env
	logf, err := os.Create(filepath.Join(r.dir, p.Namespace+"_"+p.Name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() { _ = cmd.Wait(); logf.Close() }()
	// The peer must go into the child's namespace, which exists only once
	// unshare has made it: until then the PID is still in ours, and the
	// peer would land here.
	own, _ := os.Readlink("/proc/self/ns/net")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)); err == nil && theirs != own {
			break
		}
		if time.Now().After(deadline) {
			stop(cmd)
			return nil, errors.New("the Pod's network namespace was not made")
		}
	}
	host := fmt.Sprintf("cwp%d", n)
	for _, args := range [][]string{
		{"link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", strconv.Itoa(cmd.Process.Pid)},
		{"link", "set", host, "up"},
		{"route", "add", ip + "/32", "dev", host},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			stop(cmd)
			return nil, fmt.Errorf("ip %v: %w: %s", args, err, out)
		}
	}
	return cmd, nil
}

// env is the container's environment as a kubelet would make it: values,
// fieldRefs, and volume paths rewritten to where this runner wrote the
// volumes.
func (r *podRunner) env(p *corev1.Pod, c corev1.Container) ([]string, error) {
	mounts := map[string]string{} // mountPath -> local dir
	for _, m := range c.VolumeMounts {
		for _, v := range p.Spec.Volumes {
			if v.Name != m.Name || (v.Secret == nil && v.ConfigMap == nil) {
				continue
			}
			dir := filepath.Join(r.dir, string(p.UID), v.Name)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, err
			}
			files := map[string][]byte{}
			var items []corev1.KeyToPath
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if v.Secret != nil {
				s, err := r.cs.CoreV1().Secrets(p.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
				if err != nil {
					cancel()
					return nil, err // a kubelet waits for the Secret too
				}
				files, items = s.Data, v.Secret.Items
			} else {
				cm, err := r.cs.CoreV1().ConfigMaps(p.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
				if err != nil {
					cancel()
					return nil, err
				}
				for k, v := range cm.Data {
					files[k] = []byte(v)
				}
				items = v.ConfigMap.Items
			}
			cancel()
			if len(items) > 0 {
				picked := map[string][]byte{}
				for _, it := range items {
					picked[it.Path] = files[it.Key]
				}
				files = picked
			}
			for k, data := range files {
				if err := os.WriteFile(filepath.Join(dir, k), data, 0o600); err != nil {
					return nil, err
				}
			}
			mounts[m.MountPath] = dir
		}
	}
	env := []string{"PATH=" + os.Getenv("PATH")}
	for _, e := range c.Env {
		v := e.Value
		if f := e.ValueFrom; f != nil && f.FieldRef != nil {
			switch f.FieldRef.FieldPath {
			case "metadata.name":
				v = p.Name
			case "metadata.namespace":
				v = p.Namespace
			case "spec.serviceAccountName":
				v = p.Spec.ServiceAccountName
			}
		}
		for mp, dir := range mounts {
			if strings.HasPrefix(v, mp+"/") {
				v = dir + strings.TrimPrefix(v, mp)
			}
		}
		env = append(env, e.Name+"="+v)
	}
	return env, nil
}

func stop(cmd *exec.Cmd) {
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
}

func (r *podRunner) stopAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for uid, pd := range r.procs {
		stop(pd.cmd)
		delete(r.procs, uid)
	}
}

// endpointSlice writes the one slice of a Service with a selector: its
// ready Pods, with each Service port's target resolved.
func (r *podRunner) endpointSlice(ctx context.Context, s *corev1.Service, pods []*corev1.Pod) {
	if len(s.Spec.Selector) == 0 || s.DeletionTimestamp != nil {
		return
	}
	sel := labels.SelectorFromSet(s.Spec.Selector)
	var members []*corev1.Pod
	for _, p := range pods {
		if p.Namespace == s.Namespace && p.DeletionTimestamp == nil && p.Status.PodIP != "" && podReady(p) && sel.Matches(labels.Set(p.Labels)) {
			members = append(members, p)
		}
	}
	slices.SortFunc(members, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	want := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      s.Name + "-conformance",
			Namespace: s.Namespace,
			Labels:    map[string]string{discoveryv1.LabelServiceName: s.Name, discoveryv1.LabelManagedBy: managedBy},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: s.Name, UID: s.UID,
				Controller: new(true), BlockOwnerDeletion: new(true)}},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, sp := range s.Spec.Ports {
		port := sp.TargetPort.IntVal
		if sp.TargetPort.Type == intstr.String && len(members) > 0 {
			port = 0
			for _, c := range members[0].Spec.Containers {
				for _, cp := range c.Ports {
					if cp.Name == sp.TargetPort.StrVal {
						port = cp.ContainerPort
					}
				}
			}
		}
		if port == 0 {
			port = sp.Port
		}
		want.Ports = append(want.Ports, discoveryv1.EndpointPort{Name: new(sp.Name), Port: new(port), Protocol: new(sp.Protocol), AppProtocol: sp.AppProtocol})
	}
	for _, p := range members {
		want.Endpoints = append(want.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{p.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: new(true), Serving: new(true), Terminating: new(false)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
			NodeName:   new(p.Spec.NodeName),
		})
	}
	api := r.cs.DiscoveryV1().EndpointSlices(s.Namespace)
	old, err := api.Get(ctx, want.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = api.Create(ctx, want, metav1.CreateOptions{})
	case err == nil:
		if endpointsEqual(old, want) {
			return
		}
		old.Endpoints, old.Ports = want.Endpoints, want.Ports
		_, err = api.Update(ctx, old, metav1.UpdateOptions{})
	}
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
		r.log.Warn("writing an EndpointSlice", "service", s.Namespace+"/"+s.Name, "err", err)
	}
}

func endpointsEqual(a, b *discoveryv1.EndpointSlice) bool {
	key := func(s *discoveryv1.EndpointSlice) string {
		var parts []string
		for _, e := range s.Endpoints {
			parts = append(parts, strings.Join(e.Addresses, ","))
		}
		for _, p := range s.Ports {
			parts = append(parts, fmt.Sprintf("%s:%d", *p.Name, *p.Port))
		}
		return strings.Join(parts, "|")
	}
	return key(a) == key(b)
}

// node makes the Node the Pods run on, Ready, with the address and port
// of the log server.
func (r *podRunner) node(ctx context.Context) error {
	n, err := r.cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	n.Status = corev1.NodeStatus{
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeAddress}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: kubeletPort}},
		Conditions:      []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: now, LastTransitionTime: now}},
	}
	_, err = r.cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

// serveLogs answers the API server's pods/log requests
// (/containerLogs/NAMESPACE/POD/CONTAINER) with what the Pod's process
// wrote, as a kubelet does. The API server does not check a kubelet's
// certificate unless it is given a CA for it, so a self-signed one does.
func (r *podRunner) serveLogs() (*http.Server, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: nodeName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP(nodeAddress)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(cryptorand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ln, err := tls.Listen("tcp", net.JoinHostPort(nodeAddress, strconv.Itoa(kubeletPort)), &tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", func(w http.ResponseWriter, req *http.Request) {
		ns, pod := req.PathValue("ns"), req.PathValue("pod")
		// Kubernetes names hold no "/" or "_", so the file name is the
		// Pod's alone.
		data, err := os.ReadFile(filepath.Join(r.dir, ns+"_"+pod+".log"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(data)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, nil
}
