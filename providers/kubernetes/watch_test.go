package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// docRBAC reads the RBAC that docs/kubernetes.md tells users to install
// (the YAML between the rbac markers), so the tests run the watcher with
// exactly the documented permissions and the document cannot fall behind.
func docRBAC(t *testing.T) (*rbacv1.ClusterRole, *rbacv1.Role) {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(docYAML(t, "rbac")), 4096)
	var cr *rbacv1.ClusterRole
	var role *rbacv1.Role
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		var head metav1.TypeMeta
		err := json.Unmarshal(raw, &head)
		if err != nil {
			t.Fatal(err)
		}
		switch head.Kind {
		case "ClusterRole":
			cr = &rbacv1.ClusterRole{}
			err = json.Unmarshal(raw, cr)
		case "Role":
			role = &rbacv1.Role{}
			err = json.Unmarshal(raw, role)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if cr == nil || role == nil {
		t.Fatal("docs/kubernetes.md's RBAC block needs a ClusterRole and a Role")
	}
	return cr, role
}

// docYAML is the YAML block of docs/kubernetes.md between the markers
// <!-- NAME:begin --> and <!-- NAME:end -->.
func docYAML(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	begin, end := "<!-- "+name+":begin -->", "<!-- "+name+":end -->"
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("docs/kubernetes.md has no %s ... %s block", begin, end)
	}
	block := strings.TrimSpace(doc[i+len(begin) : j])
	return strings.TrimSuffix(strings.TrimPrefix(block, "```yaml"), "```")
}

// grantDocumented binds the documented ClusterRole (less the rules drop
// removes) and the lease Role in leaseNS to user, and returns a function
// that replaces the ClusterRole's rules with the full documented ones.
func grantDocumented(t *testing.T, c clients, user, leaseNS string, drop func(rbacv1.PolicyRule) rbacv1.PolicyRule) (grantAll func()) {
	t.Helper()
	ctx := context.Background()
	cr, role := docRBAC(t)
	full := cr.Rules
	cr.Name = user
	cr.Rules = nil
	for _, r := range full {
		if r = drop(r); len(r.Resources) > 0 {
			cr.Rules = append(cr.Rules, r)
		}
	}
	subject := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
	if _, err := c.core.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.core.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: user},
		Subjects:   subject,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role.Namespace = leaseNS
	if _, err := c.core.RbacV1().Roles(leaseNS).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.core.RbacV1().RoleBindings(leaseNS).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: leaseNS, Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   subject,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return func() {
		cur, err := c.core.RbacV1().ClusterRoles().Get(ctx, user, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Rules = full
		if _, err := c.core.RbacV1().ClusterRoles().Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// The watcher runs with only the documented permissions. While one kind
// (Secrets) cannot be listed, nothing is delivered: a model without the
// certificates would be a partial one. Once it can, the first snapshot
// holds every kind, TLS Secrets only.
func TestNoSnapshotBeforeEveryInformerSynced(t *testing.T) {
	noLeaks(t)
	c := adminClients(t)
	ns := namespace(t, c)
	o := createAll(t, c, ns)
	user := "causeway-" + ns
	grantAll := grantDocumented(t, c, user, ns, func(r rbacv1.PolicyRule) rbacv1.PolicyRule {
		r.Resources = slices.DeleteFunc(slices.Clone(r.Resources), func(s string) bool { return s == "secrets" })
		return r
	})

	restCfg := adminConfig()
	restCfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	r := startWatcher(t, routes.KubernetesProvider{Namespaces: []string{ns}},
		Options{RESTConfig: restCfg, LeaderElection: LeaderElection{Namespace: ns, Identity: "a"}})

	// Long enough for every other informer to list (they do in well under
	// a second) and for the Secret informer to be refused several times.
	time.Sleep(3 * time.Second)
	if n := r.rec.count(); n != 0 {
		t.Fatalf("%d snapshots delivered while Secrets could not be listed", n)
	}

	grantAll()
	s := r.rec.waitFor(t, 60*time.Second, "the first snapshot", func(*Snapshot) bool { return true })
	want := map[string][]string{
		"GatewayClasses":  {"/" + o.class},
		"Gateways":        {ns + "/" + o.gateway},
		"HTTPRoutes":      {ns + "/" + o.httpRoute},
		"GRPCRoutes":      {ns + "/" + o.grpcRoute},
		"ReferenceGrants": {ns + "/" + o.grant},
		"Services":        {ns + "/" + o.service},
		"EndpointSlices":  {ns + "/" + o.slice},
		"Secrets":         {ns + "/" + o.tlsSecret}, // not the other type
		"Policies":        {ns + "/" + o.policy},
	}
	got := map[string][]string{
		"GatewayClasses":  slices.DeleteFunc(names(s.GatewayClasses), func(n string) bool { return n != "/"+o.class }),
		"Gateways":        names(s.Gateways),
		"HTTPRoutes":      names(s.HTTPRoutes),
		"GRPCRoutes":      names(s.GRPCRoutes),
		"ReferenceGrants": names(s.ReferenceGrants),
		"Services":        names(s.Services),
		"EndpointSlices":  names(s.EndpointSlices),
		"Secrets":         names(s.Secrets),
		"Policies":        names(s.Policies),
	}
	for kind, w := range want {
		if !slices.Equal(got[kind], w) {
			t.Errorf("%s = %v, want %v", kind, got[kind], w)
		}
	}
	if a := s.EndpointSlices[0].Endpoints[0].Addresses; !slices.Equal(a, []string{"10.244.1.10"}) {
		t.Errorf("EndpointSlice addresses = %v", a)
	}
	if s.HTTPRoutes[0].ManagedFields != nil {
		t.Errorf("managedFields are cached; they should be dropped")
	}

	// A change after sync arrives as a new snapshot.
	if err := c.core.CoreV1().Services(ns).Delete(context.Background(), o.service, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r.rec.waitFor(t, 30*time.Second, "the Service gone", func(s *Snapshot) bool { return len(s.Services) == 0 })

	// The documented Role is enough to take the Lease.
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := c.core.CoordinationV1().Leases(ns).Get(context.Background(), "causeway-causeway-status", metav1.GetOptions{})
		if err == nil && holder(l) == "a" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Lease was not taken with the documented RBAC: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A watcher scoped to namespaces sees only theirs; GatewayClasses, which
// are cluster-scoped, are seen whatever the scope.
func TestNamespaceScoping(t *testing.T) {
	noLeaks(t)
	c := adminClients(t)
	nsA, nsB, nsC := namespace(t, c), namespace(t, c), namespace(t, c)
	oA, oB, oC := createAll(t, c, nsA), createAll(t, c, nsB), createAll(t, c, nsC)
	tests := []struct {
		name       string
		namespaces []string
		see, hide  []string
	}{
		{"one namespace", []string{nsA}, []string{nsA}, []string{nsB, nsC}},
		{"two namespaces", []string{nsA, nsB}, []string{nsA, nsB}, []string{nsC}},
		{"every namespace", nil, []string{nsA, nsB, nsC}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noLeaks(t)
			r := startWatcher(t, routes.KubernetesProvider{Namespaces: tt.namespaces},
				Options{RESTConfig: adminConfig(), LeaderElection: LeaderElection{Namespace: nsA, Identity: tt.name}})
			s := r.rec.waitFor(t, 60*time.Second, "the first snapshot", func(*Snapshot) bool { return true })
			kinds := map[string][]string{
				"Gateways": names(s.Gateways), "HTTPRoutes": names(s.HTTPRoutes), "GRPCRoutes": names(s.GRPCRoutes),
				"ReferenceGrants": names(s.ReferenceGrants), "Services": names(s.Services),
				"EndpointSlices": names(s.EndpointSlices), "Secrets": names(s.Secrets),
				"Policies": names(s.Policies),
			}
			for kind, got := range kinds {
				for _, ns := range tt.see {
					if len(inNamespace(got, ns)) != 1 {
						t.Errorf("%s in %s: %v, want one", kind, ns, inNamespace(got, ns))
					}
				}
				for _, ns := range tt.hide {
					if n := inNamespace(got, ns); len(n) != 0 {
						t.Errorf("%s: %v seen, outside the scope", kind, n)
					}
				}
			}
			classes := names(s.GatewayClasses)
			for _, o := range []objects{oA, oB, oC} {
				if !slices.Contains(classes, "/"+o.class) {
					t.Errorf("GatewayClass %s missing: cluster-scoped kinds are watched whatever the namespaces", o.class)
				}
			}
			r.stop()
		})
	}
}

// A burst of 200 changes (100 EndpointSlices created, then each updated,
// from 4 writers at once) is delivered as few snapshots, and the last one
// holds the final state of every slice. A snapshot needs a quiet gap of
// Quiet or MaxDelay of changes, so a working debounce gives at most
// burst/Quiet + 1 of them; one snapshot per event would give about 200.
func TestBurstIsDebounced(t *testing.T) {
	noLeaks(t)
	c := adminClients(t)
	ns := namespace(t, c)
	const quiet, maxDelay = 300 * time.Millisecond, 2 * time.Second
	r := startWatcher(t, routes.KubernetesProvider{Namespaces: []string{ns}},
		Options{RESTConfig: adminConfig(), Quiet: quiet, MaxDelay: maxDelay, LeaderElection: LeaderElection{Namespace: ns, Identity: "a"}})
	r.rec.waitFor(t, 60*time.Second, "the first snapshot", func(*Snapshot) bool { return true })
	before := r.rec.count()

	const nSlices, writers = 100, 4
	ctx := context.Background()
	api := c.core.DiscoveryV1().EndpointSlices(ns)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < nSlices; i += writers {
				name := fmt.Sprintf("s-%03d", i)
				es, err := api.Create(ctx, endpointSlice(ns, name, "web", fmt.Sprintf("10.244.2.%d", i+1)), metav1.CreateOptions{})
				if err != nil {
					errs <- err
					return
				}
				es.Endpoints[0].Addresses = []string{fmt.Sprintf("10.244.3.%d", i+1)}
				if _, err := api.Update(ctx, es, metav1.UpdateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	burst := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	final := func(s *Snapshot) bool {
		if len(s.EndpointSlices) != nSlices {
			return false
		}
		for i, es := range s.EndpointSlices {
			if es.Name != fmt.Sprintf("s-%03d", i) || es.Endpoints[0].Addresses[0] != fmt.Sprintf("10.244.3.%d", i+1) {
				return false
			}
		}
		return true
	}
	r.rec.waitFor(t, 30*time.Second, "every slice in its final state", final)
	// Anything still pending would come within MaxDelay.
	time.Sleep(maxDelay + quiet)
	n := r.rec.count() - before
	if !final(r.rec.last()) {
		t.Fatal("a snapshot after the final state does not hold it")
	}
	bound := int(burst/quiet) + 1
	t.Logf("200 changes in %s gave %d snapshots (bound %d)", burst.Round(time.Millisecond), n, bound)
	if n > bound || n >= 50 {
		t.Fatalf("200 changes in %s gave %d snapshots, want at most %d", burst, n, bound)
	}
}

// When the API server goes away the watcher delivers nothing (so the
// caller keeps serving its last snapshot), and when it comes back the
// watcher resyncs and delivers the changes made since.
func TestAPIServerRestart(t *testing.T) {
	// The restarted API server's process is waited for by a goroutine of
	// testk8s's, which outlives the test.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, ignore, goleak.IgnoreAnyFunction("github.com/causewayhq/causeway/internal/testk8s.(*ControlPlane).run.func1"))
	})
	c := adminClients(t)
	ns := namespace(t, c)
	o := createAll(t, c, ns)
	r := startWatcher(t, routes.KubernetesProvider{Namespaces: []string{ns}},
		Options{RESTConfig: adminConfig(), LeaderElection: LeaderElection{Namespace: ns, Identity: "a",
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond}})
	first := r.rec.waitFor(t, 60*time.Second, "the first snapshot", func(s *Snapshot) bool { return len(s.Services) == 1 })

	// The statuses are handed over while the API server is down: they are
	// written once it is back (by a retry, or when the Lease, lost
	// meanwhile, is taken again).
	res := resultFor(t, c, ns, o, "Accepted")
	cp.StopAPIServer()
	r.w.SetResult(res)
	restarted := false
	t.Cleanup(func() {
		if !restarted { // leave the package's control plane usable
			if err := cp.StartAPIServer(); err != nil {
				t.Error(err)
			}
		}
	})
	// Long enough for the watches to break and their retries to fail.
	time.Sleep(5 * time.Second)
	if last := r.rec.last(); last != first {
		t.Fatalf("a snapshot was delivered while the API server was down: %d services", len(last.Services))
	}

	if err := cp.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	// The admin's clients reconnect too (a new client, not to depend on
	// the old one's retry timing).
	c = adminClients(t)
	if _, err := c.core.CoreV1().Services(ns).Create(context.Background(), service(ns, "after"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s := r.rec.waitFor(t, 90*time.Second, "the Service made after the restart", func(s *Snapshot) bool {
		return slices.Contains(names(s.Services), ns+"/after")
	})
	// Nothing else was lost in the resync.
	if !slices.Equal(names(s.Services), []string{ns + "/after", ns + "/" + o.service}) ||
		len(s.Gateways) != 1 || len(s.HTTPRoutes) != 1 || len(s.EndpointSlices) != 1 || len(s.Secrets) != 1 || len(s.Policies) != 1 {
		t.Fatalf("after the restart: services %v, %d gateways, %d routes, %d slices, %d secrets",
			names(s.Services), len(s.Gateways), len(s.HTTPRoutes), len(s.EndpointSlices), len(s.Secrets))
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		gc, err := c.gw.GatewayV1().GatewayClasses().Get(context.Background(), o.class, metav1.GetOptions{})
		if err == nil && got1(gc.Status.Conditions).Reason == "Accepted" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the status handed over during the outage was not written after it: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A Watcher is also built from a kubeconfig file, the way the routes file
// names one.
func TestKubeconfig(t *testing.T) {
	noLeaks(t)
	path, err := cp.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	c := adminClients(t)
	ns := namespace(t, c)
	if _, err := c.core.CoreV1().Services(ns).Create(context.Background(), service(ns, "web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := startWatcher(t, routes.KubernetesProvider{Kubeconfig: path, Namespaces: []string{ns}},
		Options{LeaderElection: LeaderElection{Namespace: ns, Identity: "a"}})
	r.rec.waitFor(t, 60*time.Second, "the Service", func(s *Snapshot) bool { return len(s.Services) == 1 })
}

func TestNewRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	bad := dir + "/kubeconfig"
	if err := os.WriteFile(bad, []byte("not: [a kubeconfig"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := adminConfig()
	cb := func(*Snapshot) {}
	tests := []struct {
		name     string
		cfg      routes.KubernetesProvider
		callback func(*Snapshot)
		opts     Options
		want     string
	}{
		{"no callback", routes.KubernetesProvider{}, nil, Options{RESTConfig: good}, "no snapshot callback"},
		{"missing kubeconfig", routes.KubernetesProvider{Kubeconfig: dir + "/none"}, cb, Options{}, "kubeconfig " + dir + "/none"},
		{"broken kubeconfig", routes.KubernetesProvider{Kubeconfig: bad}, cb, Options{}, "kubeconfig " + bad},
		{"lease shorter than renewal", routes.KubernetesProvider{}, cb,
			Options{RESTConfig: good, LeaderElection: LeaderElection{LeaseDuration: time.Second, RenewDeadline: 2 * time.Second}}, "lease timings"},
		{"renewal shorter than retry", routes.KubernetesProvider{}, cb,
			Options{RESTConfig: good, LeaderElection: LeaderElection{RenewDeadline: time.Second, RetryPeriod: 3 * time.Second}}, "lease timings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, tt.callback, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	t.Run("lease per gateway set", func(t *testing.T) {
		name := func(gws ...string) string {
			w, err := New(routes.KubernetesProvider{GatewayClass: "edge", Gateways: gws}, cb, Options{RESTConfig: good})
			if err != nil {
				t.Fatal(err)
			}
			return w.election.LeaseName
		}
		all, a, b, ab, ba := name(), name("infra/a"), name("infra/b"), name("infra/a", "infra/b"), name("infra/b", "infra/a")
		if all != "causeway-edge-status" {
			t.Fatalf("every Gateway: lease %q", all)
		}
		if len(slices.Compact(slices.Sorted(slices.Values([]string{all, a, b, ab})))) != 4 || ab != ba {
			t.Fatalf("leases: all %q, a %q, b %q, a+b %q, b+a %q: want one per set, whatever the order", all, a, b, ab, ba)
		}
		if !strings.HasPrefix(a, "causeway-edge-") || !strings.HasSuffix(a, "-status") || len(a) > 63 {
			t.Fatalf("lease %q", a)
		}
	})
	t.Run("defaults", func(t *testing.T) {
		t.Setenv("POD_NAME", "edge-0")
		t.Setenv("POD_NAMESPACE", "edge")
		w, err := New(routes.KubernetesProvider{}, cb, Options{RESTConfig: good})
		if err != nil {
			t.Fatal(err)
		}
		le := w.election
		if le.LeaseName != "causeway-causeway-status" || le.Namespace != "edge" || le.Identity != "edge-0" ||
			le.LeaseDuration != DefaultLeaseDuration || le.RenewDeadline != DefaultRenewDeadline || le.RetryPeriod != DefaultRetryPeriod {
			t.Fatalf("defaults: %+v", le)
		}
	})
}

func TestOnlyStatusChanged(t *testing.T) {
	base := func() *gatewayv1.Gateway {
		g := gateway("ns", "gw", "c")
		g.Generation = 1
		g.Labels = map[string]string{"a": "1"}
		g.Annotations = map[string]string{"b": "2"}
		return g
	}
	now := metav1.Now()
	tests := []struct {
		name   string
		change func(*gatewayv1.Gateway)
		only   bool
	}{
		{"status", func(g *gatewayv1.Gateway) { g.Status.Conditions = []metav1.Condition{{Type: "Accepted"}} }, true},
		{"resourceVersion", func(g *gatewayv1.Gateway) { g.ResourceVersion = "9" }, true},
		{"spec (generation)", func(g *gatewayv1.Gateway) { g.Generation = 2 }, false},
		{"labels", func(g *gatewayv1.Gateway) { g.Labels["a"] = "2" }, false},
		{"annotations", func(g *gatewayv1.Gateway) { g.Annotations = nil }, false},
		{"deletion", func(g *gatewayv1.Gateway) { g.DeletionTimestamp = &now }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := base()
			tt.change(cur)
			if got := onlyStatusChanged(base(), cur); got != tt.only {
				t.Fatalf("onlyStatusChanged = %v, want %v", got, tt.only)
			}
		})
	}
}

// A status write, which every replica sees as an update, makes no new
// snapshot; a change to the spec or the labels does.
func TestStatusUpdatesDoNotRebuild(t *testing.T) {
	noLeaks(t)
	c := adminClients(t)
	ctx := context.Background()
	ns := namespace(t, c)
	o := createAll(t, c, ns)
	const quiet, maxDelay = 50 * time.Millisecond, 200 * time.Millisecond
	r := startWatcher(t, routes.KubernetesProvider{Namespaces: []string{ns}},
		Options{RESTConfig: adminConfig(), Quiet: quiet, MaxDelay: maxDelay, LeaderElection: LeaderElection{Namespace: ns, Identity: "a"}})
	r.rec.waitFor(t, 60*time.Second, "the first snapshot", func(*Snapshot) bool { return true })

	gws := c.gw.GatewayV1().Gateways(ns)
	gw, err := gws.Get(ctx, o.gateway, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := r.rec.count()
	gw.Status.Conditions = []metav1.Condition{cond("Accepted", "True", "Accepted", 1, t0)}
	if gw, err = gws.UpdateStatus(ctx, gw, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The watch event arrives in milliseconds; a snapshot would follow
	// within maxDelay.
	time.Sleep(time.Second)
	if n := r.rec.count(); n != before {
		t.Fatalf("a status update made %d snapshots", n-before)
	}

	gw.Labels = map[string]string{"team": "web"}
	if _, err = gws.Update(ctx, gw, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.rec.waitFor(t, 30*time.Second, "the Gateway's new label", func(s *Snapshot) bool {
		return len(s.Gateways) == 1 && s.Gateways[0].Labels["team"] == "web"
	})
}

// With policies off, neither CausewayPolicies nor Opaque Secrets are
// watched: a cluster without the CRD works as before, and the edge holds
// no Secret a policy could have named. With them on, an Opaque Secret is
// seen and a Secret of another type still is not.
func TestPoliciesOff(t *testing.T) {
	noLeaks(t)
	c := adminClients(t)
	ns := namespace(t, c)
	o := createAll(t, c, ns)
	if _, err := c.core.CoreV1().Secrets(ns).Create(context.Background(), secret(ns, "policy-keys", corev1.SecretTypeOpaque), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		on                bool
		secrets, policies []string
	}{
		{false, []string{ns + "/" + o.tlsSecret}, nil},
		{true, []string{ns + "/" + o.tlsSecret, ns + "/policy-keys"}, []string{ns + "/" + o.policy}},
	} {
		r := startWatcher(t, routes.KubernetesProvider{Namespaces: []string{ns}, Policies: &tc.on},
			Options{RESTConfig: adminConfig(), LeaderElection: LeaderElection{Namespace: ns, Identity: fmt.Sprint(tc.on)}})
		s := r.rec.waitFor(t, 60*time.Second, "the first snapshot", func(*Snapshot) bool { return true })
		if got := names(s.Secrets); !slices.Equal(got, tc.secrets) {
			t.Errorf("policies %v: Secrets %v, want %v", tc.on, got, tc.secrets)
		}
		if got := names(s.Policies); !slices.Equal(got, tc.policies) {
			t.Errorf("policies %v: Policies %v, want %v", tc.on, got, tc.policies)
		}
		r.stop()
	}
}

// Two edges outside a pod (no POD_NAME) on one machine, or in one
// process, must not share a Lease identity: a record naming it would make
// both the status writer. $POD_NAME, unique per pod, is taken as it is.
func TestLeaseIdentity(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, podName string
		wantPrefix    string
		unique        bool
	}{
		{"pod name", "causeway-7d9f-abcde", "causeway-7d9f-abcde", false},
		{"host name outside a pod", "", host + "_", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("POD_NAME", tt.podName)
			seen := map[string]bool{}
			for range 50 {
				le, err := electionDefaults(routes.KubernetesProvider{GatewayClass: "causeway"}, LeaderElection{})
				if err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(le.Identity, tt.wantPrefix) {
					t.Fatalf("identity %q, want it to start with %q", le.Identity, tt.wantPrefix)
				}
				seen[le.Identity] = true
			}
			if want := map[bool]int{true: 50, false: 1}[tt.unique]; len(seen) != want {
				t.Fatalf("%d distinct identities in 50, want %d", len(seen), want)
			}
		})
	}
}
