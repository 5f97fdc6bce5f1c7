package kubernetes

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/causewayhq/causeway/routes"
)

const testTD = "example.org"

func meshSvc(ns, name string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{routes.MeshLabel: "true"}}}
}

func meshPod(ns, name, account string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)}, Spec: corev1.PodSpec{ServiceAccountName: account}}
}

// meshEP is an endpoint of a pod: address, pod name ("" for no
// targetRef), readiness (nil: unset).
type meshEP struct {
	ip, pod        string
	ready, serving *bool
}

func meshSlice(ns, svc, name string, eps ...meshEP) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving}}
		if e.pod != "" {
			ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: e.pod, UID: types.UID("uid-" + e.pod)}
		}
		es.Endpoints = append(es.Endpoints, ep)
	}
	return es
}

func id(ns, sa string) string { return routes.ServiceAccountID(testTD, ns, sa) }

// outboundView is what a test compares: each host's targets, as
// "upstream identity endpoints" strings.
func outboundView(res OutboundResult) map[string][]string {
	view := map[string][]string{}
	for _, r := range res.Fragment.Routes {
		targets := []string{r.Upstream}
		if len(r.Split) > 0 {
			targets = nil
			for _, s := range r.Split {
				targets = append(targets, s.Upstream)
			}
		}
		for _, t := range targets {
			u := res.Fragment.Upstreams[t]
			view[r.Match.Host] = append(view[r.Match.Host], strings.TrimSpace(u.MeshIdentity+" "+strings.Join(u.Endpoints, ",")))
		}
	}
	return view
}

func TestTranslateOutbound(t *testing.T) {
	yes, no := ptr(true), ptr(false)
	base := func() *OutboundSnapshot {
		return &OutboundSnapshot{
			Services:       []*corev1.Service{meshSvc("shop", "pay")},
			EndpointSlices: []*discoveryv1.EndpointSlice{meshSlice("shop", "pay", "pay-a", meshEP{ip: "10.1.0.1", pod: "pay-1", ready: yes})},
			Pods:           []*corev1.Pod{meshPod("shop", "pay-1", "payments")},
		}
	}
	tests := []struct {
		name   string
		cfg    routes.OutboundKubernetes
		local  string
		change func(s *OutboundSnapshot)
		// want maps a host to its targets; hosts not listed must be absent.
		want map[string][]string
		// left are substrings the left-out reasons must hold, in order.
		left []string
	}{
		{name: "a ready pod under its ServiceAccount's ID, by every name", want: map[string][]string{
			"pay.shop":                   {id("shop", "payments") + " 10.1.0.1:15443"},
			"pay.shop.svc":               {id("shop", "payments") + " 10.1.0.1:15443"},
			"pay.shop.svc.cluster.local": {id("shop", "payments") + " 10.1.0.1:15443"},
		}},
		{name: "the bare name in the sidecar's own namespace", local: "shop", want: map[string][]string{
			"pay": {id("shop", "payments") + " 10.1.0.1:15443"}, "pay.shop": {id("shop", "payments") + " 10.1.0.1:15443"},
			"pay.shop.svc": {id("shop", "payments") + " 10.1.0.1:15443"}, "pay.shop.svc.cluster.local": {id("shop", "payments") + " 10.1.0.1:15443"},
		}},
		{name: "no bare name from another namespace", local: "web", cfg: routes.OutboundKubernetes{ClusterDomain: "corp.internal"}, want: map[string][]string{
			"pay.shop": {id("shop", "payments") + " 10.1.0.1:15443"}, "pay.shop.svc": {id("shop", "payments") + " 10.1.0.1:15443"},
			"pay.shop.svc.corp.internal": {id("shop", "payments") + " 10.1.0.1:15443"},
		}},
		{name: "a pod without serviceAccountName runs as default", change: func(s *OutboundSnapshot) {
			s.Pods[0].Spec.ServiceAccountName = ""
		}, want: threeNames("pay.shop", id("shop", "default")+" 10.1.0.1:15443")},
		{name: "the pod's port annotation, and the configured default", cfg: routes.OutboundKubernetes{InboundPort: 16000}, change: func(s *OutboundSnapshot) {
			s.EndpointSlices[0].Endpoints = append(s.EndpointSlices[0].Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.1.0.2"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "pay-2"}})
			p := meshPod("shop", "pay-2", "payments")
			p.Annotations = map[string]string{routes.InboundPortAnnotation: "17000"}
			s.Pods = append(s.Pods, p)
		}, want: threeNames("pay.shop", id("shop", "payments")+" 10.1.0.1:16000,10.1.0.2:17000")},
		{name: "a bad port annotation leaves the pod out", change: func(s *OutboundSnapshot) {
			s.Pods[0].Annotations = map[string]string{routes.InboundPortAnnotation: "http"}
		}, want: threeNames("pay.shop", ""), left: []string{`annotation causeway.dev/inbound-port "http" is not a port`}},
		{name: "not-ready endpoints are left alone while a ready one serves", change: func(s *OutboundSnapshot) {
			es := s.EndpointSlices[0]
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.1.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: no, Serving: yes}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "pay-1"}},
				discoveryv1.Endpoint{Addresses: []string{"10.1.0.3"}, Conditions: discoveryv1.EndpointConditions{Ready: no}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "pay-1"}})
		}, want: threeNames("pay.shop", id("shop", "payments")+" 10.1.0.1:15443")},
		{name: "terminating but serving endpoints serve when none is ready", change: func(s *OutboundSnapshot) {
			s.EndpointSlices[0].Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: no, Serving: yes, Terminating: yes}
		}, want: threeNames("pay.shop", id("shop", "payments")+" 10.1.0.1:15443")},
		{name: "no ready endpoint: the names stay, with nothing to call (503)", change: func(s *OutboundSnapshot) {
			s.EndpointSlices[0].Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: no, Serving: no}
		}, want: threeNames("pay.shop", "")},
		{name: "missing pod: left out", change: func(s *OutboundSnapshot) { s.Pods = nil },
			want: threeNames("pay.shop", ""), left: []string{`Pod "pay-1" not found`}},
		{name: "no targetRef: left out", change: func(s *OutboundSnapshot) { s.EndpointSlices[0].Endpoints[0].TargetRef = nil },
			want: threeNames("pay.shop", ""), left: []string{"no targetRef to a Pod"}},
		{name: "a targetRef to a node: left out", change: func(s *OutboundSnapshot) { s.EndpointSlices[0].Endpoints[0].TargetRef.Kind = "Node" },
			want: threeNames("pay.shop", ""), left: []string{"no targetRef to a Pod"}},
		{name: "a targetRef into another namespace: left out", change: func(s *OutboundSnapshot) {
			s.EndpointSlices[0].Endpoints[0].TargetRef.Namespace = "admin"
			s.Pods = append(s.Pods, meshPod("admin", "pay-1", "root"))
		}, want: threeNames("pay.shop", ""), left: []string{`targetRef names a Pod of namespace "admin"`}},
		{name: "a recreated pod of the same name: left out until the slice names it", change: func(s *OutboundSnapshot) {
			s.Pods[0].UID = "uid-new"
		}, want: threeNames("pay.shop", ""), left: []string{`is not the one the EndpointSlice names`}},
		{name: "an address the pod does not have: left out", change: func(s *OutboundSnapshot) {
			s.Pods[0].Status.PodIPs = []corev1.PodIP{{IP: "10.1.9.9"}}
		}, want: threeNames("pay.shop", ""), left: []string{`does not have this address`}},
		{name: "a pod of another ServiceAccount is called with its own ID, never the others'", change: func(s *OutboundSnapshot) {
			s.EndpointSlices[0].Endpoints = append(s.EndpointSlices[0].Endpoints,
				discoveryv1.Endpoint{Addresses: []string{"10.1.0.7"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "debug"}},
				discoveryv1.Endpoint{Addresses: []string{"10.1.0.2"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "pay-2"}})
			s.Pods = append(s.Pods, meshPod("shop", "debug", "intruder"), meshPod("shop", "pay-2", "payments"))
		}, want: threeNames("pay.shop", id("shop", "intruder")+" 10.1.0.7:15443", id("shop", "payments")+" 10.1.0.1:15443,10.1.0.2:15443")},
		{name: "one address claimed by pods of two ServiceAccounts: left out", change: func(s *OutboundSnapshot) {
			s.EndpointSlices = append(s.EndpointSlices, meshSlice("shop", "pay", "pay-b", meshEP{ip: "10.1.0.1", pod: "evil", ready: yes}))
			s.Pods = append(s.Pods, meshPod("shop", "evil", "intruder"))
		}, want: threeNames("pay.shop", ""), left: []string{"pods of different ServiceAccounts"}},
		{name: "one endpoint in two slices counts once", change: func(s *OutboundSnapshot) {
			s.EndpointSlices = append(s.EndpointSlices, meshSlice("shop", "pay", "pay-b", meshEP{ip: "10.1.0.1", pod: "pay-1", ready: yes}))
		}, want: threeNames("pay.shop", id("shop", "payments")+" 10.1.0.1:15443")},
		{name: "a Service without the mesh label is not callable", change: func(s *OutboundSnapshot) {
			s.Services[0].Labels = nil
		}, want: map[string][]string{}},
		{name: "a mesh label other than true is not callable", change: func(s *OutboundSnapshot) {
			s.Services[0].Labels[routes.MeshLabel] = "yes"
		}, want: map[string][]string{}},
		{name: "an ExternalName Service is left out", change: func(s *OutboundSnapshot) {
			s.Services[0].Spec.Type = corev1.ServiceTypeExternalName
		}, want: map[string][]string{}, left: []string{"ExternalName"}},
		{name: "namespaces outside the filter are not watched", cfg: routes.OutboundKubernetes{Namespaces: []string{"web"}}, want: map[string][]string{}},
		{name: "namespaces in the filter are", cfg: routes.OutboundKubernetes{Namespaces: []string{"web", "shop"}}, want: threeNames("pay.shop", id("shop", "payments")+" 10.1.0.1:15443")},
		{name: "another Service's slice is not this one's", change: func(s *OutboundSnapshot) {
			s.EndpointSlices[0].Labels[discoveryv1.LabelServiceName] = "other"
		}, want: threeNames("pay.shop", "")},
		{name: "a slice in another namespace is not this one's", change: func(s *OutboundSnapshot) {
			s.EndpointSlices[0].Namespace = "web"
			s.Pods[0].Namespace = "web"
		}, want: threeNames("pay.shop", "")},
		{name: "odd input: nil objects, FQDN slices, bad addresses, empty endpoints", change: func(s *OutboundSnapshot) {
			s.Services = append(s.Services, nil)
			s.Pods = append(s.Pods, nil)
			fqdn := meshSlice("shop", "pay", "pay-f", meshEP{ip: "pay.example", pod: "pay-1", ready: yes})
			fqdn.AddressType = discoveryv1.AddressTypeFQDN
			bad := meshSlice("shop", "pay", "pay-x", meshEP{ip: "not-an-ip", pod: "pay-1", ready: yes})
			bad.Endpoints = append(bad.Endpoints, discoveryv1.Endpoint{})
			s.EndpointSlices = append(s.EndpointSlices, nil, fqdn, bad)
		}, want: threeNames("pay.shop", id("shop", "payments")+" 10.1.0.1:15443"), left: []string{"not an IP address"}},
		{name: "IPv6 endpoints", change: func(s *OutboundSnapshot) {
			s.EndpointSlices[0].AddressType = discoveryv1.AddressTypeIPv6
			s.EndpointSlices[0].Endpoints[0].Addresses = []string{"fd00::1"}
		}, want: threeNames("pay.shop", id("shop", "payments")+" [fd00::1]:15443")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			if tc.change != nil {
				tc.change(s)
			}
			res := TranslateOutbound(tc.cfg, s, OutboundOptions{TrustDomain: testTD, LocalNamespace: tc.local})
			got := outboundView(res)
			if len(got) != len(tc.want) {
				t.Errorf("hosts %v, want %v", got, tc.want)
			}
			for host, want := range tc.want {
				if !slices.Equal(got[host], want) {
					t.Errorf("%s: %q, want %q", host, got[host], want)
				}
			}
			if len(res.LeftOut) != len(tc.left) {
				t.Fatalf("left out %v, want %q", res.LeftOut, tc.left)
			}
			for i, l := range tc.left {
				if !strings.Contains(res.LeftOut[i].String(), l) {
					t.Errorf("left out %q, want %q", res.LeftOut[i], l)
				}
			}
			// The fragment is a valid model once merged, whatever the input.
			f := &routes.File{Version: 1, Mesh: &routes.Mesh{TrustDomain: testTD, CertFile: "c", KeyFile: "k", BundleFile: "b"}, Upstreams: map[string]routes.Upstream{}}
			if _, err := f.Merge(res.Fragment); err != nil && len(res.Fragment.Routes) > 0 {
				t.Errorf("fragment refused: %v", err)
			}
		})
	}
}

// threeNames is the want of a Service called by its three qualified names
// (host is NAME.NAMESPACE); a target "" is an upstream with nothing to call.
func threeNames(host string, targets ...string) map[string][]string {
	return map[string][]string{host: targets, host + ".svc": targets, host + ".svc.cluster.local": targets}
}

func TestTranslateOutboundSplitsByEndpoints(t *testing.T) {
	s := &OutboundSnapshot{
		Services: []*corev1.Service{meshSvc("shop", "pay")},
		EndpointSlices: []*discoveryv1.EndpointSlice{meshSlice("shop", "pay", "pay-a",
			meshEP{ip: "10.1.0.1", pod: "a"}, meshEP{ip: "10.1.0.2", pod: "b"}, meshEP{ip: "10.1.0.3", pod: "c"})},
		Pods: []*corev1.Pod{meshPod("shop", "a", "v1"), meshPod("shop", "b", "v1"), meshPod("shop", "c", "v2")},
	}
	res := TranslateOutbound(routes.OutboundKubernetes{}, s, OutboundOptions{TrustDomain: testTD})
	r := res.Fragment.Routes[0]
	if len(r.Split) != 2 || r.Split[0].Weight != 2 || r.Split[1].Weight != 1 {
		t.Fatalf("split %+v", r.Split)
	}
	for _, sp := range r.Split {
		u := res.Fragment.Upstreams[sp.Upstream]
		if u.MeshIdentity == "" || len(u.Endpoints) != sp.Weight || u.Balance != "" && u.Balance != routes.DefaultBalance {
			t.Fatalf("upstream %s: %+v", sp.Upstream, u)
		}
	}
	if res.Services != 1 || res.Endpoints != 3 {
		t.Fatalf("counted %d services, %d endpoints", res.Services, res.Endpoints)
	}
	// The same snapshot gives the same fragment: an unchanged cluster
	// never swaps a generation.
	again := TranslateOutbound(routes.OutboundKubernetes{}, s, OutboundOptions{TrustDomain: testTD})
	if !reflect.DeepEqual(again.Fragment, res.Fragment) {
		t.Fatal("not deterministic")
	}
}

func TestTranslateOutboundWithoutTrustDomain(t *testing.T) {
	s := &OutboundSnapshot{Services: []*corev1.Service{meshSvc("shop", "pay")}}
	res := TranslateOutbound(routes.OutboundKubernetes{}, s, OutboundOptions{})
	if len(res.Fragment.Routes) != 0 || len(res.LeftOut) != 1 {
		t.Fatalf("%+v", res)
	}
}
