package kubernetes_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/internal/testnetns"
	"github.com/causewayhq/causeway/providers/kubernetes"
)

// churnResult is one request of the churn test, with when it started and
// ended, so it can be set against when each policy was reported applied.
type churnResult struct {
	key        string // which client's key it carried ("" for none)
	code       int
	body       string
	start, end time.Time
}

// A policy flipped many times under load, between API keys of one Secret,
// keys of another, and invalid (a Secret that does not exist), while 8
// clients send alice's key, bob's key or none. No request is ever served
// without a key that some version of the policy accepts, or as another
// client than its key's; the upstream sees exactly the requests that were
// answered 200. Once the edge reports a version applied (the policy's
// status at its generation, which the edge writes after the model is
// live), every request made wholly within that version's time is answered
// as that version says: a revoked key is refused from then on, and an
// invalid version answers 500 to all.
func TestCausewayPolicyChurnUnderLoad(t *testing.T) {
	ctx := context.Background()
	kubeconfig := must(cp.Kubeconfig())(t)
	c := clientsFor(t, kubeconfig)
	backend := startRecordingPod(t, testnetns.Addr(256+62))

	const ns, host = "churn", "churn.example"
	plainGateway(t, c, ns, pod{"churn-1", testnetns.Addr(256 + 62)})
	keys := map[string]string{"alice": "churn-alice-key-0123456789", "bob": "churn-bob-key-9876543210"}
	for name, key := range keys {
		must(c.core.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "keys-" + name}, Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{name: []byte(key)}}, metav1.CreateOptions{}))(t)
	}
	// spec is the policy reading the Secret keys-<secret>; "gone" does
	// not exist, which makes the policy invalid.
	spec := func(secret string) string {
		return `{"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api"}],
			"authenticators": [{"config": {"api_key": {"header": "X-Key", "forward_name": "X-Client"}}, "secrets": {"apiKeys": {"name": "keys-` + secret + `"}}}]}`
	}
	policies := c.dyn.Resource(kubernetes.PolicyGVR).Namespace(ns)
	must(policies.Create(ctx, policyJSON(t, ns, "churn", spec("alice")), metav1.CreateOptions{}))(t)
	r := httpRoute(ns, "api", prefixRule("/", "web", ""))
	r.Spec.Hostnames = []gatewayv1.Hostname{host}
	must(c.gw.GatewayV1().HTTPRoutes(ns).Create(ctx, r, metav1.CreateOptions{}))(t)

	e := serveEdge(t, edgeFile(t, kubeconfig, false, ns))
	addr := e.Addr("http")
	eventually(t, "alice's key is served", func() bool {
		code, body := sendWith(t, addr, host, "/", map[string]string{"X-Key": keys["alice"]})
		return code == 200 && body == "ok alice"
	})
	served0 := backend.hits.Load()

	// The load: 8 clients, each cycling through alice's key, bob's and
	// none, until the flips are done.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var results []churnResult
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			who := []string{"alice", "bob", ""}
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				res := churnResult{key: who[i%len(who)], start: time.Now()}
				req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
				req.Host = host
				if res.key != "" {
					req.Header.Set("X-Key", keys[res.key])
				}
				// A client's own X-Client must not pass for the edge's.
				req.Header.Set("X-Client", "admin")
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("request: %v", err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				res.code, res.body, res.end = resp.StatusCode, string(b), time.Now()
				mu.Lock()
				results = append(results, res)
				mu.Unlock()
			}
		})
	}

	// The flips: each version is applied (its status at its generation),
	// then held a while under load, then replaced.
	type phase struct {
		secret     string
		from, till time.Time
	}
	var phases []phase
	sequence := []string{"bob", "gone", "alice", "bob", "alice", "gone", "bob", "gone", "gone", "alice"}
	for i := 0; i < 2; i++ {
		for _, secret := range sequence {
			// The edge writes the policy's status between our read and our
			// write at times, which makes the write conflict: read again.
			updated := updateFresh(t, getPolicy(ctx, policies, "churn"), func(cur *unstructured.Unstructured) {
				cur.Object["spec"] = policyJSON(t, ns, "churn", spec(secret)).Object["spec"]
			}, putPolicy(ctx, policies))
			if n := len(phases); n > 0 {
				phases[n-1].till = time.Now()
			}
			wantReason := "Accepted"
			if secret == "gone" {
				wantReason = "Invalid"
			}
			gen := updated.GetGeneration()
			eventually(t, fmt.Sprintf("generation %d (%s) reported", gen, secret), func() bool {
				a := policyAccepted(t, c, ns, "churn")
				return a != nil && a.ObservedGeneration == gen && a.Reason == wantReason
			})
			phases = append(phases, phase{secret: secret, from: time.Now()})
			time.Sleep(250 * time.Millisecond)
		}
	}
	phases[len(phases)-1].till = time.Now()
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}

	var ok200 int64
	checked := make([]int, len(phases))
	for _, res := range results {
		// Whenever it was made.
		switch {
		case res.code == 200:
			ok200++
			if res.key == "" || res.body != "ok "+res.key {
				t.Errorf("a request with key %q was served as %q", res.key, res.body)
			}
		case res.code != 401 && res.code != 500:
			t.Errorf("a request with key %q: %d %s", res.key, res.code, res.body)
		}
		// Within a version's time, exactly what that version says.
		for i, p := range phases {
			if res.start.Before(p.from) || res.end.After(p.till) {
				continue
			}
			checked[i]++
			want := 401
			switch {
			case p.secret == "gone":
				want = 500
			case res.key == p.secret:
				want = 200
			}
			if res.code != want {
				t.Errorf("phase %d (keys-%s): a request with key %q answered %d %s, want %d", i, p.secret, res.key, res.code, strings.TrimSpace(res.body), want)
			}
		}
	}
	for i, n := range checked {
		if n < 3 {
			t.Errorf("phase %d (keys-%s): only %d requests made within it; the test checked too little", i, phases[i].secret, n)
		}
	}
	if got := backend.hits.Load() - served0; got != ok200 {
		t.Fatalf("the upstream was reached %d times for %d requests answered 200", got, ok200)
	}
	for _, h := range backend.headers() {
		if c := h.Values("X-Client"); len(c) != 1 || (c[0] != "alice" && c[0] != "bob") {
			t.Fatalf("the upstream saw X-Client %q", c)
		}
		if h.Get("X-Key") != "" {
			t.Fatalf("a key reached the upstream")
		}
	}
	t.Logf("%d requests, %d served, over %d versions", len(results), ok200, len(phases))
}
