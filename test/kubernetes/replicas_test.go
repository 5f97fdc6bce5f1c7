package kubernetes_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/providers/kubernetes"
)

// replica is one `causeway edge` process of a Deployment's three.
type replica struct {
	name        string // its POD_NAME, the identity it elects under
	addr, admin string
	cmd         *exec.Cmd
	done        chan struct{} // closed when the process has exited
	exitErr     error         // set before done is closed
	log         string
	killed      bool
}

// metric reads one sample of the replica's /metrics: the value of the
// line that starts with series ("" when absent).
func (r *replica) metric(t *testing.T, series string) string {
	t.Helper()
	res, err := http.Get("http://" + r.admin + "/metrics")
	if err != nil {
		t.Fatalf("%s: %v", r.name, err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return v
		}
	}
	return ""
}

// TestReplicas is issue #22's three replicas: every replica serves the
// cluster's routes; exactly one, the holder of the status Lease, writes
// status; killing it (SIGKILL: no Lease released) hands the writing over
// to another replica within the Lease's duration and a retry period; and
// no replica that lives stops serving meanwhile: every request a prober
// sends to a survivor, before, during and after the hand-over, is
// answered by the route's pod. The replicas are `causeway edge`
// processes, as in a Deployment, each with its own POD_NAME.
//
// make test runs it with 30 routes; `make scale-k8s` (CAUSEWAY_SCALE=1)
// with CAUSEWAY_SCALE_ROUTES and CAUSEWAY_SCALE_ENDPOINTS (default 10,000
// and 100,000) and logs each replica's memory, how long the first status
// pass over every route took, and the hand-over's timings.
func TestReplicas(t *testing.T) {
	nRoutes, nEndpoints := 30, 300
	scale := os.Getenv("CAUSEWAY_SCALE") == "1"
	if scale {
		nRoutes, nEndpoints = envInt("CAUSEWAY_SCALE_ROUTES", 10000), envInt("CAUSEWAY_SCALE_ENDPOINTS", 100000)
	}
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	web := startPod(t, "web-replicas", testnetns.Addr(256+95))
	ns := "replicas"
	createScaleObjects(t, c, ns, nRoutes, nEndpoints, web.ip, false)
	lease := ns + "/causeway-causeway-status"
	leaderSeries := `causeway_kubernetes_status_leader{lease="` + lease + `"}`
	writtenSeries := `causeway_kubernetes_status_writes_total{result="written"}`
	failedSeries := `causeway_kubernetes_status_writes_total{result="failed"}`

	dir := t.TempDir()
	bin := testutil.BuildCauseway(t, dir)
	cfg := func(r *replica) string {
		p := filepath.Join(dir, r.name+".yaml")
		if err := os.WriteFile(p, fmt.Appendf(nil, "version: 1\nlisten: {http: %q, admin: %q}\naccess_log: {output: \"off\"}\nproviders:\n  kubernetes: {kubeconfig: %q, namespaces: [%s]}\n",
			r.addr, r.admin, kubeconfig, ns), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var replicas []*replica
	started := time.Now()
	for i := range 3 {
		r := &replica{name: "causeway-edge-" + strconv.Itoa(i), addr: testutil.FreeAddr(t), admin: testutil.FreeAddr(t), done: make(chan struct{})}
		r.log = filepath.Join(dir, r.name+".log")
		logs := must(os.Create(r.log))(t)
		r.cmd = exec.Command(bin, "edge", "-config", cfg(r), "-log-level", "warn")
		r.cmd.Env = append(os.Environ(), "POD_NAME="+r.name, "POD_NAMESPACE="+ns)
		r.cmd.Stdout, r.cmd.Stderr = logs, logs
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { r.exitErr = r.cmd.Wait(); logs.Close(); close(r.done) }()
		t.Cleanup(func() {
			if !r.killed {
				_ = r.cmd.Process.Signal(syscall.SIGTERM)
			}
			select {
			case <-r.done:
			case <-time.After(30 * time.Second):
				_ = r.cmd.Process.Kill()
				<-r.done
				t.Errorf("%s did not stop within 30 s of SIGTERM", r.name)
			}
			if t.Failed() {
				b, _ := os.ReadFile(r.log)
				t.Logf("%s log:\n%s", r.name, b)
			}
		})
		replicas = append(replicas, r)
	}
	for _, r := range replicas {
		eventuallyWithin(t, 10*time.Minute, r.name+" serving the routes", func() bool {
			select {
			case <-r.done:
				b, _ := os.ReadFile(r.log)
				t.Fatalf("%s exited: %v\n%s", r.name, r.exitErr, b)
			default:
			}
			res, err := http.Get("http://" + r.admin + "/healthz")
			if err != nil {
				return false
			}
			res.Body.Close()
			code, s, _ := send(t, r.addr, "h0.example", "/r0/x")
			return code == 200 && s.Pod == web.name
		})
		rss, _ := testutil.ProcStatusKB(r.cmd.Process.Pid, "VmRSS:")
		t.Logf("%s serves every route %s after the replicas started; RSS %.1f MiB", r.name, time.Since(started).Round(time.Millisecond), float64(rss)/1024)
	}

	holder := func() string {
		l, err := c.core.CoordinationV1().Leases(ns).Get(ctx, "causeway-causeway-status", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	var leader *replica
	eventuallyWithin(t, time.Minute, "a replica holding the status Lease", func() bool {
		for _, r := range replicas {
			if r.name == holder() {
				leader = r
			}
		}
		return leader != nil
	})
	// Every route's status written, by the leader alone: the last route
	// by name is written last.
	last := ""
	for i := range nRoutes {
		last = max(last, "r"+strconv.Itoa(i))
	}
	eventuallyWithin(t, 15*time.Minute, "every route's status written", func() bool {
		return routeCondition(t, c, ns, last, "Accepted") != nil
	})
	t.Logf("every route's status written %s after the replicas started", time.Since(started).Round(time.Millisecond))
	// The metrics: the leader says it leads and counts its writes; the
	// others say they follow and wrote nothing.
	writtenBy := func(r *replica) int {
		n, _ := strconv.Atoi(r.metric(t, writtenSeries))
		return n
	}
	checkRoles := func(leader *replica, live []*replica) {
		t.Helper()
		for _, r := range live {
			wantLeads := map[bool]string{true: "1", false: "0"}[r == leader]
			eventuallyWithin(t, 10*time.Second, r.name+"'s leader gauge "+wantLeads, func() bool { return r.metric(t, leaderSeries) == wantLeads })
			if f := r.metric(t, failedSeries); f != "0" {
				t.Errorf("%s counted %s failed status writes", r.name, f)
			}
			if n := writtenBy(r); (r == leader) != (n > 0) {
				t.Errorf("%s (leader %v) counted %d status writes", r.name, r == leader, n)
			}
		}
	}
	checkRoles(leader, replicas)
	if n := writtenBy(leader); n < nRoutes {
		t.Errorf("the leader counted %d status writes for %d routes", n, nRoutes)
	}

	// Probers: each replica is sent requests back to back on a keep-alive
	// connection, until the end; a survivor must answer every one.
	type tally struct{ ok, failed atomic.Int64 }
	tallies := map[*replica]*tally{}
	probeCtx, stopProbes := context.WithCancel(ctx)
	var probes sync.WaitGroup
	var firstFailure sync.Map
	for _, r := range replicas {
		tl := &tally{}
		tallies[r] = tl
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
		probes.Go(func() {
			defer client.CloseIdleConnections()
			for probeCtx.Err() == nil {
				req, _ := http.NewRequestWithContext(probeCtx, http.MethodGet, "http://"+r.addr+"/r0/probe", nil)
				req.Host = "h0.example"
				code := 0
				res, err := client.Do(req)
				if err == nil {
					code = res.StatusCode
					_, err = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				switch {
				case probeCtx.Err() != nil:
				case err == nil && code == 200:
					tl.ok.Add(1)
				default:
					tl.failed.Add(1)
					firstFailure.LoadOrStore(r, fmt.Sprintf("status %d, error %v", code, err))
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopProbes()
			probes.Wait()
		}
	}
	defer stop()

	// A change while the leader lives: served by every replica, its
	// status written.
	change := func(name, path string, live []*replica) {
		t.Helper()
		t0 := time.Now()
		api := c.gw.GatewayV1().HTTPRoutes(ns)
		updateFresh(t, func() (*gatewayv1.HTTPRoute, error) { return api.Get(ctx, name, metav1.GetOptions{}) },
			func(r *gatewayv1.HTTPRoute) { r.Spec.Rules = append(r.Spec.Rules, prefixRule(path, "svc0", "")) },
			func(r *gatewayv1.HTTPRoute) (*gatewayv1.HTTPRoute, error) {
				return api.Update(ctx, r, metav1.UpdateOptions{})
			})
		n, _ := strconv.Atoi(strings.TrimPrefix(name, "r"))
		host := "h" + strconv.Itoa(n%100) + ".example" // as createScaleObjects names it
		for _, r := range live {
			eventuallyWithin(t, time.Minute, r.name+" serving "+path, func() bool {
				code, s, _ := send(t, r.addr, host, path+"/x")
				return code == 200 && s.Pod == web.name
			})
		}
		served := time.Since(t0)
		eventuallyWithin(t, time.Minute, name+"'s status for its new generation", func() bool {
			return routeCondition(t, c, ns, name, "Accepted") != nil
		})
		t.Logf("%s changed: served by every live replica after %s, its status written after %s", name, served.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	}
	change("r1", "/before-handover", replicas)

	// Kill the leader: it releases nothing. Another replica may take the
	// Lease only once it has run out, and must then take it at its next
	// try. client-go times the Lease from when a replica last saw its
	// record change, which it reads once a retry period, jittered up to
	// (1 + JitterFactor) times that: so the hand-over comes no earlier
	// than the duration less a retry period after the kill (the last
	// renewal), and no later than the duration and two jittered retry
	// periods (seeing the last renewal late, then trying late).
	var survivors []*replica
	for _, r := range replicas {
		if r != leader {
			survivors = append(survivors, r)
		}
	}
	leaderWrites := writtenBy(leader)
	killed := time.Now()
	leader.killed = true
	if err := leader.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-leader.done
	jittered := time.Duration((1 + leaderelection.JitterFactor) * float64(kubernetes.DefaultRetryPeriod))
	earliest, latest := kubernetes.DefaultLeaseDuration-kubernetes.DefaultRetryPeriod, kubernetes.DefaultLeaseDuration+2*jittered
	// The slack is for a loaded machine; the hand-over time is logged.
	bound := latest + 5*time.Second
	var next *replica
	eventuallyWithin(t, bound, "another replica holding the Lease", func() bool {
		h := holder()
		for _, r := range survivors {
			if r.name == h {
				next = r
			}
		}
		return next != nil
	})
	handover := time.Since(killed)
	t.Logf("%s killed; %s took the status Lease %s later (Lease duration %s, retry period %s: expected %s to %s)",
		leader.name, next.name, handover.Round(time.Millisecond), kubernetes.DefaultLeaseDuration, kubernetes.DefaultRetryPeriod, earliest, latest)
	if handover < earliest {
		t.Errorf("%s took the Lease %s after the kill, before it could have run out", next.name, handover)
	}
	// The new leader writes, the other survivor still does not.
	before := writtenBy(next)
	change("r2", "/after-handover", survivors)
	checkRoles(next, survivors)
	if n := writtenBy(next); n <= before {
		t.Errorf("the new leader %s counted %d status writes, %d before the change", next.name, n, before)
	}
	t.Logf("status writes: %s %d before it was killed, %s %d after taking over", leader.name, leaderWrites, next.name, writtenBy(next))

	// Every survivor answered every probe, before, during and after.
	stop()
	for _, r := range survivors {
		tl := tallies[r]
		if f, _ := firstFailure.Load(r); tl.failed.Load() > 0 {
			t.Errorf("%s failed %d of %d probes (first: %v)", r.name, tl.failed.Load(), tl.ok.Load()+tl.failed.Load(), f)
		}
		if tl.ok.Load() == 0 {
			t.Errorf("%s answered no probe", r.name)
		}
		t.Logf("%s answered %d probes, %d failed", r.name, tl.ok.Load(), tl.failed.Load())
	}
}
