package kubernetes_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/providers/kubernetes"
	"github.com/causewayhq/causeway/routes"
)

// TestScale measures what issue #22 asks: with many HTTPRoutes and
// endpoints in the API server, the time from an object change to the
// change being served (p50, p99), and the edge's memory per route and per
// endpoint. It is a measurement, not a pass/fail check on time, and takes
// minutes: `make scale-k8s` runs it (CAUSEWAY_SCALE=1), with
// CAUSEWAY_SCALE_ROUTES (default 10000) and CAUSEWAY_SCALE_ENDPOINTS
// (default 100000); CAUSEWAY_SCALE_CHANGES (default 100) is how many
// changes of each kind are timed, and CAUSEWAY_SCALE_CPUPROFILE names a file
// that gets a CPU profile of the route changes alone.
func TestScale(t *testing.T) {
	if os.Getenv("CAUSEWAY_SCALE") != "1" {
		t.Skip("a scale measurement: make scale-k8s runs it")
	}
	nRoutes, nEndpoints := envInt("CAUSEWAY_SCALE_ROUTES", 10000), envInt("CAUSEWAY_SCALE_ENDPOINTS", 100000)
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	startPod(t, "web-1", testnetns.Addr(256+1))
	ns := "scale"
	// CAUSEWAY_SCALE_POLICY=1 puts a Gateway-wide CausewayPolicy (an
	// inline per-client limit) over every route, so the figures include
	// building and checking it with each snapshot.
	withPolicy := os.Getenv("CAUSEWAY_SCALE_POLICY") == "1"
	nServices := createScaleObjects(t, c, ns, nRoutes, nEndpoints, testnetns.Addr(256+1), withPolicy)
	const perSlice = scalePerSlice
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	e := serveEdge(t, edgeFile(t, kubeconfig, false, ns))
	addr := e.Addr("http")
	start := time.Now()
	eventuallyWithin(t, 10*time.Minute, "the first route served", func() bool {
		code, _, _ := send(t, addr, "h0.example", "/r0/x")
		return code == 200
	})
	t.Logf("first complete model served %s after the edge started", time.Since(start).Round(time.Millisecond))
	if withPolicy {
		// The figures count only if the policy is applied, not refused:
		// its limit is on the answers.
		var res *http.Response
		eventuallyWithin(t, 5*time.Minute, "the policy applied", func() bool {
			req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/r0/x", nil)
			req.Host = "h0.example"
			var err error
			if res, err = http.DefaultClient.Do(req); err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			return res.Header.Get("RateLimit-Limit") != ""
		})
		t.Logf("the policy's limit on the answers %s after the edge started", time.Since(start).Round(time.Millisecond))
		// Its status is written before the routes', so its author does not
		// wait behind 10,000 route statuses.
		eventuallyWithin(t, time.Minute, "the policy's status", func() bool {
			a := policyAccepted(t, c, ns, "gw-limits")
			return a != nil && a.Status == metav1.ConditionTrue
		})
		t.Logf("the policy's Accepted status %s after the edge started", time.Since(start).Round(time.Millisecond))
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapInuse) - float64(before.HeapInuse)
	t.Logf("edge heap in use: %.1f MiB (%.1f KiB per route and its share of endpoints; %d routes, %d endpoints)",
		heap/(1<<20), heap/1024/float64(nRoutes), nRoutes, nServices*perSlice)

	// Change to served: a route gains a path, and the edge is polled until
	// it serves it. With 30 changes the p99 was the slowest one; 100 make
	// it a percentile and still take a couple of minutes.
	changes := envInt("CAUSEWAY_SCALE_CHANGES", 100)
	var lat []time.Duration
	profileDone := func() {}
	if p := os.Getenv("CAUSEWAY_SCALE_CPUPROFILE"); p != "" {
		// The edge runs in this process: the profile is the edge's
		// (provider, translation, build), the test's polling and the
		// API server's client, without the objects' creation.
		out := must(os.Create(p))(t)
		if err := pprof.StartCPUProfile(out); err != nil {
			t.Fatal(err)
		}
		stopped := false
		stop := func() {
			if !stopped {
				stopped = true
				pprof.StopCPUProfile()
				out.Close()
				t.Logf("CPU profile of the route changes in %s", p)
			}
		}
		defer stop() // also when a change fails
		profileDone = stop
	}
	for i := 0; i < changes; i++ {
		name := "r" + strconv.Itoa(i*97%nRoutes)
		host := "h" + strconv.Itoa(i*97%nRoutes%100) + ".example"
		path := "/changed" + strconv.Itoa(i)
		t0 := time.Now()
		t.Logf("change %d at %s", i, t0.Format("15:04:05.000"))
		api := c.gw.GatewayV1().HTTPRoutes(ns)
		updateFresh(t, func() (*gatewayv1.HTTPRoute, error) { return api.Get(ctx, name, metav1.GetOptions{}) },
			func(r *gatewayv1.HTTPRoute) { r.Spec.Rules = append(r.Spec.Rules, prefixRule(path, "svc0", "")) },
			func(r *gatewayv1.HTTPRoute) (*gatewayv1.HTTPRoute, error) {
				return api.Update(ctx, r, metav1.UpdateOptions{})
			})
		eventuallyWithin(t, time.Minute, "change "+strconv.Itoa(i), func() bool {
			code, _, _ := send(t, addr, host, path+"/x")
			return code == 200
		})
		lat = append(lat, time.Since(t0))
	}
	logLatencies(t, "change to served", lat)
	profileDone()

	// Endpoint change to served: Service 0's one pod is replaced by
	// another and back, and the edge is polled until the new pod answers.
	// Only endpoints change, so the edge updates its upstream in place.
	pods := []pod{{"web-1", testnetns.Addr(256 + 1)}, startPod(t, "web-scale-2", testnetns.Addr(256+90))}
	lat = lat[:0]
	for i := 0; i < changes; i++ {
		to := pods[(i+1)%2]
		t0 := time.Now()
		api := c.core.DiscoveryV1().EndpointSlices(ns)
		updateFresh(t, func() (*discoveryv1.EndpointSlice, error) { return api.Get(ctx, "svc0-1", metav1.GetOptions{}) },
			func(es *discoveryv1.EndpointSlice) {
				es.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{to.ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}}
			},
			func(es *discoveryv1.EndpointSlice) (*discoveryv1.EndpointSlice, error) {
				return api.Update(ctx, es, metav1.UpdateOptions{})
			})
		eventuallyWithin(t, time.Minute, "endpoint change "+strconv.Itoa(i), func() bool {
			code, s, _ := send(t, addr, "h0.example", "/r0/x")
			return code == 200 && s.Pod == to.name
		})
		lat = append(lat, time.Since(t0))
	}
	logLatencies(t, "endpoint change to served", lat)
}

// logLatencies logs the p50, p99 and maximum of lat, which it sorts.
func logLatencies(t *testing.T, what string, lat []time.Duration) {
	t.Helper()
	slices.Sort(lat)
	t.Logf("%s over %d changes: p50 %s, p99 %s, max %s", what, len(lat),
		lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*99/100].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
}

// countedAddr is a pod address that is only counted, never dialled:
// 10.100.0.0 onwards, outside the namespace's local 10.244.0.0/16.
func countedAddr(n int) string {
	return fmt.Sprintf("10.%d.%d.%d", 100+n>>16, n>>8&0xff, n&0xff)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// parallel runs f(0..n-1) on 16 workers and fails the test on the first
// error.
func parallel(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	next := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}

func eventuallyWithin(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// scalePerSlice is how many endpoints each of the scale Services' one
// EndpointSlice holds.
const scalePerSlice = 100

// createScaleObjects makes, in namespace ns (created here), the Gateway
// "gw" of class causeway with one HTTP listener, nEndpoints/100 headless
// Services "svcN" with one EndpointSlice of 100 endpoints each, and
// nRoutes HTTPRoutes "rN" on hosts hN%100.example, each with the prefix
// /rN to svcN%services. Service 0's slice holds the one real pod at
// podIP, so requests can be served; the other addresses are only
// counted. It returns the number of Services.
func createScaleObjects(t *testing.T, c cluster, ns string, nRoutes, nEndpoints int, podIP string, withPolicy bool) int {
	t.Helper()
	const perSlice = scalePerSlice
	nServices := max(nEndpoints/perSlice, 1)
	ctx := context.Background()
	must(c.core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))(t)
	if _, err := c.gw.GatewayV1().GatewayClasses().Create(ctx, &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "causeway"},
		Spec: gatewayv1.GatewayClassSpec{ControllerName: routes.KubernetesControllerName}}, metav1.CreateOptions{}); err != nil {
		t.Log(err) // the other test may have made it
	}
	must(c.gw.GatewayV1().Gateways(ns).Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "causeway", Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}}}}, metav1.CreateOptions{}))(t)
	if withPolicy {
		must(c.dyn.Resource(kubernetes.PolicyGVR).Namespace(ns).Create(ctx, policyJSON(t, ns, "gw-limits",
			`{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"Gateway","name":"gw"}],
			  "rateLimits":[{"config":{"key":"client_ip","limit":100000,"per":"1s","burst":100000}}]}`), metav1.CreateOptions{}))(t)
		t.Log("with a Gateway-wide CausewayPolicy over every route")
	}

	// The objects, created in parallel. Service 0's slice holds the one
	// real pod, so requests can be served; the others hold addresses that
	// only count.
	start := time.Now()
	parallel(t, nServices, func(i int) error {
		name := "svc" + strconv.Itoa(i)
		svc := service(ns, name)
		// Headless: the test API server's ClusterIP range is too small for
		// thousands, and the edge reads EndpointSlices, not ClusterIPs.
		svc.Spec.ClusterIP = corev1.ClusterIPNone
		if _, err := c.core.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			return err
		}
		es := slice(ns, name, name+"-1")
		for j := 0; j < perSlice; j++ {
			ip := countedAddr(i*perSlice + j)
			if i == 0 {
				// Service 0 is the real pod alone: the requests that
				// measure a change must not be balanced onto addresses
				// that answer nothing.
				ip = podIP
				if j > 0 {
					break
				}
			}
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}})
		}
		_, err := c.core.DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{})
		return err
	})
	parallel(t, nRoutes, func(i int) error {
		svcName := "svc" + strconv.Itoa(i%nServices)
		if i == 0 {
			svcName = "svc0"
		}
		r := httpRoute(ns, "r"+strconv.Itoa(i), prefixRule("/r"+strconv.Itoa(i), svcName, ""))
		r.Spec.Hostnames = []gatewayv1.Hostname{gatewayv1.Hostname("h" + strconv.Itoa(i%100) + ".example")}
		_, err := c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, r, metav1.CreateOptions{})
		return err
	})
	t.Logf("created %d HTTPRoutes, %d Services, %d endpoints in %s", nRoutes, nServices, nServices*perSlice, time.Since(start).Round(time.Millisecond))
	return nServices
}
