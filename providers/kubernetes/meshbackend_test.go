package kubernetes

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// meshFile is an edge with a mesh identity in testTD.
const meshFile = `version: 1
listen: {http: ":0", admin: ""}
mesh: {trust_domain: example.org, cert_file: edge.pem, key_file: edge-key.pem, bundle_file: bundle.pem}
providers:
  kubernetes: {}
`

// meshWorld is world with the mesh Service "pay" in "apps", whose pods
// the case adds.
func meshWorld(pods []*corev1.Pod, slices ...*discoveryv1.EndpointSlice) *Snapshot {
	s := world()
	pay := svc("apps", "pay")
	pay.Labels = map[string]string{routes.MeshLabel: "true"}
	s.Services = append(s.Services, pay)
	s.EndpointSlices = append(s.EndpointSlices, slices...)
	s.Pods = pods
	return s
}

func withPort(p *corev1.Pod, port string) *corev1.Pod {
	p.Annotations = map[string]string{routes.InboundPortAnnotation: port}
	return p
}

// upstreamView is each upstream a route reaches: "name identity
// endpoints".
func upstreamView(frag routes.Fragment) []string {
	var out []string
	for _, r := range frag.Routes {
		targets := []string{r.Upstream}
		if len(r.Split) > 0 {
			targets = nil
			for _, s := range r.Split {
				targets = append(targets, s.Upstream)
			}
		}
		for _, t := range targets {
			u := frag.Upstreams[t]
			out = append(out, strings.Join(slices.DeleteFunc([]string{t, u.MeshIdentity, strings.Join(u.Endpoints, ",")}, func(s string) bool { return s == "" }), " "))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestTranslateMeshBackends(t *testing.T) {
	yes := ptr(true)
	ep := func(ip, pod string) meshEP { return meshEP{ip: ip, pod: pod, ready: yes} }
	tests := []struct {
		name   string
		snap   *Snapshot
		rules  []gatewayv1.HTTPRouteRule
		noMesh bool
		port   int // providers.kubernetes.inbound_port
		want   []string
		ups    []string
		left   []string
		// resolved is the route's ResolvedRefs reason.
		resolved string
	}{
		{
			name:  "one ServiceAccount: each pod on its sidecar's port, held to its account's ID",
			snap:  meshWorld([]*corev1.Pod{meshPod("apps", "pay-a", "pay"), meshPod("apps", "pay-b", "pay")}, meshSlice("apps", "pay", "pay-1", ep("10.1.0.2", "pay-b"), ep("10.1.0.1", "pay-a"))),
			rules: []gatewayv1.HTTPRouteRule{rule(nil, backend("pay", 80))},
			want:  []string{"* ^/ -> k8s.apps.pay.80.sa.pay"},
			ups:   []string{"k8s.apps.pay.80.sa.pay " + id("apps", "pay") + " 10.1.0.1:15443,10.1.0.2:15443"},
		},
		{
			name:  "inbound_port is the default port, the annotation a pod's own",
			snap:  meshWorld([]*corev1.Pod{meshPod("apps", "pay-a", "pay"), withPort(meshPod("apps", "pay-b", "pay"), "16000")}, meshSlice("apps", "pay", "pay-1", ep("10.1.0.1", "pay-a"), ep("10.1.0.2", "pay-b"))),
			rules: []gatewayv1.HTTPRouteRule{rule(nil, backend("pay", 80))},
			port:  15999,
			want:  []string{"* ^/ -> k8s.apps.pay.80.sa.pay"},
			ups:   []string{"k8s.apps.pay.80.sa.pay " + id("apps", "pay") + " 10.1.0.1:15999,10.1.0.2:16000"},
		},
		{
			name: "two ServiceAccounts: one upstream each, split by endpoints",
			snap: meshWorld([]*corev1.Pod{meshPod("apps", "pay-a", "pay"), meshPod("apps", "pay-b", "pay"), meshPod("apps", "pay-c", "pay-v2")},
				meshSlice("apps", "pay", "pay-1", ep("10.1.0.1", "pay-a"), ep("10.1.0.2", "pay-b"), ep("10.1.0.3", "pay-c"))),
			rules: []gatewayv1.HTTPRouteRule{rule(nil, backend("pay", 80))},
			want:  []string{"* ^/ -> k8s.apps.pay.80.sa.pay*2,k8s.apps.pay.80.sa.pay-v2*1"},
			ups: []string{
				"k8s.apps.pay.80.sa.pay " + id("apps", "pay") + " 10.1.0.1:15443,10.1.0.2:15443",
				"k8s.apps.pay.80.sa.pay-v2 " + id("apps", "pay-v2") + " 10.1.0.3:15443",
			},
		},
		{
			name: "backendRef weights are kept, and each account's share within its backend",
			snap: meshWorld([]*corev1.Pod{meshPod("apps", "pay-a", "pay"), meshPod("apps", "pay-b", "pay"), meshPod("apps", "pay-c", "pay-v2")},
				meshSlice("apps", "pay", "pay-1", ep("10.1.0.1", "pay-a"), ep("10.1.0.2", "pay-b"), ep("10.1.0.3", "pay-c"))),
			// 90 to the mesh Service (60 and 30 by its accounts'
			// endpoints), 10 to the plain one, over the common multiple 3.
			rules: []gatewayv1.HTTPRouteRule{rule(nil, backend("pay", 80, 90), backend("web", 80, 10))},
			want:  []string{"* ^/ -> k8s.apps.pay.80.sa.pay*180,k8s.apps.pay.80.sa.pay-v2*90,k8s.apps.web.80*30"},
			ups: []string{
				"k8s.apps.pay.80.sa.pay " + id("apps", "pay") + " 10.1.0.1:15443,10.1.0.2:15443",
				"k8s.apps.pay.80.sa.pay-v2 " + id("apps", "pay-v2") + " 10.1.0.3:15443",
				"k8s.apps.web.80 10.244.0.1:8080,10.244.0.2:8080",
			},
		},
		{
			name: "a missing pod is left out, never dialled with a guessed identity",
			snap: meshWorld([]*corev1.Pod{meshPod("apps", "pay-a", "pay")},
				meshSlice("apps", "pay", "pay-1", ep("10.1.0.1", "pay-a"), ep("10.1.0.2", "pay-gone"), ep("10.1.0.3", ""))),
			rules: []gatewayv1.HTTPRouteRule{rule(nil, backend("pay", 80))},
			want:  []string{"* ^/ -> k8s.apps.pay.80.sa.pay"},
			ups:   []string{"k8s.apps.pay.80.sa.pay " + id("apps", "pay") + " 10.1.0.1:15443"},
			left: []string{
				`apps/pay 10.1.0.2: Pod "pay-gone" not found`,
				"apps/pay 10.1.0.3: no targetRef to a Pod: its identity is unknown",
			},
		},
		{
			name: "a targetRef to a pod of another namespace is left out",
			snap: func() *Snapshot {
				es := meshSlice("apps", "pay", "pay-1", ep("10.1.0.1", "pay-a"), ep("10.1.0.2", "pay-x"))
				es.Endpoints[1].TargetRef.Namespace = "other"
				return meshWorld([]*corev1.Pod{meshPod("apps", "pay-a", "pay"), meshPod("other", "pay-x", "admin")}, es)
			}(),
			rules: []gatewayv1.HTTPRouteRule{rule(nil, backend("pay", 80))},
			want:  []string{"* ^/ -> k8s.apps.pay.80.sa.pay"},
			ups:   []string{"k8s.apps.pay.80.sa.pay " + id("apps", "pay") + " 10.1.0.1:15443"},
			left:  []string{`apps/pay 10.1.0.2: targetRef names a Pod of namespace "other"`},
		},
		{
			// An annotation that is no port could be a typo for any port:
			// the pod is left out rather than dialled on the default.
			name: "an inbound-port annotation that is not a port leaves its pod out",
			snap: meshWorld([]*corev1.Pod{meshPod("apps", "pay-a", "pay"), withPort(meshPod("apps", "pay-b", "pay"), "15443x"), withPort(meshPod("apps", "pay-c", "pay"), "70000")},
				meshSlice("apps", "pay", "pay-1", ep("10.1.0.1", "pay-a"), ep("10.1.0.2", "pay-b"), ep("10.1.0.3", "pay-c"))),
			rules: []gatewayv1.HTTPRouteRule{rule(nil, backend("pay", 80))},
			want:  []string{"* ^/ -> k8s.apps.pay.80.sa.pay"},
			ups:   []string{"k8s.apps.pay.80.sa.pay " + id("apps", "pay") + " 10.1.0.1:15443"},
			left: []string{
				`apps/pay 10.1.0.2: Pod "pay-b": annotation causeway.dev/inbound-port "15443x" is not a port`,
				`apps/pay 10.1.0.3: Pod "pay-c": annotation causeway.dev/inbound-port "70000" is not a port`,
			},
		},
		{
			name:  "no usable endpoint: the Service's upstream is empty and answers 503",
			snap:  meshWorld(nil, meshSlice("apps", "pay", "pay-1", ep("10.1.0.1", "pay-a"))),
			rules: []gatewayv1.HTTPRouteRule{rule(nil, backend("pay", 80))},
			want:  []string{"* ^/ -> k8s.apps.pay.80"},
			ups:   []string{"k8s.apps.pay.80"},
			left:  []string{`apps/pay 10.1.0.1: Pod "pay-a" not found`},
		},
		{
			name:     "without a mesh section the backend is refused, never called in plaintext",
			snap:     meshWorld([]*corev1.Pod{meshPod("apps", "pay-a", "pay")}, meshSlice("apps", "pay", "pay-1", ep("10.1.0.1", "pay-a"))),
			rules:    []gatewayv1.HTTPRouteRule{rule(nil, backend("pay", 80))},
			noMesh:   true,
			want:     []string{"* ^/ -> k8s.unresolved [k8s.apps.r.0.unresolved]"},
			ups:      []string{"k8s.unresolved"},
			resolved: reasonNoMeshIdentity,
		},
		{
			name:     "without a mesh section a plain backend beside it still serves",
			snap:     meshWorld([]*corev1.Pod{meshPod("apps", "pay-a", "pay")}, meshSlice("apps", "pay", "pay-1", ep("10.1.0.1", "pay-a"))),
			rules:    []gatewayv1.HTTPRouteRule{rule(nil, backend("pay", 80, 1), backend("web", 80, 1))},
			noMesh:   true,
			want:     []string{"* ^/ -> k8s.apps.web.80"},
			ups:      []string{"k8s.apps.web.80 10.244.0.1:8080,10.244.0.2:8080"},
			resolved: reasonNoMeshIdentity,
		},
		{
			name:  "a Service without the label is unchanged: its app port, no identity",
			snap:  meshWorld([]*corev1.Pod{meshPod("apps", "web-a", "web")}),
			rules: []gatewayv1.HTTPRouteRule{rule(nil, backend("web", 80))},
			want:  []string{"* ^/ -> k8s.apps.web.80"},
			ups:   []string{"k8s.apps.web.80 10.244.0.1:8080,10.244.0.2:8080"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.snap.HTTPRoutes = []*gatewayv1.HTTPRoute{route("apps", "r", tt.rules)}
			o := TranslateOptions{MeshTrustDomain: testTD}
			if tt.noMesh {
				o.MeshTrustDomain = ""
			}
			res := TranslateWith(routes.KubernetesProvider{InboundPort: tt.port}, tt.snap, o)
			if got := summaries(res.Fragment); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("routes\n got %q\nwant %q", got, tt.want)
			}
			if got := upstreamView(res.Fragment); !reflect.DeepEqual(got, tt.ups) {
				t.Errorf("upstreams\n got %q\nwant %q", got, tt.ups)
			}
			var left []string
			for _, l := range res.LeftOut {
				left = append(left, l.String())
			}
			if !reflect.DeepEqual(left, tt.left) {
				t.Errorf("left out\n got %q\nwant %q", left, tt.left)
			}
			c := condOf(res.HTTPRoutes[nn("apps", "r")].Parents[0].Conditions, string(gatewayv1.RouteConditionResolvedRefs))
			switch {
			case tt.resolved == "" && c.Status != metav1.ConditionTrue:
				t.Errorf("ResolvedRefs %s %s: %s", c.Status, c.Reason, c.Message)
			case tt.resolved != "" && (c.Status != metav1.ConditionFalse || c.Reason != tt.resolved || !strings.Contains(c.Message, "set a mesh section")):
				t.Errorf("ResolvedRefs %s %s: %s; want False %s naming the mesh section", c.Status, c.Reason, c.Message, tt.resolved)
			}
			// Every result is one the routes model accepts, with the
			// edge's file it was made for.
			file := meshFile
			if tt.noMesh {
				file = baseFile
			}
			f, err := routes.Parse("routes.yaml", []byte(file))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Merge(res.Fragment); err != nil {
				t.Fatalf("the fragment is refused by the routes model: %v", err)
			}
		})
	}
}

// A GRPCRoute's mesh backend is an upstream of its own, as its plain
// backends are, held to the same identity.
func TestTranslateMeshGRPCBackend(t *testing.T) {
	s := meshWorld([]*corev1.Pod{meshPod("apps", "pay-a", "pay")}, meshSlice("apps", "pay", "pay-1", meshEP{ip: "10.1.0.1", pod: "pay-a"}))
	r := grpcRoute("apps", "g", "gw")
	r.Spec.Rules = []gatewayv1.GRPCRouteRule{{BackendRefs: []gatewayv1.GRPCBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "pay", Port: ptr(int32(80))}}}}}}
	s.GRPCRoutes = []*gatewayv1.GRPCRoute{r}
	res := TranslateWith(routes.KubernetesProvider{}, s, TranslateOptions{MeshTrustDomain: testTD})
	want := []string{"k8s.apps.pay.80.grpc.sa.pay " + id("apps", "pay") + " 10.1.0.1:15443"}
	if got := upstreamView(res.Fragment); !reflect.DeepEqual(got, want) {
		t.Fatalf("upstreams\n got %q\nwant %q", got, want)
	}
	if p := res.Fragment.Upstreams[want[0][:strings.IndexByte(want[0], ' ')]].Protocol; p != "" {
		t.Errorf("protocol %q: the hop to the sidecar is the mesh transport's to choose", p)
	}
}

func TestWeighBackends(t *testing.T) {
	st := func(up string, w int) routes.SplitTarget { return routes.SplitTarget{Upstream: up, Weight: w} }
	tests := []struct {
		name string
		in   []weighted
		want []routes.SplitTarget
	}{
		{"plain backends keep their weights", []weighted{{80, []routes.SplitTarget{st("a", 1)}}, {20, []routes.SplitTarget{st("b", 1)}}},
			[]routes.SplitTarget{st("a", 80), st("b", 20)}},
		{"accounts share their backend's weight by endpoints", []weighted{{1, []routes.SplitTarget{st("a", 3), st("b", 1)}}},
			[]routes.SplitTarget{st("a", 3), st("b", 1)}},
		{"two mesh backends over the common multiple of their totals", []weighted{{1, []routes.SplitTarget{st("a", 1), st("b", 1)}}, {1, []routes.SplitTarget{st("c", 2), st("d", 1)}}},
			// each backend 6 of 12; within them 3:3 and 4:2
			[]routes.SplitTarget{st("a", 3), st("b", 3), st("c", 4), st("d", 2)}},
		{"a tiny share is rounded, never dropped", []weighted{{1, []routes.SplitTarget{st("a", 1_000_000), st("b", 1)}}},
			[]routes.SplitTarget{st("a", 65536), st("b", 1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := weighBackends(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
